"""A corpus of bad configurations, each with the exact one-line message the user gets."""

import resource
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sat_audio.cli import main
from sat_audio.config import ConfigError, load_config, parse_config
from tests.waiting import PATIENCE_S

EV = "detection: {events: {glass: {labels: [glass], on_threshold: 0.5, %s}}}"
MQ = "mqtt: {host: broker, %s}"

# (id, YAML, exact message); every message names the key path, the bad value, what is expected.
CORPUS = [
    # listener
    (
        "listener id not a slug",
        "listener: {id: Kitchen}",
        "listener.id: expected a slug of lowercase letters, digits and _ (like kitchen_2), "
        "got 'Kitchen'",
    ),
    (
        "listener unknown key",
        "listener: {idd: x}",
        "listener.idd: unknown key 'idd'; did you mean 'id'? expected one of id, name",
    ),
    (
        "listener empty name",
        "listener: {name: ''}",
        "listener.name: expected a non-empty string, got ''",
    ),
    ("listener not a mapping", "listener: 5", "listener: expected a mapping with id, name, got 5"),
    # model
    (
        "model threads 0",
        "model: {threads: 0}",
        "model.threads: expected an integer from 1 to 64, got 0",
    ),
    (
        "model chunk too short",
        "model: {chunk_seconds: 0.1}",
        "model.chunk_seconds: expected a number from 0.16 to 60, got 0.1",
    ),
    (
        "model backend",
        "model: {backend: tflite}",
        "model.backend: expected one of torch, onnx, got 'tflite'",
    ),
    (
        "model misspelt key",
        "model: {chunk_length: 1.0}",
        "model.chunk_length: unknown key 'chunk_length'; did you mean 'chunk_seconds'? "
        "expected one of name, dir, chunk_seconds, threads, backend, precision, variant",
    ),
    (
        "model precision",
        "model: {backend: onnx, precision: int4}",
        "model.precision: expected one of float32, int8, got 'int4'",
    ),
    (
        "model int8 on torch",
        "model: {backend: torch, precision: int8}",
        "model.precision: int8 needs backend: onnx (torch runs float32 only)",
    ),
    (
        "model name typo",
        "model: {name: SAT_T_2}",
        "model.name: unknown model 'SAT_T_2'; did you mean 'SAT_T_2s'? expected one of SAT_T_2s, "
        "SAT_T_1s, SAT_S_2s, SAT_S_1s, SAT_B_2s, SAT_B_1s, audiotransformer_tiny, "
        "audiotransformer_small, audiotransformer_base, a checkpoint file (.pt) or an http(s) URL",
    ),
    (
        "model variant unknown",
        "model: {name: /m/mine.pt, variant: SAT_T}",
        "model.variant: expected one of SAT_T_2s, SAT_T_1s, SAT_S_2s, SAT_S_1s, SAT_B_2s, "
        "SAT_B_1s, audiotransformer_tiny, audiotransformer_small, audiotransformer_base, "
        "got 'SAT_T'",
    ),
    (
        "model variant against a registry name",
        "model: {name: SAT_T_2s, variant: SAT_B_2s}",
        "model.variant: SAT_B_2s contradicts model.name SAT_T_2s; model.variant names the "
        "architecture of a checkpoint file",
    ),
    (
        "model variant int8 not offered",
        "model: {name: /m/mine.pt, variant: SAT_B_2s, precision: int8}",
        "model.precision: int8 is not offered for SAT_B_2s: its scores move by up to 0.03 from "
        "float32 (models/int8.toml), more than 0.02; use float32 (int8 is offered for SAT_T_2s, "
        "SAT_T_1s)",
    ),
    # sources
    ("sources empty", "sources: []", "sources: expected a list of one or more sources, got []"),
    (
        "sources a mapping",
        "sources: {kind: mic}",
        "sources: expected a list of one or more sources, got a mapping",
    ),
    (
        "source a string",
        "sources: [mic]",
        "sources[0]: expected a mapping with kind and that kind's keys, got 'mic'",
    ),
    (
        "source without kind",
        "sources: [{name: a}]",
        "sources[0].kind: missing; expected one of mic, file, ffmpeg, stdin",
    ),
    (
        "source unknown kind",
        "sources: [{kind: mike}]",
        "sources[0].kind: expected one of mic, file, ffmpeg, stdin, got 'mike'",
    ),
    (
        "file source without path",
        "sources: [{kind: file}]",
        "sources[0].path: missing; expected the audio file to read",
    ),
    (
        "ffmpeg source without url",
        "sources: [{kind: ffmpeg}]",
        "sources[0].url: missing; expected a URL or path ffmpeg can read (like rtsp://camera/stream)",
    ),
    (
        "key of another kind",
        "sources: [{kind: mic, url: 'rtsp://cam'}]",
        "sources[0].url: unknown key 'url'; expected one of name, kind, block_seconds, "
        "queue_seconds, device, channel, samplerate",
    ),
    (
        "duplicate source names",
        "sources: [{kind: mic}, {kind: mic}]",
        "sources[1].name: name 'mic' is already used by sources[0]; expected unique source names",
    ),
    (
        "stdin format",
        "sources: [{kind: stdin, format: wav}]",
        "sources[0].format: expected one of s16le, s32le, f32le, got 'wav'",
    ),
    (
        "ffmpeg input_args a string",
        "sources: [{kind: ffmpeg, url: x, input_args: '-rtsp_transport tcp'}]",
        "sources[0].input_args: expected a list of strings, got '-rtsp_transport tcp'",
    ),
    (
        "mic device negative",
        "sources: [{kind: mic, device: -1}]",
        "sources[0].device: expected a device index (0, 1, ...) or a device name, got -1",
    ),
    (
        "mic channel a word",
        "sources: [{kind: mic, channel: left}]",
        "sources[0].channel: expected an integer from 0 to 63, got 'left'",
    ),
    (
        "file realtime 0",
        "sources: [{kind: file, path: a.wav, realtime: 0}]",
        "sources[0].realtime: expected true or false, got 0",
    ),
    (
        "stdin rate fractional",
        "sources: [{kind: stdin, rate: 16000.5}]",
        "sources[0].rate: expected an integer from 8000 to 384000, got 16000.5",
    ),
    (
        "block too long",
        "sources: [{kind: mic, block_seconds: 5}]",
        "sources[0].block_seconds: expected a number from 0.01 to 2, got 5",
    ),
    # detection
    (
        "unknown label with suggestions",
        "detection: {events: {glass: {labels: [Glas], on_threshold: 0.5}}}",
        "detection.events.glass.labels[0]: unknown AudioSet label 'Glas'; "
        "did you mean 'Glass', 'Gasp', 'Gears'?",
    ),
    (
        "label twice (name and mid)",
        "detection: {events: {glass: {labels: [glass, /m/039jq], on_threshold: 0.5}}}",
        "detection.events.glass.labels[1]: '/m/039jq' is 'Glass', already listed; "
        "expected each label once",
    ),
    (
        "label not a string",
        "detection: {events: {glass: {labels: [5], on_threshold: 0.5}}}",
        "detection.events.glass.labels[0]: expected an AudioSet label name or mid, got 5",
    ),
    (
        "no labels",
        "detection: {events: {glass: {labels: [], on_threshold: 0.5}}}",
        "detection.events.glass.labels: expected a list of one or more AudioSet labels, got []",
    ),
    (
        "on_threshold above 1",
        "detection: {events: {glass: {labels: [glass], on_threshold: 1.5}}}",
        "detection.events.glass.on_threshold: expected a number above 0 and at most 1, got 1.5",
    ),
    (
        "on_threshold 0",
        "detection: {events: {glass: {labels: [glass], on_threshold: 0}}}",
        "detection.events.glass.on_threshold: expected a number above 0 and at most 1, got 0",
    ),
    (
        "on_threshold quoted",
        "detection: {events: {glass: {labels: [glass], on_threshold: '0.5'}}}",
        "detection.events.glass.on_threshold: expected a number above 0 and at most 1, got '0.5'",
    ),
    (
        "off not below on",
        EV % "off_threshold: 0.6",
        "detection.events.glass.off_threshold: expected less than on_threshold (0.5) for "
        "hysteresis, got 0.6",
    ),
    (
        "on_threshold missing",
        "detection: {events: {glass: {labels: [glass]}}}",
        "detection.events.glass.on_threshold: missing; expected a number above 0 and at most 1",
    ),
    (
        "misspelt threshold",
        "detection: {events: {glass: {labels: [glass], threshold: 0.5}}}",
        "detection.events.glass.threshold: unknown key 'threshold'; did you mean 'on_threshold'? "
        "expected one of name, labels, combine, on_threshold, off_threshold, min_duration_s, "
        "hold_s, cooldown_s, min_level_dbfs, smoothing, smoothing_chunks, kind, enabled, clip",
    ),
    (
        "event key not a slug",
        "detection: {events: {Glass: {labels: [glass], on_threshold: 0.5}}}",
        "detection.events.Glass: expected an event key that is a slug of lowercase letters, "
        "digits and _ (like glass_breaking), got 'Glass'",
    ),
    (
        "combine",
        EV % "combine: avg",
        "detection.events.glass.combine: expected one of max, sum, mean, got 'avg'",
    ),
    (
        "negative hold",
        EV % "hold_s: -1",
        "detection.events.glass.hold_s: expected a number from 0 to 3600, got -1",
    ),
    (
        "smoothing kind",
        EV % "smoothing: gaussian",
        "detection.events.glass.smoothing: expected one of none, ema, median, got 'gaussian'",
    ),
    (
        "smoothing chunks 0",
        EV % "smoothing_chunks: 0",
        "detection.events.glass.smoothing_chunks: expected an integer from 1 to 100, got 0",
    ),
    (
        "event gate below -120",
        EV % "min_level_dbfs: -130",
        "detection.events.glass.min_level_dbfs: expected a number from -120 to 0, got -130",
    ),
    (
        "event empty",
        "detection: {events: {glass: null}}",
        "detection.events.glass: expected a mapping with labels and on_threshold, got null",
    ),
    (
        "events a list",
        "detection: {events: [glass]}",
        "detection.events: expected a mapping of event keys (like glass_breaking) to events, "
        "got [glass]",
    ),
    (
        "global gate positive",
        "detection: {min_level_dbfs: 10}",
        "detection.min_level_dbfs: expected a number from -120 to 0, got 10",
    ),
    # mqtt
    (
        "port too big",
        MQ % "port: 70000",
        "mqtt.port: expected an integer from 1 to 65535, got 70000",
    ),
    (
        "port quoted",
        MQ % "port: '1883'",
        "mqtt.port: expected an integer from 1 to 65535, got '1883'",
    ),
    (
        "password without user",
        MQ % "password: x",
        "mqtt.username: missing; a password needs a username",
    ),
    (
        "password twice",
        MQ % "username: u, password: x, password_file: /etc/x",
        "mqtt.password_file: give password or password_file, not both",
    ),
    (
        "password file missing",
        MQ % "username: u, password_file: /nonexistent/pw",
        "mqtt.password_file: cannot read '/nonexistent/pw' (No such file or directory)",
    ),
    (
        "password a list is masked",
        MQ % "username: u, password: [hunter2]",
        "mqtt.password: expected a non-empty string, got ***",
    ),
    (
        "tls cert without key",
        MQ % "tls: {cert: client.crt}",
        "mqtt.tls.key: missing; a client certificate needs both cert and key",
    ),
    (
        "tls insecure words",
        MQ % "tls: {insecure: yes please}",
        "mqtt.tls.insecure: expected true or false, got 'yes please'",
    ),
    (
        "tls a number",
        MQ % "tls: 5",
        "mqtt.tls: expected a mapping with ca, cert, key, insecure, or true/false, got 5",
    ),
    (
        "topic prefix wildcard",
        MQ % "topic_prefix: 'a/#'",
        "mqtt.topic_prefix: expected an MQTT topic prefix without +, # or a leading/trailing /, "
        "got 'a/#'",
    ),
    (
        "keepalive too short",
        MQ % "keepalive: 1",
        "mqtt.keepalive: expected an integer from 5 to 3600, got 1",
    ),
    ("host a number", "mqtt: {host: 5}", "mqtt.host: expected a non-empty string, got 5"),
    (
        "mqtt misspelt host",
        "mqtt: {hots: x}",
        "mqtt.hots: unknown key 'hots'; did you mean 'host'? expected one of host, port, "
        "username, password, password_file, tls, topic_prefix, client_id, keepalive, queue_size, "
        "discovery, discovery_prefix",
    ),
    # publishing, logging, top level
    (
        "top_k",
        "publishing: {top_k: 600}",
        "publishing.top_k: expected an integer from 1 to 527, got 600",
    ),
    (
        "rate 0",
        "publishing: {rate_hz: 0}",
        "publishing.rate_hz: expected a number above 0 and at most 50, got 0",
    ),
    (
        "scores quoted yes",
        "publishing: {scores: 'yes'}",
        "publishing.scores: expected true or false, got 'yes'",
    ),
    (
        "log level",
        "logging: {level: verbose}",
        "logging.level: expected one of debug, info, warning, error, got 'verbose'",
    ),
    (
        "unknown section",
        "colour: red",
        "colour: unknown key 'colour'; expected one of listener, model, sources, detection, mqtt, "
        "publishing, logging, web, clips",
    ),
    # secrets from the environment
    (
        "env var not set",
        "mqtt: {host: '${SAT_TEST_UNSET}'}",
        "mqtt.host: environment variable SAT_TEST_UNSET is not set",
    ),
    (
        "env var bad name",
        "mqtt: {host: '${1X}'}",
        "mqtt.host: expected ${NAME} with a variable name of letters, digits and _, got ${1X}",
    ),
    (
        "env var not a number",
        "mqtt: {host: h, port: '${SAT_TEST_WORD}'}",
        "mqtt.port: expected an integer from 1 to 65535, got 'abc'",
    ),
]


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAT_TEST_UNSET", raising=False)
    monkeypatch.setenv("SAT_TEST_WORD", "abc")


def test_corpus_is_large_and_distinct():
    assert len(CORPUS) >= 30
    assert len({text for _, text, _ in CORPUS}) == len(CORPUS)
    assert len({msg for _, _, msg in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize(("text", "message"), [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS])
def test_bad_config_message(text, message):
    with pytest.raises(ConfigError) as err:
        parse_config(yaml.safe_load(text))
    assert str(err.value) == message
    assert "\n" not in str(err.value)
    assert "hunter2" not in str(err.value)


@pytest.mark.parametrize(
    ("text", "message"), [c[1:] for c in CORPUS[:3]], ids=[c[0] for c in CORPUS[:3]]
)
def test_file_errors_name_the_file(tmp_path: Path, text, message):
    path = tmp_path / "config.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: {message}"


FILE_CORPUS = [
    (
        "yaml syntax",
        "mqtt: {host: [broker\n",
        "line 2, column 1: not valid YAML: expected ',' or ']', but got '<stream end>'",
    ),
    (
        "duplicate key",
        "detection:\n  events:\n    glass: {labels: [Glass], on_threshold: 0.5}\n"
        "    glass: {labels: [Shatter], on_threshold: 0.5}\n",
        "line 4, column 5: not valid YAML: key 'glass' appears twice in one mapping",
    ),
    (
        "top level a list",
        "- listener\n- model\n",
        "expected a mapping of sections (listener, model, sources, ...) at the top level, "
        "got [listener, model]",
    ),
    (
        "tab indentation",
        "listener:\n\tid: home\n",
        "line 2, column 1: not valid YAML: found character '\\t' that cannot start any token",
    ),
]


@pytest.mark.parametrize(
    ("text", "message"), [c[1:] for c in FILE_CORPUS], ids=[c[0] for c in FILE_CORPUS]
)
def test_bad_file(tmp_path: Path, text, message):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: {message}"


def test_missing_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(ConfigError, match=r"^/nonexistent/c\.yaml: no such configuration file$"):
        load_config(Path("/nonexistent/c.yaml"))
    monkeypatch.setenv("SAT_AUDIO_CONFIG", str(tmp_path / "gone.yaml"))
    with pytest.raises(ConfigError) as err:
        load_config(None)
    assert str(err.value) == (
        f"{tmp_path / 'gone.yaml'}: no such configuration file (from $SAT_AUDIO_CONFIG)"
    )


def test_empty_password_file(tmp_path: Path):
    secret = tmp_path / "pw"
    secret.write_text("\n")
    with pytest.raises(ConfigError) as err:
        parse_config({"mqtt": {"host": "h", "username": "u", "password_file": str(secret)}})
    assert str(err.value) == f"mqtt.password_file: '{secret}' is empty; expected the password in it"


def test_cli_config_check_error_is_one_line_exit_2(tmp_path: Path):
    """The real command: one line on stderr, exit code 2, no traceback, nothing on stdout."""
    path = tmp_path / "config.yaml"
    path.write_text("mqtt: {host: broker, port: 70000}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "sat_audio", "config", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=PATIENCE_S,
    )
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == (
        f"sat-audio: error: {path}: mqtt.port: expected an integer from 1 to 65535, got 70000\n"
    )


def test_error_never_shows_a_secret_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    monkeypatch.setenv("SAT_TEST_PW", "hunter2")
    path = tmp_path / "config.yaml"
    path.write_text("mqtt: {host: broker, password: '${SAT_TEST_PW}'}\n")
    assert main(["config", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == f"sat-audio: error: {path}: mqtt.username: missing; a password needs a username\n"


def _alias_bomb(levels: int, width: int = 9) -> str:
    """Billion laughs: each level lists the one before `width` times, width**levels strings."""
    lines = ["x-lol0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"x-lol{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def test_alias_expansion_is_bounded(tmp_path: Path):
    """9**7 strings from 63 aliases: refused as the file is read, not expanded."""
    path = tmp_path / "bomb.yaml"
    path.write_text(_alias_bomb(7))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == (
        f"{path}: line 6, column 9: refused: its aliases expand to more than 100000 values"
    )


def test_cli_refuses_a_billion_laughs_in_one_line(tmp_path: Path):
    """The full 9**9 bomb; the child's memory is capped, so a regression fails, not the machine."""
    path = tmp_path / "bomb.yaml"
    path.write_text(_alias_bomb(9))
    cap = 2 << 30
    proc = subprocess.run(
        [sys.executable, "-m", "sat_audio", "config", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=PATIENCE_S,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (cap, cap)),
    )
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == (
        f"sat-audio: error: {path}: line 6, column 9: refused: its aliases expand to more than "
        "100000 values\n"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sources: &s [*s]\n", "line 1, column 10: refused: an alias inside the value it names"),
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", "refused: nested too deeply"),
    ],
)
def test_recursive_and_deeply_nested_yaml_is_one_line(tmp_path: Path, text: str, message: str):
    path = tmp_path / "odd.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_anchors_and_merge_keys_still_work(tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_text(
        "detection:\n"
        "  events:\n"
        "    dog: &loud {labels: [Bark], on_threshold: 0.6, hold_s: 4}\n"
        "    cat: {<<: *loud, labels: [Meow]}\n"
    )
    dog, cat = load_config(path).detection.events
    assert (cat.labels, cat.on_threshold, cat.hold_s) == (("Meow",), 0.6, 4.0)
    assert dog.labels == ("Bark",)
