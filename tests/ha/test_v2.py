"""Protocol v2 in Home Assistant: any sound, detection switches, loud events and clips.

Driven through Home Assistant's real MQTT client (on the harness's mocked socket) with the
payloads the listener sends; clips land in a real media folder on disk.
"""

from __future__ import annotations

from datetime import timedelta
import logging
import os
from pathlib import Path
import re
import time

from freezegun.api import FrozenDateTimeFactory
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_fire_time_changed,
    async_mock_service,
)
from pytest_homeassistant_custom_component.typing import MqttMockHAClient
import yaml

from custom_components.sat_audio.const import DOMAIN
from custom_components.sat_audio.logbook import describe
from custom_components.sat_audio.protocol import MAX_CLIP_BYTES
from helpers import listener_device, our_warnings
from homeassistant.components import automation, media_source
from homeassistant.components.switch import DOMAIN as SWITCH_DOMAIN
from homeassistant.const import (
    ATTR_ENTITY_ID,
    SERVICE_TURN_OFF,
    SERVICE_TURN_ON,
    STATE_OFF,
    STATE_ON,
    STATE_UNKNOWN,
)
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from homeassistant.setup import async_setup_component
import homeassistant.util.dt as dt_util
from payloads import (
    BASE,
    CLIPS,
    DOG,
    GLASS,
    LOUD,
    Send,
    active,
    clip_name,
    dumps,
    info,
    loud_transition,
    transition,
    v1,
)

ANY = "binary_sensor.kitchen_any_sound"
LOUD_SENSOR = "binary_sensor.kitchen_loud_noise"
LOUD_EVENT = "event.kitchen_loud_noise"
GLASS_EVENT = "event.kitchen_glass_breaking"
GLASS_SWITCH = "switch.kitchen_glass_breaking_detection"
LOUD_SWITCH = "switch.kitchen_loud_noise_detection"
# What a FLAC file starts with, and some bytes that stand for its frames.
CLIP_BYTES = b"fLaC\x00\x00\x00\x22" + bytes(range(256)) * 40


@pytest.fixture
def media(hass: HomeAssistant, tmp_path: Path) -> Path:
    """Home Assistant's "local" media folder, in tmp_path; return the listener's clip folder."""
    hass.config.media_dirs = {"local": str(tmp_path / "media")}
    return tmp_path / "media" / "sat_audio" / "kitchen"


@pytest.fixture
async def loud_listener(setup_listener: MockConfigEntry, send: Send) -> MockConfigEntry:
    """The kitchen listener with glass breaking, dog barking and a loud-noise event."""
    await send("info", dumps(info(events=[GLASS, DOG, LOUD])))
    await send("event/loud_noise/state", "OFF")
    for key in ("glass_breaking", "dog_bark", "loud_noise"):
        await send(f"event/{key}/enabled", "ON")
    await send("active", dumps(active()))
    return setup_listener


async def send_clip(hass: HomeAssistant, send: Send, name: str, data: bytes) -> None:
    """Deliver a clip and wait until it is saved (the disk work runs in the background)."""
    await send(f"clip/{name}", data)
    await hass.async_block_till_done(wait_background_tasks=True)


async def test_any_sound_follows_overlapping_events(
    hass: HomeAssistant, loud_listener: MockConfigEntry, send: Send
) -> None:
    """On while any event is on, through two overlapping episodes; the names as an attribute."""
    state = hass.states.get(ANY)
    assert (state.state, state.attributes["active_events"]) == (STATE_OFF, [])
    assert state.attributes["device_class"] == "sound"

    steps = [
        (["glass_breaking"], STATE_ON, ["Glass breaking"]),
        (["glass_breaking", "loud_noise"], STATE_ON, ["Glass breaking", "Loud noise"]),
        (["loud_noise"], STATE_ON, ["Loud noise"]),
        ([], STATE_OFF, []),
    ]
    for keys, expected, names in steps:
        await send("active", dumps(active(*keys)))
        state = hass.states.get(ANY)
        assert (state.state, state.attributes["active_events"]) == (expected, names), keys

    # A key the info does not name (yet) is shown as it is, not dropped.
    await send("active", dumps(active("doorbell")))
    assert hass.states.get(ANY).attributes["active_events"] == ["doorbell"]
    await send("active", b'{"v": 2, "events": "glass_breaking"}')  # dropped: state stays
    assert hass.states.get(ANY).attributes["active_events"] == ["doorbell"]


async def test_any_sound_of_a_v1_listener_follows_event_states(
    hass: HomeAssistant, mqtt_mock: MqttMockHAClient, config_entry: MockConfigEntry, send: Send
) -> None:
    """A v1 listener has no `active` topic: the event states say the same."""
    config_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    await send("status", "online")
    await send("info", dumps(v1(info())))
    assert hass.states.get(ANY).state == STATE_UNKNOWN
    await send("event/glass_breaking/state", "OFF")
    await send("event/dog_bark/state", "ON")
    state = hass.states.get(ANY)
    assert (state.state, state.attributes["active_events"]) == (STATE_ON, ["Dog barking"])
    await send("event/glass_breaking/state", "ON")
    assert hass.states.get(ANY).attributes["active_events"] == ["Glass breaking", "Dog barking"]
    await send("event/glass_breaking/state", "OFF")
    await send("event/dog_bark/state", "OFF")
    assert hass.states.get(ANY).state == STATE_OFF
    # It cannot switch its events: no detection switches.
    assert hass.states.get(GLASS_SWITCH) is None


async def test_detection_switch_publishes_retained_command_and_follows_report(
    hass: HomeAssistant,
    mqtt_mock: MqttMockHAClient,
    loud_listener: MockConfigEntry,
    send: Send,
) -> None:
    """Off publishes the retained OFF on enabled/set (QoS 1); the state is the listener's report."""
    state = hass.states.get(GLASS_SWITCH)
    assert state.state == STATE_ON
    assert state.attributes["friendly_name"] == "Kitchen Glass breaking detection"
    assert er.async_get(hass).async_get(GLASS_SWITCH).entity_category == "config"
    assert hass.states.get(LOUD_SWITCH).attributes["friendly_name"] == (
        "Kitchen Loud noise detection"
    )

    mqtt_mock.async_publish.reset_mock()
    await hass.services.async_call(
        SWITCH_DOMAIN, SERVICE_TURN_OFF, {ATTR_ENTITY_ID: GLASS_SWITCH}, blocking=True
    )
    assert [call.args[:4] for call in mqtt_mock.async_publish.call_args_list] == [
        (f"{BASE}/event/glass_breaking/enabled/set", "OFF", 1, True)
    ]
    # Not optimistic: on until the listener reports the change.
    assert hass.states.get(GLASS_SWITCH).state == STATE_ON
    await send("event/glass_breaking/enabled", "OFF")
    assert hass.states.get(GLASS_SWITCH).state == STATE_OFF
    assert hass.states.get(LOUD_SWITCH).state == STATE_ON

    mqtt_mock.async_publish.reset_mock()
    await hass.services.async_call(
        SWITCH_DOMAIN, SERVICE_TURN_ON, {ATTR_ENTITY_ID: GLASS_SWITCH}, blocking=True
    )
    assert [call.args[:4] for call in mqtt_mock.async_publish.call_args_list] == [
        (f"{BASE}/event/glass_breaking/enabled/set", "ON", 1, True)
    ]
    await send("event/glass_breaking/enabled", "ON")
    assert hass.states.get(GLASS_SWITCH).state == STATE_ON

    # Our own retained command comes back on the subscription: it is not a report.
    await send("event/glass_breaking/enabled/set", "OFF")
    assert hass.states.get(GLASS_SWITCH).state == STATE_ON


async def test_detection_switch_before_report_and_early_report(
    hass: HomeAssistant, mqtt_mock: MqttMockHAClient, config_entry: MockConfigEntry, send: Send
) -> None:
    """Before any report the info's `enabled` counts; a report before the info is kept."""
    config_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    await send("status", "online")
    await send("event/dog_bark/enabled", "OFF")
    await send("info", dumps(info(events=[GLASS | {"enabled": False}, DOG])))
    assert hass.states.get(GLASS_SWITCH).state == STATE_OFF
    assert hass.states.get("switch.kitchen_dog_barking_detection").state == STATE_OFF


async def test_loud_event_like_any_other(
    hass: HomeAssistant, loud_listener: MockConfigEntry, send: Send
) -> None:
    """A loud event has a sensor with its dBFS thresholds, an event entity, and triggers."""
    state = hass.states.get(LOUD_SENSOR)
    assert state.state == STATE_OFF
    assert (state.attributes["on_dbfs"], state.attributes["off_dbfs"]) == (-20.0, -26.0)
    assert "label" not in state.attributes

    calls = async_mock_service(hass, "test", "automation")
    device = listener_device(hass).id
    assert await async_setup_component(
        hass,
        automation.DOMAIN,
        {
            automation.DOMAIN: {
                "trigger": {
                    "platform": "device",
                    "domain": DOMAIN,
                    "device_id": device,
                    "type": "started",
                    "subtype": "loud_noise",
                },
                "action": {
                    "service": "test.automation",
                    "data_template": {"level": "{{ trigger.event.data.score }}"},
                },
            }
        },
    )
    await send("event/loud_noise", dumps(loud_transition("start")))
    state = hass.states.get(LOUD_SENSOR)
    assert state.state == STATE_ON
    assert (state.attributes["level_dbfs"], state.attributes["peak_dbfs"]) == (-18.5, -18.5)
    assert [call.data["level"] for call in calls] == [-18.5]
    event = hass.states.get(LOUD_EVENT)
    assert event.attributes["event_type"] == "started"
    assert event.attributes["label"] is None
    assert event.attributes["clip"] == clip_name("loud_noise", "9a8b7c6d")

    await send("event/loud_noise", dumps(loud_transition("end", reason="disabled")))
    assert hass.states.get(LOUD_SENSOR).state == STATE_OFF
    assert hass.states.get(LOUD_EVENT).attributes["reason"] == "disabled"


def test_logbook_lines_of_v2() -> None:
    """Levels for loud events, the reason an episode ended early, and a saved clip."""
    loud = {"type": "started", "name": "Loud noise", "label": None, "score": -18.46}
    assert describe("Kitchen", loud)["message"] == "heard loud noise (-18.5 dBFS)"
    end = {
        **loud,
        "type": "ended",
        "peak": -12.1,
        "duration_s": 3.0,
        "reason": "disabled",
    }
    assert describe("Kitchen", end)["message"] == (
        "stopped hearing loud noise after 3.0 s (peak -12.1 dBFS): its detection was switched off"
    )
    quiet = {**end, "label": "Shatter", "peak": 0.71, "reason": "quiet", "name": "Glass"}
    assert describe("Kitchen", quiet)["message"] == (
        "stopped hearing glass after 3.0 s (Shatter, peak 71 %)"
    )
    clip = {"type": "clip", "name": "Glass breaking", "clip": clip_name()}
    assert describe("Kitchen", clip)["message"] == (
        f"saved a clip of glass breaking ({clip_name()})"
    )


async def test_clip_arrives_in_media_folder(
    hass: HomeAssistant, media: Path, loud_listener: MockConfigEntry, send: Send
) -> None:
    """A clip is saved byte for byte where the media browser finds it, and fires `clip`."""
    calls = async_mock_service(hass, "test", "automation")
    assert await async_setup_component(
        hass,
        automation.DOMAIN,
        {
            automation.DOMAIN: {
                "trigger": {
                    "platform": "device",
                    "domain": DOMAIN,
                    "device_id": listener_device(hass).id,
                    "type": "clip",
                    "subtype": "glass_breaking",
                },
                "action": {
                    "service": "test.automation",
                    "data_template": {"url": "{{ trigger.event.data.url }}"},
                },
            }
        },
    )
    name = clip_name()
    await send("event/glass_breaking", dumps(transition("start", clip=name)))
    await send("event/glass_breaking", dumps(transition("end", clip=name)))
    await send_clip(hass, send, name, CLIP_BYTES)

    assert (media / name).read_bytes() == CLIP_BYTES
    assert [path.name for path in media.iterdir()] == [name]  # no part file left
    event = hass.states.get(GLASS_EVENT)
    assert event.attributes["event_type"] == "clip"
    media_id = f"media-source://media_source/local/sat_audio/kitchen/{name}"
    assert event.attributes["media_content_id"] == media_id
    assert event.attributes["url"] == f"/media/local/sat_audio/kitchen/{name}"
    # The full episode id, from the transitions that named the clip.
    assert event.attributes["episode"] == "5f0c1d2e3f40"
    assert event.attributes["event_types"] == ["started", "ended", "clip"]
    assert hass.states.get("binary_sensor.kitchen_glass_breaking").attributes["clip"] == media_id
    assert [call.data["url"] for call in calls] == [f"/media/local/sat_audio/kitchen/{name}"]

    # The media browser lists and plays it.
    assert await async_setup_component(hass, "media_source", {})
    folder = await media_source.async_browse_media(
        hass, "media-source://media_source/local/sat_audio/kitchen"
    )
    assert [child.title for child in folder.children] == [name]
    played = await media_source.async_resolve_media(hass, media_id, None)
    assert played.url.startswith(f"/media/local/sat_audio/kitchen/{name}")
    assert played.mime_type in ("audio/flac", "audio/x-flac")

    # A QoS 1 redelivery saves and fires nothing more.
    fired_at = hass.states.get(GLASS_EVENT).state
    await send_clip(hass, send, name, CLIP_BYTES)
    assert hass.states.get(GLASS_EVENT).state == fired_at
    assert len(calls) == 1


async def test_clips_pruned_by_the_listeners_retention(
    hass: HomeAssistant, media: Path, loud_listener: MockConfigEntry, send: Send
) -> None:
    """The folder keeps what info.clips says: by count, by age and by total size."""
    await send("info", dumps(info(events=[GLASS, DOG, LOUD], clips=CLIPS | {"max_count": 2})))
    names = [clip_name(episode=f"0000000{n}") for n in range(4)]
    now = time.time()
    for n, name in enumerate(names):
        await send_clip(hass, send, name, CLIP_BYTES)
        # Arrival order is what counts: make each an hour older than the next.
        os.utime(media / name, (now - (10 - n) * 3600, now - (10 - n) * 3600))
    (media / "notes.txt").write_text("mine")
    assert sorted(path.name for path in media.iterdir()) == [*names[2:], "notes.txt"]

    # Age: clips older than max_age_days go at the next clip.
    await send("info", dumps(info(events=[GLASS, DOG, LOUD], clips=CLIPS | {"max_age_days": 0.1})))
    fresh = clip_name(episode="000000ff")
    await send_clip(hass, send, fresh, CLIP_BYTES)
    assert sorted(path.name for path in media.iterdir()) == [fresh, "notes.txt"]

    # Size: two clips do not fit in a budget of one and a half; the newest stays.
    budget = len(CLIP_BYTES) * 1.5 / 1_000_000
    await send(
        "info", dumps(info(events=[GLASS, DOG, LOUD], clips=CLIPS | {"max_total_mb": budget}))
    )
    newest = clip_name(episode="000000fe")
    await send_clip(hass, send, newest, CLIP_BYTES)
    assert sorted(path.name for path in media.iterdir()) == [newest, "notes.txt"]


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        (clip_name(), b"x" * (MAX_CLIP_BYTES + 1), f"over {MAX_CLIP_BYTES}"),
        ("glass_breaking-20261125T050102Z-5f0c1d2e.wav", CLIP_BYTES, "not a clip file name"),
        ("..", CLIP_BYTES, "not a clip file name"),
        (clip_name(), b"", "empty"),
    ],
    ids=["too-big", "wav", "dotdot", "empty"],
)
async def test_bad_clip_dropped_with_one_line(
    hass: HomeAssistant,
    media: Path,
    loud_listener: MockConfigEntry,
    send: Send,
    caplog: pytest.LogCaptureFixture,
    name: str,
    data: bytes,
    reason: str,
) -> None:
    """An oversized, empty or badly named clip is one warning; nothing is written or fired."""
    caplog.clear()
    await send_clip(hass, send, name, data)
    warnings = our_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert reason in warnings[0]
    assert "listener kitchen" in warnings[0]
    assert repr(name)[1:-1] in warnings[0]  # which clip it was
    assert not media.exists()
    assert hass.states.get(GLASS_EVENT).state == STATE_UNKNOWN


async def test_full_disk_is_one_line_and_loses_no_event(
    hass: HomeAssistant,
    media: Path,
    loud_listener: MockConfigEntry,
    send: Send,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A disk with no room (the kernel's /dev/full) is one warning; events go on as before."""
    name = clip_name()
    media.mkdir(parents=True)
    # The part file the clip is written to first is the full device.
    (media / f".{name}.part").symlink_to("/dev/full")
    caplog.clear()
    await send_clip(hass, send, name, CLIP_BYTES)
    warnings = our_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert f"Could not save clip {name}" in warnings[0]
    assert "No space left on device" in warnings[0]
    assert list(media.iterdir()) == []
    assert hass.states.get(GLASS_EVENT).state == STATE_UNKNOWN

    await send("event/glass_breaking", dumps(transition("start", clip=name)))
    assert hass.states.get("binary_sensor.kitchen_glass_breaking").state == STATE_ON
    assert hass.states.get(GLASS_EVENT).attributes["event_type"] == "started"


async def test_clip_of_unknown_event_or_without_media_folder(
    hass: HomeAssistant,
    loud_listener: MockConfigEntry,
    send: Send,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    """A clip of an event the info does not list is dropped quietly; no media folder: a line."""
    hass.config.media_dirs = {}
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    await send_clip(hass, send, clip_name("doorbell"), CLIP_BYTES)
    assert our_warnings(caplog) == []
    assert "its event is not configured" in caplog.text
    await send_clip(hass, send, clip_name(), CLIP_BYTES)
    warnings = our_warnings(caplog)
    assert len(warnings) == 1
    assert "has no media folder" in warnings[0]
    # With only another media folder, clips go there.
    hass.config.media_dirs = {"recordings": str(tmp_path / "rec")}
    other = clip_name(episode="00000001")
    await send_clip(hass, send, other, CLIP_BYTES)
    assert (tmp_path / "rec" / "sat_audio" / "kitchen" / other).read_bytes() == CLIP_BYTES
    assert hass.states.get(GLASS_EVENT).attributes["url"] == (
        f"/media/recordings/sat_audio/kitchen/{other}"
    )


README = Path(__file__).parents[2] / "custom_components" / "sat_audio" / "README.md"


async def test_documented_modes(
    hass: HomeAssistant,
    mqtt_mock: MqttMockHAClient,
    loud_listener: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
) -> None:
    """The README's mode automations switch the events as it says, by time and by presence."""
    text = README.read_text()
    block = re.search(r"### Modes.*?```yaml\n(.*?)```", text, re.S)
    assert block is not None
    noon = dt_util.now().replace(hour=12, minute=0, second=0) + timedelta(days=1)
    freezer.move_to(noon)
    async_fire_time_changed(hass, noon)
    assert await async_setup_component(hass, "zone", {})
    hass.states.async_set("zone.home", "1", hass.states.get("zone.home").attributes)
    assert await async_setup_component(hass, automation.DOMAIN, yaml.safe_load(block[1]))
    await hass.async_block_till_done()

    def commands() -> list[tuple[str, str]]:
        calls = mqtt_mock.async_publish.call_args_list
        mqtt_mock.async_publish.reset_mock()
        return [(call.args[0].removeprefix(f"{BASE}/event/"), call.args[1]) for call in calls]

    commands()
    night = noon.replace(hour=22, minute=29, second=59)
    freezer.move_to(night)
    async_fire_time_changed(hass, night)
    freezer.tick(timedelta(seconds=2))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert commands() == [("dog_bark/enabled/set", "OFF")]

    hass.states.async_set("zone.home", "0", hass.states.get("zone.home").attributes)
    await hass.async_block_till_done()
    assert sorted(commands()) == [
        ("glass_breaking/enabled/set", "ON"),
        ("loud_noise/enabled/set", "ON"),
    ]
    hass.states.async_set("zone.home", "1", hass.states.get("zone.home").attributes)
    await hass.async_block_till_done()
    assert commands() == [("loud_noise/enabled/set", "OFF")]

    morning = night.replace(hour=6, minute=59, second=59) + timedelta(days=1)
    freezer.move_to(morning)
    async_fire_time_changed(hass, morning)
    freezer.tick(timedelta(seconds=2))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert commands() == [("dog_bark/enabled/set", "ON")]
    # Their time triggers' timers go with them.
    await hass.services.async_call(
        automation.DOMAIN, "turn_off", {ATTR_ENTITY_ID: "all"}, blocking=True
    )


async def test_clip_of_an_event_the_info_says_keeps_none(
    hass: HomeAssistant,
    media: Path,
    loud_listener: MockConfigEntry,
    send: Send,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Dog barking keeps no clips by its info; a clip of it (a config just changed) still fires."""
    dog = "event.kitchen_dog_barking"
    assert hass.states.get(dog).attributes["event_types"] == ["started", "ended"]
    name = clip_name("dog_bark")
    await send_clip(hass, send, name, CLIP_BYTES)
    state = hass.states.get(dog)
    assert state.attributes["event_types"] == ["started", "ended", "clip"]
    assert (state.attributes["event_type"], state.attributes["clip"]) == ("clip", name)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
