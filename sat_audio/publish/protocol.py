"""The MQTT contract (docs/protocol.md), version 2: every topic and payload the listener sends.

This is the one module that knows topic names and payload fields; publishers only move bytes.
"""

import json
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from sat_audio import __version__

PROTOCOL_VERSION = 2
ON = "ON"
OFF = "OFF"
ONLINE = "online"
OFFLINE = "offline"

Payload = dict[str, Any]

SOURCE_STATES = ("ok", "lagging", "reconnecting", "failed")

# The contract's limits (docs/protocol.md, Limits): Home Assistant's integration drops an info
# beyond any of them, so the config is refused at load time instead (config.py).
MAX_SOURCES = 32
MAX_EVENTS = 128
"""Published events: events times sources."""
MAX_LABELS = 64
"""Labels of one event."""
MAX_TEXT = 255
"""Characters of a name, label, source kind or error."""
MAX_SLUG = 64
"""Characters of the listener id and of a published event key."""
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_CLIP_BYTES = 8 * 1024 * 1024
"""Bytes of one clip sent over MQTT; a larger clip stays on disk only."""

KINDS = ("sound", "loud")
"""An event's kind: model labels ("sound") or level alone ("loud")."""
END_REASONS = ("quiet", "disabled", "paused", "stopped")
"""Why an episode ended: below off for hold_s, switched off, privacy switch, shutdown."""
CLIP_FORMATS = {"flac": "flac", "opus": "opus"}
"""clips.format -> the clip file's extension."""
CLIP_NAME = re.compile(r"^[a-z0-9_]{1,64}-[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}\.(flac|opus)$")


def to_json(payload: Payload) -> str:
    """A payload as compact JSON. NaN and Infinity are not JSON (a consumer drops the payload):
    one raises ValueError here instead of leaving the process."""
    return json.dumps(payload, separators=(",", ":"), allow_nan=False)


def iso_time(wall: float) -> str:
    """A wall-clock POSIX time as ISO 8601 with offset and milliseconds."""
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds")


def parse_switch(payload: bytes | bytearray) -> bool | None:
    """A switch command, the privacy switch's or an event's (`ON`/`OFF`, any case, surrounding
    blanks ignored), else None."""
    text = payload.decode("utf-8", "replace").strip().upper()
    return {ON: True, OFF: False}.get(text)


@dataclass(frozen=True)
class Topics:
    """The topics of one listener: `<prefix>/<id>/...`."""

    prefix: str
    listener_id: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.listener_id}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def info(self) -> str:
        return f"{self.base}/info"

    @property
    def listening(self) -> str:
        return f"{self.base}/listening"

    @property
    def listening_set(self) -> str:
        return f"{self.base}/listening/set"

    @property
    def scores(self) -> str:
        return f"{self.base}/scores"

    @property
    def active(self) -> str:
        return f"{self.base}/active"

    @property
    def enabled_set_filter(self) -> str:
        """The subscription that takes every event's enable command."""
        return f"{self.base}/event/+/enabled/set"

    def enabled(self, key: str) -> str:
        return f"{self.base}/event/{key}/enabled"

    def enabled_set(self, key: str) -> str:
        return f"{self.base}/event/{key}/enabled/set"

    def clip(self, name: str) -> str:
        return f"{self.base}/clip/{name}"

    def enabled_key(self, topic: str) -> str | None:
        """The event key of an enable command's topic, else None."""
        head, tail = f"{self.base}/event/", "/enabled/set"
        if topic.startswith(head) and topic.endswith(tail):
            key = topic[len(head) : -len(tail)]
            return key if key and "/" not in key else None
        return None

    def event(self, key: str) -> str:
        return f"{self.base}/event/{key}"

    def state(self, key: str) -> str:
        return f"{self.base}/event/{key}/state"

    def level(self, source: str) -> str:
        return f"{self.base}/level/{source}"


@dataclass(frozen=True)
class PublishedEvent:
    """One event as published: its key on the wire, the source it listens to, its settings."""

    key: str
    source: str
    name: str
    labels: tuple[str, ...]
    on_threshold: float
    off_threshold: float
    kind: str = "sound"
    enabled: bool = True
    """As configured: the state before a retained command from Home Assistant says otherwise."""
    clip: bool = False
    on_dbfs: float | None = None
    off_dbfs: float | None = None


def event_key(source: str, event: str, n_sources: int) -> str:
    """The published key: the event's own key with one source, `<source>_<event>` with several."""
    return event if n_sources == 1 else f"{source}_{event}"


class ConfiguredEvent(Protocol):
    """What publishing needs of a configured event (config.EventConfig)."""

    @property
    def key(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def labels(self) -> tuple[str, ...]: ...
    @property
    def on_threshold(self) -> float: ...
    @property
    def off_threshold(self) -> float: ...
    @property
    def kind(self) -> str: ...
    @property
    def enabled(self) -> bool: ...
    @property
    def on_dbfs(self) -> float | None: ...
    @property
    def off_dbfs(self) -> float | None: ...
    @property
    def clip(self) -> object | None: ...


def published_events(
    sources: Sequence[str], events: Iterable[ConfiguredEvent]
) -> list[PublishedEvent]:
    """Every configured event on every source, keyed and named as published."""
    configured = list(events)
    return [
        PublishedEvent(
            event_key(src, e.key, len(sources)),
            src,
            e.name if len(sources) == 1 else f"{e.name} ({src})",
            e.labels,
            e.on_threshold,
            e.off_threshold,
            e.kind,
            e.enabled,
            e.clip is not None,
            e.on_dbfs,
            e.off_dbfs,
        )
        for src in sources
        for e in configured
    ]


def info_payload(
    *,
    listener_id: str,
    name: str,
    model: str,
    chunk_s: float,
    listening: bool,
    started: float,
    sources: Sequence[Payload],
    events: Iterable[PublishedEvent],
    counters: Payload,
    disabled: Collection[str] = (),
    clips: Payload | None = None,
) -> Payload:
    """The retained description of the listener; Home Assistant discovers listeners by it.

    disabled: the keys of the events switched off now; clips: clips_entry(), or None when no
    event keeps clips."""
    return {
        "v": PROTOCOL_VERSION,
        "id": listener_id,
        "name": name,
        "version": __version__,
        "model": model,
        "chunk_s": chunk_s,
        "listening": listening,
        "started": iso_time(started),
        "sources": list(sources),
        "events": [event_entry(e, e.key not in disabled) for e in events],
        "clips": clips,
        "counters": counters,
    }


def event_entry(e: PublishedEvent, enabled: bool) -> Payload:
    """One event in the info payload: a loud event has levels where a sound event has scores."""
    entry: Payload = {
        "key": e.key,
        "name": e.name,
        "source": e.source,
        "kind": e.kind,
        "labels": list(e.labels),
    }
    if e.kind == "loud":
        entry |= {"on_dbfs": e.on_dbfs, "off_dbfs": e.off_dbfs}
    else:
        entry |= {"on_threshold": e.on_threshold, "off_threshold": e.off_threshold}
    return entry | {"enabled": enabled, "clip": e.clip}


def clips_entry(
    fmt: str, publish: bool, max_count: int, max_age_days: float, max_total_mb: float
) -> Payload:
    """info's `clips`: how clips are kept, so Home Assistant applies the same retention."""
    return {
        "format": fmt,
        "publish": publish,
        "max_count": max_count,
        "max_age_days": max_age_days,
        "max_total_mb": max_total_mb,
    }


def source_entry(
    name: str,
    kind: str,
    state: str,
    overflows: int,
    dropped_s: float,
    reconnects: int,
    error: str | None,
) -> Payload:
    """One source's health in the info payload."""
    return {
        "name": name,
        "kind": kind,
        "state": state,
        "overflows": overflows,
        "dropped_s": round(dropped_s, 3),
        "reconnects": reconnects,
        "error": None if error is None else error[:MAX_TEXT],
    }


def transition_payload(
    *,
    transition_id: str,
    kind: str,
    event: str,
    source: str,
    label: str | None,
    score: float,
    peak: float,
    start_wall: float,
    end_wall: float | None,
    duration_s: float,
    clip: str | None = None,
    reason: str | None = None,
) -> Payload:
    """A start or end of one episode; start and end share `id`. A loud event has no label and
    its score and peak are levels in dBFS; `reason` says why an end came."""
    places = 4 if label is not None else 1
    payload: Payload = {
        "v": PROTOCOL_VERSION,
        "id": transition_id,
        "type": kind,
        "event": event,
        "source": source,
        "label": label,
        "score": round(score, places),
        "peak": round(peak, places),
        "start": iso_time(start_wall),
        "end": None if end_wall is None else iso_time(end_wall),
        "duration_s": round(duration_s, 3),
        "clip": clip,
    }
    if kind == "end":
        payload["reason"] = reason
    return payload


def clip_name(key: str, start_wall: float, episode_id: str, fmt: str) -> str:
    """The clip file of an episode: `<key>-<start, UTC>-<first 8 hex of its id>.<ext>`."""
    stamp = datetime.fromtimestamp(start_wall, UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{key}-{stamp}-{episode_id[:8]}.{CLIP_FORMATS[fmt]}"


def active_payload(keys: Iterable[str]) -> Payload:
    """The events on now (published keys), for the any-sound sensor."""
    return {"v": PROTOCOL_VERSION, "events": list(keys)}


def scores_payload(
    *,
    source: str,
    wall: float,
    level_dbfs: float,
    scores: np.ndarray,
    names: Sequence[str],
    top_k: int,
) -> Payload:
    """The top-k labels of one chunk and its level."""
    top = np.argsort(-scores, kind="stable")[:top_k]
    return {
        "v": PROTOCOL_VERSION,
        "source": source,
        "time": iso_time(wall),
        "level_dbfs": round(level_dbfs, 1),
        "top": [{"label": names[i], "score": round(float(scores[i]), 4)} for i in top],
    }


def level_payload(level_dbfs: float) -> str:
    return f"{level_dbfs:.1f}"


def discovery_node(listener_id: str) -> str:
    """The node id that groups this listener's discovery topics (and only its own)."""
    return f"sat_audio_{listener_id}"


def discovery_configs(
    topics: Topics,
    *,
    discovery_prefix: str,
    name: str,
    model: str,
    events: Iterable[PublishedEvent],
    sources: Iterable[str],
) -> dict[str, Payload]:
    """Home Assistant MQTT discovery: a device with a binary sensor and an enable switch per
    event, an any-sound binary sensor, a level sensor per source and the privacy switch, keyed by
    config topic. Object ids with a hyphen cannot clash with an event key (a slug)."""
    node = discovery_node(topics.listener_id)
    device = {
        "identifiers": [node],
        "name": name,
        "manufacturer": "SAT Audio",
        "model": model,
        "sw_version": __version__,
    }
    common = {
        "availability_topic": topics.status,
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
        "device": device,
        "origin": {"name": "sat-audio", "sw_version": __version__},
    }
    configs: dict[str, Payload] = {}
    for e in events:
        configs[f"{discovery_prefix}/binary_sensor/{node}/{e.key}/config"] = {
            **common,
            "name": e.name,
            "unique_id": f"{node}_{e.key}",
            "object_id": f"{node}_{e.key}",
            "device_class": "sound",
            "state_topic": topics.state(e.key),
            "payload_on": ON,
            "payload_off": OFF,
        }
        configs[f"{discovery_prefix}/switch/{node}/{e.key}-enabled/config"] = {
            **common,
            "name": f"{e.name} enabled",
            "unique_id": f"{node}_{e.key}_enabled",
            "object_id": f"{node}_{e.key}_enabled",
            "icon": "mdi:bell-ring-outline",
            "entity_category": "config",
            "state_topic": topics.enabled(e.key),
            "command_topic": topics.enabled_set(e.key),
            "retain": True,  # the command outlives a listener restart (docs/protocol.md)
            "qos": 1,
            "payload_on": ON,
            "payload_off": OFF,
        }
    configs[f"{discovery_prefix}/binary_sensor/{node}/any-sound/config"] = {
        **common,
        "name": "Any sound",
        "unique_id": f"{node}-any-sound",
        "object_id": f"{node}_any_sound",
        "device_class": "sound",
        "state_topic": topics.active,
        "value_template": "{{ 'ON' if value_json.events else 'OFF' }}",
        "json_attributes_topic": topics.active,
        "json_attributes_template": "{{ {'active_events': value_json.events} | tojson }}",
        "payload_on": ON,
        "payload_off": OFF,
    }
    for source in sources:
        configs[f"{discovery_prefix}/sensor/{node}/level_{source}/config"] = {
            **common,
            "name": f"Level {source}",
            "unique_id": f"{node}_level_{source}",
            "object_id": f"{node}_level_{source}",
            "state_topic": topics.level(source),
            "unit_of_measurement": "dBFS",
            "state_class": "measurement",
            "suggested_display_precision": 1,
        }
    configs[f"{discovery_prefix}/switch/{node}/listening/config"] = {
        **common,
        "name": "Listening",
        "unique_id": f"{node}_listening",
        "object_id": f"{node}_listening",
        "icon": "mdi:microphone",
        "state_topic": topics.listening,
        "command_topic": topics.listening_set,
        "payload_on": ON,
        "payload_off": OFF,
    }
    return configs


def discovery_filter(discovery_prefix: str, listener_id: str) -> str:
    """A subscription that finds every retained discovery config this listener ever published."""
    return f"{discovery_prefix}/+/{discovery_node(listener_id)}/+/config"
