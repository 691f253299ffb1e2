"""Setup, unload and reload, and events added or removed by the listener's info at run time."""

from __future__ import annotations

from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_mqtt_message
from pytest_homeassistant_custom_component.typing import MqttMockHAClient

from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import STATE_OFF, STATE_ON, STATE_UNAVAILABLE
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr, entity_registry as er
from payloads import BASE, DOG, GLASS, LISTENER, Send, dumps, info, transition

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
    """A new event in the info adds its entities and triggers; a dropped one removes them."""
    doorbell = "binary_sensor.kitchen_doorbell"
    assert hass.states.get(doorbell) is None

    await send("info", dumps(info(events=[GLASS, DOORBELL])))
    await send("event/doorbell/state", "OFF")
    assert hass.states.get(doorbell).state == STATE_OFF
    assert entity_registry.async_get("binary_sensor.kitchen_dog_barking") is None
    assert hass.states.get("binary_sensor.kitchen_dog_barking") is None
    assert hass.states.get("event.kitchen_sound").attributes["event_types"] == [
        "glass_breaking_started",
        "glass_breaking_ended",
        "doorbell_started",
        "doorbell_ended",
    ]
    await send("event/doorbell", dumps(transition("start", "doorbell", id="b1")))
    assert hass.states.get(doorbell).state == STATE_ON
    assert hass.states.get("event.kitchen_sound").attributes["event_type"] == "doorbell_started"

    # The dog comes back under the same entity id, and a renamed event keeps its entity.
    renamed = GLASS | {"name": "Window glass"}
    await send("info", dumps(info(events=[renamed, DOORBELL, DOG])))
    assert hass.states.get("binary_sensor.kitchen_dog_barking") is not None
    glass = hass.states.get("binary_sensor.kitchen_glass_breaking")
    assert glass.attributes["friendly_name"] == "Kitchen Window glass"
    assert setup_listener.state is ConfigEntryState.LOADED


async def test_info_updates_device(
    hass: HomeAssistant, setup_listener: MockConfigEntry, send: Send
) -> None:
    """A new name, model or version in the info shows on the device at once."""
    await send("info", dumps(info(name="Kitchen west", version="0.2.0", model="SAT_S_2s")))
    device = dr.async_get(hass).async_get_device(identifiers={("sat_audio", LISTENER)})
    assert (device.name, device.model, device.sw_version) == ("Kitchen west", "SAT_S_2s", "0.2.0")


async def test_info_of_another_listener_is_ignored(
    hass: HomeAssistant, setup_listener: MockConfigEntry, send: Send
) -> None:
    """An info whose id is not this entry's listener changes nothing."""
    await send("info", dumps(info(id="porch", events=[])))
    assert hass.states.get("binary_sensor.kitchen_glass_breaking").state == STATE_OFF
