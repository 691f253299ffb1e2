"""Calibration on stored series: the suggested thresholds keep their promise when the listener's
own Detector replays the chunks, percentiles, the off-threshold rule, and the pasted snippet."""

from dataclasses import replace

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sat_audio.calibrate import (
    DAY_S,
    EventReport,
    Series,
    SeriesBuilder,
    calibrate_series,
    format_table,
    yaml_snippet,
)
from sat_audio.config import EventConfig, parse_config
from sat_audio.engine import ChunkResult
from sat_audio.errors import SatAudioError
from sat_audio.labels import find
from sat_audio.rules import Detector

GLASS, SHATTER = find("Glass").index, find("Shatter").index

GLASS_EVENT = EventConfig(
    key="glass",
    name="Glass",
    labels=("Glass", "Shatter"),
    on_threshold=0.3,
    off_threshold=0.225,
)


def room(days: float, chunk_s: float, seed: int = 0) -> list[ChunkResult]:
    """A room's ordinary life: low scores, now and then a run of higher ones, levels that vary.

    Chunks are coarse (a minute) so days replay quickly; the rules see only stream times.
    """
    rng = np.random.default_rng(seed)
    n = int(days * DAY_S / chunk_s)
    glass = rng.beta(1, 30, n)
    shatter = rng.beta(1, 60, n)
    for start in rng.integers(0, n - 5, int(days * 40)):
        glass[start : start + rng.integers(1, 5)] += rng.uniform(0.05, 0.8)
    level = rng.normal(-45, 8, n)
    out = []
    for i in range(n):
        scores = np.zeros(527, np.float32)
        scores[GLASS], scores[SHATTER] = min(glass[i], 0.97), shatter[i]
        out.append(ChunkResult("mic", i, i * chunk_s, (i + 1) * chunk_s, scores, level[i]))
    return out


def starts(event: EventConfig, chunks: list[ChunkResult], gate: float | None = None) -> int:
    """Starts as the listener counts them: its Detector fed every chunk."""
    det = Detector([event], gate, source="mic")
    return sum(t.type == "start" for c in chunks for t in det.update(c))


EVENTS = [
    GLASS_EVENT,
    replace(GLASS_EVENT, key="smooth", smoothing="ema", smoothing_chunks=4, combine="sum"),
    replace(GLASS_EVENT, key="slow", min_duration_s=120.0, hold_s=300.0, cooldown_s=600.0),
    replace(GLASS_EVENT, key="gated", min_level_dbfs=-40.0, combine="mean"),
]


@pytest.fixture(scope="module")
def four_days() -> list[ChunkResult]:
    return room(4, 60.0)


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.key)
def test_suggestion_keeps_its_promise(event: EventConfig, four_days: list[ChunkResult]):
    """Four days allow four starts: the Detector gives at most that at the suggestion and at
    every grid step above it, and more one step below; the current settings are counted too."""
    [report] = calibrate_series(Series.from_chunks(four_days, [event]), [event])
    assert report.audio_s == pytest.approx(4 * DAY_S)
    assert report.starts == starts(event, four_days)
    assert report.per_day == pytest.approx(report.starts / 4)
    assert report.suggested_on is not None and report.lower_on is not None
    assert report.lower_on == pytest.approx(report.suggested_on - 0.01)
    # above the highest score nothing can start: those steps need no Detector
    for on in np.arange(report.suggested_on, report.percentiles["max"] + 0.01, 0.01):
        tuned = replace(event, on_threshold=on, off_threshold=on * 0.75)
        assert starts(tuned, four_days) <= 4, on
    at = replace(event, on_threshold=report.suggested_on, off_threshold=report.suggested_off)
    assert starts(at, four_days) == report.suggested_starts
    below = replace(event, on_threshold=report.lower_on, off_threshold=report.lower_on * 0.75)
    assert starts(below, four_days) == report.lower_starts > 4
    assert report.keep_off == "ratio 0.75"
    assert report.suggested_off == pytest.approx(report.suggested_on * 0.75)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.floats(0, 0.99), min_size=1, max_size=80),
    levels=st.lists(st.sampled_from([-60.0, -20.0]), min_size=80, max_size=80),
    timing=st.tuples(*[st.sampled_from([0.0, 1.0, 3.0])] * 3),
    smoothing=st.sampled_from([None, "ema", "median"]),
    allowed=st.integers(0, 3),
)
def test_every_step_above_the_suggestion_keeps_it(values, levels, timing, smoothing, allowed):
    """On any stream, with any timing, smoothing and gate, the listener's Detector gives at most
    the allowed starts at the suggestion and at every step above it, and more one step below;
    steps skipped without a replay (too few stretches above on) included."""
    event = replace(
        GLASS_EVENT,
        min_duration_s=timing[0],
        hold_s=timing[1],
        cooldown_s=timing[2],
        smoothing=smoothing,
        min_level_dbfs=-40.0,
    )
    chunks = [
        ChunkResult("mic", i, float(i), i + 1.0, _scores(v), levels[i])
        for i, v in enumerate(values)
    ]
    per_day = allowed * DAY_S / len(values) + 1e-6
    [report] = calibrate_series(
        Series.from_chunks(chunks, [event]), [event], per_day=per_day, step=0.05
    )
    assert report.suggested_on is not None
    for on in np.arange(report.suggested_on, 1.0001, 0.05):
        assert starts(replace(event, on_threshold=on, off_threshold=on * 0.75), chunks) <= allowed
    at = replace(event, on_threshold=report.suggested_on, off_threshold=report.suggested_off)
    assert starts(at, chunks) == report.suggested_starts
    if report.lower_on is not None:
        below = replace(event, on_threshold=report.lower_on, off_threshold=report.lower_on * 0.75)
        assert starts(below, chunks) == report.lower_starts > allowed


def test_count_extrapolates_from_the_length(four_days: list[ChunkResult]):
    """Half a day allows no start at one a day, so the suggestion gives none; at 10 a day it
    allows 5 and the suggestion is lower."""
    half = four_days[: len(four_days) // 8]
    series = Series.from_chunks(half, [GLASS_EVENT])
    [strict] = calibrate_series(series, [GLASS_EVENT])
    [lenient] = calibrate_series(series, [GLASS_EVENT], per_day=10)
    assert strict.audio_s == pytest.approx(DAY_S / 2)
    assert strict.suggested_starts == 0 and strict.lower_starts >= 1
    assert lenient.suggested_starts <= 5 < lenient.lower_starts
    assert lenient.suggested_on < strict.suggested_on


def test_percentiles_of_what_the_thresholds_see():
    """Percentiles are of the combined, smoothed score; a lone spike under EMA(3) is halved."""
    values = np.arange(1001) / 1000
    chunks = [
        ChunkResult("mic", i, 2.0 * i, 2.0 * i + 2, _scores(v), -20.0)
        for i, v in enumerate(np.random.default_rng(1).permutation(values))
    ]
    [report] = calibrate_series(Series.from_chunks(chunks, [GLASS_EVENT]), [GLASS_EVENT])
    assert report.percentiles == pytest.approx(
        {"p50": 0.5, "p90": 0.9, "p99": 0.99, "p99.9": 0.999, "max": 1.0}
    )
    spike = [ChunkResult("mic", i, i, i + 1.0, _scores(0.8 * (i == 5)), -20.0) for i in range(9)]
    ema = replace(GLASS_EVENT, smoothing="ema", smoothing_chunks=3)
    [smoothed] = calibrate_series(Series.from_chunks(spike, [ema]), [ema])
    assert smoothed.percentiles["max"] == pytest.approx(0.4)


def _scores(glass: float) -> np.ndarray:
    scores = np.zeros(527, np.float32)
    scores[GLASS] = glass
    return scores


def test_off_follows_by_distance(four_days: list[ChunkResult]):
    """keep_off distance keeps on - off; thresholds whose off would reach 0 are not offered."""
    event = replace(GLASS_EVENT, on_threshold=0.5, off_threshold=0.2)
    [report] = calibrate_series(
        Series.from_chunks(four_days, [event]), [event], keep_off="distance"
    )
    assert report.keep_off == "distance 0.3"
    assert report.suggested_on - report.suggested_off == pytest.approx(0.3)
    quiet = [ChunkResult("mic", i, i, i + 1.0, _scores(0.01), -20.0) for i in range(50)]
    [low] = calibrate_series(Series.from_chunks(quiet, [event]), [event], keep_off="distance")
    assert low.suggested_on == pytest.approx(0.31) and low.lower_on is None


def test_gate_and_segments():
    """Chunks under the volume gate never start an event, and the suggestion stops at the lowest
    threshold tried; each segment replays with fresh rules (an episode open at one segment's end
    does not continue into the next)."""
    loud = [ChunkResult("mic", i, i, i + 1.0, _scores(0.9), -20.0) for i in range(10)]
    quiet = [replace(c, level_dbfs=-70.0) for c in loud]
    [gated] = calibrate_series(Series.from_chunks(quiet, [GLASS_EVENT]), [GLASS_EVENT], -50.0)
    assert gated.starts == 0 and (gated.suggested_on, gated.lower_on) == (0.05, None)
    [floor] = calibrate_series(
        Series.from_chunks(quiet, [GLASS_EVENT]), [GLASS_EVENT], -50.0, lowest=0.2
    )
    assert floor.suggested_on == 0.2
    two = [Series.from_chunks(loud, [GLASS_EVENT]), Series.from_chunks(loud, [GLASS_EVENT])]
    [report] = calibrate_series(two, [GLASS_EVENT], per_day=DAY_S)  # allows 20 starts
    assert report.starts == 2 and report.audio_s == 20.0


def test_no_threshold_is_quiet_enough():
    """Scores at 1 all day: no on_threshold up to 1 keeps the promise, and the table says what
    to change instead; the snippet suggests nothing."""
    chunks = [
        ChunkResult("mic", i, 60.0 * i, 60.0 * i + 60, _scores(float(i % 2)), -20.0)
        for i in range(1440)
    ]
    [report] = calibrate_series(Series.from_chunks(chunks, [GLASS_EVENT]), [GLASS_EVENT])
    assert report.suggested_on is None and report.lower_on == 1.0
    assert "no threshold up to 1 gives at most 1 a day" in format_table([report], 1.0)
    assert yaml_snippet([report]) == "# no thresholds to suggest\n"


def test_snippet_pastes_into_a_valid_config(four_days: list[ChunkResult]):
    """The snippet merged into the configuration it came from passes the schema and carries
    the suggested thresholds."""
    raw = {
        "detection": {
            "events": {
                e.key: {"labels": list(e.labels), "on_threshold": e.on_threshold} for e in EVENTS
            }
        }
    }
    events = parse_config(raw).detection.events
    reports = calibrate_series(Series.from_chunks(four_days, events), events)
    snippet = yaml.safe_load(yaml_snippet(reports))
    for key, values in snippet["detection"]["events"].items():
        raw["detection"]["events"][key].update(values)
    tuned = {e.key: e for e in parse_config(raw).detection.events}
    for r in reports:
        assert (tuned[r.key].on_threshold, tuned[r.key].off_threshold) == (
            r.suggested_on,
            r.suggested_off,
        )


def test_empty_series_is_one_line():
    empty = Series.from_chunks([], [GLASS_EVENT])
    with pytest.raises(SatAudioError, match="no audio to calibrate on"):
        calibrate_series(empty, [GLASS_EVENT])
    with pytest.raises(SatAudioError, match="threshold step"):
        calibrate_series(Series.from_chunks(room(0.01, 60.0), [GLASS_EVENT]), [], step=0)


def test_table_lists_every_event(four_days: list[ChunkResult]):
    reports: list[EventReport] = calibrate_series(Series.from_chunks(four_days, EVENTS), EVENTS)
    table = format_table(reports, 1.0)
    assert "96.00 h of audio" in table and "extrapolate from these 96.00 h" in table
    for r in reports:
        assert any(line.startswith(r.key) for line in table.splitlines())


LOUD = parse_config(
    {"detection": {"events": {"bang": {"kind": "loud", "on_dbfs": -30, "min_duration_s": 0.2}}}}
).detection.events[0]


def loud_room(seconds: float, seed: int = 3) -> np.ndarray:
    """A floor near -70 dBFS and bursts of 0.05 to 2 s between -60 and -10 dBFS."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    wave = (10 ** (-70 / 20) * rng.standard_normal(n)).astype(np.float32)
    for start in rng.integers(0, n - 32000, int(seconds / 5)):
        length = int(rng.uniform(0.05, 2.0) * 16000)
        gain = 10 ** (rng.uniform(-60, -10) / 20)
        wave[start : start + length] += gain * rng.standard_normal(length).astype(np.float32)
    return np.clip(wave, -1, 1)


def loud_starts(event: EventConfig, wave: np.ndarray) -> int:
    """Starts as the listener counts a loud event's: its Detector fed the audio in blocks."""
    det = Detector([event], source="mic")
    return sum(
        t.type == "start"
        for start in range(0, wave.size, 12345)
        for t in det.audio(wave[start : start + 12345])
    )


def loud_series(wave: np.ndarray, events: list[EventConfig]) -> Series:
    """A stream's series as the listener would collect it: its audio, and 2 s chunks."""
    builder = SeriesBuilder(events)
    for start in range(0, wave.size, 32000):
        builder.audio(wave[start : start + 32000])
        i = start // 32000
        builder.add(ChunkResult("mic", i, 2.0 * i, 2.0 * i + 2, _scores(0.0), -30.0))
    return builder.build()


def test_loud_event_keeps_its_promise():
    """A loud event is calibrated on its frames' levels in dBFS: ten minutes at 432 a day allow
    three starts; the listener's Detector, fed the audio, gives at most that at the suggested
    on_dbfs and at every dB above it, more one dB below; off_dbfs keeps its 6 dB."""
    wave = loud_room(600)
    [report] = calibrate_series(loud_series(wave, [LOUD]), [LOUD], per_day=432)
    assert (report.kind, report.keep_off) == ("loud", "distance 6 dB")
    assert report.starts == loud_starts(LOUD, wave)
    assert report.suggested_on is not None and report.lower_on == report.suggested_on - 1
    assert report.suggested_off == report.suggested_on - 6
    for on in np.arange(report.suggested_on, 1.0):
        assert loud_starts(replace(LOUD, on_dbfs=on, off_dbfs=on - 6), wave) <= 3, on
    lower = replace(LOUD, on_dbfs=report.lower_on, off_dbfs=report.lower_on - 6)
    assert loud_starts(lower, wave) == report.lower_starts > 3
    assert -75 < report.percentiles["p50"] < -65 and -20 < report.percentiles["max"] < -5


def test_loud_snippet_and_positive():
    """The snippet gives a loud event on_dbfs and off_dbfs, which the schema takes; a positive
    clip's peak and margin are in dB."""
    quiet = loud_room(120, seed=4) * 0.01  # 40 dB down: nothing above -50 dBFS
    burst = np.zeros(32000, np.float32)
    burst[8000:24000] = 0.1 * np.random.default_rng(5).standard_normal(16000)
    events = [GLASS_EVENT, LOUD]
    clip = loud_series(burst, events)
    [glass, bang] = calibrate_series(
        loud_series(quiet, events), events, positives={"burst.wav": clip}
    )
    assert glass.kind == "sound" and bang.kind == "loud"
    [p] = bang.positives
    assert p.fires and p.peak == pytest.approx(-20, abs=0.5)
    assert p.margin == pytest.approx(p.peak - bang.suggested_on)
    pasted = yaml.safe_load(yaml_snippet([glass, bang]))["detection"]["events"]
    assert pasted["bang"] == {"on_dbfs": bang.suggested_on, "off_dbfs": bang.suggested_off}
    raw = {"kind": "loud", "on_dbfs": -30, **pasted["bang"]}
    [tuned] = parse_config({"detection": {"events": {"bang": raw}}}).detection.events
    assert (tuned.on_dbfs, tuned.off_dbfs) == (bang.suggested_on, bang.suggested_off)
    assert "loud events: dBFS of 0.1 s frames" in format_table([glass, bang], 1.0)
