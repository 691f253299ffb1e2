"""Configuration: the shipped defaults, where the file comes from, secrets, `config check`."""

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sat_audio.cli import main
from sat_audio.config import (
    CONFIG_ENV,
    Config,
    MqttConfig,
    TlsConfig,
    default_config_text,
    load_config,
    parse_config,
    to_dict,
    to_yaml,
)
from sat_audio.labels import find
from tests.waiting import PATIENCE_S

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "config.yaml"
HOUSEHOLD = {
    "glass_breaking",
    "running_water",
    "smoke_alarm",
    "baby_crying",
    "dog_barking",
    "doorbell",
    "knocking",
    "screaming",
}


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory without config.yaml and no $SAT_AUDIO_CONFIG."""
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_shipped_config_has_the_household_events():
    config = load_config(SHIPPED)
    events = {ev.key: ev for ev in config.detection.events}
    assert set(events) == HOUSEHOLD
    for ev in events.values():
        assert ev.labels, ev.key
        assert all(find(name).name == name for name in ev.labels), ev.key  # canonical names
        assert 0 < ev.off_threshold < ev.on_threshold <= 1
    assert events["glass_breaking"].min_duration_s == 0  # a break is over in a second
    assert events["running_water"].min_duration_s >= 30  # a tap left on, not hand washing
    assert events["smoke_alarm"].cooldown_s == 0  # every alarm is reported
    assert events["smoke_alarm"].hold_s > 5  # bridges a CO alarm's pause between patterns
    # default source is the default microphone; no broker: events go to stdout
    assert config.sources == (dataclasses.replace(Config().sources[0], device=None),)
    assert config.sources[0].kind == "mic" and config.sources[0].device is None
    assert config.mqtt is None
    assert config.model.name == "SAT_T_2s"


def test_embedded_defaults_are_the_shipped_file(elsewhere: Path):
    assert default_config_text() == SHIPPED.read_text(encoding="utf-8")
    assert load_config(None) == load_config(SHIPPED)


def test_where_the_config_comes_from(elsewhere: Path, monkeypatch: pytest.MonkeyPatch):
    (elsewhere / "config.yaml").write_text("listener: {id: cwd}\n")
    env_file = elsewhere / "env.yaml"
    env_file.write_text("listener: {id: env}\n")
    given = elsewhere / "given.yaml"
    given.write_text("listener: {id: given}\n")
    assert load_config(None).listener.id == "cwd"
    monkeypatch.setenv(CONFIG_ENV, str(env_file))
    assert load_config(None).listener.id == "env"
    assert load_config(given).listener.id == "given"


def test_empty_file_and_empty_sections_are_defaults(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("# nothing yet\n")
    assert load_config(path) == Config()
    assert parse_config({"listener": None, "model": None, "publishing": None}) == Config()


def test_labels_any_case_or_mid_become_display_names():
    config = parse_config(
        {
            "detection": {
                "events": {
                    "water": {"labels": ["water TAP, faucet", "/m/0130jx"], "on_threshold": 0.4},
                    "bark": {"labels": "bark", "on_threshold": 0.4},
                }
            }
        }
    )
    water, bark = config.detection.events
    assert water.labels == ("Water tap, faucet", "Sink (filling or washing)")
    assert bark.labels == ("Bark",)


def test_event_defaults():
    (ev,) = parse_config(
        {"detection": {"events": {"glass_breaking": {"labels": ["Glass"], "on_threshold": 0.4}}}}
    ).detection.events
    assert ev.key == "glass_breaking" and ev.name == "Glass breaking"
    assert ev.off_threshold == pytest.approx(0.3)  # 0.75 x on
    assert (ev.combine, ev.min_duration_s, ev.hold_s, ev.cooldown_s) == ("max", 0.0, 2.0, 0.0)
    assert ev.smoothing is None and ev.min_level_dbfs is None
    (ev,) = parse_config(
        {
            "detection": {
                "events": {"g": {"labels": ["Glass"], "on_threshold": 1, "smoothing": "none"}}
            }
        }
    ).detection.events
    assert ev.smoothing is None and isinstance(ev.on_threshold, float)


def test_mqtt_variants(tmp_path: Path):
    assert parse_config({"mqtt": {"host": None, "port": 1884}}).mqtt is None
    assert parse_config({"mqtt": None}).mqtt is None
    assert parse_config({"mqtt": {"host": "b"}}).mqtt == MqttConfig(host="b")
    tls = parse_config({"mqtt": {"host": "b", "tls": True}}).mqtt
    assert tls is not None and (tls.port, tls.tls) == (8883, TlsConfig())
    explicit = parse_config({"mqtt": {"host": "b", "port": 1, "tls": {"ca": "ca.crt"}}}).mqtt
    assert explicit is not None and explicit.port == 1 and explicit.tls == TlsConfig(ca="ca.crt")
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    from_file = parse_config({"mqtt": {"host": "b", "username": "u", "password_file": str(secret)}})
    assert from_file.mqtt is not None and from_file.mqtt.password == "s3cret"
    numeric = parse_config({"mqtt": {"host": "b", "username": "u", "password": 1234}}).mqtt
    assert numeric is not None and numeric.password == "1234"


def test_environment_variables(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SAT_T_HOST", "broker.lan")
    monkeypatch.setenv("SAT_T_PORT", "1884")
    monkeypatch.setenv("SAT_T_TLS_INSECURE", "True")
    monkeypatch.setenv("SAT_T_PW", "0123")  # stays text: no YAML octal, no int
    monkeypatch.setenv("SAT_T_DEVICE", "2")
    config = parse_config(
        {
            "listener": {"name": "Kitchen ($${NOT_EXPANDED})"},
            "sources": [
                {"kind": "mic", "device": "${SAT_T_DEVICE}"},
                {"name": "cam", "kind": "ffmpeg", "url": "rtsp://admin:${SAT_T_PW}@cam/1"},
            ],
            "mqtt": {
                "host": "${SAT_T_HOST}",
                "port": "${SAT_T_PORT}",
                "username": "u",
                "password": "${SAT_T_PW}",
                "tls": {"insecure": "${SAT_T_TLS_INSECURE}"},
            },
        }
    )
    assert config.listener.name == "Kitchen (${NOT_EXPANDED})"
    assert config.sources[0].device == 2
    assert config.sources[1].url == "rtsp://admin:0123@cam/1"
    assert config.mqtt == MqttConfig(
        host="broker.lan", port=1884, username="u", password="0123", tls=TlsConfig(insecure=True)
    )
    assert type(config.mqtt.password) is str and type(config.mqtt.host) is str


def test_config_is_frozen():
    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.listener = None  # type: ignore[misc]


def test_effective_yaml_reads_back_as_the_same_config():
    config = load_config(SHIPPED)
    assert parse_config(yaml.safe_load(to_yaml(config))) == config
    sources = parse_config(
        {
            "sources": [
                {"kind": "mic", "device": "USB", "samplerate": 48000},
                {"kind": "file", "path": "a.wav", "loop": True},
                {"kind": "ffmpeg", "url": "rtsp://cam/1", "input_args": ["-rtsp_transport", "tcp"]},
                {"kind": "stdin", "format": "f32le", "rate": 48000, "channels": 2},
            ]
        }
    )
    assert parse_config(yaml.safe_load(to_yaml(sources))) == sources


def test_config_check_prints_effective_config_with_secrets_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    monkeypatch.setenv("SAT_T_PW", "hunter2")
    path = tmp_path / "config.yaml"
    path.write_text(
        SHIPPED.read_text(encoding="utf-8").replace(
            "mqtt:\n  host: null\n",
            "mqtt:\n  host: broker\n  username: sat\n  password: ${SAT_T_PW}\n",
        )
        + "\n"
    )
    path.write_text(
        path.read_text().replace(
            "  - name: mic\n    kind: mic\n    device: null\n",
            "  - {name: cam, kind: ffmpeg, url: 'rtsp://admin:hunter2@cam/1'}\n",
        )
    )
    assert main(["config", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# effective configuration from {path} (secrets masked)\n")
    assert "hunter2" not in out
    shown = yaml.safe_load(out)
    assert shown["mqtt"]["password"] == "***" and shown["mqtt"]["username"] == "sat"
    assert shown["sources"][0]["url"] == "rtsp://admin:***@cam/1"
    assert shown["mqtt"]["port"] == 1883 and shown["mqtt"]["tls"] is None
    assert set(shown["detection"]["events"]) == HOUSEHOLD
    assert shown["detection"]["events"]["doorbell"]["labels"] == ["Doorbell", "Ding-dong"]


def test_config_check_without_a_path_uses_the_embedded_defaults(elsewhere: Path):
    """The installed command, from a folder with no config.yaml."""
    env = {k: v for k, v in os.environ.items() if k != CONFIG_ENV}
    proc = subprocess.run(
        [sys.executable, "-m", "sat_audio", "config", "check"],
        capture_output=True,
        text=True,
        timeout=PATIENCE_S,
        env=env,
        cwd=elsewhere,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("# effective configuration from the embedded defaults")
    assert parse_config(yaml.safe_load(proc.stdout)) == load_config(SHIPPED)


def test_to_dict_masks_secrets_and_keeps_every_source_field():
    config = parse_config(
        {
            "sources": [{"kind": "ffmpeg", "url": "rtsp://admin:pw@cam/1"}],
            "mqtt": {"host": "b", "username": "u", "password": "pw"},
        }
    )
    data = to_dict(config)
    assert data["sources"][0]["url"] == "rtsp://admin:***@cam/1"
    assert data["sources"][0]["device"] is None  # every field, whatever the kind
    assert data["mqtt"]["password"] == "***"
    assert to_dict(config, mask=False)["mqtt"]["password"] == "pw"
    assert config.mqtt is not None and config.mqtt.password == "pw"  # the config is untouched


def test_wheel_ships_the_defaults(tmp_path: Path):
    """An installed (non-editable) package finds config.yaml inside itself."""
    import shutil
    import zipfile

    tree = tmp_path / "src"
    tree.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pt", "*.part")
    for name in ("sat_audio", "models"):
        shutil.copytree(ROOT / name, tree / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "config.yaml"):
        shutil.copy(ROOT / name, tree / name)
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"),
            *("-q", "-w", str(tmp_path / "dist"), str(tree)),
        ],
        capture_output=True,
        text=True,
        timeout=PATIENCE_S,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        shipped = zf.read("sat_audio/defaults/config.yaml").decode()
    assert shipped == SHIPPED.read_text(encoding="utf-8")


def test_every_mqtt_option_is_explained_in_the_shipped_config():
    """config.yaml is where the options are documented: each mqtt and mqtt.tls key has a line."""
    text = default_config_text()
    section = text[text.index("\nmqtt:") : text.index("\npublishing:")]
    keys = [f.name for f in dataclasses.fields(MqttConfig)] + ["password_file"]
    keys += [f.name for f in dataclasses.fields(TlsConfig)]
    missing = [k for k in keys if not re.search(rf"^\s*(# )?\s*{k}:", section, re.MULTILINE)]
    assert missing == []
    assert re.search(r"^\s*#\s+insecure: false\s+# .*host name", section, re.MULTILINE)
