"""Valid protocol v2 payloads (docs/protocol.md) for the tests to send or to break; v1() makes
the same payload as a v1 listener sends it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
import json
from typing import Any

PREFIX = "sat_audio"
LISTENER = "kitchen"
BASE = f"{PREFIX}/{LISTENER}"

# The `send` fixture: deliver a payload on `<BASE>/<suffix>` and let Home Assistant settle.
type Send = Callable[[str, str | bytes], Awaitable[None]]

GLASS = {
    "key": "glass_breaking",
    "name": "Glass breaking",
    "kind": "sound",
    "labels": ["Glass", "Shatter"],
    "on_threshold": 0.45,
    "off_threshold": 0.3,
    "enabled": True,
    "clip": True,
}
DOG = {
    "key": "dog_bark",
    "name": "Dog barking",
    "kind": "sound",
    "labels": ["Dog", "Bark"],
    "on_threshold": 0.5,
    "off_threshold": 0.35,
    "enabled": True,
    "clip": False,
}
# A loud event: the level alone, thresholds in dBFS.
LOUD = {
    "key": "loud_noise",
    "name": "Loud noise",
    "kind": "loud",
    "labels": [],
    "on_dbfs": -20.0,
    "off_dbfs": -26.0,
    "enabled": True,
    "clip": True,
}
CLIPS = {
    "format": "flac",
    "publish": True,
    "max_count": 100,
    "max_age_days": 30,
    "max_total_mb": 200,
}
# The fields v2 added; v1() takes them out again.
V2_FIELDS = ("kind", "enabled", "clip", "clips", "reason")


def info(events: list[dict[str, Any]] | None = None, **changes: Any) -> dict[str, Any]:
    """Return an info message; `events` defaults to glass breaking and dog barking."""
    return {
        "v": 2,
        "id": LISTENER,
        "name": "Kitchen",
        "version": "0.1.0",
        "model": "SAT_T_2s",
        "chunk_s": 2.0,
        "listening": True,
        "sources": [
            {"name": "mic", "kind": "mic", "state": "ok", "overflows": 0, "dropped_s": 0.0}
        ],
        "events": [GLASS, DOG] if events is None else events,
        "counters": {"chunks": 1234, "mqtt_dropped": 0, "mqtt_queued": 0},
        "clips": CLIPS,
    } | changes


def transition(
    kind: str = "start", event: str = "glass_breaking", **changes: Any
) -> dict[str, Any]:
    """Return a start or end transition of one episode."""
    end = kind == "end"
    return (
        {
            "v": 2,
            "id": "5f0c1d2e3f40",
            "type": kind,
            "event": event,
            "source": "mic",
            "label": "Shatter",
            "score": 0.31 if end else 0.62,
            "peak": 0.71 if end else 0.62,
            "start": "2026-11-25T05:01:02.000+00:00",
            "end": "2026-11-25T05:01:06.500+00:00" if end else None,
            "duration_s": 4.5 if end else 0.0,
            "clip": None,
        }
        | ({"reason": "quiet"} if end else {})
        | changes
    )


def loud_transition(kind: str = "start", **changes: Any) -> dict[str, Any]:
    """Return a start or end of the loud event: no label, levels in dBFS, a clip."""
    return (
        transition(
            kind,
            "loud_noise",
            id="9a8b7c6d5e4f3a2b",
            label=None,
            score=-30.2 if kind == "end" else -18.5,
            peak=-12.1 if kind == "end" else -18.5,
            clip=clip_name("loud_noise", "9a8b7c6d"),
        )
        | changes
    )


def clip_name(key: str = "glass_breaking", episode: str = "5f0c1d2e", fmt: str = "flac") -> str:
    """Return the file name the listener gives an episode's clip."""
    return f"{key}-20261125T050102Z-{episode}.{fmt}"


def active(*keys: str) -> dict[str, Any]:
    """Return the retained message that lists the events on now."""
    return {"v": 2, "events": list(keys)}


def v1(payload: dict[str, Any]) -> dict[str, Any]:
    """Return a payload as a v1 listener sends it: v 1, none of v2's fields."""
    out = {key: value for key, value in payload.items() if key not in V2_FIELDS} | {"v": 1}
    if "events" in out and isinstance(out["events"], list):
        out["events"] = [
            {key: value for key, value in event.items() if key not in V2_FIELDS}
            for event in out["events"]
        ]
    return out


def scores(**changes: Any) -> dict[str, Any]:
    """Return a scores message: speech on top."""
    return {
        "v": 2,
        "source": "mic",
        "time": "2026-11-25T05:01:02.000+00:00",
        "level_dbfs": -32.5,
        "top": [{"label": "Speech", "score": 0.81}, {"label": "Music", "score": 0.12}],
    } | changes


def dumps(payload: dict[str, Any]) -> str:
    """Encode a payload the way the listener does."""
    return json.dumps(payload)
