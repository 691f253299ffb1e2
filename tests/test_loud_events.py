"""Loud events (level alone, on short frames), per-event switches and end reasons, in-process;
and their configuration's one-line errors."""

import numpy as np
import pytest

from sat_audio.config import ConfigError, EventConfig, parse_config
from sat_audio.engine import ChunkResult
from sat_audio.rules import FRAME_S, Detector, LevelFrames

RATE = 16000


def events(**defs: dict) -> tuple[EventConfig, ...]:
    return parse_config({"detection": {"events": defs}}).detection.events


def tone(seconds: float, amplitude: float) -> np.ndarray:
    """A 440 Hz sine: its level is 20 log10(amplitude / sqrt 2) dBFS."""
    t = np.arange(round(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


QUIET = 0.01  # -43 dBFS
LOUD = 0.3  # -13.5 dBFS


def feed(detector: Detector, audio: np.ndarray, block: int = 1600) -> list:
    out = []
    for at in range(0, audio.size, block):
        out += detector.audio(audio[at : at + block])
    return out


def test_frames_measure_each_tenth_of_a_second_whatever_the_blocks() -> None:
    audio = np.concatenate([tone(0.2, QUIET), tone(0.1, LOUD), tone(0.05, QUIET)])
    for block in (1600, 333, 5000):
        frames = LevelFrames()
        got = []
        for at in range(0, audio.size, block):
            got += frames.feed(audio[at : at + block])
        assert [(round(s, 3), round(e, 3)) for s, e, _ in got] == [(0, 0.1), (0.1, 0.2), (0.2, 0.3)]
        assert [round(level, 1) for _, _, level in got] == [-43.0, -43.0, -13.5]


def test_nan_and_infinity_in_a_frame_count_as_silence() -> None:
    audio = tone(0.1, QUIET)
    audio[5] = np.nan
    audio[6] = np.inf
    ((_, _, level),) = LevelFrames().feed(audio)
    assert level == pytest.approx(-43.0, abs=0.1)


def test_a_burst_shorter_than_a_chunk_fires_with_hysteresis_hold_and_cooldown() -> None:
    (cfg,) = events(bang={"kind": "loud", "on_dbfs": -20, "min_duration_s": 0.2, "hold_s": 0.3,
                          "cooldown_s": 1})  # fmt: skip
    assert (cfg.on_dbfs, cfg.off_dbfs, cfg.labels) == (-20.0, -26.0, ())
    det = Detector([cfg], source="mic")
    audio = np.concatenate(
        [
            tone(1.0, QUIET),
            tone(0.3, LOUD),  # 3 frames: starts after 2 (min_duration_s)
            tone(0.2, 0.04),  # -31 dBFS: below off, but not for hold_s
            tone(0.2, LOUD),
            tone(0.5, QUIET),  # below off for hold_s: ends at 1.7
            tone(0.5, LOUD),  # within the cooldown: nothing
            tone(1.0, QUIET),
            tone(0.1, LOUD),  # after it, but one frame is short of min_duration_s
            tone(0.5, QUIET),
        ]
    )
    got = feed(det, audio)
    assert [(t.type, round(t.start_s, 3), t.end_s and round(t.end_s, 3)) for t in got] == [
        ("start", 1.0, None),
        ("end", 1.0, 1.7),
    ]
    start, end = got
    assert start.label is None and start.score == pytest.approx(-13.5, abs=0.1)
    assert end.peak == pytest.approx(-13.5, abs=0.1) and end.reason == "quiet"
    assert end.id == start.id


def test_loud_events_ignore_chunks_and_sound_events_ignore_frames() -> None:
    loud, dog = events(
        bang={"kind": "loud", "on_dbfs": -20, "hold_s": 0},
        dog={"labels": ["Bark"], "on_threshold": 0.5, "hold_s": 0},
    )
    det = Detector([loud, dog], source="mic")
    scores = np.zeros(527, np.float32)
    chunk = ChunkResult("mic", 0, 0.0, 1.0, scores, level_dbfs=-5.0)
    assert det.update(chunk) == []  # a loud chunk level does not start the loud event
    assert [t.event for t in feed(det, tone(0.5, LOUD))] == ["bang"]
    assert Detector([dog]).frames is None  # no loud event: no frame is measured


def test_switching_off_ends_the_episode_and_starts_none_until_on() -> None:
    (cfg,) = events(bang={"kind": "loud", "on_dbfs": -20, "hold_s": 0})
    det = Detector([cfg], source="mic")
    (start,) = feed(det, tone(0.3, LOUD))
    assert det.active() == {"bang"}
    (end,) = det.set_enabled("bang", False)
    assert (end.type, end.id, end.reason) == ("end", start.id, "disabled")
    assert end.end_s == pytest.approx(0.3)
    assert det.active() == set()
    assert feed(det, tone(1.0, LOUD)) == []
    assert det.set_enabled("bang", True) == []
    (again,) = feed(det, tone(0.1, LOUD))
    assert again.type == "start" and again.id != start.id


def test_a_detector_built_with_an_event_disabled_never_starts_it() -> None:
    loud, dog = events(
        bang={"kind": "loud", "on_dbfs": -20}, dog={"labels": ["Bark"], "on_threshold": 0.5}
    )
    det = Detector([loud, dog], source="mic", disabled={"bang"})
    assert feed(det, tone(1.0, LOUD)) == []


def test_close_names_its_reason() -> None:
    (cfg,) = events(bang={"kind": "loud", "on_dbfs": -20})
    det = Detector([cfg], source="mic")
    feed(det, tone(0.5, LOUD))
    (end,) = det.close(99.0, "paused")
    # a loud event ends at its own last frame, not at the last chunk's end
    assert (end.reason, end.end_s) == ("paused", pytest.approx(0.5))
    assert FRAME_S == 0.1


def test_config_defaults_for_sound_events() -> None:
    (dog,) = events(dog={"labels": ["Bark"], "on_threshold": 0.5})
    assert (dog.kind, dog.enabled, dog.clip, dog.on_dbfs) == ("sound", True, None, None)
    config = parse_config({})
    assert config.clips.format == "flac" and config.clips.publish is True
    assert (config.clips.max_count, config.clips.max_age_days) == (100, 30.0)


def test_clip_config() -> None:
    (dog,) = events(dog={"labels": ["Bark"], "on_threshold": 0.5, "clip": {"pre_s": 2}})
    assert dog.clip is not None
    assert (dog.clip.pre_s, dog.clip.post_s, dog.clip.post_from) == (2.0, 5.0, "end")


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (
            {"kind": "loud", "on_dbfs": -20, "labels": ["Bark"]},
            "detection.events.bang.labels: a loud event (kind: loud) is defined by its level "
            "alone; expected no labels",
        ),
        (
            {"kind": "loud", "on_dbfs": -20, "off_dbfs": -10},
            "detection.events.bang.off_dbfs: expected less than on_dbfs (-20) for hysteresis, "
            "got -10",
        ),
        (
            {"kind": "loud"},
            "detection.events.bang.on_dbfs: missing; expected a level in dBFS from -120 to 0",
        ),
        (
            {"kind": "loud", "on_dbfs": -20, "on_threshold": 0.5},
            "detection.events.bang.on_threshold: unknown key 'on_threshold'; expected one of name, "
            "kind, on_dbfs, off_dbfs, min_duration_s, hold_s, cooldown_s, enabled, clip",
        ),
        ({"kind": "quiet"}, "detection.events.bang.kind: expected one of sound, loud"),
        (
            {"kind": "loud", "on_dbfs": -20, "clip": {"pre_s": 100}},
            "detection.events.bang.clip.pre_s: expected a number from 0 to 60, got 100",
        ),
        (
            {"kind": "loud", "on_dbfs": -20, "clip": {"post_from": "middle"}},
            "detection.events.bang.clip.post_from: expected one of end, start",
        ),
        (
            {"labels": ["Bark"], "on_threshold": 0.5, "enabled": "yes"},
            "detection.events.bang.enabled: expected true or false",
        ),
    ],
)
def test_event_errors_are_one_line(event: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"detection": {"events": {"bang": event}}})
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("clips", "message"),
    [
        ({"format": "mp3"}, "clips.format: expected one of flac, opus"),
        ({"max_count": 0}, "clips.max_count: expected an integer from 1 to 100000"),
        ({"max_total_mb": 0}, "clips.max_total_mb: expected a number above 0"),
        ({"folder": "/x"}, "clips.folder: unknown key 'folder'; expected one of dir, format"),
    ],
)
def test_clips_errors_are_one_line(clips: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"clips": clips})
    assert str(err.value).startswith(message), str(err.value)


def test_printed_config_reads_back_with_loud_events_switches_and_clips() -> None:
    import yaml

    from sat_audio.config import to_yaml

    config = parse_config(
        {
            "detection": {
                "events": {
                    "bang": {"kind": "loud", "on_dbfs": -20, "clip": {"pre_s": 2}},
                    "dog": {"labels": ["Bark"], "on_threshold": 0.5, "enabled": False},
                }
            },
            "clips": {"format": "opus", "max_total_mb": 50},
        }
    )
    text = to_yaml(config)
    assert parse_config(yaml.safe_load(text)) == config
    bang = yaml.safe_load(text)["detection"]["events"]["bang"]
    assert "labels" not in bang and "on_threshold" not in bang and bang["off_dbfs"] == -26.0
