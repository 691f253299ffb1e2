"""Issue 38 item 5: a config whose info Home Assistant's integration would drop is refused at
load time, with one line naming what is over which limit (docs/protocol.md, Limits)."""

from typing import Any

import pytest

from sat_audio.config import ConfigError, parse_config
from sat_audio.labels import all_labels
from sat_audio.listener import Listener
from sat_audio.publish import protocol as wire
from sat_audio.publish.stdout import StdoutPublisher

LABELS = [label.name for label in all_labels()]


def config(sources: int = 1, events: int = 1, labels: int = 1, **extra: Any) -> dict:
    return {
        "sources": [{"name": f"s{i}", "kind": "stdin"} for i in range(sources)],
        "detection": {
            "events": {
                f"e{i}": {"labels": LABELS[:labels], "on_threshold": 0.5} for i in range(events)
            }
        },
        **extra,
    }


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (config(sources=33), "sources: expected at most 32 sources, got 33"),
        (
            config(sources=32, events=5),
            "detection.events: 5 events on 32 sources publish 160; expected at most 128 in all",
        ),
        (config(labels=65), "detection.events.e0.labels: expected at most 64 labels, got 65"),
        (
            config(listener={"name": "x" * 256}),
            "listener.name: expected at most 255 characters, got 256",
        ),
        (
            config(listener={"id": "x" * 65}),
            "listener.id: expected at most 64 characters, got 65",
        ),
        (
            {
                "sources": [{"name": "a" * 40, "kind": "stdin"}, {"name": "b", "kind": "stdin"}],
                "detection": {"events": {"e" * 30: {"labels": ["Bark"], "on_threshold": 0.5}}},
            },
            f"detection.events: the published event key '{'a' * 40}_{'e' * 30}' (source name and "
            "event key) is over 64 characters",
        ),
        (
            {
                "sources": [{"name": "s0", "kind": "stdin"}, {"name": "s1", "kind": "stdin"}],
                "detection": {
                    "events": {"e": {"name": "n" * 251, "labels": ["Bark"], "on_threshold": 0.5}}
                },
            },
            "detection.events: event name 'nnnnnnnnnn",
        ),
    ],
)
def test_a_config_past_a_limit_is_one_line(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(data, origin="config.yaml")
    assert str(err.value).startswith(f"config.yaml: {message}"), str(err.value)
    assert "\n" not in str(err.value)


def test_an_info_too_large_for_the_integration_is_refused() -> None:
    """128 events of 64 labels each are within every count, but not within 64 KiB."""
    with pytest.raises(ConfigError, match=r"the listener's info would take up to \d+ bytes"):
        parse_config(config(sources=32, events=4, labels=64))


def test_the_largest_config_within_the_limits_loads_and_its_info_fits() -> None:
    """At every count limit at once; the info it publishes (errors at their longest) fits."""
    cfg = parse_config(config(sources=32, events=4, labels=2))
    lst = Listener(cfg, publisher=StdoutPublisher())
    assert len(lst.events) == wire.MAX_EVENTS
    entries = [
        wire.source_entry(s.name, "stdin", "lagging", 1, 0.5, 0, "e" * 1000) for s in cfg.sources
    ]
    assert all(len(e["error"]) == wire.MAX_TEXT for e in entries)
    info = wire.info_payload(
        listener_id=cfg.listener.id,
        name=cfg.listener.name,
        model="SAT_T_2s",
        chunk_s=2.0,
        listening=True,
        started=0.0,
        sources=entries,
        events=lst.events,
        counters={"chunks": 0},
    )
    assert len(wire.to_json(info).encode()) <= wire.MAX_PAYLOAD_BYTES
