"""Entities and their states, driven by the listener's messages through Home Assistant's MQTT."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import MqttMockHAClient

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
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr, entity_registry as er
from payloads import BASE, LISTENER, Send, dumps, info, scores, transition

GLASS = "binary_sensor.kitchen_glass_breaking"
DOG = "binary_sensor.kitchen_dog_barking"
EVENT = "event.kitchen_sound"
TOP = "sensor.kitchen_top_sound"
TOP_SCORE = "sensor.kitchen_top_sound_score"
LEVEL = "sensor.kitchen_sound_level"
LAST = "sensor.kitchen_last_detection"
SWITCH = "switch.kitchen_listening"


async def test_device_from_info(
    hass: HomeAssistant, setup_listener: MockConfigEntry, device_registry: dr.DeviceRegistry
) -> None:
    """The listener's device carries the name, model and version its info announces."""
    device = device_registry.async_get_device(identifiers={("sat_audio", LISTENER)})
    assert device is not None
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
        EVENT,
        TOP,
        TOP_SCORE,
        LEVEL,
        LAST,
        SWITCH,
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
    assert hass.states.get(LAST).attributes["event"] == "glass_breaking"

    await send("event/glass_breaking", dumps(transition("end")))
    state = hass.states.get(GLASS)
    assert state.state == STATE_OFF
    assert (state.attributes["score"], state.attributes["peak"]) == (0.31, 0.71)


async def test_event_entity_fires_start_and_end(
    hass: HomeAssistant, setup_listener: MockConfigEntry, send: Send
) -> None:
    """The event entity lists every event's start and end and fires each transition once."""
    state = hass.states.get(EVENT)
    assert state.state == STATE_UNKNOWN
    assert state.attributes["event_types"] == [
        "glass_breaking_started",
        "glass_breaking_ended",
        "dog_bark_started",
        "dog_bark_ended",
    ]
    await send("event/dog_bark", dumps(transition("start", "dog_bark", label="Bark")))
    state = hass.states.get(EVENT)
    fired_at = state.state
    assert fired_at != STATE_UNKNOWN
    assert state.attributes["event_type"] == "dog_bark_started"
    assert state.attributes["label"] == "Bark"
    assert state.attributes["start"] == "2026-11-25T05:01:02+00:00"

    # QoS 1 may deliver twice: the repeat is dropped, nothing fires again.
    await send("event/dog_bark", dumps(transition("start", "dog_bark", label="Bark")))
    assert hass.states.get(EVENT).state == fired_at

    await send("event/dog_bark", dumps(transition("end", "dog_bark")))
    state = hass.states.get(EVENT)
    assert state.attributes["event_type"] == "dog_bark_ended"
    assert state.attributes["duration_s"] == 4.5
    assert state.attributes["end"] == "2026-11-25T05:01:06.500000+00:00"


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
    device = dr.async_get(hass).async_get_device(identifiers={("sat_audio", LISTENER)})
    assert len(fired) == 1
    assert fired[0].data["device_id"] == device.id
    assert fired[0].data["type"] == "started"
    assert fired[0].data["subtype"] == "glass_breaking"
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
    assert hass.states.get(EVENT).state == STATE_UNKNOWN


async def test_sensors_from_scores(
    hass: HomeAssistant,
    entity_registry_enabled_by_default: None,
    setup_listener: MockConfigEntry,
    send: Send,
) -> None:
    """Scores set the top sound, its score and the level."""
    assert hass.states.get(TOP).state == STATE_UNKNOWN
    await send("scores", dumps(scores()))
    assert hass.states.get(TOP).state == "Speech"
    assert float(hass.states.get(TOP_SCORE).state) == 0.81
    assert float(hass.states.get(LEVEL).state) == -32.5
    assert hass.states.get(LEVEL).attributes["unit_of_measurement"] == "dBFS"
    await send("scores", dumps(scores(top=[], level_dbfs=None)))
    assert hass.states.get(TOP).state == STATE_UNKNOWN
    assert hass.states.get(LEVEL).state == STATE_UNKNOWN


async def test_level_sensor_disabled_by_default(
    hass: HomeAssistant, setup_listener: MockConfigEntry, entity_registry: er.EntityRegistry
) -> None:
    """The level changes every chunk: it is there, but off until turned on."""
    entry = entity_registry.async_get(LEVEL)
    assert entry.disabled_by is er.RegistryEntryDisabler.INTEGRATION
    assert hass.states.get(LEVEL) is None


async def test_availability_follows_status(
    hass: HomeAssistant,
    setup_listener: MockConfigEntry,
    send: Send,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Offline makes every entity unavailable, logged once; online brings them back."""
    await send("status", "offline")
    await send("status", "offline")
    for entity_id in (GLASS, EVENT, TOP, LAST, SWITCH):
        assert hass.states.get(entity_id).state == STATE_UNAVAILABLE
    assert caplog.text.count("SAT Audio listener kitchen is offline") == 1
    await send("status", "online")
    assert hass.states.get(GLASS).state == STATE_OFF
    assert "SAT Audio listener kitchen is back online" in caplog.text


async def test_switch_sends_commands_and_shows_reported_state(
    hass: HomeAssistant, setup_listener: MockConfigEntry, mqtt_mock: MqttMockHAClient, send: Send
) -> None:
    """Turning the switch off asks the listener to pause; its state is what the listener says."""
    assert hass.states.get(SWITCH).state == STATE_ON
    await hass.services.async_call(
        SWITCH_DOMAIN, SERVICE_TURN_OFF, {ATTR_ENTITY_ID: SWITCH}, blocking=True
    )
    mqtt_mock.async_publish.assert_called_once_with(f"{BASE}/listening/set", "OFF", 1, False)
    # Not optimistic: still on until the listener reports the pause.
    assert hass.states.get(SWITCH).state == STATE_ON
    await send("listening", "OFF")
    assert hass.states.get(SWITCH).state == STATE_OFF

    mqtt_mock.async_publish.reset_mock()
    await hass.services.async_call(
        SWITCH_DOMAIN, SERVICE_TURN_ON, {ATTR_ENTITY_ID: SWITCH}, blocking=True
    )
    mqtt_mock.async_publish.assert_called_once_with(f"{BASE}/listening/set", "ON", 1, False)


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
    setup_listener: MockConfigEntry,
    send: Send,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A newer protocol's payloads are ignored with a single warning."""
    await send("event/glass_breaking", dumps(transition("start", v=2)))
    await send("scores", dumps(scores(v=2)))
    assert hass.states.get(GLASS).state == STATE_OFF
    assert hass.states.get(TOP).state == STATE_UNKNOWN
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "protocol" in r.message]
    assert len(warnings) == 1
    assert "protocol version 2 is not 1" in warnings[0].message
