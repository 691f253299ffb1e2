"""Event rules: table-driven cases for each rule, and hypothesis properties over random streams."""

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sat_audio.config import EventConfig
from sat_audio.engine import ChunkResult
from sat_audio.labels import find
from sat_audio.rules import EPS, Detector, Smoother, Transition, combine

GLASS, SHATTER = find("Glass").index, find("Shatter").index

BASE = EventConfig(
    key="glass",
    name="Glass",
    labels=("Glass",),
    on_threshold=0.5,
    off_threshold=0.3,
    hold_s=0.0,
)


def chunks(
    values: Sequence[float],
    chunk_s: float = 1.0,
    levels: Sequence[float] | None = None,
    index: int = GLASS,
) -> list[ChunkResult]:
    """One chunk per value: `values[i]` is the score of one label, the rest 0."""
    out = []
    for i, value in enumerate(values):
        scores = np.zeros(527, np.float32)
        scores[index] = value
        out.append(
            ChunkResult(
                stream="mic",
                index=i,
                start_s=i * chunk_s,
                end_s=(i + 1) * chunk_s,
                scores=scores,
                level_dbfs=-20.0 if levels is None else levels[i],
            )
        )
    return out


def run(
    event: EventConfig,
    stream: Sequence[ChunkResult],
    gate: float | None = None,
    close: bool = True,
) -> list[tuple[int, Transition]]:
    """(index of the chunk that caused it, transition); close() counts as index len(stream)."""
    det = Detector([event], min_level_dbfs=gate, source="mic")
    out = [(i, t) for i, c in enumerate(stream) for t in det.update(c)]
    if close:
        out += [(len(stream), t) for t in det.close()]
        assert det.active() == set()
    return out


def brief(found: list[tuple[int, Transition]]) -> list[tuple]:
    return [
        (i, t.type, round(t.start_s, 6), None if t.end_s is None else round(t.end_s, 6))
        for i, t in found
    ]


# (case, event fields, scores, levels, global gate, expected (chunk index, type, start_s, end_s))
CASES = [
    ("quiet stream: nothing", {}, [0.1, 0.2, 0.4, 0.2], None, None, []),
    (
        "one episode, ends on first chunk below off (hold 0)",
        {},
        [0.1, 0.6, 0.7, 0.2, 0.1],
        None,
        None,
        [(1, "start", 1, None), (3, "end", 1, 3)],
    ),
    (
        "hysteresis: between off and on keeps it on",
        {},
        [0.6, 0.4, 0.35, 0.45, 0.2],
        None,
        None,
        [(0, "start", 0, None), (4, "end", 0, 4)],
    ),
    (
        "hysteresis: between off and on does not start it",
        {},
        [0.4, 0.45, 0.49, 0.3],
        None,
        None,
        [],
    ),
    (
        "score exactly on starts, exactly off keeps on",
        {},
        [0.5, 0.3, 0.29],
        None,
        None,
        [(0, "start", 0, None), (2, "end", 0, 2)],
    ),
    (
        "min_duration: start once above on for 3 s, start_s = first crossing",
        {"min_duration_s": 3.0},
        [0.1, 0.6, 0.6, 0.6, 0.6, 0.1],
        None,
        None,
        [(3, "start", 1, None), (5, "end", 1, 5)],
    ),
    (
        "min_duration: an interrupted run starts over",
        {"min_duration_s": 3.0},
        [0.6, 0.6, 0.4, 0.6, 0.6, 0.6, 0.0],
        None,
        None,
        [(5, "start", 3, None), (6, "end", 3, 6)],
    ),
    (
        "min_duration: too short never starts",
        {"min_duration_s": 3.0},
        [0.6, 0.6, 0.1, 0.6, 0.1],
        None,
        None,
        [],
    ),
    (
        "hold: a pause shorter than hold_s is bridged",
        {"hold_s": 2.0},
        [0.6, 0.1, 0.6, 0.1, 0.1, 0.1],
        None,
        None,
        [(0, "start", 0, None), (4, "end", 0, 3)],
    ),
    (
        "hold: end time is the end of the last chunk above off",
        {"hold_s": 3.0},
        [0.6, 0.4, 0.1, 0.1, 0.1, 0.9],
        None,
        None,
        [(0, "start", 0, None), (4, "end", 0, 2), (5, "start", 5, None), (6, "end", 5, 6)],
    ),
    (
        "cooldown: no new start within cooldown_s after the end",
        {"cooldown_s": 2.0},
        [0.6, 0.1, 0.6, 0.6, 0.1],
        None,
        None,
        [(0, "start", 0, None), (1, "end", 0, 1), (3, "start", 3, None), (4, "end", 3, 4)],
    ),
    (
        "cooldown: a start exactly when it is over",
        {"cooldown_s": 1.0},
        [0.6, 0.1, 0.6, 0.1],
        None,
        None,
        [(0, "start", 0, None), (1, "end", 0, 1), (2, "start", 2, None), (3, "end", 2, 3)],
    ),
    (
        "global volume gate: a quiet chunk cannot start",
        {},
        [0.9, 0.9, 0.1],
        [-80.0, -30.0, -30.0],
        -60.0,
        [(1, "start", 1, None), (2, "end", 1, 2)],
    ),
    (
        "volume gate: a quiet chunk counts as below off",
        {"hold_s": 1.0},
        [0.9, 0.9, 0.9],
        [-30.0, -80.0, -80.0],
        -60.0,
        [(0, "start", 0, None), (1, "end", 0, 1)],
    ),
    (
        "per-event gate overrides the global one",
        {"min_level_dbfs": -20.0},
        [0.9, 0.9, 0.1],
        [-30.0, -10.0, -10.0],
        -60.0,
        [(1, "start", 1, None), (2, "end", 1, 2)],
    ),
    (
        "min_duration: a gap in the stream (dropped audio) starts the run over",
        {"min_duration_s": 2.0},
        "gap",
        None,
        None,
        [(2, "start", 5, None), (3, "end", 5, 7)],
    ),
    (
        "close ends an open event at the end of the stream",
        {"hold_s": 10.0},
        [0.1, 0.9, 0.9],
        None,
        None,
        [(1, "start", 1, None), (3, "end", 1, 3)],
    ),
    (
        "close during hold ends at the last chunk above off",
        {"hold_s": 10.0},
        [0.9, 0.9, 0.1],
        None,
        None,
        [(0, "start", 0, None), (3, "end", 0, 2)],
    ),
    (
        "close never ends what did not start (pending min_duration)",
        {"min_duration_s": 5.0},
        [0.9, 0.9],
        None,
        None,
        [],
    ),
    (
        "ema smoothing (3 chunks, alpha 0.5) delays and bridges",
        {"smoothing": "ema", "smoothing_chunks": 3},
        [0.0, 1.0, 0.2, 0.0, 0.0],  # ema: 0, 0.5, 0.35, 0.175, 0.0875
        None,
        None,
        [(1, "start", 1, None), (3, "end", 1, 3)],
    ),
    (
        "median smoothing removes a one-chunk spike, also at the very start",
        {"smoothing": "median", "smoothing_chunks": 3},
        [1.0, 0.0, 0.0, 1.0, 0.0, 0.0],
        None,
        None,
        [],
    ),
    (
        "median smoothing keeps a sustained sound",
        {"smoothing": "median", "smoothing_chunks": 3},
        [0.0, 1.0, 1.0, 1.0, 0.0, 0.0],  # median: 0, 0, 1, 1, 1, 0
        None,
        None,
        [(2, "start", 2, None), (5, "end", 2, 5)],
    ),
]


@pytest.mark.parametrize(
    ("fields", "values", "levels", "gate", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_rules_table(fields, values, levels, gate, expected):
    if values == "gap":  # above on for 0-1 s, nothing heard 1-5 s, above on again 5-7 s
        stream = chunks([0.9, 0.9, 0.9, 0.1])
        stream = [
            stream[0],
            *(replace(c, start_s=c.start_s + 4, end_s=c.end_s + 4) for c in stream[1:]),
        ]
    else:
        stream = chunks(values, levels=levels)
    found = run(replace(BASE, **fields), stream, gate=gate)
    assert brief(found) == expected


def test_transition_fields_label_score_peak_and_shared_id():
    event = replace(BASE, labels=("Glass", "Shatter"), hold_s=1.0)
    stream = []
    for i, (glass, shatter) in enumerate([(0.6, 0.2), (0.3, 0.9), (0.7, 0.1), (0.1, 0.05)]):
        scores = np.zeros(527, np.float32)
        scores[GLASS], scores[SHATTER] = glass, shatter
        stream.append(ChunkResult("kitchen", i, i * 2.0, i * 2.0 + 2.0, scores, -20.0))
    det = Detector([event])  # no source given: the chunk's stream names it
    found = [t for c in stream for t in det.update(c)]
    start, end = found
    assert start.type == "start" and end.type == "end"
    assert start.id == end.id and len(start.id) == 32
    assert (start.source, start.event, start.label) == ("kitchen", "glass", "Glass")
    assert start.score == pytest.approx(0.6) and start.end_s is None and start.duration_s == 0
    assert end.label == "Glass"  # the top label at the moment it ended (0.1 > 0.05)
    assert end.score == pytest.approx(0.1)
    assert end.peak == pytest.approx(0.9)  # Shatter's 0.9 was the episode's highest
    assert (end.start_s, end.end_s, end.duration_s) == (0.0, 6.0, 6.0)


def test_each_episode_gets_a_new_id():
    found = run(BASE, chunks([0.9, 0.0, 0.9, 0.0]))
    ids = [t.id for _, t in found]
    assert ids[0] == ids[1] and ids[2] == ids[3] and ids[0] != ids[2]


def test_close_at_given_time_and_events_are_independent():
    other = replace(BASE, key="bark", labels=("Bark",))
    det = Detector([BASE, other], source="mic")
    scores = np.zeros(527, np.float32)
    scores[GLASS] = 0.9
    assert [t.event for t in det.update(ChunkResult("mic", 0, 0.0, 2.0, scores, -20.0))] == [
        "glass"
    ]
    assert det.active() == {"glass"}
    (end,) = det.close(at_s=3.5)
    assert (end.event, end.end_s, end.duration_s) == ("glass", 3.5, 3.5)
    assert det.close() == [] and det.active() == set()


@pytest.mark.parametrize(
    ("how", "values", "expected"),
    [
        ("max", [0.2, 0.7, 0.1], 0.7),
        ("sum", [0.2, 0.3, 0.1], 0.6),
        ("sum", [0.6, 0.7], 1.0),  # clipped
        ("mean", [0.2, 0.4, 0.9], 0.5),
    ],
)
def test_combine(how, values, expected):
    assert combine(np.array(values), how) == pytest.approx(expected)


def test_sum_combine_starts_on_labels_that_are_each_below_on():
    event = replace(BASE, labels=("Glass", "Shatter"), combine="sum")
    scores = np.zeros(527, np.float32)
    scores[GLASS], scores[SHATTER] = 0.3, 0.3
    det = Detector([event])
    (start,) = det.update(ChunkResult("mic", 0, 0.0, 1.0, scores, -20.0))
    assert start.score == pytest.approx(0.6)
    assert (
        Detector([replace(event, combine="max")]).update(
            ChunkResult("mic", 0, 0.0, 1.0, scores, -20.0)
        )
        == []
    )


def test_smoothers():
    ema = Smoother("ema", 3)  # alpha 0.5
    assert [ema(v) for v in [1.0, 1.0, 0.0]] == [0.5, 0.75, 0.375]  # from silence
    median = Smoother("median", 3)
    assert [median(v) for v in [1.0, 1.0, 0.2, 0.9, 0.8]] == [0.0, 1.0, 1.0, 0.9, 0.8]
    assert Smoother(None, 3)(0.42) == 0.42


def test_deterministic_by_stream_time_only():
    """The same chunks give the same transitions (ids aside), whenever they are replayed."""
    stream = chunks([0.1, 0.9, 0.8, 0.2, 0.0, 0.7, 0.1], chunk_s=0.5)
    event = replace(BASE, hold_s=0.5, min_duration_s=0.5, cooldown_s=0.5)
    first = [(i, replace(t, id="")) for i, t in run(event, stream)]
    second = [(i, replace(t, id="")) for i, t in run(event, stream)]
    assert first == second and first


# ---------------------------------------------------------------------------------------------
# Properties over random streams

CHUNK_S = st.sampled_from([0.16, 0.5, 1.0, 2.0])


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[EventConfig, list[ChunkResult], float | None]:
    on = draw(st.floats(0.05, 1.0))
    off = draw(st.floats(0.01, 0.99).filter(lambda x: x < on))
    event = replace(
        BASE,
        on_threshold=on,
        off_threshold=off,
        min_duration_s=draw(st.sampled_from([0.0, 0.5, 1.0, 2.5, 4.0])),
        hold_s=draw(st.sampled_from([0.0, 0.5, 1.0, 3.0])),
        cooldown_s=draw(st.sampled_from([0.0, 1.0, 5.0])),
    )
    n = draw(st.integers(1, 60))
    values = draw(
        st.lists(st.sampled_from([0.0, off, (off + on) / 2, on, 1.0]), min_size=n, max_size=n)
    )
    levels = draw(st.lists(st.sampled_from([-90.0, -50.0, -20.0]), min_size=n, max_size=n))
    gate = draw(st.sampled_from([None, -60.0, -30.0]))
    durations = draw(st.lists(CHUNK_S, min_size=n, max_size=n))
    stream, t = [], 0.0
    for i in range(n):
        scores = np.zeros(527, np.float32)
        scores[GLASS] = values[i]
        end = t + durations[i]
        stream.append(ChunkResult("mic", i, t, end, scores, levels[i]))
        t = end
    return event, stream, gate


def _loud(chunk: ChunkResult, gate: float | None) -> bool:
    return gate is None or chunk.level_dbfs >= gate


def _above_on(chunk: ChunkResult, event: EventConfig, gate: float | None) -> bool:
    return _loud(chunk, gate) and float(chunk.scores[GLASS]) >= event.on_threshold


def _below_off(chunk: ChunkResult, event: EventConfig, gate: float | None) -> bool:
    return not _loud(chunk, gate) or float(chunk.scores[GLASS]) < event.off_threshold


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_properties(scenario):
    event, stream, gate = scenario
    found = run(event, stream, gate=gate)
    starts = [(i, t) for i, t in found if t.type == "start"]
    ends = [(i, t) for i, t in found if t.type == "end"]

    # No flapping: start, end, start, end ..., each pair one id, ids unique; close() ended all.
    assert [t.type for _, t in found] == ["start", "end"] * len(starts)
    assert all(s.id == e.id for (_, s), (_, e) in zip(starts, ends, strict=True))
    assert len({t.id for _, t in starts}) == len(starts)

    for (si, s), (ei, e) in zip(starts, ends, strict=True):
        assert e.start_s == s.start_s and e.end_s is not None
        assert e.end_s >= s.start_s and e.duration_s == pytest.approx(e.end_s - s.start_s)
        # Starts respect min_duration and the volume gate: every chunk from the crossing to the
        # start was loud enough and at or above on, for at least min_duration_s.
        run_chunks = [c for c in stream[: si + 1] if c.start_s >= s.start_s - EPS]
        assert run_chunks and run_chunks[0].start_s == pytest.approx(s.start_s)
        assert all(_above_on(c, event, gate) for c in run_chunks)
        assert stream[si].end_s - s.start_s >= event.min_duration_s - 1e-6
        # ... and it started as soon as that held, not later.
        if si > 0 and len(run_chunks) > 1:
            assert stream[si - 1].end_s - s.start_s < event.min_duration_s + 1e-6
        # Ends respect hold: from end_s to the chunk that ended it, everything was below off,
        # for at least hold_s (unless close() ended it); the chunk before end_s was above off.
        quiet = [c for c in stream[si + 1 : ei + 1] if c.start_s >= e.end_s - EPS]
        assert all(_below_off(c, event, gate) for c in quiet)
        if ei < len(stream):
            assert stream[ei].end_s - e.end_s >= event.hold_s - 1e-6
        last_loud = [c for c in stream[: ei + 1] if abs(c.end_s - e.end_s) < 1e-6]
        assert last_loud and not _below_off(last_loud[0], event, gate)
        # Peak is the highest score seen in the episode (the start's score is included).
        assert e.peak >= s.score

    # Never overlapping itself, and cooldown respected between episodes.
    for (_, prev), (_, nxt) in zip(ends, starts[1:], strict=False):
        assert nxt.start_s >= prev.end_s + event.cooldown_s - 1e-6

    # Nothing missed: after every chunk, an idle event has no qualifying run of loud chunks
    # (past the cooldown) long enough to start, and an active one no quiet run long enough to end.
    start_at = {i for i, _ in starts}
    end_at = {i: t for i, t in ends if i < len(stream)}
    active, cooldown_until = False, float("-inf")
    for k, chunk in enumerate(stream):
        if k in start_at:
            active = True
        if k in end_at:
            active = False
            cooldown_until = end_at[k].end_s + event.cooldown_s
        if active:
            quiet = _trailing(stream[: k + 1], lambda c: _below_off(c, event, gate))
            assert not quiet or chunk.end_s - quiet[0].start_s < event.hold_s - 1e-6
        else:
            loud = _trailing(
                stream[: k + 1],
                lambda c, after=cooldown_until: (
                    _above_on(c, event, gate) and c.start_s >= after - 1e-6
                ),
            )
            assert not loud or chunk.end_s - loud[0].start_s < event.min_duration_s - 1e-6


def _trailing(stream: list[ChunkResult], test) -> list[ChunkResult]:
    """The longest run at the end of the stream whose chunks all pass the test."""
    run: list[ChunkResult] = []
    for chunk in reversed(stream):
        if not test(chunk):
            break
        run.insert(0, chunk)
    return run


@settings(max_examples=150, deadline=None)
@given(
    scenarios(),
    st.sampled_from(["ema", "median"]),
    st.integers(1, 6),
    st.integers(0, 60),
)
def test_smoothed_streams_never_flap_and_close_ends_everything(scenario, kind, n, cut):
    event, stream, gate = scenario
    event = replace(event, smoothing=kind, smoothing_chunks=n)
    det = Detector([event], min_level_dbfs=gate)
    found = [t for c in stream[:cut] for t in det.update(c)]
    open_now = det.active()
    closing = det.close()
    assert [t.event for t in closing] == sorted(open_now)
    found += closing
    assert [t.type for t in found] == ["start", "end"] * (len(found) // 2)
    assert det.active() == set()
