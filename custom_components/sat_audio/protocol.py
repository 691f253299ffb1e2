"""The listener's MQTT protocol, v1 and v2 (docs/protocol.md), read side: one schema for all.

The listener and this integration share no code; this module is the integration's reading of the
contract. Every function here is pure and never raises on a payload: anything that does not match
comes back as `Dropped` with a one-line reason, so callers log it at debug level and move on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
import json
import math
import re
from typing import Any, Final, Literal

import voluptuous as vol

from homeassistant.util import dt as dt_util

# The newest protocol version read; every version in VERSIONS is read (v1 payloads are v2 payloads
# without v2's fields).
VERSION: Final = 2
VERSIONS: Final = (1, 2)
# The contract's limits (docs/protocol.md, Limits; the listener refuses a config beyond them).
# The largest payload read at all:
MAX_PAYLOAD_BYTES: Final = 64 * 1024
MAX_SOURCES: Final = 32
MAX_EVENTS: Final = 128
MAX_LABELS: Final = 64  # of one event
MAX_TEXT: Final = 255  # characters of a name, label, source kind or error
MAX_SLUG: Final = 64  # characters of the listener id and an event key
# The largest clip file (binary payload on clip/<name>) taken; the listener keeps bigger ones.
MAX_CLIP_BYTES: Final = 8 * 1024 * 1024
SOURCE_STATES: Final = ("ok", "lagging", "reconnecting", "failed")
EVENT_KINDS: Final = ("sound", "loud")
CLIP_FORMATS: Final = ("flac", "opus")
SLUG_RE: Final = re.compile(r"[a-z0-9_]+")
# <event key>-<episode start, UTC>-<first 8 hex of the episode id>.<format>
CLIP_NAME_RE: Final = re.compile(
    r"(?P<key>[a-z0-9_]{1,64})-(?P<start>[0-9]{8}T[0-9]{6}Z)-(?P<episode>[0-9a-f]{8})"
    r"\.(?P<format>flac|opus)"
)

type Kind = Literal[
    "status",
    "info",
    "event_state",
    "event_enabled",
    "transition",
    "scores",
    "listening",
    "active",
    "clip",
    "command",
    "unknown",
]


@dataclass(frozen=True, slots=True)
class EventInfo:
    """One configured event as the listener announces it.

    A `sound` event has model labels and score thresholds; a `loud` event (v2) is the level
    alone, with dBFS thresholds. `enabled` is None from a v1 listener, which cannot switch events.
    """

    key: str
    name: str
    labels: tuple[str, ...]
    on_threshold: float | None
    off_threshold: float | None
    kind: Literal["sound", "loud"] = "sound"
    enabled: bool | None = None
    clip: bool = False
    on_dbfs: float | None = None
    off_dbfs: float | None = None


@dataclass(frozen=True, slots=True)
class ClipSettings:
    """Where the listener's clips go and how long they are kept (the integration keeps as long)."""

    format: Literal["flac", "opus"]
    publish: bool
    max_count: int
    max_age_days: float
    max_total_mb: float


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """One audio source of the listener and its health."""

    name: str
    kind: str
    state: str
    overflows: int
    dropped_s: float
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ListenerInfo:
    """The retained info message: who the listener is and what it listens for."""

    id: str
    name: str
    version: str
    model: str
    chunk_s: float | None
    listening: bool | None
    sources: tuple[SourceInfo, ...]
    events: tuple[EventInfo, ...]
    counters: dict[str, int]
    protocol: int = VERSION
    clips: ClipSettings | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    """The start or end of one episode of an event.

    A loud event's transition has no label, and its score and peak are levels in dBFS.
    """

    id: str
    type: Literal["start", "end"]
    event: str
    source: str
    label: str | None
    score: float
    peak: float
    start: datetime
    end: datetime | None
    duration_s: float
    clip: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Active:
    """The keys of the events going on now (v2's retained `active` topic)."""

    events: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Clip:
    """One clip file the listener sent: its name's parts and its bytes."""

    name: str
    event: str
    episode: str
    format: str
    data: bytes


@dataclass(frozen=True, slots=True)
class LabelScore:
    """One AudioSet label and its score."""

    label: str
    score: float


@dataclass(frozen=True, slots=True)
class Scores:
    """The top labels and sound level of one chunk."""

    source: str
    time: datetime
    level_dbfs: float | None
    top: tuple[LabelScore, ...]


@dataclass(frozen=True, slots=True)
class Dropped:
    """A payload that is not ours to use; `reason` says why, for a debug log line.

    `version` is the payload's protocol version when that, and nothing else, is what is unknown.
    """

    reason: str
    version: int | None = None


@dataclass(frozen=True, slots=True)
class Topic:
    """Where a message arrived, relative to `<prefix>/<listener id>/`."""

    kind: Kind
    event: str | None = None
    clip: str | None = None


type Payload = ListenerInfo | Transition | Scores | Active | bool


def topic_base(prefix: str, listener_id: str) -> str:
    """Return the topic every message of one listener hangs under."""
    return f"{prefix}/{listener_id}"


def command_topic(prefix: str, listener_id: str) -> str:
    """Return the topic that pauses or resumes the listener's analysis."""
    return f"{topic_base(prefix, listener_id)}/listening/set"


def event_enabled_command_topic(base: str, key: str) -> str:
    """Return the retained topic that switches one event on or off (v2)."""
    return f"{base}/event/{key}/enabled/set"


def classify(base: str, topic: str) -> Topic:
    """Name the kind of message a topic under `base` carries.

    Any `clip/<name>` is a clip, so that a badly named one can be told apart and reported.
    """
    if not topic.startswith(f"{base}/"):
        return Topic("unknown")
    parts = topic[len(base) + 1 :].split("/")
    match parts:
        case ["status"] | ["info"] | ["scores"] | ["listening"] | ["active"]:
            return Topic(parts[0])  # type: ignore[arg-type]
        case ["listening", "set"]:
            return Topic("command")
        case ["event", key] if SLUG_RE.fullmatch(key):
            return Topic("transition", key)
        case ["event", key, "state"] if SLUG_RE.fullmatch(key):
            return Topic("event_state", key)
        case ["event", key, "enabled"] if SLUG_RE.fullmatch(key):
            return Topic("event_enabled", key)
        case ["event", key, "enabled", "set"] if SLUG_RE.fullmatch(key):
            return Topic("command", key)
        case ["clip", name]:
            return Topic("clip", clip=name)
    return Topic("unknown")


def _slug(value: Any) -> str:
    if not isinstance(value, str) or len(value) > MAX_SLUG or not SLUG_RE.fullmatch(value):
        raise vol.Invalid("not a slug")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise vol.Invalid("not a short string")
    return value


def _number(value: Any) -> float:
    # bool is an int subclass; JSON's 1e999 decodes to inf and a 400-digit int overflows a float.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise vol.Invalid("not a number")
    try:
        number = float(value)
    except OverflowError:
        raise vol.Invalid("too large") from None
    if not math.isfinite(number):
        raise vol.Invalid("not finite")
    return number


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise vol.Invalid("not a count")
    return value


def _score(value: Any) -> float:
    if not 0.0 <= (number := _number(value)) <= 1.0:
        raise vol.Invalid("score outside 0..1")
    return number


def _non_negative(value: Any) -> float:
    if (number := _number(value)) < 0.0:
        raise vol.Invalid("negative")
    return number


def _positive(value: Any) -> float:
    if (number := _number(value)) <= 0.0:
        raise vol.Invalid("not positive")
    return number


def _time(value: Any) -> datetime:
    if not isinstance(value, str) or len(value) > 64:
        raise vol.Invalid("not a time string")
    parsed: datetime | None = None
    try:
        parsed = dt_util.parse_datetime(value)
        # Far-off years overflow when Home Assistant converts them to UTC for a timestamp state.
        year = parsed.astimezone(UTC).year if parsed is not None and parsed.tzinfo else 0
    except (ValueError, OverflowError):
        year = 0
    if parsed is None or not 2000 <= year < 9000:
        raise vol.Invalid("not an ISO 8601 time with offset, years 2000 to 8999")
    return parsed


def _version(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value not in VERSIONS:
        raise vol.Invalid(f"not protocol version {' or '.join(map(str, VERSIONS))}")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise vol.Invalid("not a boolean")
    return value


def _unique_keys(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if len({event["key"] for event in events}) != len(events):
        raise vol.Invalid("duplicate event key")
    return events


def _clip_name(value: Any) -> str:
    if not isinstance(value, str) or not CLIP_NAME_RE.fullmatch(value):
        raise vol.Invalid("not a clip file name")
    return value


def _event_kind(event: dict[str, Any]) -> dict[str, Any]:
    """A sound event has score thresholds; a loud one dBFS thresholds and no labels."""
    if event["kind"] == "loud":
        if "on_dbfs" not in event or "off_dbfs" not in event or event["labels"]:
            raise vol.Invalid("a loud event has on_dbfs, off_dbfs and no labels")
    elif "on_threshold" not in event or "off_threshold" not in event:
        raise vol.Invalid("a sound event has on_threshold and off_threshold")
    return event


def _transition_levels(transition: dict[str, Any]) -> dict[str, Any]:
    """A labelled transition scores 0..1; an unlabelled one (a loud event, v2) is in dBFS."""
    if transition["label"] is not None:
        check = _score
    elif transition["v"] >= 2:
        check = _number
    else:
        raise vol.Invalid("a v1 transition has a label")
    for key in ("score", "peak"):
        check(transition[key])
    return transition


def _list(item: Any, most: int) -> vol.All:
    return vol.All(list, vol.Length(max=most), [item])


# Unknown fields pass (the protocol may add optional fields without a version bump).
_SOURCE = vol.Schema(
    {
        vol.Required("name"): _text,
        vol.Required("kind"): _text,
        vol.Required("state"): vol.In(SOURCE_STATES),
        vol.Optional("overflows", default=0): _count,
        vol.Optional("dropped_s", default=0.0): _non_negative,
        vol.Optional("error", default=None): vol.Any(None, _text),
    },
    extra=vol.ALLOW_EXTRA,
)
_EVENT = vol.All(
    vol.Schema(
        {
            vol.Required("key"): _slug,
            vol.Required("name"): _text,
            vol.Optional("kind", default="sound"): vol.In(EVENT_KINDS),
            vol.Optional("labels", default=list): _list(_text, MAX_LABELS),
            vol.Optional("on_threshold"): _score,
            vol.Optional("off_threshold"): _score,
            vol.Optional("on_dbfs"): _number,
            vol.Optional("off_dbfs"): _number,
            vol.Optional("enabled"): _bool,
            vol.Optional("clip", default=False): _bool,
        },
        extra=vol.ALLOW_EXTRA,
    ),
    _event_kind,
)
_CLIPS = vol.Schema(
    {
        vol.Required("format"): vol.In(CLIP_FORMATS),
        vol.Required("publish"): _bool,
        vol.Required("max_count"): _count,
        vol.Required("max_age_days"): _non_negative,
        vol.Required("max_total_mb"): _non_negative,
    },
    extra=vol.ALLOW_EXTRA,
)
SCHEMAS: Final[dict[str, Callable[[Any], dict[str, Any]]]] = {
    "info": vol.Schema(
        {
            vol.Required("v"): _version,
            vol.Required("id"): _slug,
            vol.Required("name"): _text,
            vol.Required("version"): _text,
            vol.Required("model"): _text,
            vol.Optional("chunk_s"): vol.Any(None, _positive),
            vol.Optional("listening"): vol.Any(None, _bool),
            vol.Optional("sources", default=list): _list(_SOURCE, MAX_SOURCES),
            vol.Required("events"): vol.All(_list(_EVENT, MAX_EVENTS), _unique_keys),
            vol.Optional("counters", default=dict): vol.All(
                dict, vol.Length(max=32), {_text: _count}
            ),
            vol.Optional("clips", default=None): vol.Any(None, _CLIPS),
        },
        extra=vol.ALLOW_EXTRA,
    ),
    "transition": vol.All(
        vol.Schema(
            {
                vol.Required("v"): _version,
                vol.Required("id"): vol.All(_text, vol.Length(min=1, max=64)),
                vol.Required("type"): vol.In(["start", "end"]),
                vol.Required("event"): _slug,
                vol.Required("source"): _text,
                vol.Required("label"): vol.Any(None, _text),
                vol.Required("score"): _number,
                vol.Required("peak"): _number,
                vol.Required("start"): _time,
                vol.Required("end"): vol.Any(None, _time),
                vol.Required("duration_s"): _non_negative,
                vol.Optional("clip", default=None): vol.Any(
                    None, _clip_name, msg="not a clip file name"
                ),
                # quiet, disabled, paused or stopped; a newer listener's word passes as it is.
                vol.Optional("reason", default=None): vol.Any(None, _text),
            },
            extra=vol.ALLOW_EXTRA,
        ),
        _transition_levels,
    ),
    "active": vol.Schema(
        {
            vol.Required("v"): _version,
            vol.Required("events"): vol.All(
                _list(_slug, MAX_EVENTS), lambda keys: list(dict.fromkeys(keys))
            ),
        },
        extra=vol.ALLOW_EXTRA,
    ),
    "scores": vol.Schema(
        {
            vol.Required("v"): _version,
            vol.Required("source"): _text,
            vol.Required("time"): _time,
            vol.Optional("level_dbfs"): vol.Any(None, _number),
            vol.Required("top"): _list(
                vol.Schema(
                    {vol.Required("label"): _text, vol.Required("score"): _score},
                    extra=vol.ALLOW_EXTRA,
                ),
                64,
            ),
        },
        extra=vol.ALLOW_EXTRA,
    ),
}
# The plain-text topics and the values each accepts.
_WORDS: Final[dict[str, dict[str, bool]]] = {
    "status": {"online": True, "offline": False},
    "event_state": {"ON": True, "OFF": False},
    "event_enabled": {"ON": True, "OFF": False},
    "listening": {"ON": True, "OFF": False},
}


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _decode_json(text: str) -> dict[str, Any] | Dropped:
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as err:
        return Dropped(f"not JSON: {err}")
    if not isinstance(data, dict):
        return Dropped("not a JSON object")
    version = data.get("v")
    if isinstance(version, int) and not isinstance(version, bool) and version not in VERSIONS:
        return Dropped(f"protocol version {version} is not one of {VERSIONS}", version=version)
    return data


def parse(kind: Kind, payload: bytes | bytearray | str) -> Payload | Dropped:
    """Validate one payload for a topic kind; return its value or why it was dropped.

    Plain-text topics give a bool, JSON topics their dataclass. A str payload (discovery hands
    one over) is measured in characters, a lower bound of its size in bytes.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        return Dropped(f"payload of {len(payload)} bytes is over {MAX_PAYLOAD_BYTES}")
    if isinstance(payload, bytes | bytearray):
        try:
            payload = payload.decode("utf-8")
        except UnicodeDecodeError:
            return Dropped("not UTF-8")
    if kind in _WORDS:
        if (word := payload.strip()) in _WORDS[kind]:
            return _WORDS[kind][word]
        return Dropped(f"{word[:20]!r} is not one of {', '.join(_WORDS[kind])}")
    if kind not in SCHEMAS:
        return Dropped(f"no {kind} messages are read")
    data = _decode_json(payload)
    if isinstance(data, Dropped):
        return data
    try:
        valid = SCHEMAS[kind](data)
    except vol.Invalid as err:
        return Dropped(f"invalid {kind}: {err}")
    return _BUILDERS[kind](valid)


def parse_clip(name: str, payload: bytes | bytearray | str) -> Clip | Dropped:
    """Validate a clip's name (from its topic) and size; return it or why it was dropped."""
    if not (match := CLIP_NAME_RE.fullmatch(name)):
        return Dropped(f"{name[:80]!r} is not a clip file name")
    if isinstance(payload, str):
        # Home Assistant hands over text only when a subscription decodes; ours does not.
        payload = payload.encode("utf-8", "surrogateescape")
    if not payload:
        return Dropped(f"clip {name} is empty")
    if len(payload) > MAX_CLIP_BYTES:
        return Dropped(f"clip {name} of {len(payload)} bytes is over {MAX_CLIP_BYTES}")
    return Clip(name, match["key"], match["episode"], match["format"], bytes(payload))


def _event(e: dict[str, Any]) -> EventInfo:
    return EventInfo(
        e["key"],
        e["name"],
        tuple(e["labels"]),
        e.get("on_threshold"),
        e.get("off_threshold"),
        kind=e["kind"],
        enabled=e.get("enabled"),
        clip=e["clip"],
        on_dbfs=e.get("on_dbfs"),
        off_dbfs=e.get("off_dbfs"),
    )


def _info(data: dict[str, Any]) -> ListenerInfo:
    return ListenerInfo(
        id=data["id"],
        name=data["name"],
        version=data["version"],
        model=data["model"],
        chunk_s=data.get("chunk_s"),
        listening=data.get("listening"),
        sources=tuple(
            SourceInfo(s["name"], s["kind"], s["state"], s["overflows"], s["dropped_s"], s["error"])
            for s in data["sources"]
        ),
        events=tuple(_event(e) for e in data["events"]),
        counters=data["counters"],
        protocol=data["v"],
        clips=ClipSettings(**{key: data["clips"][key] for key in _CLIP_FIELDS})
        if data["clips"]
        else None,
    )


_CLIP_FIELDS: Final = ("format", "publish", "max_count", "max_age_days", "max_total_mb")


def _transition(data: dict[str, Any]) -> Transition:
    return Transition(
        id=data["id"],
        type=data["type"],
        event=data["event"],
        source=data["source"],
        label=data["label"],
        score=data["score"],
        peak=data["peak"],
        start=data["start"],
        end=data["end"],
        duration_s=data["duration_s"],
        clip=data["clip"],
        reason=data["reason"],
    )


def _active(data: dict[str, Any]) -> Active:
    return Active(tuple(data["events"]))


def _scores(data: dict[str, Any]) -> Scores:
    return Scores(
        source=data["source"],
        time=data["time"],
        level_dbfs=data.get("level_dbfs"),
        top=tuple(LabelScore(t["label"], t["score"]) for t in data["top"]),
    )


_BUILDERS: Final[dict[str, Callable[[dict[str, Any]], Payload]]] = {
    "info": _info,
    "transition": _transition,
    "scores": _scores,
    "active": _active,
}
