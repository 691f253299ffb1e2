"""The integration's one schema: topics, valid payloads, and the ways a payload is dropped."""

from __future__ import annotations

from datetime import UTC, datetime
import json
from typing import Any

from hypothesis import given, settings, strategies as st
import pytest

from custom_components.sat_audio.protocol import (
    MAX_CLIP_BYTES,
    MAX_PAYLOAD_BYTES,
    Active,
    ClipSettings,
    Dropped,
    EventInfo,
    ListenerInfo,
    Scores,
    Topic,
    Transition,
    classify,
    parse,
    parse_clip,
)
from payloads import (
    BASE,
    GLASS,
    LOUD,
    active,
    clip_name,
    info,
    loud_transition,
    scores,
    transition,
    v1,
)
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
        (f"{BASE}/active", Topic("active")),
        (f"{BASE}/event/glass_breaking/enabled", Topic("event_enabled", "glass_breaking")),
        (f"{BASE}/event/glass_breaking/enabled/set", Topic("command", "glass_breaking")),
        (f"{BASE}/clip/{clip_name()}", Topic("clip", clip=clip_name())),
        (f"{BASE}/clip/../x", Topic("unknown")),
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
        "glass_breaking", "Glass breaking", ("Glass", "Shatter"), 0.45, 0.3, enabled=True, clip=True
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
    ("info", json.dumps(info(v=True)), "not protocol version 1 or 2"),
    ("info", json.dumps(info(v="1")), "not protocol version 1 or 2"),
    ("info", json.dumps(info(id="Kitchen")), "not a slug"),
    ("info", json.dumps(info(name="x" * 256)), "not a short string"),
    ("info", json.dumps(info(events=[GLASS, GLASS])), "duplicate event key"),
    ("info", json.dumps(with_event(on_threshold=1.5)), "score outside 0..1"),
    ("info", json.dumps(with_event(on_threshold=True)), "not a number"),
    ("info", json.dumps(with_event(labels="Glass")), "expected list"),
    ("info", json.dumps(info(chunk_s=0)), "chunk_s"),
    ("info", json.dumps(info(counters={"chunks": -1})), "not a count"),
    ("info", json.dumps(with_event(kind="loud")), "a loud event has on_dbfs"),
    ("info", json.dumps(info(events=[LOUD | {"labels": ["x"]}])), "a loud event has on_dbfs"),
    ("info", json.dumps(info(events=[{**LOUD, "on_dbfs": "-20"}])), "not a number"),
    ("info", json.dumps(with_event(kind="quiet")), "kind"),
    ("info", json.dumps(with_event(enabled="yes")), "not a boolean"),
    ("info", json.dumps(info(clips={"format": "mp3"})), "clips"),
    ("info", json.dumps(info(clips={**GLASS, "max_count": -1})), "clips"),
    ("transition", json.dumps(transition(label=None, v=1)), "a v1 transition has a label"),
    ("transition", json.dumps(transition(score=-12.0)), "score outside 0..1"),
    ("transition", json.dumps(transition(clip="../../etc/passwd")), "not a clip file name"),
    ("active", json.dumps({"v": 2, "events": ["Glass"]}), "not a slug"),
    ("active", json.dumps({"v": 2}), "required key not provided"),
    ("event_enabled", b"on", "is not one of ON, OFF"),
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
    dropped = parse("transition", json.dumps(transition(v=3, renamed="field")))
    assert isinstance(dropped, Dropped)
    assert dropped.version == 3


def test_v2_payloads() -> None:
    """v2's loud events, enabled and clip flags, clip settings, transitions and active list."""
    parsed = parse("info", json.dumps(info(events=[GLASS, LOUD])))
    assert isinstance(parsed, ListenerInfo)
    assert parsed.protocol == 2
    assert parsed.clips == ClipSettings("flac", True, 100, 30, 200)
    assert parsed.events[1] == EventInfo(
        "loud_noise",
        "Loud noise",
        (),
        None,
        None,
        kind="loud",
        enabled=True,
        clip=True,
        on_dbfs=-20.0,
        off_dbfs=-26.0,
    )
    assert parse("info", json.dumps(info(clips=None))).clips is None

    loud = parse("transition", json.dumps(loud_transition("end")))
    assert isinstance(loud, Transition)
    assert (loud.label, loud.score, loud.peak) == (None, -30.2, -12.1)
    assert (loud.clip, loud.reason) == (clip_name("loud_noise", "9a8b7c6d"), "quiet")
    later = parse("transition", json.dumps(transition("end", reason="renamed_later")))
    assert later.reason == "renamed_later"  # a newer listener's reason is not a reason to drop

    assert parse("active", json.dumps(active("glass_breaking", "loud_noise"))) == Active(
        ("glass_breaking", "loud_noise")
    )
    assert parse("active", json.dumps(active("dog_bark", "dog_bark"))) == Active(("dog_bark",))
    assert parse("event_enabled", b"OFF") is False


def test_v1_payloads_still_read() -> None:
    """A v1 listener's payloads: no enabled (its events cannot be switched), no clips."""
    parsed = parse("info", json.dumps(v1(info())))
    assert isinstance(parsed, ListenerInfo)
    assert parsed.protocol == 1
    assert parsed.clips is None
    assert (parsed.events[0].kind, parsed.events[0].enabled, parsed.events[0].clip) == (
        "sound",
        None,
        False,
    )
    end = parse("transition", json.dumps(v1(transition("end"))))
    assert isinstance(end, Transition)
    assert (end.clip, end.reason) == (None, None)


def test_clip_names_and_sizes() -> None:
    """A clip is taken by the documented name and up to MAX_CLIP_BYTES; anything else dropped."""
    clip = parse_clip(clip_name(), b"fLaC1234")
    assert not isinstance(clip, Dropped)
    assert (clip.event, clip.episode, clip.format, clip.data) == (
        "glass_breaking",
        "5f0c1d2e",
        "flac",
        b"fLaC1234",
    )
    assert not isinstance(parse_clip(clip_name(fmt="opus"), b"x" * MAX_CLIP_BYTES), Dropped)
    too_big = parse_clip(clip_name(), b"x" * (MAX_CLIP_BYTES + 1))
    assert isinstance(too_big, Dropped)
    assert f"over {MAX_CLIP_BYTES}" in too_big.reason
    for name in (
        "glass_breaking-20261125T050102Z-5f0c1d2e.wav",
        "Glass-20261125T050102Z-5f0c1d2e.flac",
        "glass_breaking-20261125T050102Z-5F0C1D2E.flac",
        ".flac",
        "..",
        clip_name() + "\n",
    ):
        dropped = parse_clip(name, b"fLaC")
        assert isinstance(dropped, Dropped)
        assert "not a clip file name" in dropped.reason
    assert isinstance(parse_clip(clip_name(), b""), Dropped)


KINDS = st.sampled_from(
    [
        "status",
        "info",
        "event_state",
        "event_enabled",
        "transition",
        "scores",
        "listening",
        "active",
    ]
)


@settings(max_examples=1500, deadline=None)
@given(KINDS, st.binary(max_size=200) | JSON.map(encode))
def test_parse_never_raises(kind: Any, payload: bytes) -> None:
    """Arbitrary bytes and JSON on any topic: a value or Dropped, nothing else."""
    result = parse(kind, payload)
    assert isinstance(result, Dropped | ListenerInfo | Transition | Scores | Active | bool)


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
                ("transition", loud_transition("end")),
                ("info", info(events=[GLASS, LOUD])),
                ("active", active("glass_breaking")),
                ("scores", scores()),
            ]
        )
    )
    result = parse(kind, encode(data.draw(mutated(valid))))
    assert isinstance(result, Dropped | ListenerInfo | Transition | Scores | Active)
