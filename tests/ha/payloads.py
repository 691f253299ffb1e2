"""Valid protocol v1 payloads (docs/protocol.md) for the tests to send or to break."""

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
    "labels": ["Glass", "Shatter"],
    "on_threshold": 0.45,
    "off_threshold": 0.3,
}
DOG = {
    "key": "dog_bark",
    "name": "Dog barking",
    "labels": ["Dog", "Bark"],
    "on_threshold": 0.5,
    "off_threshold": 0.35,
}


def info(events: list[dict[str, Any]] | None = None, **changes: Any) -> dict[str, Any]:
    """Return an info message; `events` defaults to glass breaking and dog barking."""
    return {
        "v": 1,
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
    } | changes


def transition(
    kind: str = "start", event: str = "glass_breaking", **changes: Any
) -> dict[str, Any]:
    """Return a start or end transition of one episode."""
    end = kind == "end"
    return {
        "v": 1,
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
    } | changes


def scores(**changes: Any) -> dict[str, Any]:
    """Return a scores message: speech on top."""
    return {
        "v": 1,
        "source": "mic",
        "time": "2026-11-25T05:01:02.000+00:00",
        "level_dbfs": -32.5,
        "top": [{"label": "Speech", "score": 0.81}, {"label": "Music", "score": 0.12}],
    } | changes


def dumps(payload: dict[str, Any]) -> str:
    """Encode a payload the way the listener does."""
    return json.dumps(payload)
