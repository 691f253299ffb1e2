"""Setup, unload and reload, and events added or removed by the listener's info at run time."""

from __future__ import annotations

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_mqtt_message
from pytest_homeassistant_custom_component.typing import MqttMockHAClient

from custom_components.sat_audio.const import CONF_LISTENER_ID, CONF_TOPIC_PREFIX, DOMAIN
from helpers import listener_device, our_warnings
from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import ATTR_RESTORED, STATE_OFF, STATE_ON, STATE_UNAVAILABLE
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from payloads import BASE, DOG, GLASS, LISTENER, PREFIX, Send, dumps, info, transition

DOORBELL = {
    "key": "doorbell",
    "name": "Doorbell",
    "labels": ["Doorbell", "Ding-dong"],
    "on_threshold": 0.4,
    "off_threshold": 0.25,
}


async def test_setup_waits_for_mqtt(hass: HomeAssistant, config_entry: MockConfigEntry) -> None:
    """Without a connected MQTT client the entry is retried later, not failed."""
    config_entry.add_to_hass(hass)
    await hass.config_entries.async_setup(config_entry.entry_id)
    await hass.async_block_till_done()
    assert config_entry.state is ConfigEntryState.SETUP_RETRY
    assert "The MQTT integration is not connected to its broker yet" in (config_entry.reason or "")


async def test_unload_and_reload(
    hass: HomeAssistant, setup_listener: MockConfigEntry, mqtt_mock: MqttMockHAClient, send: Send
) -> None:
    """Unloading drops the subscription and the entities; reloading brings both back."""
    assert setup_listener.state is ConfigEntryState.LOADED
    assert await hass.config_entries.async_unload(setup_listener.entry_id)
    await hass.async_block_till_done()
    assert setup_listener.state is ConfigEntryState.NOT_LOADED
    assert hass.states.get("binary_sensor.kitchen_glass_breaking").state == STATE_UNAVAILABLE
    mqtt_mock.async_subscribe.reset_mock()
    await send("status", "online")
    await send("info", dumps(info()))
    await send("event/glass_breaking/state", "ON")
    assert hass.states.get("binary_sensor.kitchen_glass_breaking").state == STATE_UNAVAILABLE

    assert await hass.config_entries.async_setup(setup_listener.entry_id)
    await hass.async_block_till_done()
    assert [call.args[0] for call in mqtt_mock.async_subscribe.call_args_list] == [f"{BASE}/#"]
    # Retained messages come again after the resubscription.
    async_fire_mqtt_message(hass, f"{BASE}/status", "online", 1, True)
    async_fire_mqtt_message(hass, f"{BASE}/info", dumps(info()), 1, True)
    async_fire_mqtt_message(hass, f"{BASE}/event/glass_breaking/state", "ON", 1, True)
    await hass.async_block_till_done()
    assert hass.states.get("binary_sensor.kitchen_glass_breaking").state == STATE_ON


async def test_events_added_and_removed_without_restart(
    hass: HomeAssistant,
    setup_listener: MockConfigEntry,
    send: Send,
    entity_registry: er.EntityRegistry,
) -> None:
    """A new event in the info adds its entities; a dropped one's become unavailable."""
    doorbell = "binary_sensor.kitchen_doorbell"
    dog = "binary_sensor.kitchen_dog_barking"
    assert hass.states.get(doorbell) is None

    await send("info", dumps(info(events=[GLASS, DOORBELL])))
    await send("event/doorbell/state", "OFF")
    assert hass.states.get(doorbell).state == STATE_OFF
    assert hass.states.get(dog).state == STATE_UNAVAILABLE
    assert hass.states.get("event.kitchen_dog_barking").state == STATE_UNAVAILABLE
    assert hass.states.get("event.kitchen_doorbell").attributes["event_types"] == [
        "started",
        "ended",
    ]
    await send("event/doorbell", dumps(transition("start", "doorbell", id="b1")))
    assert hass.states.get(doorbell).state == STATE_ON
    assert hass.states.get("event.kitchen_doorbell").attributes["event_type"] == "started"

    # The dog comes back under the same entity id, and a renamed event keeps its entity.
    renamed = GLASS | {"name": "Window glass"}
    await send("info", dumps(info(events=[renamed, DOORBELL, DOG])))
    assert hass.states.get(dog).state != STATE_UNAVAILABLE
    glass = hass.states.get("binary_sensor.kitchen_glass_breaking")
    assert glass.attributes["friendly_name"] == "Kitchen Window glass"
    assert setup_listener.state is ConfigEntryState.LOADED


async def test_no_events_keeps_entities_and_customisations(
    hass: HomeAssistant,
    setup_listener: MockConfigEntry,
    send: Send,
    entity_registry: er.EntityRegistry,
) -> None:
    """`events: []` (a listener's broken config) leaves every entity unavailable, not deleted.

    Their registry entries keep what the user set until the user deletes them, and all of it
    is back as soon as the listener announces the events again.
    """
    glass = "binary_sensor.kitchen_glass_breaking"
    entity_registry.async_update_entity(glass, name="Living room window", area_id="living")
    await hass.async_block_till_done()

    await send("info", dumps(info(events=[])))
    await hass.async_block_till_done()
    for entity_id in (glass, "event.kitchen_glass_breaking", "binary_sensor.kitchen_dog_barking"):
        state = hass.states.get(entity_id)
        assert state.state == STATE_UNAVAILABLE, entity_id
        # Restored: the frontend offers to delete it, as for any entity an integration dropped.
        assert state.attributes[ATTR_RESTORED] is True
    entry = entity_registry.async_get(glass)
    assert (entry.name, entry.area_id) == ("Living room window", "living")

    await send("info", dumps(info()))
    await send("event/glass_breaking/state", "ON")
    state = hass.states.get(glass)
    assert state.state == STATE_ON
    assert state.attributes["friendly_name"] == "Living room window"
    assert entity_registry.async_get(glass).area_id == "living"


async def test_dropped_info_is_warned_about(
    hass: HomeAssistant,
    setup_listener: MockConfigEntry,
    send: Send,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An info Home Assistant drops (too large, invalid) is a warning that says why, once."""
    too_many = [GLASS | {"key": f"event_{n}"} for n in range(129)]
    await send("info", dumps(info(events=too_many)))
    await send("info", dumps(info(events=too_many)))
    warnings = our_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "Ignored the info message of SAT Audio listener kitchen" in warnings[0]
    assert "length of value must be at most 128" in warnings[0]
    assert hass.states.get("binary_sensor.kitchen_glass_breaking").state == STATE_OFF

    # A valid info re-arms the warning; the next bad one is named again.
    await send("info", dumps(info()))
    await send("info", "x" * 70_000)
    warnings = our_warnings(caplog)
    assert len(warnings) == 2, warnings
    assert "payload of 70000 bytes is over 65536" in warnings[1]


async def test_migration_drops_the_single_event_entity(
    hass: HomeAssistant, mqtt_mock: MqttMockHAClient, entity_registry: er.EntityRegistry
) -> None:
    """An entry from 1.1 loses its one "Sound" event entity; the per-event ones replace it."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="Kitchen",
        unique_id=LISTENER,
        data={CONF_TOPIC_PREFIX: PREFIX, CONF_LISTENER_ID: LISTENER},
        version=1,
        minor_version=1,
    )
    entry.add_to_hass(hass)
    old = entity_registry.async_get_or_create(
        "event", DOMAIN, f"{LISTENER}-sound", config_entry=entry
    )
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.minor_version == 2
    assert entity_registry.async_get(old.entity_id) is None


async def test_info_updates_device(
    hass: HomeAssistant, setup_listener: MockConfigEntry, send: Send
) -> None:
    """A new name, model or version in the info shows on the device at once."""
    await send("info", dumps(info(name="Kitchen west", version="0.2.0", model="SAT_S_2s")))
    device = listener_device(hass)
    assert (device.name, device.model, device.sw_version) == ("Kitchen west", "SAT_S_2s", "0.2.0")


async def test_info_of_another_listener_is_ignored(
    hass: HomeAssistant, setup_listener: MockConfigEntry, send: Send
) -> None:
    """An info whose id is not this entry's listener changes nothing."""
    await send("info", dumps(info(id="porch", events=[])))
    assert hass.states.get("binary_sensor.kitchen_glass_breaking").state == STATE_OFF
