"""The integration's one schema: topics, valid payloads, and the ways a payload is dropped."""

from __future__ import annotations

from datetime import UTC, datetime
import json
from typing import Any

from hypothesis import given, settings, strategies as st
import pytest

from custom_components.sat_audio.protocol import (
    MAX_PAYLOAD_BYTES,
    Dropped,
    EventInfo,
    ListenerInfo,
    Scores,
    Topic,
    Transition,
    classify,
    parse,
)
from payloads import BASE, GLASS, info, scores, transition
from strategies import JSON, encode, mutated


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        (f"{BASE}/status", Topic("status")),
        (f"{BASE}/info", Topic("info")),
        (f"{BASE}/scores", Topic("scores")),
        (f"{BASE}/listening", Topic("listening")),
        (f"{BASE}/listening/set", Topic("command")),
        (f"{BASE}/event/glass_breaking", Topic("transition", "glass_breaking")),
        (f"{BASE}/event/glass_breaking/state", Topic("event_state", "glass_breaking")),
        (f"{BASE}/event/Glass", Topic("unknown")),
        (f"{BASE}/event/a/b", Topic("unknown")),
        (f"{BASE}/level/mic", Topic("unknown")),
        (f"{BASE}/info/extra", Topic("unknown")),
        (f"{BASE}x/status", Topic("unknown")),
        ("other/kitchen/status", Topic("unknown")),
    ],
)
def test_classify(topic: str, expected: Topic) -> None:
    """Each topic under the listener maps to the kind of message it carries."""
    assert classify(BASE, topic) == expected


def test_valid_payloads() -> None:
    """The documented examples parse into their dataclasses; unknown fields are ignored."""
    parsed = parse("info", json.dumps(info(future_field={"x": 1})))
    assert isinstance(parsed, ListenerInfo)
    assert parsed.events[0] == EventInfo(
        "glass_breaking", "Glass breaking", ("Glass", "Shatter"), 0.45, 0.3
    )
    assert parsed.sources[0].state == "ok"
    assert parsed.counters["chunks"] == 1234

    start = parse("transition", json.dumps(transition("start")).encode())
    assert isinstance(start, Transition)
    assert start.start == datetime(2026, 11, 25, 5, 1, 2, tzinfo=UTC)
    assert start.end is None
    end = parse("transition", json.dumps(transition("end")))
    assert isinstance(end, Transition)
    assert end.end == datetime(2026, 11, 25, 5, 1, 6, 500000, tzinfo=UTC)

    parsed_scores = parse("scores", json.dumps(scores()))
    assert isinstance(parsed_scores, Scores)
    assert parsed_scores.top[0].label == "Speech"
    assert parse("scores", json.dumps(scores(level_dbfs=None))).level_dbfs is None

    minimal = {k: v for k, v in info().items() if k not in ("chunk_s", "listening", "sources")}
    assert isinstance(parse("info", json.dumps(minimal)), ListenerInfo)

    assert parse("status", b"online") is True
    assert parse("status", "offline") is False
    assert parse("event_state", b"ON") is True
    assert parse("listening", b"OFF") is False


def with_event(**changes: Any) -> dict[str, Any]:
    """Return an info whose one event has `changes`."""
    return info(events=[GLASS | changes])


DROPPED = [
    ("info", b"\xff\xfe", "not UTF-8"),
    ("info", b"x" * (MAX_PAYLOAD_BYTES + 1), "over 65536"),
    ("info", b"[" * 60_000, "not JSON"),  # would recurse past Python's limit
    ("info", b"[1, 2]", "not a JSON object"),
    ("scores", json.dumps(scores(level_dbfs=float("nan"))), "NaN is not a JSON number"),
    ("scores", json.dumps(scores(level_dbfs=float("-inf"))), "-Infinity is not a JSON"),
    ("info", json.dumps(info(v=True)), "not protocol version 1"),
    ("info", json.dumps(info(v="1")), "not protocol version 1"),
    ("info", json.dumps(info(id="Kitchen")), "not a slug"),
    ("info", json.dumps(info(name="x" * 256)), "not a short string"),
    ("info", json.dumps(info(events=[GLASS, GLASS])), "duplicate event key"),
    ("info", json.dumps(with_event(on_threshold=1.5)), "score outside 0..1"),
    ("info", json.dumps(with_event(on_threshold=True)), "not a number"),
    ("info", json.dumps(with_event(labels="Glass")), "expected list"),
    ("info", json.dumps(info(chunk_s=0)), "chunk_s"),
    ("info", json.dumps(info(counters={"chunks": -1})), "not a count"),
    ("transition", json.dumps(transition(type="pause")), "type"),
    ("transition", json.dumps(transition(start="2026-11-25T05:01:02")), "with offset"),
    ("transition", json.dumps(transition(start="yesterday")), "with offset"),
    ("transition", json.dumps(transition(id="")), "length"),
    ("transition", json.dumps(transition(duration_s=-1)), "negative"),
    ("transition", json.dumps({"v": 1}), "required key not provided"),
    ("scores", json.dumps(scores(top=[{"label": "x", "score": 2}])), "score outside 0..1"),
    ("status", b"ONLINE", "is not one of online, offline"),
    ("event_state", b"on", "is not one of ON, OFF"),
    ("command", b"ON", "no command messages are read"),
]


@pytest.mark.parametrize(("kind", "payload", "reason"), DROPPED, ids=[d[2] for d in DROPPED])
def test_dropped_with_reason(kind: Any, payload: str | bytes, reason: str) -> None:
    """Every way a payload is wrong comes back as Dropped with a reason, never an exception."""
    dropped = parse(kind, payload)
    assert isinstance(dropped, Dropped)
    assert reason in dropped.reason
    assert dropped.version is None


def test_newer_version_is_flagged() -> None:
    """A payload of another protocol version is dropped and marked, so it is warned about."""
    dropped = parse("transition", json.dumps(transition(v=2, renamed="field")))
    assert isinstance(dropped, Dropped)
    assert dropped.version == 2


KINDS = st.sampled_from(["status", "info", "event_state", "transition", "scores", "listening"])


@settings(max_examples=1500, deadline=None)
@given(KINDS, st.binary(max_size=200) | JSON.map(encode))
def test_parse_never_raises(kind: Any, payload: bytes) -> None:
    """Arbitrary bytes and JSON on any topic: a value or Dropped, nothing else."""
    result = parse(kind, payload)
    assert isinstance(result, Dropped | ListenerInfo | Transition | Scores | bool)


@settings(max_examples=1500, deadline=None)
@given(st.data())
def test_mutated_payloads_never_raise(data: st.DataObject) -> None:
    """Valid payloads with one value anywhere replaced: still a value or Dropped."""
    kind, valid = data.draw(
        st.sampled_from(
            [
                ("info", info()),
                ("transition", transition("start")),
                ("transition", transition("end")),
                ("scores", scores()),
            ]
        )
    )
    result = parse(kind, encode(data.draw(mutated(valid))))
    assert isinstance(result, Dropped | ListenerInfo | Transition | Scores)
