"""Hypothesis strategies: payloads the listener would never send, and extreme valid ones."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
import json
from typing import Any

from hypothesis import strategies as st

from custom_components.sat_audio.protocol import (
    MAX_CLIP_BYTES,
    MAX_PAYLOAD_BYTES,
    Dropped,
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

# UTC offsets in whole minutes, as ISO 8601 writes them.
OFFSETS = st.integers(-23 * 60, 23 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes)))
# ISO 8601 times from year 1 to 9999, with and without an offset.
TIMES = st.datetimes(timezones=st.none() | OFFSETS).map(lambda t: t.isoformat())

# Any JSON value, including the NaN and Infinity tokens Python's encoder writes, 400-digit ints
# and times.
JSON: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([10**400, -(10**400)])
    | st.floats()
    | st.text(max_size=30)
    | TIMES
    | st.sampled_from(["ON", "OFF", "online", "start", "end", "kitchen", "glass_breaking"]),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)

VALID: dict[str, list[dict[str, Any]]] = {
    "info": [info(), info(events=[GLASS, LOUD]), v1(info())],
    "event/glass_breaking": [
        transition("start", clip=clip_name()),
        transition("end"),
        v1(transition("end")),
        loud_transition("end", event="glass_breaking"),
    ],
    "event/dog_bark": [transition("start", "dog_bark")],
    "scores": [scores()],
    "active": [active("glass_breaking", "dog_bark")],
}
TEXT_TOPICS = [
    "status",
    "listening",
    "event/glass_breaking/state",
    "event/dog_bark/state",
    "event/glass_breaking/enabled",
]


@st.composite
def mutated(draw: st.DrawFn, value: Any) -> Any:
    """Replace one place anywhere inside `value` (or drop a key) with arbitrary JSON."""
    if isinstance(value, dict) and value and draw(st.booleans()):
        out = copy.copy(value)
        key = draw(st.sampled_from(sorted(out)))
        if draw(st.integers(0, 4)) == 0:
            del out[key]
        else:
            out[key] = draw(mutated(out[key]))
        return out
    if isinstance(value, list) and value and draw(st.booleans()):
        out = list(value)
        index = draw(st.integers(0, len(out) - 1))
        out[index] = draw(mutated(out[index]))
        return out
    return draw(JSON)


def encode(value: Any) -> bytes:
    """Encode as JSON text, NaN and Infinity included, and as UTF-8 bytes."""
    return json.dumps(value).encode("utf-8", "surrogatepass")


# A mutation may land on something still valid (one label for another): storm() filters those.
@st.composite
def broken_json(draw: st.DrawFn) -> tuple[str, bytes]:
    """A listener payload with one thing wrong, on its own topic."""
    suffix = draw(st.sampled_from(sorted(VALID)))
    payload = encode(draw(mutated(draw(st.sampled_from(VALID[suffix])))))
    return suffix, payload


@st.composite
def broken_text(draw: st.DrawFn) -> tuple[str, bytes]:
    """Anything but the exact words on a plain-text topic."""
    suffix = draw(st.sampled_from(TEXT_TOPICS))
    payload = draw(
        st.binary(max_size=40)
        | st.text(max_size=40).map(lambda text: text.encode("utf-8", "surrogatepass"))
        | st.sampled_from([b"on", b"Off", b"ONLINE", b"1", b"true", b"", b"\xff"])
    )
    return suffix, payload


def anything() -> st.SearchStrategy[bytes]:
    """Random bytes, random JSON, a number JSON reads as infinite, one payload over the limit."""
    return (
        st.binary(max_size=300)
        | JSON.map(encode)
        | st.just(b'{"v": 1, "level_dbfs": 1e999, "score": 1e999}')
        | st.just(b'{"v": 1, "pad": "' + b"x" * MAX_PAYLOAD_BYTES + b'"}')
    )


UNKNOWN_EVENT = [
    ("event/doorbell", encode(transition("start", "doorbell"))),
    ("event/doorbell/state", b"ON"),
    ("event/doorbell/enabled", b"OFF"),
    (f"clip/{clip_name('doorbell')}", b"fLaC"),
]
# Clip names and bytes the integration must refuse (each with one warning line).
BAD_CLIP_NAMES = st.text(max_size=80).filter(lambda name: "/" not in name) | st.sampled_from(
    [
        clip_name().upper(),
        clip_name(fmt="wav"),
        clip_name() + ".part",
        "." + clip_name(),
        "..",
        "glass_breaking-20261125T050102-5f0c1d2e.flac",
        f"{'x' * 65}-20261125T050102Z-5f0c1d2e.flac",
    ]
)


@st.composite
def broken_clip(draw: st.DrawFn) -> tuple[str, bytes]:
    """A clip with a bad name, or a good name and no bytes or too many."""
    if draw(st.booleans()):
        return f"clip/{draw(BAD_CLIP_NAMES)}", draw(st.binary(min_size=1, max_size=50))
    size = draw(st.sampled_from([0, MAX_CLIP_BYTES + 1]))
    return f"clip/{clip_name()}", b"x" * size


def must_drop(message: tuple[str, bytes]) -> bool:
    """Whether the integration has to ignore this message: unread topic, bad payload, or an
    event the listener's info does not list."""
    topic = classify(BASE, f"{BASE}/{message[0]}")
    if topic.kind in ("unknown", "command") or message in UNKNOWN_EVENT:
        return True
    if topic.kind == "clip":
        clip = parse_clip(topic.clip or "", message[1])
        return isinstance(clip, Dropped) or clip.event not in ("glass_breaking", "dog_bark")
    return isinstance(parse(topic.kind, message[1]), Dropped)


def storm() -> st.SearchStrategy[tuple[str, bytes]]:
    """One message the integration must drop, on any topic of the listener."""
    topics = st.sampled_from(
        [
            *sorted(VALID),
            *TEXT_TOPICS,
            "listening/set",
            "event/glass_breaking/enabled/set",
            "level/mic",
            "event",
            "event/Bad-Key",
            "clip",
        ]
    ) | st.text(st.characters(codec="utf-8", exclude_characters="+#\x00"), max_size=20)
    return (
        broken_json()
        | broken_text()
        | broken_clip()
        | st.tuples(topics, anything())
        | st.sampled_from(UNKNOWN_EVENT)
    ).filter(must_drop)


# Valid payloads at the edges of the schema: long names, huge and tiny numbers, far-off times.
SLUGS = st.from_regex(r"[a-z0-9_]{1,64}", fullmatch=True)
NAMES = st.text(min_size=1, max_size=255)
SCORES = st.floats(min_value=0.0, max_value=1.0)
NUMBERS = st.floats(allow_nan=False, allow_infinity=False)
VALID_TIMES = st.datetimes(
    min_value=datetime(2000, 1, 2), max_value=datetime(8998, 12, 30), timezones=OFFSETS
).map(lambda t: t.isoformat())
KEYS = st.sampled_from(["glass_breaking", "dog_bark"]) | SLUGS
CLIP_NAMES = st.builds(
    lambda key, episode, fmt: clip_name(key, episode, fmt),
    KEYS,
    st.from_regex(r"[0-9a-f]{8}", fullmatch=True),
    st.sampled_from(["flac", "opus"]),
)
V2_EVENT = {"enabled": st.booleans(), "clip": st.booleans()}


def valid_info() -> st.SearchStrategy[dict[str, Any]]:
    """An info of the kitchen listener (v1 or v2) with any events, sources and counters."""
    sound = {
        "key": KEYS,
        "name": NAMES,
        "labels": st.lists(NAMES, max_size=5),
        "on_threshold": SCORES,
        "off_threshold": SCORES,
    }
    loud = {
        "key": KEYS,
        "name": NAMES,
        "kind": st.just("loud"),
        "labels": st.just([]),
        "on_dbfs": NUMBERS,
        "off_dbfs": NUMBERS,
    }
    v2_event = st.fixed_dictionaries(sound | {"kind": st.just("sound")}, optional=V2_EVENT)
    v2_event |= st.fixed_dictionaries(loud, optional=V2_EVENT)
    clips = st.fixed_dictionaries(
        {
            "format": st.sampled_from(["flac", "opus"]),
            "publish": st.booleans(),
            "max_count": st.integers(min_value=0),
            "max_age_days": st.floats(min_value=0.0, allow_infinity=False),
            "max_total_mb": st.floats(min_value=0.0, allow_infinity=False),
        }
    )
    source = st.fixed_dictionaries(
        {
            "name": NAMES,
            "kind": NAMES,
            "state": st.sampled_from(["ok", "lagging", "reconnecting", "failed"]),
            "overflows": st.integers(min_value=0),
            "dropped_s": st.floats(min_value=0.0, allow_infinity=False),
        }
    )
    common = {
        "id": st.just("kitchen"),
        "name": NAMES,
        "version": NAMES,
        "model": NAMES,
        "chunk_s": st.none() | st.floats(min_value=1e-300, allow_infinity=False),
        "listening": st.none() | st.booleans(),
        "sources": st.lists(source, max_size=3),
        "counters": st.dictionaries(NAMES, st.integers(min_value=0), max_size=3),
    }
    unique = {"max_size": 4, "unique_by": lambda e: e["key"]}
    return st.fixed_dictionaries(
        common | {"v": st.just(1), "events": st.lists(st.fixed_dictionaries(sound), **unique)}
    ) | st.fixed_dictionaries(
        common
        | {
            "v": st.just(2),
            "events": st.lists(v2_event, **unique),
            "clips": st.none() | clips,
        }
    )


def valid_transition() -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    """A start or end of any episode of a (maybe configured) event, on its own topic."""
    common = {
        "id": st.text(min_size=1, max_size=64),
        "type": st.sampled_from(["start", "end"]),
        "event": KEYS,
        "source": NAMES,
        "start": VALID_TIMES,
        "end": st.none() | VALID_TIMES,
        "duration_s": st.floats(min_value=0.0, allow_infinity=False),
    }
    labelled = {"label": NAMES, "score": SCORES, "peak": SCORES}
    # A loud event's transition: no label, levels in dBFS.
    loud = {"label": st.none(), "score": NUMBERS, "peak": NUMBERS}
    v2 = {
        "clip": st.none() | CLIP_NAMES,
        "reason": st.none() | st.sampled_from(["quiet", "disabled", "paused", "stopped"]) | NAMES,
    }
    payload = st.fixed_dictionaries(common | labelled | {"v": st.just(1)})
    levels = st.fixed_dictionaries(labelled) | st.fixed_dictionaries(loud)
    v2_payload = st.fixed_dictionaries(common | {"v": st.just(2)}, optional=v2)
    payload |= st.tuples(v2_payload, levels).map(lambda parts: parts[0] | parts[1])
    return payload.map(lambda p: (f"event/{p['event']}", p))


def valid_scores() -> st.SearchStrategy[dict[str, Any]]:
    """Scores with any level and top list."""
    return st.fixed_dictionaries(
        {
            "v": st.sampled_from([1, 2]),
            "source": NAMES,
            "time": VALID_TIMES,
            "level_dbfs": st.none() | NUMBERS,
            "top": st.lists(st.fixed_dictionaries({"label": NAMES, "score": SCORES}), max_size=5),
        }
    )


def valid_messages() -> st.SearchStrategy[tuple[str, bytes]]:
    """Any message the schema accepts, on any topic the integration reads."""
    words = st.sampled_from(
        [
            ("status", b"online"),
            ("status", b"offline"),
            ("listening", b"ON"),
            ("listening", b"OFF"),
        ]
    ) | st.tuples(
        KEYS.flatmap(lambda key: st.sampled_from([f"event/{key}/state", f"event/{key}/enabled"])),
        st.sampled_from([b"ON", b"OFF"]),
    )
    actives = st.lists(KEYS, max_size=6).map(lambda keys: ("active", encode(active(*keys))))
    clips = st.tuples(
        CLIP_NAMES.map(lambda name: f"clip/{name}"), st.binary(min_size=1, max_size=2000)
    )
    return (
        words
        | actives
        | clips
        | valid_info().map(lambda p: ("info", encode(p)))
        | valid_transition().map(lambda m: (m[0], encode(m[1])))
        | valid_scores().map(lambda p: ("scores", encode(p)))
    )
