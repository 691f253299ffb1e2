"""Issue 42 end to end: a real `sat-audio run`, real file sources and a real mosquitto.

Loud events, per-event switches (a retained command topic), the any-sound topic `active`, and
opt-in clips checked sample for sample against the input. The checkpoint's head always says
"Bark" and a -40 dBFS gate makes the sound event "dog" follow the loud parts, like the loud event
"bang" (level alone) does.
"""

import json
import re
import signal
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from sat_audio.labels import find
from sat_audio.publish.protocol import CLIP_NAME
from tests.broker import Broker, Subscriber
from tests.checkpoints import fire_label, random_model, save_upstream, upstream_name
from tests.test_listener import Run
from tests.waiting import PATIENCE_S

pytestmark = pytest.mark.slow

RATE = 16000
ID = "e42"
BASE = f"sat_audio/{ID}"
DOG = {"labels": ["Bark"], "on_threshold": 0.5, "off_threshold": 0.3, "hold_s": 0}
BANG = {"kind": "loud", "on_dbfs": -20, "hold_s": 0}


@pytest.fixture(scope="module")
def bark_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = fire_label(random_model("SAT_T_2s", seed=2), find("Bark").index)
    return save_upstream(model, tmp_path_factory.mktemp("bark") / upstream_name("SAT_T_2s"))


def make_wav(path: Path, pattern: str, seed: int = 0) -> np.ndarray:
    """'_' = a second of faint noise (-55 dBFS), 'X' = loud noise (-13.5 dBFS), '.' = a tenth
    of a second of loud noise; 16-bit, so the samples a clip holds can be compared exactly."""
    rng = np.random.default_rng(seed)
    parts = []
    for c in pattern:
        n, peak = {"_": (RATE, 100), "X": (RATE, 12000), ".": (RATE // 10, 12000)}[c]
        parts.append(rng.integers(-peak, peak + 1, n, dtype=np.int16))
    audio = np.concatenate(parts)
    sf.write(path, audio, RATE, subtype="PCM_16")
    return audio


def write_config(
    tmp_path: Path,
    checkpoint: Path,
    wav: Path,
    events: dict,
    *,
    realtime: bool = True,
    loop: bool = False,
    **extra: object,
) -> Path:
    """A live (or not) file source and the events in the order given."""
    source = {"name": "mic", "kind": "file", "path": str(wav), "realtime": realtime, "loop": loop}
    config = {
        "listener": {"id": ID, "name": "Issue 42"},
        "model": {"name": str(checkpoint), "chunk_seconds": 1.0},
        "sources": [source],
        "detection": {"min_level_dbfs": -40, "events": events},
        "mqtt": {"host": None},
        **extra,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def mqtt(broker: Broker) -> dict:
    return {"host": broker.host, "port": broker.port}


def transitions(sub: Subscriber, key: str) -> list[dict]:
    return [m.json() for m in sub.on(f"{BASE}/event/{key}")]


def test_a_loud_burst_fires_the_loud_event_and_a_quiet_file_does_not(
    tmp_path: Path, bark_checkpoint: Path
) -> None:
    for pattern, expected in (("__.__", 1), ("_____", 0)):
        wav = tmp_path / f"{expected}.wav"
        make_wav(wav, pattern)
        config = write_config(tmp_path, bark_checkpoint, wav, {"bang": BANG}, realtime=False)
        run = Run(tmp_path, config)
        assert run.wait() == 0, run.stderr()
        lines = [json.loads(line) for line in run.stdout().splitlines()]
        if not expected:
            assert lines == []
            continue
        start, end = lines
        assert (start["type"], start["event"], start["label"]) == ("start", "bang", None)
        assert start["v"] == 2 and start["score"] == pytest.approx(-13.5, abs=0.3)
        # a tenth of a second, shorter than the 1 s chunks the model scores
        assert end["duration_s"] == pytest.approx(0.1) and end["reason"] == "quiet"
        assert "bang start: level -13." in run.stderr()


def test_switches_retained_off_before_start_and_switched_off_mid_episode(
    tmp_path: Path, broker: Broker, bark_checkpoint: Path
) -> None:
    wav = tmp_path / "loop.wav"
    make_wav(wav, "__XXXX")
    config = write_config(
        tmp_path, bark_checkpoint, wav, {"dog": DOG, "bang": BANG}, loop=True, mqtt=mqtt(broker)
    )
    sub = Subscriber(broker, (f"{BASE}/#",)).start()
    # Home Assistant switched bang off before this listener started.
    command = sub.client.publish(f"{BASE}/event/bang/enabled/set", "OFF", qos=1, retain=True)
    command.wait_for_publish(PATIENCE_S)
    run = Run(tmp_path, config)
    try:
        sub.wait_text(f"{BASE}/event/dog/state", "ON")
        sub.wait_text(f"{BASE}/event/bang/enabled", "OFF")
        assert sub.last(f"{BASE}/event/dog/enabled").text == "ON"
        info = sub.wait_for(
            lambda: (i := sub.last(f"{BASE}/info")) and not i.json()["events"][1]["enabled"] and i
        ).json()
        assert [(e["key"], e["enabled"]) for e in info["events"]] == [("dog", 1), ("bang", 0)]
        # dog is on now: switch it off mid-episode
        sub.client.publish(f"{BASE}/event/dog/enabled/set", "off", qos=1, retain=True)
        sub.wait_text(f"{BASE}/event/dog/enabled", "OFF")
        sub.wait_text(f"{BASE}/event/dog/state", "OFF")
        (start, end) = transitions(sub, "dog")
        assert (end["type"], end["id"], end["reason"]) == ("end", start["id"], "disabled")
        # the loop keeps playing loud parts: bang switched on starts, dog stays off
        sub.client.publish(f"{BASE}/event/bang/enabled/set", "ON", qos=1, retain=True)
        sub.wait_text(f"{BASE}/event/bang/state", "ON")
        sub.wait_for(lambda: len(transitions(sub, "bang")) >= 3, "bang on, off and on again")
        run.signal(signal.SIGTERM)
        assert run.wait() == 0, run.stderr()
    finally:
        run.stop()
    assert len(transitions(sub, "dog")) == 2  # never started again while off
    assert transitions(sub, "bang")[-1]["reason"] == "stopped"
    assert "event dog switched off" in run.stderr()
    # the commands stay retained for the next start
    late = Subscriber(broker, (f"{BASE}/event/+/enabled/set",), client_id="late").start()
    late.wait_text(f"{BASE}/event/dog/enabled/set", "off")
    late.stop()
    sub.stop()


def test_active_follows_two_overlapping_events(
    tmp_path: Path, broker: Broker, bark_checkpoint: Path
) -> None:
    """bang starts with the first loud frame and ends with the last; dog follows 1 s chunks,
    scored as each one is complete: dog starts while bang is on and outlasts it."""
    wav = tmp_path / "w.wav"
    make_wav(wav, "__XXX___")
    config = write_config(
        tmp_path, bark_checkpoint, wav, {"dog": DOG, "bang": BANG}, mqtt=mqtt(broker)
    )
    sub = Subscriber(broker, (f"{BASE}/#",)).start()
    run = Run(tmp_path, config)
    try:
        assert run.wait() == 0, run.stderr()
    finally:
        run.stop()
    sub.wait_text(f"{BASE}/status", "offline")
    seen = [m.json() for m in sub.on(f"{BASE}/active")]
    assert all(p["v"] == 2 for p in seen)
    assert [p["events"] for p in seen] == [[], ["bang"], ["dog", "bang"], ["dog"], []]
    late = Subscriber(broker, (f"{BASE}/active",), client_id="late").start()
    assert late.wait_text(f"{BASE}/active", '{"v":2,"events":[]}').retain
    late.stop()
    sub.stop()


def test_a_clip_holds_the_episode_with_its_pre_and_post_roll(
    tmp_path: Path, broker: Broker, bark_checkpoint: Path
) -> None:
    wav = tmp_path / "w.wav"
    audio = make_wav(wav, "____X____")
    clips = tmp_path / "clips"
    config = write_config(
        tmp_path,
        bark_checkpoint,
        wav,
        {"bang": {**BANG, "clip": {"pre_s": 1.5, "post_s": 1}}},
        mqtt=mqtt(broker),
        clips={"dir": str(clips), "max_count": 5},
    )
    sub = Subscriber(broker, (f"{BASE}/#",)).start()
    run = Run(tmp_path, config)
    try:
        assert run.wait() == 0, run.stderr()
    finally:
        run.stop()
    sub.wait_text(f"{BASE}/status", "offline")
    start, end = transitions(sub, "bang")
    name = start["clip"]
    assert CLIP_NAME.match(name) and end["clip"] == name and name.startswith("bang-")
    assert start["id"][:8] in name and end["duration_s"] == pytest.approx(1.0)
    (path,) = clips.iterdir()
    assert path.name == name
    got, rate = sf.read(path, dtype="int16")
    assert rate == RATE
    # from 1.5 s before the start (4 s) to 1 s after the end (5 s), sample for sample
    assert np.array_equal(got, audio[round(2.5 * RATE) : 6 * RATE])
    (sent,) = sub.on(f"{BASE}/clip/{name}")
    assert sent.payload == path.read_bytes() and not sent.retain
    info = sub.last(f"{BASE}/info").json()
    assert info["clips"] == {
        "format": "flac", "publish": True, "max_count": 5, "max_age_days": 30.0,
        "max_total_mb": 200.0,
    }  # fmt: skip
    assert info["events"][0]["clip"] is True


@pytest.mark.parametrize("trouble", ["broker limit", "unwritable dir"])
def test_a_clip_that_cannot_go_out_is_one_line_and_loses_no_event(
    tmp_path: Path, bark_checkpoint: Path, trouble: str
) -> None:
    # room for every other message of the listener, not for a clip of 3 s of noise
    broker = Broker(tmp_path / "b", max_packet_size=8192 if trouble == "broker limit" else None)
    broker.start()
    wav = tmp_path / "w.wav"
    make_wav(wav, "__X_X__")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    folder = tmp_path / "clips" if trouble == "broker limit" else blocker / "clips"
    config = write_config(
        tmp_path,
        bark_checkpoint,
        wav,
        {"dog": DOG, "bang": {**BANG, "clip": {"pre_s": 1, "post_s": 0.5}}},
        mqtt=mqtt(broker),
        clips={"dir": str(folder)},
    )
    sub = Subscriber(broker, (f"{BASE}/#",)).start()
    run = Run(tmp_path, config)
    try:
        assert run.wait() == 0, run.stderr()
        sub.wait_text(f"{BASE}/status", "offline")
    finally:
        run.stop()
        sub.stop()
        broker.stop()
    err = run.stderr()
    bangs, dogs = transitions(sub, "bang"), transitions(sub, "dog")
    assert [t["type"] for t in bangs] == [t["type"] for t in dogs] == ["start", "end"] * 2
    assert not [m for m in sub.messages if "/clip/" in m.topic]
    if trouble == "broker limit":
        lines = re.findall(r".*not sent to Home Assistant.*", err)
        assert len(lines) == 2 and all("WARNING" in line for line in lines), err
        assert all("over the broker's Maximum Packet Size of 8192 bytes" in ln for ln in lines)
        assert len(list(folder.iterdir())) == 2  # both stay on disk
    else:
        lines = re.findall(r".*not written to .*", err)
        assert len(lines) == 2 and all("ERROR" in line for line in lines), err
        assert all(f"{folder}: Not a directory (the event itself" in ln for ln in lines)
    assert "Traceback" not in err and "lost the MQTT broker" not in err
