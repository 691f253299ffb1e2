"""Contract: what the real listener publishes is what the integration reads (docs/protocol.md).

Listener and integration share no code, so this is where a change on one side shows up: the
listener's own payload builders, and a capture of a real `sat-audio run` on a real mosquitto,
are parsed by the integration's one schema and compared field by field.
"""

from __future__ import annotations

from datetime import datetime
import json
from pathlib import Path
import re
from typing import Any

import pytest
from tests.broker import Broker, Subscriber

from custom_components.sat_audio import protocol
from custom_components.sat_audio.protocol import (
    Active,
    Dropped,
    ListenerInfo,
    Scores,
    Transition,
    classify,
    parse,
    parse_clip,
)
from real_listener import Listener, listener_side, write_config


def check(base: str, topic: str, payload: bytes | str) -> str:
    """Parse one published message as the integration does and compare it with its JSON.

    Return the kind of message the integration took it for.
    """
    parsed = classify(base, topic)
    kind = parsed.kind
    if kind in ("unknown", "command"):
        return kind
    if kind == "clip":
        data = payload.encode() if isinstance(payload, str) else payload
        clip = parse_clip(parsed.clip or "", data)
        assert not isinstance(clip, Dropped), f"{topic}: {clip.reason}"
        assert clip.data == data
        return kind
    value = parse(kind, payload)
    assert not isinstance(value, Dropped), f"{topic}: {value.reason}: {payload!r}"
    if kind in ("status", "event_state", "event_enabled", "listening"):
        text = payload.decode() if isinstance(payload, bytes) else payload
        assert value is (text in ("online", "ON"))
        return kind
    raw: dict[str, Any] = json.loads(payload)
    match value:
        case ListenerInfo():
            assert (value.id, value.name, value.version, value.model) == (
                raw["id"],
                raw["name"],
                raw["version"],
                raw["model"],
            )
            assert (value.chunk_s, value.listening) == (raw["chunk_s"], raw["listening"])
            assert [e.key for e in value.events] == [e["key"] for e in raw["events"]]
            assert [e.name for e in value.events] == [e["name"] for e in raw["events"]]
            assert [list(e.labels) for e in value.events] == [e["labels"] for e in raw["events"]]
            for event, sent in zip(value.events, raw["events"], strict=True):
                assert (event.kind, event.enabled, event.clip) == (
                    sent["kind"],
                    sent["enabled"],
                    sent["clip"],
                )
                assert (event.on_threshold, event.off_threshold) == (
                    sent.get("on_threshold"),
                    sent.get("off_threshold"),
                )
                assert (event.on_dbfs, event.off_dbfs) == (
                    sent.get("on_dbfs"),
                    sent.get("off_dbfs"),
                )
            clips = raw["clips"]
            assert (value.clips is None) == (clips is None)
            if clips:
                assert value.clips is not None
                assert (value.clips.format, value.clips.max_count, value.clips.max_total_mb) == (
                    clips["format"],
                    clips["max_count"],
                    clips["max_total_mb"],
                )
            assert [(s.name, s.kind, s.state) for s in value.sources] == [
                (s["name"], s["kind"], s["state"]) for s in raw["sources"]
            ]
            assert value.counters == raw["counters"]
        case Transition():
            assert topic.endswith(f"/event/{value.event}")
            assert (value.id, value.type, value.label, value.source) == (
                raw["id"],
                raw["type"],
                raw["label"],
                raw["source"],
            )
            assert (value.score, value.peak, value.duration_s) == (
                raw["score"],
                raw["peak"],
                raw["duration_s"],
            )
            assert value.start == datetime.fromisoformat(raw["start"])
            assert value.end == (raw["end"] and datetime.fromisoformat(raw["end"]))
            assert (value.clip, value.reason) == (raw["clip"], raw.get("reason"))
        case Active():
            assert list(value.events) == raw["events"]
        case Scores():
            assert (value.source, value.level_dbfs) == (raw["source"], raw["level_dbfs"])
            assert value.time == datetime.fromisoformat(raw["time"])
            assert [(t.label, t.score) for t in value.top] == [
                (t["label"], t["score"]) for t in raw["top"]
            ]
        case _:
            pytest.fail(f"{topic} parsed as {value!r}")
    return kind


def test_listener_payload_builders() -> None:
    """Every topic and payload variant the listener's protocol module builds parses."""
    lines = [json.loads(line) for line in listener_side("payloads").splitlines()]
    kinds = [check("sat_audio/kitchen", line["topic"], line["payload"]) for line in lines]
    assert set(kinds) == {
        "status",
        "listening",
        "info",
        "transition",
        "event_state",
        "event_enabled",
        "active",
        "clip",
        "scores",
    }


def test_one_set_of_limits() -> None:
    """The limits in docs/protocol.md are the listener's (which refuses a config beyond them)
    and the integration's (which drops an info beyond them): a change on one side fails here."""
    docs = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()
    documented = {
        name: int(value) for name, value in re.findall(r"^\| `(MAX_\w+)` \| (\d+) \|", docs, re.M)
    }
    listener = json.loads(listener_side("limits"))
    states = listener.pop("states")
    integration = {name: getattr(protocol, name) for name in listener}
    assert len(documented) == 7
    assert listener == documented
    assert integration == documented
    assert tuple(states) == protocol.SOURCE_STATES
    assert all(f"`{state}`" in docs for state in states)


def test_captured_from_real_listener(socket_enabled: None, tmp_path: Path) -> None:
    """A real run with two sources, scores, discovery, a loud event and clips: all parse."""
    checkpoint = Path(listener_side("checkpoint", tmp_path, "Shatter").strip())
    wav = tmp_path / "glass.wav"
    listener_side("wav", wav, "__XX__X_")
    sources = [
        {"name": name, "kind": "file", "path": str(wav), "realtime": False}
        for name in ("kitchen", "porch")
    ]
    broker = Broker(tmp_path / "broker")
    broker.start()
    subscriber = Subscriber(broker, ("#",)).start()
    config = write_config(
        tmp_path,
        checkpoint,
        sources,
        broker.port,
        # Discovery also publishes the per-source level topics, which the integration ignores.
        mqtt={"discovery": True},
        publishing={"scores": True, "rate_hz": 50, "top_k": 3},
        glass={"clip": {"pre_s": 1, "post_s": 1}},
        events={"loud": {"kind": "loud", "on_dbfs": -20, "hold_s": 0, "cooldown_s": 0}},
        clips={"dir": str(tmp_path / "clips"), "format": "flac", "publish": True},
    )
    listener = Listener(tmp_path, config)
    try:
        assert listener.wait(120) == 0, listener.output()
        subscriber.wait_text("sat_audio/e2e/status", "offline")
    finally:
        listener.stop()
        subscriber.stop()
        broker.stop()

    kinds: dict[str, int] = {}
    ignored = set()
    labels: set[str | None] = set()
    for message in subscriber.messages:
        if not message.topic.startswith("sat_audio/e2e/"):
            continue
        kind = check("sat_audio/e2e", message.topic, message.payload)
        kinds[kind] = kinds.get(kind, 0) + 1
        if kind == "unknown":
            ignored.add(message.topic)
        if kind == "transition":
            labels.add(json.loads(message.payload)["label"])
    # Two glass episodes on each source, published under source-prefixed keys, and the loud
    # event's (no label) on the same tones.
    assert kinds["transition"] >= 8, listener.output()
    assert labels == {"Shatter", None}
    assert kinds["clip"] >= 1, listener.output()
    assert {"active", "event_enabled"} <= kinds.keys()
    assert kinds["scores"] >= 1  # rate-limited by the wall clock, and the files go fast
    assert {"status", "info", "listening", "event_state"} <= kinds.keys()
    # The integration reads the level from scores; the plain per-source level topics are not its.
    assert ignored == {"sat_audio/e2e/level/kitchen", "sat_audio/e2e/level/porch"}
