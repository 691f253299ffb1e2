"""Clips in-process: the ring, a recording's pre- and post-roll, the writer, retention."""

import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sat_audio.clips import SCALE, Clips, Ring, clips_folder, prune, ring_seconds, to_int16
from sat_audio.config import ClipsConfig, EventConfig, parse_config
from sat_audio.publish.protocol import MAX_CLIP_BYTES

RATE = 16000


def clips_config(**kw: object) -> ClipsConfig:
    return parse_config({"clips": kw}).clips


def clip_event(**clip: object) -> EventConfig:
    (event,) = parse_config(
        {"detection": {"events": {"bang": {"kind": "loud", "on_dbfs": -20, "clip": clip}}}}
    ).detection.events
    return event


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    """16-bit-exact float32 audio: every sample is an int16 / 32768."""
    rng = np.random.default_rng(seed)
    ints = rng.integers(-3000, 3000, round(seconds * RATE))
    return (ints / SCALE).astype(np.float32)


def wait_written(clips: Clips, n: int) -> None:
    clips.writer.close(60.0)
    assert clips.writer.written == n


def test_int16_round_trip_is_exact_and_sanitises() -> None:
    audio = noise(0.1)
    assert np.array_equal(to_int16(audio) / SCALE, audio)
    odd = np.array([np.nan, np.inf, -np.inf, 2.0, -2.0, 1.0], np.float32)
    assert to_int16(odd).tolist() == [0, 0, 0, 32767, -32768, 32767]


def test_ring_keeps_the_last_samples_by_stream_position() -> None:
    ring = Ring(1.0)
    audio = to_int16(noise(2.5))
    for at in range(0, audio.size, 1000):
        ring.write(audio[at : at + 1000])
    assert (ring.start, ring.end) == (audio.size - RATE, audio.size)
    assert np.array_equal(ring.read(0), audio[-RATE:])
    assert np.array_equal(ring.read(audio.size - 100), audio[-100:])
    ring.write(audio)  # a block larger than the ring
    assert ring.end == 2 * audio.size and np.array_equal(ring.read(0), audio[-RATE:])


def test_ring_size_covers_pre_roll_and_the_delay_of_a_start() -> None:
    event = clip_event(pre_s=3)
    assert ring_seconds([event], chunk_s=2.0, turn_s=10.0) == 3 + 0 + 2 + 10 + 1


def test_a_clip_holds_pre_roll_episode_and_post_roll(tmp_path: Path) -> None:
    event = clip_event(pre_s=1, post_s=0.5)
    assert event.clip is not None
    audio = noise(10.0)
    sent: list[tuple[str, bytes]] = []
    clips = Clips(clips_config(), tmp_path, {"mic": 5.0}, lambda n, d: sent.append((n, d)))
    name = "bang-20261207T000000Z-0123abcd.flac"
    for at in range(0, audio.size, 1600):
        clips.audio("mic", audio[at : at + 1600])
        if at == 4 * RATE:  # the start is known a second after it happened
            clips.start("mic", "ep1", name, event.clip, 3.0)
        if at == 6 * RATE:
            clips.end("mic", "ep1", 5.0)
    wait_written(clips, 1)
    got, rate = sf.read(tmp_path / name, dtype="float32")
    assert rate == RATE
    assert np.array_equal(got, audio[2 * RATE : round(5.5 * RATE)])
    assert sent == [(name, (tmp_path / name).read_bytes())]


def test_post_from_start_writes_before_the_end(tmp_path: Path) -> None:
    event = clip_event(pre_s=0.5, post_s=1, post_from="start")
    assert event.clip is not None
    clips = Clips(clips_config(publish=False), tmp_path, {"mic": 5.0}, None)
    audio = noise(4.0)
    clips.audio("mic", audio[:RATE])
    clips.start("mic", "ep", "a-20261207T000000Z-00000000.flac", event.clip, 1.0)
    clips.audio("mic", audio[RATE:])  # no end yet
    wait_written(clips, 1)
    got, _ = sf.read(tmp_path / "a-20261207T000000Z-00000000.flac", dtype="float32")
    assert np.array_equal(got, audio[RATE // 2 : 2 * RATE])


def test_finish_writes_what_a_clip_has(tmp_path: Path) -> None:
    event = clip_event(pre_s=0.5, post_s=5)
    assert event.clip is not None
    clips = Clips(clips_config(format="opus"), tmp_path, {"mic": 5.0}, None)
    clips.audio("mic", noise(1.0))
    clips.start("mic", "ep", "a-20261207T000000Z-00000000.opus", event.clip, 0.8)
    clips.audio("mic", noise(0.5, seed=1))
    clips.finish("mic")  # the file ended
    wait_written(clips, 1)
    info = sf.info(str(tmp_path / "a-20261207T000000Z-00000000.opus"))
    assert info.format == "OGG" and info.subtype == "OPUS"
    assert info.duration == pytest.approx(1.2, abs=0.02)


def test_an_unwritable_folder_is_one_line_per_clip(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    event = clip_event(pre_s=0.5, post_s=0.1)
    assert event.clip is not None
    clips = Clips(clips_config(), blocker / "clips", {"mic": 5.0}, None)
    with caplog.at_level(logging.INFO, "sat_audio.clips"):
        clips.audio("mic", noise(1.0))
        clips.start("mic", "ep", "a-20261207T000000Z-00000000.flac", event.clip, 0.8)
        clips.end("mic", "ep", 0.9)
        wait_written(clips, 0)
    (line,) = caplog.records
    assert line.levelname == "ERROR"
    assert line.getMessage() == (
        f"clip a-20261207T000000Z-00000000.flac not written to {blocker / 'clips'}: Not a "
        "directory (the event itself is unaffected)"
    )


def test_a_clip_over_the_limit_stays_on_disk_with_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sat_audio.clips.MAX_CLIP_BYTES", 1000)
    event = clip_event(pre_s=0, post_s=0)
    assert event.clip is not None
    sent: list[str] = []
    clips = Clips(clips_config(), tmp_path, {"mic": 5.0}, lambda n, d: sent.append(n))
    with caplog.at_level(logging.WARNING, "sat_audio.clips"):
        clips.audio("mic", noise(1.0))
        clips.start("mic", "ep", "a-20261207T000000Z-00000000.flac", event.clip, 0.0)
        clips.end("mic", "ep", 1.0)
        wait_written(clips, 1)
    assert sent == []
    (line,) = caplog.records
    assert "not sent to Home Assistant: over the protocol's limit of 1000 bytes" in str(
        line.getMessage()
    )
    assert MAX_CLIP_BYTES == 8 * 1024 * 1024


def _clip(folder: Path, n: int, size: int, age_days: float) -> Path:
    path = folder / f"e-20261207T0000{n:02d}Z-0000000{n % 10}.flac"
    path.write_bytes(b"x" * size)
    stamp = time.time() - age_days * 86400
    os.utime(path, (stamp, stamp))
    return path


def test_retention_by_count_age_and_size_touches_only_clips(tmp_path: Path) -> None:
    mine = tmp_path / "notes.txt"
    mine.write_text("keep me")
    paths = [_clip(tmp_path, n, 100_000, age_days=10 - n) for n in range(10)]  # oldest first
    assert prune(tmp_path, 8, 30, 100) == paths[:2]  # count
    assert prune(tmp_path, 8, 5.5, 100) == paths[2:5]  # age: 8, 7 and 6 days old
    assert prune(tmp_path, 8, 30, 0.35) == paths[5:7]  # size: 5 x 100 kB > 0.35 MB
    assert sorted(tmp_path.iterdir()) == sorted([mine, *paths[7:]])


def test_default_folder_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert clips_folder(None) == tmp_path / "sat-audio" / "clips"
    assert clips_folder("~/x") == Path.home() / "x"


def test_no_clip_configured_means_no_ring(tmp_path: Path) -> None:
    """Only an event with clip: makes the listener keep audio: a ring of int16 per source."""
    from sat_audio.listener import Listener
    from sat_audio.publish.stdout import StdoutPublisher

    sources = [{"name": "a", "kind": "stdin"}, {"name": "b", "kind": "stdin"}]
    bang: dict = {"kind": "loud", "on_dbfs": -20}
    plain = parse_config({"sources": sources, "detection": {"events": {"bang": bang}}})
    assert Listener(plain, StdoutPublisher())._make_clips(2.0) is None
    bang["clip"] = {"pre_s": 5}
    events = {"events": {"bang": bang}}
    kept = parse_config({"sources": sources, "detection": events, "clips": {"dir": str(tmp_path)}})
    clips = Listener(kept, StdoutPublisher())._make_clips(2.0)
    assert clips is not None
    # 5 s pre-roll + a 2 s chunk + a loop turn of 100 blocks of 0.1 s + 1 s, 2 bytes a sample
    assert {s: clips.ring_bytes(s) for s in ("a", "b")} == {"a": 576_000, "b": 576_000}
    clips.close(60.0)
