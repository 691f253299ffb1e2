"""`sat-audio run` end to end: a real subprocess, real file sources, a real mosquitto.

The checkpoint's head always says "Bark"; a -40 dBFS volume gate makes the event follow the loud
parts of the generated wav, so every episode's place in the stream is known in advance.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from sat_audio.labels import find
from tests.broker import Broker, Certs, Subscriber
from tests.checkpoints import fire_label, random_model, save_upstream, upstream_name
from tests.waiting import PATIENCE_S, wait_until

pytestmark = pytest.mark.slow

RATE = 16000
ID = "e2e"
BASE = f"sat_audio/{ID}"
EVENT = f"{BASE}/event/dog"
STATE = f"{BASE}/event/dog/state"


@pytest.fixture(scope="module")
def bark_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = fire_label(random_model("SAT_T_2s", seed=2), find("Bark").index)
    folder = tmp_path_factory.mktemp("bark")
    return save_upstream(model, folder / upstream_name("SAT_T_2s"))


def make_wav(path: Path, pattern: str, seconds_per_char: float = 1.0) -> Path:
    """'_' = silence, 'X' = a loud tone (about -13 dBFS), one character per chunk."""
    n = round(seconds_per_char * RATE)
    t = np.arange(n) / RATE
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    quiet = np.zeros(n, np.float32)
    sf.write(path, np.concatenate([tone if c == "X" else quiet for c in pattern]), RATE)
    return path


def write_config(
    tmp_path: Path,
    checkpoint: Path,
    sources: list[dict],
    mqtt: dict | None = None,
    **extra: dict,
) -> Path:
    config = {
        "listener": {"id": ID, "name": "End to end"},
        "model": {"name": str(checkpoint), "chunk_seconds": 1.0},
        "sources": sources,
        "detection": {
            "min_level_dbfs": -40,
            "events": {
                "dog": {"labels": ["Bark"], "on_threshold": 0.5, "off_threshold": 0.3, "hold_s": 0}
            },
        },
        "mqtt": mqtt or {"host": None},
        **extra,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def file_source(path: Path, *, realtime: bool, loop: bool = False, name: str = "mic") -> dict:
    return {"name": name, "kind": "file", "path": str(path), "realtime": realtime, "loop": loop}


class Run:
    """`python -m sat_audio run` as a subprocess, output kept in files."""

    def __init__(
        self, tmp_path: Path, config: Path, env: dict | None = None, stdin: Path | None = None
    ) -> None:
        self.out = tmp_path / "stdout.txt"
        self.err = tmp_path / "stderr.txt"
        with (
            self.out.open("wb") as out,
            self.err.open("wb") as err,
            (stdin or Path(os.devnull)).open("rb") as given,
        ):
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "sat_audio",
                    "run",
                    "-c",
                    str(config),
                    "--log-level",
                    "debug",
                ],
                stdin=given,
                stdout=out,
                stderr=err,
                env={**os.environ, **(env or {})},
            )

    def wait(self) -> int:
        try:
            return self.proc.wait(PATIENCE_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"listener never exited:\n{self.stderr()}") from None

    def wait_stderr(self, text: str) -> None:
        """Until the running listener has logged text."""
        wait_until(
            lambda: text in self.stderr() or self.proc.poll() is not None,
            lambda: f"{text!r} in the log:\n{self.stderr()}",
            poll_s=0.1,
        )
        assert text in self.stderr(), f"listener exited first:\n{self.stderr()}"

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def stdout(self) -> str:
        return self.out.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def looping_listener(
    tmp_path: Path, broker: Broker, checkpoint: Path, pattern: str, topic: str = f"{BASE}/#"
) -> tuple[Subscriber, Run]:
    """A subscriber to topic, then a listener on a live, looping recording of pattern."""
    wav = make_wav(tmp_path / "live.wav", pattern)
    config = write_config(
        tmp_path, checkpoint, [file_source(wav, realtime=True, loop=True)], mqtt_section(broker)
    )
    return Subscriber(broker, (topic,)).start(), Run(tmp_path, config)


def mqtt_section(broker: Broker, **kw) -> dict:
    return {"host": broker.host, "port": broker.port, **kw}


def episodes(sub: Subscriber) -> dict[str, dict[str, dict]]:
    """Transitions by id and type (a redelivered duplicate collapses)."""
    found: dict[str, dict[str, dict]] = {}
    for m in sub.on(EVENT):
        p = m.json()
        found.setdefault(p["id"], {})[p["type"]] = p
    return found


def completed(sub: Subscriber) -> int:
    return sum(1 for e in episodes(sub).values() if {"start", "end"} <= e.keys())


def test_run_publishes_status_info_states_and_transitions(
    tmp_path: Path, broker: Broker, bark_checkpoint: Path
) -> None:
    wav = make_wav(tmp_path / "two.wav", "__XX__XXX__")
    config = write_config(
        tmp_path, bark_checkpoint, [file_source(wav, realtime=False)], mqtt_section(broker)
    )
    sub = Subscriber(broker, (f"{BASE}/#",)).start()
    run = Run(tmp_path, config)
    try:
        assert run.wait() == 0, run.stderr()
    finally:
        run.stop()
    sub.wait_text(f"{BASE}/status", "offline")
    eps = list(episodes(sub).values())
    assert len(eps) == 2, sub.on(EVENT)
    for ep, (start, end) in zip(eps, [(2.0, 4.0), (6.0, 9.0)], strict=True):
        s, e = ep["start"], ep["end"]
        assert s["id"] == e["id"] and len(s["id"]) == 32
        assert (s["v"], s["event"], s["source"], s["label"]) == (2, "dog", "mic", "Bark")
        assert e["reason"] == "quiet" and s["clip"] is None
        assert s["end"] is None and e["end"] is not None
        assert s["score"] > 0.99 and e["peak"] > 0.99
        assert e["duration_s"] == pytest.approx(end - start)
    assert [m.text for m in sub.on(STATE)] == ["OFF", "ON", "OFF", "ON", "OFF"]
    assert [m.text for m in sub.on(f"{BASE}/status")] == ["online", "offline"]

    # What a late subscriber (Home Assistant starting up) finds retained.
    late = Subscriber(broker, (f"{BASE}/#",), client_id="late").start()
    late.wait_text(f"{BASE}/status", "offline")
    late.wait_text(STATE, "OFF")
    late.wait_text(f"{BASE}/listening", "ON")
    info = late.wait_for(lambda: late.last(f"{BASE}/info"), "info").json()
    assert info["v"] == 2 and info["id"] == ID and info["name"] == "End to end"
    assert info["model"] == "SAT_T_2s" and info["chunk_s"] == 1.0 and info["listening"] is True
    assert info["events"] == [
        {"key": "dog", "name": "Dog", "source": "mic", "kind": "sound", "labels": ["Bark"],
         "on_threshold": 0.5, "off_threshold": 0.3, "enabled": True, "clip": False}
    ]  # fmt: skip
    assert info["clips"] is None
    assert info["sources"][0]["name"] == "mic" and info["sources"][0]["kind"] == "file"
    assert set(info["counters"]) >= {"chunks", "mqtt_dropped", "mqtt_queued"}
    assert all(m.retain for m in late.messages)
    late.stop()
    sub.stop()


def test_no_broker_prints_json_lines_with_source_prefixed_keys(
    tmp_path: Path, bark_checkpoint: Path
) -> None:
    a = make_wav(tmp_path / "a.wav", "_XX__")
    b = make_wav(tmp_path / "b.wav", "___X_")
    config = write_config(
        tmp_path,
        bark_checkpoint,
        [file_source(a, realtime=False, name="a"), file_source(b, realtime=False, name="b")],
    )
    run = Run(tmp_path, config)
    assert run.wait() == 0, run.stderr()
    lines = [json.loads(line) for line in run.stdout().splitlines()]
    got = sorted((p["event"], p["source"], p["type"], p["duration_s"]) for p in lines)
    assert got == [
        ("a_dog", "a", "end", 2.0),
        ("a_dog", "a", "start", 0.0),
        ("b_dog", "b", "end", 1.0),
        ("b_dog", "b", "start", 0.0),
    ]
    assert "listener: model SAT_T_2s on onnx, 1.00 s chunks; sources a (file)" in run.stderr()
    assert "publishing to stdout (no broker configured)" in run.stderr()
    # the per-chunk timing bench_listener.py --chunk-times reads: every chunk, once
    scored = re.findall(r"scored (\d+) chunk\(s\) in ([0-9.]+) ms", run.stderr())
    assert sum(int(n) for n, _ in scored) == 10
    assert all(float(ms) > 0 for _, ms in scored)


def test_broker_down_at_start_then_delivered(tmp_path: Path, bark_checkpoint: Path) -> None:
    broker = Broker(tmp_path / "b", persistence=True)
    broker.start()
    sub = Subscriber(broker, (f"{BASE}/#",), persistent=True).start()
    broker.stop()
    wav = make_wav(tmp_path / "w.wav", "_X_X_XX__")
    config = write_config(
        tmp_path, bark_checkpoint, [file_source(wav, realtime=True)], mqtt_section(broker)
    )
    run = Run(tmp_path, config)
    try:
        # Let the listener start and detect with nobody to tell, then bring the broker up.
        run.wait_stderr("dog start")
        assert "cannot connect to the MQTT broker" in run.stderr()
        broker.start()
        assert run.wait() == 0, run.stderr()
        sub.wait_for(lambda: completed(sub) == 3, "3 episodes")
        sub.wait_text(f"{BASE}/status", "offline")
        sub.wait_text(STATE, "OFF")
        assert "delivering" in run.stderr()
    finally:
        run.stop()
        sub.stop()
        broker.stop()


def test_broker_killed_and_restarted_five_times_loses_no_transition(
    tmp_path: Path, bark_checkpoint: Path
) -> None:
    broker = Broker(tmp_path / "b", persistence=True)
    broker.start()
    sub = Subscriber(broker, (f"{BASE}/#",), persistent=True).start()
    pattern = "_X" * 14 + "__"
    wav = make_wav(tmp_path / "w.wav", pattern)
    config = write_config(
        tmp_path, bark_checkpoint, [file_source(wav, realtime=True)], mqtt_section(broker)
    )
    run = Run(tmp_path, config)
    try:
        sub.wait_text(f"{BASE}/status", "online")
        for _ in range(5):
            time.sleep(2.5)
            broker.stop(kill=True)
            time.sleep(1.0)
            broker.start()
        assert run.wait() == 0, run.stderr()
        sub.wait_for(lambda: completed(sub) == 14, "14 episodes")
        sub.wait_text(f"{BASE}/status", "offline")
    finally:
        run.stop()
        sub.stop()
        broker.stop()
    ids = [m.json()["id"] for m in sub.on(EVENT)]
    seen = Counter((m.json()["id"], m.json()["type"]) for m in sub.on(EVENT))
    assert len(set(ids)) == 14 and len(seen) == 28  # every start and end, maybe some twice
    err = run.stderr()
    assert err.count("lost the MQTT broker") >= 5
    assert "dropped" not in err
    assert "delivering" in err  # some transitions did wait in the queue for a reconnect
    print(f"{len(ids)} transitions received for 28 sent ({len(ids) - 28} redelivered)")


def test_password_file_and_tls_and_no_secret_in_logs(
    tmp_path: Path, bark_checkpoint: Path, mqtt_certs: Certs
) -> None:
    secret = "Sup3r-secret-9931"
    broker = Broker(tmp_path / "b", users={"listener": secret}, certs=mqtt_certs)
    broker.start()
    pw = tmp_path / "mqtt_password"
    pw.write_text(secret + "\n")
    wav = make_wav(tmp_path / "w.wav", "_X_")
    mqtt = mqtt_section(
        broker,
        username="listener",
        password_file=str(pw),
        tls={"ca": str(mqtt_certs.ca)},
    )
    config = write_config(tmp_path, bark_checkpoint, [file_source(wav, realtime=False)], mqtt)
    sub = Subscriber(
        broker, (f"{BASE}/#",), username="listener", password=secret, certs=mqtt_certs
    ).start()
    run = Run(tmp_path, config)
    try:
        assert run.wait() == 0, run.stderr()
        sub.wait_for(lambda: completed(sub) == 1, "1 episode")
        sub.wait_text(f"{BASE}/status", "offline")
    finally:
        run.stop()
        sub.stop()
        broker.stop()
    err = run.stderr()
    assert "DEBUG" in err and "connected to the MQTT broker" in err
    assert secret not in err and secret not in run.stdout()


def test_password_never_logged_when_refused(tmp_path: Path, bark_checkpoint: Path) -> None:
    secret = "wr0ng-but-still-secret"
    broker = Broker(tmp_path / "b", users={"listener": "right"})
    broker.start()
    wav = make_wav(tmp_path / "w.wav", "X" * 30)
    mqtt = mqtt_section(broker, username="listener", password="${MQTT_PW}")
    config = write_config(tmp_path, bark_checkpoint, [file_source(wav, realtime=True)], mqtt)
    run = Run(tmp_path, config, env={"MQTT_PW": secret})
    try:
        run.wait_stderr("refused the connection")
        run.signal(signal.SIGTERM)
        assert run.wait() == 0
    finally:
        run.stop()
        broker.stop()
    assert "Not authorized" in run.stderr()
    assert secret not in run.stderr()


def test_privacy_switch_pauses_analysis_and_is_retained(
    tmp_path: Path, broker: Broker, bark_checkpoint: Path
) -> None:
    sub, run = looping_listener(tmp_path, broker, bark_checkpoint, "XXXX")
    try:
        sub.wait_text(STATE, "ON")
        sub.client.publish(f"{BASE}/listening/set", "off", qos=1)
        sub.wait_text(f"{BASE}/listening", "OFF")
        sub.wait_text(STATE, "OFF")
        first = episodes(sub)
        assert len(first) == 1 and "end" in next(iter(first.values()))
        info = sub.wait_for(
            lambda: (i := sub.last(f"{BASE}/info")) and not i.json()["listening"] and i
        )
        assert info.json()["listening"] is False
        n = len(sub.messages)
        time.sleep(3.0)  # loud audio keeps coming: nothing may be analysed or published
        assert sub.messages[n:] == []
        sub.client.publish(f"{BASE}/listening/set", "ON", qos=1)
        sub.wait_text(f"{BASE}/listening", "ON")
        sub.wait_for(lambda: len(episodes(sub)) == 2, "a new episode after resuming")
        run.signal(signal.SIGTERM)
        assert run.wait() == 0, run.stderr()
    finally:
        run.stop()
    assert "listening paused" in run.stderr()
    # The switch state stays on the broker for the next start.
    late = Subscriber(broker, (f"{BASE}/listening",), client_id="late").start()
    late.wait_text(f"{BASE}/listening", "ON")
    late.stop()
    sub.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_ends_open_events_goes_offline_and_exits_zero(
    tmp_path: Path, broker: Broker, bark_checkpoint: Path, sig: signal.Signals
) -> None:
    sub, run = looping_listener(tmp_path, broker, bark_checkpoint, "XXXX")
    try:
        sub.wait_text(STATE, "ON")
        run.signal(sig)
        assert run.wait() == 0, run.stderr()
    finally:
        run.stop()
    (ep,) = episodes(sub).values()
    assert ep["end"]["id"] == ep["start"]["id"]
    assert sub.last(STATE).text == "OFF"
    assert sub.last(f"{BASE}/status").text == "offline"
    err = run.stderr()
    assert f"{sig.name} received" in err and "stopped cleanly" in err and "Traceback" not in err


def test_bad_input_is_one_error_line_and_exit_2(tmp_path: Path, bark_checkpoint: Path) -> None:
    missing = tmp_path / "missing.wav"
    config = write_config(tmp_path, bark_checkpoint, [file_source(missing, realtime=False)])
    run = Run(tmp_path, config)
    assert run.wait() == 2
    last = run.stderr().strip().splitlines()[-1]
    assert last == f"sat-audio: error: source mic: {missing}: no such file"
    assert run.stdout() == ""


def test_crash_leaves_offline_to_the_last_will(
    tmp_path: Path, broker: Broker, bark_checkpoint: Path
) -> None:
    sub, run = looping_listener(tmp_path, broker, bark_checkpoint, "____", f"{BASE}/status")
    try:
        sub.wait_text(f"{BASE}/status", "online")
        run.signal(signal.SIGKILL)
        run.wait()
        sub.wait_text(f"{BASE}/status", "offline")
    finally:
        run.stop()
        sub.stop()


def test_discovery_configs_follow_the_setting(
    tmp_path: Path, broker: Broker, bark_checkpoint: Path
) -> None:
    wav = make_wav(tmp_path / "w.wav", "_X_")
    node = f"sat_audio_{ID}"
    sub = Subscriber(broker, ("homeassistant/#",)).start()
    for discovery in (True, False):
        config = write_config(
            tmp_path,
            bark_checkpoint,
            [file_source(wav, realtime=True)],
            mqtt_section(broker, discovery=discovery),
        )
        run = Run(tmp_path, config)
        assert run.wait() == 0, run.stderr()
    topics = {
        f"homeassistant/binary_sensor/{node}/dog/config",
        f"homeassistant/sensor/{node}/level_mic/config",
        f"homeassistant/switch/{node}/listening/config",
        f"homeassistant/switch/{node}/dog-enabled/config",
        f"homeassistant/binary_sensor/{node}/any-sound/config",
    }
    sub.wait_for(lambda: all(sub.on(t) and sub.last(t).payload == b"" for t in topics))
    assert {m.topic for m in sub.messages} == topics
    sensor = next(m.json() for m in sub.on(f"homeassistant/binary_sensor/{node}/dog/config"))
    assert sensor["state_topic"] == STATE and sensor["availability_topic"] == f"{BASE}/status"
    sub.stop()


def test_scores_and_level_are_rate_limited(
    tmp_path: Path, broker: Broker, bark_checkpoint: Path
) -> None:
    wav = make_wav(tmp_path / "w.wav", "XXXXXXXX")
    config = write_config(
        tmp_path,
        bark_checkpoint,
        [file_source(wav, realtime=False)],
        mqtt_section(broker),
        publishing={"scores": True, "top_k": 2, "rate_hz": 0.2},
    )
    sub = Subscriber(broker, (f"{BASE}/#",)).start()
    run = Run(tmp_path, config)
    assert run.wait() == 0, run.stderr()
    sub.wait_text(f"{BASE}/status", "offline")
    # Eight chunks analysed within well under 5 s: one scores and one level message.
    (scores,) = sub.on(f"{BASE}/scores")
    (level,) = sub.on(f"{BASE}/level/mic")
    p = scores.json()
    assert (p["v"], p["source"], len(p["top"])) == (2, "mic", 2)
    assert p["top"][0]["label"] == "Bark" and p["top"][0]["score"] > 0.99
    assert float(level.text) == pytest.approx(p["level_dbfs"], abs=0.05)
    assert -14 < p["level_dbfs"] < -12  # a 0.3 sine is -13.5 dBFS
    sub.stop()


def test_a_restart_keeps_listening_off(
    tmp_path: Path, broker: Broker, bark_checkpoint: Path
) -> None:
    wav = make_wav(tmp_path / "loud.wav", "XXXX")
    config = write_config(
        tmp_path, bark_checkpoint, [file_source(wav, realtime=True)], mqtt_section(broker)
    )
    sub = Subscriber(broker, (f"{BASE}/#",)).start()
    # What a listener that was switched off before leaves on the broker.
    sub.client.publish(f"{BASE}/listening", "OFF", qos=1, retain=True).wait_for_publish(5)
    run = Run(tmp_path, config)
    try:
        assert run.wait() == 0, run.stderr()
    finally:
        run.stop()
    assert "staying paused" in run.stderr()
    assert sub.on(EVENT) == []  # four loud seconds, none analysed
    assert sub.last(f"{BASE}/listening").text == "OFF"
    assert sub.last(f"{BASE}/info").json()["listening"] is False
    sub.stop()


def _strict_json(line: str) -> dict:
    """json.loads that refuses NaN and Infinity, as Home Assistant's parser does."""

    def refuse(word: str) -> None:
        raise ValueError(f"{word} in {line}")

    return json.loads(line, parse_constant=refuse)


def test_nan_samples_on_stdin_neither_stick_an_event_nor_reach_the_json(
    tmp_path: Path, bark_checkpoint: Path
) -> None:
    """Ten NaN samples inside a loud second: both loud parts are episodes of their own length,
    and every line written is valid JSON."""
    t = np.arange(RATE) / RATE
    loud = (0.3 * np.sin(2 * np.pi * 440 * t)).astype("<f4")
    quiet = np.zeros(RATE, "<f4")
    audio = np.concatenate([loud, loud, quiet, quiet, quiet, loud, loud, quiet, quiet])
    audio[RATE + 8000 : RATE + 8010] = np.nan
    raw = tmp_path / "in.f32"
    raw.write_bytes(audio.tobytes())
    config = write_config(
        tmp_path,
        bark_checkpoint,
        [{"name": "in", "kind": "stdin", "format": "f32le"}],
        publishing={"scores": True, "rate_hz": 50},
    )
    run = Run(tmp_path, config, stdin=raw)
    assert run.wait() == 0, run.stderr()
    lines = [_strict_json(line) for line in run.stdout().splitlines()]
    moves = [(p["type"], p["duration_s"]) for p in lines if "type" in p]
    assert moves == [("start", 0.0), ("end", 2.0), ("start", 0.0), ("end", 2.0)]
    assert all(p["score"] > 0.99 for p in lines if "type" in p)
    assert "stream in: 10 samples were not numbers (NaN or infinite)" in run.stderr()


def test_a_flood_of_switch_commands_is_coalesced(
    tmp_path: Path, broker: Broker, bark_checkpoint: Path
) -> None:
    """1000 ON/OFF commands as fast as a client can send them: the last one wins, and info is
    re-published at most every few seconds, not once per command. (All QoS 1, since MQTT keeps
    the order only within one QoS, and fewer than the 1000 a broker queues for a client by
    default, so that none is dropped there.)"""
    sub, run = looping_listener(tmp_path, broker, bark_checkpoint, "____")
    try:
        sub.wait_for(lambda: sub.on(f"{BASE}/info"), "the first info")
        before = len(sub.on(f"{BASE}/info"))
        flood = Subscriber(broker, ("flood/none",), client_id="flood").start()
        started = time.monotonic()
        for n in range(1000):
            flood.client.publish(f"{BASE}/listening/set", "ON" if n % 2 else "OFF", qos=1)
        flood.client.publish(f"{BASE}/listening/set", "OFF", qos=1).wait_for_publish(PATIENCE_S)
        sent_s = time.monotonic() - started
        sub.wait_text(f"{BASE}/listening", "OFF")
        sub.wait_for(lambda: sub.last(f"{BASE}/info").json()["listening"] is False, "info: OFF")
        elapsed = time.monotonic() - started
        infos = len(sub.on(f"{BASE}/info")) - before
        flood.stop()
    finally:
        run.signal(signal.SIGTERM)
        run.wait()
        sub.stop()
    from sat_audio.listener import INFO_MIN_INTERVAL_S

    # one info when the flood began, then at most one per interval until the last state
    assert 1 <= infos <= 2 + elapsed / INFO_MIN_INTERVAL_S, (infos, sent_s, elapsed)
    assert sub.last(f"{BASE}/listening").text == "OFF"


def test_a_corrupt_flac_is_one_line_and_a_failing_exit(
    tmp_path: Path, bark_checkpoint: Path
) -> None:
    """Every source failed: exit non-zero (the add-on's watchdog restarts it), no traceback."""
    path = tmp_path / "broken.flac"
    t = np.arange(10 * RATE) / RATE
    rng = np.random.default_rng(1)
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), RATE)
    data = bytearray(path.read_bytes())
    data[4000:] = rng.integers(0, 256, len(data) - 4000, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    config = write_config(tmp_path, bark_checkpoint, [file_source(path, realtime=False)])
    run = Run(tmp_path, config)
    code = run.wait()
    err = run.stderr()
    assert code == 1, err
    assert "Traceback" not in err
    (failed,) = [line for line in err.splitlines() if "source mic: failed" in line]
    assert "ERROR" in failed
    assert f"{path}: cannot be decoded (Error : flac decoder lost sync.)" in failed
    assert "every source has failed; exiting with code 1" in err


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_a_renamed_checkpoint_runs_with_model_variant(
    tmp_path: Path, bark_checkpoint: Path, backend: str
) -> None:
    """A checkpoint kept under a name of the user's: model.variant says its architecture; without
    it, one line naming model.variant."""
    renamed = tmp_path / "models" / "dog-detector.pt"
    renamed.parent.mkdir()
    renamed.write_bytes(bark_checkpoint.read_bytes())
    wav = make_wav(tmp_path / "a.wav", "_XX__")
    config = write_config(tmp_path, renamed, [file_source(wav, realtime=False, name="a")])
    data = yaml.safe_load(config.read_text())

    data["model"] |= {"backend": backend}
    config.write_text(yaml.safe_dump(data))
    run = Run(tmp_path, config)
    assert run.wait() == 2
    assert run.stderr().strip().splitlines()[-1] == (
        "sat-audio: error: cannot tell the architecture of dog-detector.pt from its file name; "
        "set model.variant (or --variant) to one of SAT_T_2s, SAT_T_1s, SAT_S_2s, SAT_S_1s, "
        "SAT_B_2s, SAT_B_1s, audiotransformer_tiny, audiotransformer_small, audiotransformer_base"
    )
    assert run.stdout() == ""

    data["model"] |= {"variant": "SAT_T_2s"}
    config.write_text(yaml.safe_dump(data))
    run = Run(tmp_path, config)
    assert run.wait() == 0, run.stderr()
    lines = [json.loads(line) for line in run.stdout().splitlines()]
    got = sorted((p["event"], p["type"], p["duration_s"]) for p in lines)
    assert got == [("dog", "end", 2.0), ("dog", "start", 0.0)]
    assert f"listener: model SAT_T_2s on {backend}, 1.00 s chunks" in run.stderr()
