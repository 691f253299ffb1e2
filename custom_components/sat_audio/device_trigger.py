"""Device triggers: "<event> started" and "<event> ended" for each event of a listener, and
"<event> clip saved" for each event that keeps clips.

The subtype is the event's key, which the automation matches on; each trigger also names the
event's binary sensor, so the automation editor shows the event's name ("{entity_name}
started") rather than the key. The entity is for display only: the trigger works without it.
"""

from __future__ import annotations

import voluptuous as vol

from homeassistant.components.device_automation import DEVICE_TRIGGER_BASE_SCHEMA
from homeassistant.components.homeassistant.triggers import event as event_trigger
from homeassistant.const import (
    CONF_DEVICE_ID,
    CONF_DOMAIN,
    CONF_ENTITY_ID,
    CONF_EVENT_DATA,
    CONF_PLATFORM,
    CONF_TYPE,
    Platform,
)
from homeassistant.core import CALLBACK_TYPE, HomeAssistant
from homeassistant.helpers import config_validation as cv, entity_registry as er
from homeassistant.helpers.trigger import TriggerActionType, TriggerInfo
from homeassistant.helpers.typing import ConfigType

from .const import DOMAIN, EVENT_SOUND, TRIGGER_CLIP, TRIGGER_ENDED, TRIGGER_STARTED
from .listener import SatAudioListener, event_unique_id
from .protocol import SLUG_RE

CONF_SUBTYPE = "subtype"
TRIGGER_TYPES = (TRIGGER_STARTED, TRIGGER_ENDED, TRIGGER_CLIP)

TRIGGER_SCHEMA = DEVICE_TRIGGER_BASE_SCHEMA.extend(
    {
        vol.Required(CONF_TYPE): vol.In(TRIGGER_TYPES),
        vol.Required(CONF_SUBTYPE): vol.All(str, vol.Match(SLUG_RE)),
        vol.Optional(CONF_ENTITY_ID): cv.entity_id_or_uuid,
    }
)


async def async_get_triggers(hass: HomeAssistant, device_id: str) -> list[dict[str, str]]:
    """List start and end triggers for each event the device's listener announces (and clip
    for those that keep clips).

    The loaded listeners are asked for the device, not the device for its entries: Home
    Assistant 2026 deprecates a device's `config_entries`, and 2025.4 lacks its successor.
    """
    triggers: list[dict[str, str]] = []
    for entry in hass.config_entries.async_loaded_entries(DOMAIN):
        listener: SatAudioListener = entry.runtime_data
        if listener.device_id != device_id:
            continue
        for key, state in listener.events.items():
            base = {
                CONF_PLATFORM: "device",
                CONF_DOMAIN: DOMAIN,
                CONF_DEVICE_ID: device_id,
                CONF_SUBTYPE: key,
            }
            if sensor := _sensor_registry_id(hass, listener, key):
                base[CONF_ENTITY_ID] = sensor
            types = TRIGGER_TYPES if state.info.clip else (TRIGGER_STARTED, TRIGGER_ENDED)
            triggers.extend(base | {CONF_TYPE: trigger} for trigger in types)
    return triggers


def _sensor_registry_id(hass: HomeAssistant, listener: SatAudioListener, key: str) -> str | None:
    """Return the registry id of an event's binary sensor, which survives its renames."""
    registry = er.async_get(hass)
    unique_id = event_unique_id(listener.listener_id, key)
    entity_id = registry.async_get_entity_id(Platform.BINARY_SENSOR, DOMAIN, unique_id)
    entry = registry.async_get(entity_id) if entity_id else None
    return entry.id if entry else None


async def async_attach_trigger(
    hass: HomeAssistant,
    config: ConfigType,
    action: TriggerActionType,
    trigger_info: TriggerInfo,
) -> CALLBACK_TYPE:
    """Run the action on the bus event the listener fires for that event's start or end."""
    event_config = event_trigger.TRIGGER_SCHEMA(
        {
            CONF_PLATFORM: "event",
            event_trigger.CONF_EVENT_TYPE: EVENT_SOUND,
            CONF_EVENT_DATA: {
                CONF_DEVICE_ID: config[CONF_DEVICE_ID],
                CONF_TYPE: config[CONF_TYPE],
                CONF_SUBTYPE: config[CONF_SUBTYPE],
            },
        }
    )
    return await event_trigger.async_attach_trigger(
        hass, event_config, action, trigger_info, platform_type="device"
    )
