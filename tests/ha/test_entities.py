"""Entities and their states, driven by the listener's messages through Home Assistant's MQTT."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    mock_restore_cache_with_extra_data,
)
from pytest_homeassistant_custom_component.typing import MqttMockHAClient

from helpers import listener_device
from homeassistant.components.switch import DOMAIN as SWITCH_DOMAIN
from homeassistant.const import (
    ATTR_ENTITY_ID,
    SERVICE_TURN_OFF,
    SERVICE_TURN_ON,
    STATE_OFF,
    STATE_ON,
    STATE_UNAVAILABLE,
    STATE_UNKNOWN,
)
from homeassistant.core import HomeAssistant, State
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.translation import async_get_translations
from payloads import BASE, Send, dumps, info, scores, transition

GLASS = "binary_sensor.kitchen_glass_breaking"
DOG = "binary_sensor.kitchen_dog_barking"
GLASS_EVENT = "event.kitchen_glass_breaking"
DOG_EVENT = "event.kitchen_dog_barking"
TOP = "sensor.kitchen_top_sound"
TOP_SCORE = "sensor.kitchen_top_sound_score"
LEVEL = "sensor.kitchen_sound_level"
LAST = "sensor.kitchen_last_detection"
SWITCH = "switch.kitchen_listening"
ANY = "binary_sensor.kitchen_any_sound"
GLASS_SWITCH = "switch.kitchen_glass_breaking_detection"
DOG_SWITCH = "switch.kitchen_dog_barking_detection"


async def test_device_from_info(hass: HomeAssistant, setup_listener: MockConfigEntry) -> None:
    """The listener's device carries the name, model and version its info announces."""
    device = listener_device(hass)
    assert (device.name, device.model, device.sw_version, device.manufacturer) == (
        "Kitchen",
        "SAT_T_2s",
        "0.1.0",
        "SAT Audio",
    )
    entities = er.async_entries_for_device(
        er.async_get(hass), device.id, include_disabled_entities=True
    )
    assert {entity.entity_id for entity in entities} == {
        GLASS,
        DOG,
        GLASS_EVENT,
        DOG_EVENT,
        TOP,
        TOP_SCORE,
        LEVEL,
        LAST,
        SWITCH,
        ANY,
        GLASS_SWITCH,
        DOG_SWITCH,
    }


async def test_event_start_and_end(
    hass: HomeAssistant, setup_listener: MockConfigEntry, send: Send
) -> None:
    """A start turns the event's sensor on with the episode's attributes; the end turns it off."""
    assert hass.states.get(GLASS).state == STATE_OFF
    assert hass.states.get(GLASS).attributes["device_class"] == "sound"

    await send("event/glass_breaking", dumps(transition("start")))
    await send("event/glass_breaking/state", "ON")
    state = hass.states.get(GLASS)
    assert state.state == STATE_ON
    assert state.attributes["label"] == "Shatter"
    assert state.attributes["score"] == 0.62
    assert state.attributes["peak"] == 0.62
    assert state.attributes["started"] == datetime(2026, 11, 25, 5, 1, 2, tzinfo=UTC)
    assert hass.states.get(DOG).state == STATE_OFF
    assert hass.states.get(LAST).state == "2026-11-25T05:01:02+00:00"
    # Names, not keys: the event as the listener's config names it.
    assert hass.states.get(LAST).attributes["event"] == "Glass breaking"
    assert hass.states.get(LAST).attributes["label"] == "Shatter"

    await send("event/glass_breaking", dumps(transition("end")))
    state = hass.states.get(GLASS)
    assert state.state == STATE_OFF
    assert (state.attributes["score"], state.attributes["peak"]) == (0.31, 0.71)


async def test_event_entity_fires_start_and_end(
    hass: HomeAssistant, setup_listener: MockConfigEntry, send: Send
) -> None:
    """Each event has its own event entity, named after it, firing `started` and `ended` once."""
    state = hass.states.get(DOG_EVENT)
    assert state.state == STATE_UNKNOWN
    assert state.attributes["friendly_name"] == "Kitchen Dog barking"
    assert state.attributes["event_types"] == ["started", "ended"]
    await send("event/dog_bark", dumps(transition("start", "dog_bark", label="Bark")))
    state = hass.states.get(DOG_EVENT)
    fired_at = state.state
    assert fired_at != STATE_UNKNOWN
    assert state.attributes["event_type"] == "started"
    assert state.attributes["label"] == "Bark"
    assert state.attributes["start"] == "2026-11-25T05:01:02+00:00"
    # The episode id and the event key are for automations (the bus event), not for people.
    assert "id" not in state.attributes
    assert "event" not in state.attributes
    assert hass.states.get(GLASS_EVENT).state == STATE_UNKNOWN

    # QoS 1 may deliver twice: the repeat is dropped, nothing fires again.
    await send("event/dog_bark", dumps(transition("start", "dog_bark", label="Bark")))
    assert hass.states.get(DOG_EVENT).state == fired_at

    await send("event/dog_bark", dumps(transition("end", "dog_bark")))
    state = hass.states.get(DOG_EVENT)
    assert state.attributes["event_type"] == "ended"
    assert state.attributes["duration_s"] == 4.5
    assert state.attributes["end"] == "2026-11-25T05:01:06.500000+00:00"


async def test_event_types_are_translated(
    hass: HomeAssistant, setup_listener: MockConfigEntry
) -> None:
    """The frontend shows "Started" and "Ended", from the translations of the fixed types."""
    strings = await async_get_translations(hass, "en", "entity", ["sat_audio"])
    key = "component.sat_audio.entity.event.sound_event.state_attributes.event_type.state"
    assert (strings[f"{key}.started"], strings[f"{key}.ended"]) == ("Started", "Ended")
    entry = er.async_get(hass).async_get(GLASS_EVENT)
    assert entry is not None
    assert entry.translation_key == "sound_event"


async def test_redelivery_memory_is_bounded(
    hass: HomeAssistant, setup_listener: MockConfigEntry, send: Send
) -> None:
    """The last 256 start/end pairs are remembered; older ids are forgotten, not kept forever."""
    fired = []
    hass.bus.async_listen("sat_audio_event", fired.append)
    for n in range(130):
        await send("event/dog_bark", dumps(transition("start", "dog_bark", id=f"e{n}")))
        await send("event/dog_bark", dumps(transition("end", "dog_bark", id=f"e{n}")))
    await send("event/dog_bark", dumps(transition("end", "dog_bark", id="e129")))
    assert len(fired) == 260
    await send("event/dog_bark", dumps(transition("start", "dog_bark", id="e0")))
    assert len(fired) == 261


async def test_bus_event_for_triggers(
    hass: HomeAssistant, setup_listener: MockConfigEntry, send: Send
) -> None:
    """Each transition is also a sat_audio_event on the bus, naming the device and event."""
    fired = []
    hass.bus.async_listen("sat_audio_event", fired.append)
    await send("event/glass_breaking", dumps(transition("start")))
    assert len(fired) == 1
    assert fired[0].data["device_id"] == listener_device(hass).id
    assert fired[0].data["type"] == "started"
    assert fired[0].data["subtype"] == "glass_breaking"
    assert fired[0].data["name"] == "Glass breaking"
    assert fired[0].data["entity_id"] == GLASS
    assert fired[0].data["label"] == "Shatter"


async def test_transition_of_unknown_or_other_event_is_dropped(
    hass: HomeAssistant, setup_listener: MockConfigEntry, send: Send
) -> None:
    """A transition for an event the info does not list, or on another event's topic, is ignored."""
    fired = []
    hass.bus.async_listen("sat_audio_event", fired.append)
    await send("event/doorbell", dumps(transition("start", "doorbell")))
    await send("event/glass_breaking", dumps(transition("start", "dog_bark")))
    await send("event/doorbell/state", "ON")
    assert fired == []
    assert hass.states.get(GLASS).state == STATE_OFF
    assert hass.states.get(GLASS_EVENT).state == STATE_UNKNOWN
    assert hass.states.get(DOG_EVENT).state == STATE_UNKNOWN


async def test_sensors_from_scores(
    hass: HomeAssistant,
    entity_registry_enabled_by_default: None,
    setup_listener: MockConfigEntry,
    send: Send,
) -> None:
    """Scores set the top sound, its score (in percent) and the level."""
    assert hass.states.get(TOP).state == STATE_UNKNOWN
    await send("scores", dumps(scores()))
    assert hass.states.get(TOP).state == "Speech"
    assert float(hass.states.get(TOP_SCORE).state) == 81.0
    assert hass.states.get(TOP_SCORE).attributes["unit_of_measurement"] == "%"
    assert float(hass.states.get(LEVEL).state) == -32.5
    assert hass.states.get(LEVEL).attributes["unit_of_measurement"] == "dBFS"
    await send("scores", dumps(scores(top=[], level_dbfs=None)))
    assert hass.states.get(TOP).state == STATE_UNKNOWN
    assert hass.states.get(LEVEL).state == STATE_UNKNOWN


async def test_per_chunk_sensors_disabled_by_default(
    hass: HomeAssistant, setup_listener: MockConfigEntry, entity_registry: er.EntityRegistry
) -> None:
    """Top sound, its score and the level change every chunk: there, but off until turned on."""
    for entity_id in (TOP, TOP_SCORE, LEVEL):
        entry = entity_registry.async_get(entity_id)
        assert entry.disabled_by is er.RegistryEntryDisabler.INTEGRATION
        assert hass.states.get(entity_id) is None


async def test_availability_follows_status(
    hass: HomeAssistant,
    entity_registry_enabled_by_default: None,
    setup_listener: MockConfigEntry,
    send: Send,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Offline makes every entity unavailable, logged once; online brings them back."""
    # The first online of a setup is no return: nothing was offline before it.
    assert "back online" not in caplog.text
    await send("status", "offline")
    await send("status", "offline")
    for entity_id in (GLASS, GLASS_EVENT, TOP, LAST, SWITCH):
        assert hass.states.get(entity_id).state == STATE_UNAVAILABLE
    assert caplog.text.count("SAT Audio listener kitchen is offline") == 1
    await send("status", "online")
    assert hass.states.get(GLASS).state == STATE_OFF
    assert caplog.text.count("SAT Audio listener kitchen is back online") == 1


async def test_scores_are_not_kept_while_paused_or_offline(
    hass: HomeAssistant,
    entity_registry_enabled_by_default: None,
    setup_listener: MockConfigEntry,
    send: Send,
) -> None:
    """Top sound, its score and the level say unknown while paused, not what was last heard."""
    await send("scores", dumps(scores(top=[{"label": "Shatter", "score": 1.0}])))
    assert (hass.states.get(TOP).state, hass.states.get(TOP_SCORE).state) == ("Shatter", "100.0")
    await send("listening", "OFF")
    for entity_id in (TOP, TOP_SCORE, LEVEL):
        assert hass.states.get(entity_id).state == STATE_UNKNOWN
    # A scores message overtaken by the pause (QoS 0 against QoS 1) changes nothing.
    await send("scores", dumps(scores()))
    assert hass.states.get(TOP).state == STATE_UNKNOWN
    await send("listening", "ON")
    assert hass.states.get(TOP).state == STATE_UNKNOWN
    await send("scores", dumps(scores()))
    assert hass.states.get(TOP).state == "Speech"

    # Offline: unavailable, and after coming back unknown until the listener scores again.
    await send("status", "offline")
    assert hass.states.get(TOP).state == STATE_UNAVAILABLE
    await send("status", "online")
    assert hass.states.get(TOP).state == STATE_UNKNOWN


async def test_last_detection_survives_a_restart(
    hass: HomeAssistant, mqtt_mock: MqttMockHAClient, config_entry: MockConfigEntry, send: Send
) -> None:
    """Transitions are not retained: the sensor brings back what it showed before the restart."""
    before = "2026-11-24T22:10:00+00:00"
    mock_restore_cache_with_extra_data(
        hass,
        [
            (
                State(LAST, before, {"event": "Dog barking", "label": "Bark"}),
                {
                    "native_value": {"__type": "<class 'datetime.datetime'>", "isoformat": before},
                    "native_unit_of_measurement": None,
                },
            )
        ],
    )
    config_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    await send("status", "online")
    await send("info", dumps(info()))
    state = hass.states.get(LAST)
    assert state.state == before
    assert (state.attributes["event"], state.attributes["label"]) == ("Dog barking", "Bark")

    await send("event/glass_breaking", dumps(transition("start")))
    state = hass.states.get(LAST)
    assert state.state == "2026-11-25T05:01:02+00:00"
    assert (state.attributes["event"], state.attributes["label"]) == ("Glass breaking", "Shatter")


async def test_switch_sends_commands_and_shows_reported_state(
    hass: HomeAssistant, setup_listener: MockConfigEntry, mqtt_mock: MqttMockHAClient, send: Send
) -> None:
    """Turning the switch off asks the listener to pause; its state is what the listener says."""
    assert hass.states.get(SWITCH).state == STATE_ON
    await hass.services.async_call(
        SWITCH_DOMAIN, SERVICE_TURN_OFF, {ATTR_ENTITY_ID: SWITCH}, blocking=True
    )
    # Newer Home Assistant passes more arguments (message_expiry_interval); these four matter.
    assert [call.args[:4] for call in mqtt_mock.async_publish.call_args_list] == [
        (f"{BASE}/listening/set", "OFF", 1, False)
    ]
    # Not optimistic: still on until the listener reports the pause.
    assert hass.states.get(SWITCH).state == STATE_ON
    await send("listening", "OFF")
    assert hass.states.get(SWITCH).state == STATE_OFF

    mqtt_mock.async_publish.reset_mock()
    await hass.services.async_call(
        SWITCH_DOMAIN, SERVICE_TURN_ON, {ATTR_ENTITY_ID: SWITCH}, blocking=True
    )
    assert [call.args[:4] for call in mqtt_mock.async_publish.call_args_list] == [
        (f"{BASE}/listening/set", "ON", 1, False)
    ]


async def test_switch_falls_back_to_info(
    hass: HomeAssistant, mqtt_mock: MqttMockHAClient, config_entry: MockConfigEntry, send: Send
) -> None:
    """Without a listening message yet, the info's `listening` field is the state."""
    config_entry.add_to_hass(hass)
    await hass.config_entries.async_setup(config_entry.entry_id)
    await send("status", "online")
    assert hass.states.get(SWITCH).state == STATE_UNKNOWN
    await send("info", dumps(info(listening=False)))
    assert hass.states.get(SWITCH).state == STATE_OFF


async def test_retained_states_before_info_are_kept(
    hass: HomeAssistant, mqtt_mock: MqttMockHAClient, config_entry: MockConfigEntry, send: Send
) -> None:
    """Retained ON/OFF states may come before the info that names their events."""
    config_entry.add_to_hass(hass)
    await hass.config_entries.async_setup(config_entry.entry_id)
    await send("event/glass_breaking/state", "ON")
    await send("status", "online")
    await send("info", dumps(info()))
    assert hass.states.get(GLASS).state == STATE_ON
    assert hass.states.get(DOG).state == STATE_UNKNOWN


async def test_unknown_protocol_version_warns_once(
    hass: HomeAssistant,
    entity_registry_enabled_by_default: None,
    setup_listener: MockConfigEntry,
    send: Send,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A newer protocol's payloads are ignored with a single warning."""
    await send("event/glass_breaking", dumps(transition("start", v=3)))
    await send("scores", dumps(scores(v=3)))
    assert hass.states.get(GLASS).state == STATE_OFF
    assert hass.states.get(TOP).state == STATE_UNKNOWN
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "protocol" in r.message]
    assert len(warnings) == 1
    assert "protocol version 3 is not one of (1, 2)" in warnings[0].message
