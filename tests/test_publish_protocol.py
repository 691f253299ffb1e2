"""Topics and payloads exactly as docs/protocol.md states them; the stdout publisher."""

import io
import json
from datetime import datetime

import numpy as np

from sat_audio.publish.protocol import (
    CLIP_NAME,
    END_REASONS,
    PublishedEvent,
    Topics,
    active_payload,
    clip_name,
    clips_entry,
    discovery_configs,
    discovery_filter,
    event_key,
    info_payload,
    iso_time,
    parse_switch,
    scores_payload,
    source_entry,
    transition_payload,
)
from sat_audio.publish.stdout import StdoutPublisher

T = Topics("sat_audio", "kitchen")
EVENTS = [
    PublishedEvent("glass_breaking", "mic", "Glass breaking", ("Glass", "Shatter"), 0.45, 0.3)
]


def test_topics() -> None:
    assert T.status == "sat_audio/kitchen/status"
    assert T.info == "sat_audio/kitchen/info"
    assert T.listening == "sat_audio/kitchen/listening"
    assert T.listening_set == "sat_audio/kitchen/listening/set"
    assert T.scores == "sat_audio/kitchen/scores"
    assert T.event("dog") == "sat_audio/kitchen/event/dog"
    assert T.state("dog") == "sat_audio/kitchen/event/dog/state"
    assert T.level("mic") == "sat_audio/kitchen/level/mic"


def test_event_keys_get_the_source_only_with_several_sources() -> None:
    assert event_key("mic", "dog", 1) == "dog"
    assert event_key("porch", "dog", 2) == "porch_dog"


def test_switch_commands() -> None:
    assert parse_switch(b"ON") is True
    assert parse_switch(b" off\n") is False
    assert parse_switch(b"toggle") is None
    assert parse_switch(b"\xff") is None


def test_transition_payload_fields() -> None:
    p = transition_payload(
        transition_id="ab12",
        kind="end",
        event="dog",
        source="mic",
        label="Bark",
        score=0.123456,
        peak=0.9,
        start_wall=1_700_000_000.0,
        end_wall=1_700_000_004.5,
        duration_s=4.5,
    )
    assert p == {
        "v": 2,
        "id": "ab12",
        "type": "end",
        "event": "dog",
        "source": "mic",
        "label": "Bark",
        "score": 0.1235,
        "peak": 0.9,
        "start": "2023-11-14T22:13:20.000+00:00",
        "end": "2023-11-14T22:13:24.500+00:00",
        "duration_s": 4.5,
        "clip": None,
        "reason": None,
    }
    assert datetime.fromisoformat(p["end"]).timestamp() == 1_700_000_004.5


def test_info_payload_carries_sources_events_and_counters() -> None:
    src = source_entry("mic", "mic", "reconnecting", 2, 0.51234, 1, "device gone")
    info = info_payload(
        listener_id="kitchen",
        name="Kitchen",
        model="SAT_T_2s",
        chunk_s=2.0,
        listening=False,
        started=0.0,
        sources=[src],
        events=EVENTS,
        counters={"chunks": 3},
    )
    assert info["v"] == 2 and info["id"] == "kitchen" and info["listening"] is False
    assert info["started"] == iso_time(0.0) == "1970-01-01T00:00:00.000+00:00"
    assert info["sources"] == [
        {
            "name": "mic",
            "kind": "mic",
            "state": "reconnecting",
            "overflows": 2,
            "dropped_s": 0.512,
            "reconnects": 1,
            "error": "device gone",
        }
    ]
    assert info["events"] == [
        {
            "key": "glass_breaking",
            "name": "Glass breaking",
            "source": "mic",
            "kind": "sound",
            "labels": ["Glass", "Shatter"],
            "on_threshold": 0.45,
            "off_threshold": 0.3,
            "enabled": True,
            "clip": False,
        }
    ]
    assert info["clips"] is None
    json.dumps(info)  # serialisable as is


def test_scores_payload_is_top_k_in_order() -> None:
    scores = np.zeros(527, np.float32)
    scores[[3, 7, 9]] = [0.2, 0.9, 0.5]
    names = [f"l{i}" for i in range(527)]
    p = scores_payload(
        source="mic", wall=0.0, level_dbfs=-32.54, scores=scores, names=names, top_k=2
    )
    assert p["top"] == [{"label": "l7", "score": 0.9}, {"label": "l9", "score": 0.5}]
    assert p["level_dbfs"] == -32.5 and p["v"] == 2 and p["source"] == "mic"


def test_discovery_configs_point_at_the_listener_topics() -> None:
    configs = discovery_configs(
        T, discovery_prefix="homeassistant", name="Kitchen", model="SAT_T_2s",
        events=EVENTS, sources=["mic"],
    )  # fmt: skip
    node = "sat_audio_kitchen"
    sensor = configs[f"homeassistant/binary_sensor/{node}/glass_breaking/config"]
    assert sensor["state_topic"] == T.state("glass_breaking")
    assert sensor["unique_id"] == f"{node}_glass_breaking"
    assert sensor["availability_topic"] == T.status
    assert sensor["device"]["identifiers"] == [node]
    level = configs[f"homeassistant/sensor/{node}/level_mic/config"]
    assert level["state_topic"] == T.level("mic") and level["unit_of_measurement"] == "dBFS"
    switch = configs[f"homeassistant/switch/{node}/listening/config"]
    assert (switch["command_topic"], switch["state_topic"]) == (T.listening_set, T.listening)
    enable = configs[f"homeassistant/switch/{node}/glass_breaking-enabled/config"]
    assert enable["state_topic"] == T.enabled("glass_breaking")
    assert enable["command_topic"] == T.enabled_set("glass_breaking")
    assert enable["retain"] is True and enable["unique_id"] == f"{node}_glass_breaking_enabled"
    anything = configs[f"homeassistant/binary_sensor/{node}/any-sound/config"]
    assert anything["state_topic"] == anything["json_attributes_topic"] == T.active
    assert len(configs) == 5
    # The clean-up subscription matches every one of them and nothing of another listener.
    pattern = discovery_filter("homeassistant", "kitchen").split("/")
    for topic in configs:
        parts = topic.split("/")
        assert len(parts) == len(pattern)
        assert all(p in ("+", q) for p, q in zip(pattern, parts, strict=True))
    assert "sat_audio_kitchen2" not in discovery_filter("homeassistant", "kitchen")


def test_stdout_prints_transitions_and_scores_as_json_lines() -> None:
    out = io.StringIO()
    pub = StdoutPublisher(out)
    pub.start(lambda on: None)
    pub.info({"v": 1})
    pub.state("dog", True)
    pub.level("mic", -20.0)
    pub.transition("dog", {"v": 1, "type": "start"})
    pub.scores({"v": 1, "top": []})
    assert pub.close(1.0) is True
    lines = out.getvalue().splitlines()
    assert [json.loads(line) for line in lines] == [{"v": 1, "type": "start"}, {"v": 1, "top": []}]


LOUD = PublishedEvent(
    "bang", "mic", "Bang", (), 0.0, 0.0, kind="loud", enabled=True, clip=True,
    on_dbfs=-20.0, off_dbfs=-26.0,
)  # fmt: skip


def test_protocol_2_topics() -> None:
    assert T.active == "sat_audio/kitchen/active"
    assert T.enabled("dog") == "sat_audio/kitchen/event/dog/enabled"
    assert T.enabled_set("dog") == "sat_audio/kitchen/event/dog/enabled/set"
    assert T.enabled_set_filter == "sat_audio/kitchen/event/+/enabled/set"
    assert T.clip("a.flac") == "sat_audio/kitchen/clip/a.flac"
    assert T.enabled_key("sat_audio/kitchen/event/dog/enabled/set") == "dog"
    assert T.enabled_key("sat_audio/kitchen/event/dog/enabled") is None
    assert T.enabled_key("sat_audio/kitchen/event//enabled/set") is None
    assert T.enabled_key("sat_audio/other/event/dog/enabled/set") is None


def test_info_describes_loud_events_switches_and_clips() -> None:
    info = info_payload(
        listener_id="kitchen", name="Kitchen", model="SAT_T_2s", chunk_s=2.0, listening=True,
        started=0.0, sources=[], events=[*EVENTS, LOUD], counters={},
        disabled={"glass_breaking"}, clips=clips_entry("flac", True, 100, 30.0, 200.0),
    )  # fmt: skip
    glass, bang = info["events"]
    assert glass["enabled"] is False and glass["clip"] is False and glass["kind"] == "sound"
    assert bang == {
        "key": "bang", "name": "Bang", "source": "mic", "kind": "loud", "labels": [],
        "on_dbfs": -20.0, "off_dbfs": -26.0, "enabled": True, "clip": True,
    }  # fmt: skip
    assert info["clips"] == {
        "format": "flac", "publish": True, "max_count": 100, "max_age_days": 30.0,
        "max_total_mb": 200.0,
    }  # fmt: skip


def test_loud_transition_has_levels_no_label_and_an_end_reason() -> None:
    common = {
        "transition_id": "ab12", "event": "bang", "source": "mic", "label": None,
        "score": -13.5432, "peak": -10.04, "start_wall": 0.0, "clip": "x.flac",
    }  # fmt: skip
    start = transition_payload(kind="start", end_wall=None, duration_s=0.0, **common)
    assert (start["label"], start["score"], start["peak"]) == (None, -13.5, -10.0)
    assert start["clip"] == "x.flac" and "reason" not in start
    end = transition_payload(kind="end", end_wall=2.0, duration_s=2.0, reason="disabled", **common)
    assert end["reason"] == "disabled" and end["v"] == 2
    assert "disabled" in END_REASONS


def test_clip_names_match_the_contract() -> None:
    name = clip_name("glass_breaking", 1_700_000_000.9, "5f0c9a11deadbeef", "flac")
    assert name == "glass_breaking-20231114T221320Z-5f0c9a11.flac"
    assert CLIP_NAME.match(name)
    assert CLIP_NAME.match(clip_name("a", 0.0, "0" * 32, "opus"))
    assert not CLIP_NAME.match("../etc-20231114T221320Z-5f0c9a11.flac")
    assert active_payload(["dog", "bang"]) == {"v": 2, "events": ["dog", "bang"]}
