"""Device triggers: each event's start and end, listed per device and running automations."""

from __future__ import annotations

from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_get_device_automations,
    async_mock_service,
)
from pytest_unordered import unordered

from custom_components.sat_audio.device_trigger import async_get_triggers
from helpers import listener_device
from homeassistant.components import automation
from homeassistant.components.device_automation import DeviceAutomationType
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.translation import async_get_translations
from homeassistant.setup import async_setup_component
from payloads import Send, dumps, info, transition


async def sound_triggers(hass: HomeAssistant, device: str) -> list[dict[str, str]]:
    """Return the device's own triggers (its entities add generic state triggers too)."""
    triggers = await async_get_device_automations(hass, DeviceAutomationType.TRIGGER, device)
    return [trigger for trigger in triggers if trigger["domain"] == "sat_audio"]


def device_id(hass: HomeAssistant) -> str:
    """Return the kitchen listener's device id."""
    return listener_device(hass).id


async def test_triggers_listed_per_event(
    hass: HomeAssistant, setup_listener: MockConfigEntry, send: Send
) -> None:
    """A started and an ended trigger per configured event, following the info.

    Each names its event's binary sensor by registry id: the editor shows that entity's name.
    """
    device = device_id(hass)
    triggers = await sound_triggers(hass, device)
    registry = er.async_get(hass)
    sensors = {
        "glass_breaking": registry.async_get("binary_sensor.kitchen_glass_breaking").id,
        "dog_bark": registry.async_get("binary_sensor.kitchen_dog_barking").id,
    }
    expected = [
        {
            "platform": "device",
            "domain": "sat_audio",
            "device_id": device,
            "entity_id": sensor,
            "type": kind,
            "subtype": key,
            # Home Assistant's own, from the entity: not hidden, no entity category.
            "metadata": {"secondary": False},
        }
        for key, sensor in sensors.items()
        # Glass breaking keeps clips: it also has a clip trigger; dog barking does not.
        for kind in ("started", "ended", "clip")
        if kind != "clip" or key == "glass_breaking"
    ]
    assert triggers == unordered(expected)

    await send("info", dumps(info(events=[])))
    assert await sound_triggers(hass, device) == []


async def test_no_triggers_without_a_loaded_listener(
    hass: HomeAssistant, setup_listener: MockConfigEntry
) -> None:
    """An unknown device has no triggers; an unloaded entry's device offers none either."""
    assert await async_get_triggers(hass, "no-such-device") == []
    device = device_id(hass)
    assert await hass.config_entries.async_unload(setup_listener.entry_id)
    assert await async_get_triggers(hass, device) == []


async def test_trigger_names_are_translated(
    hass: HomeAssistant, setup_listener: MockConfigEntry
) -> None:
    """The frontend names a trigger "<event's sensor> started", never by the event's key."""
    strings = await async_get_translations(hass, "en", "device_automation", ["sat_audio"])
    prefix = "component.sat_audio.device_automation.trigger_type"
    assert strings[f"{prefix}.started"] == "{entity_name} started"
    assert strings[f"{prefix}.ended"] == "{entity_name} ended"


async def test_trigger_runs_automation(
    hass: HomeAssistant, setup_listener: MockConfigEntry, send: Send
) -> None:
    """An automation on "glass_breaking started" runs on that start, not on other events.

    The started trigger is saved as the editor saves it (with the sensor's registry id), the
    ended one as automations written before the id existed: both run.
    """
    calls = async_mock_service(hass, "test", "automation")
    device = device_id(hass)
    sensor = er.async_get(hass).async_get("binary_sensor.kitchen_glass_breaking").id
    assert await async_setup_component(
        hass,
        automation.DOMAIN,
        {
            automation.DOMAIN: [
                {
                    "trigger": {
                        "platform": "device",
                        "domain": "sat_audio",
                        "device_id": device,
                        "type": kind,
                        "subtype": "glass_breaking",
                    }
                    | ({"entity_id": sensor} if kind == "started" else {}),
                    "action": {
                        "service": "test.automation",
                        "data_template": {
                            "what": kind + " {{ trigger.event.data.label }}",
                        },
                    },
                }
                for kind in ("started", "ended")
            ]
        },
    )
    await send("event/dog_bark", dumps(transition("start", "dog_bark", id="d1")))
    assert calls == []
    await send("event/glass_breaking", dumps(transition("start")))
    await send("event/glass_breaking", dumps(transition("start")))  # a redelivery
    await send("event/glass_breaking", dumps(transition("end")))
    assert [call.data["what"] for call in calls] == ["started Shatter", "ended Shatter"]
