"""SAT Audio: sound events heard by a SAT Audio listener, delivered over MQTT."""

from __future__ import annotations

from homeassistant.components import mqtt
from homeassistant.const import Platform
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import ConfigEntryNotReady
from homeassistant.helpers import entity_registry as er

from .const import CONF_LISTENER_ID, DOMAIN
from .listener import SatAudioConfigEntry, SatAudioListener

PLATFORMS: tuple[Platform, ...] = (
    Platform.BINARY_SENSOR,
    Platform.EVENT,
    Platform.SENSOR,
    Platform.SWITCH,
)


async def async_setup_entry(hass: HomeAssistant, entry: SatAudioConfigEntry) -> bool:
    """Subscribe to the listener's topics and set up its entities."""
    if not await mqtt.async_wait_for_mqtt_client(hass):
        raise ConfigEntryNotReady(translation_domain=DOMAIN, translation_key="mqtt_not_ready")
    entry.runtime_data = SatAudioListener(hass, entry)
    await entry.runtime_data.async_start()
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    return True


async def async_unload_entry(hass: HomeAssistant, entry: SatAudioConfigEntry) -> bool:
    """Unload the entities; the subscription ends with the entry's unload callbacks."""
    return await hass.config_entries.async_unload_platforms(entry, PLATFORMS)


async def async_migrate_entry(hass: HomeAssistant, entry: SatAudioConfigEntry) -> bool:
    """Bring an entry of an older integration version up to date."""
    if entry.version > 1:
        return False  # made by a newer integration: leave it alone
    if entry.minor_version < 2:
        # 1.1 had one event entity per listener with "<key>_started" types; 1.2 has one per
        # sound event (their own unique ids), so the old one would only linger unavailable.
        registry = er.async_get(hass)
        old = f"{entry.data[CONF_LISTENER_ID]}-sound"
        if entity_id := registry.async_get_entity_id(Platform.EVENT, DOMAIN, old):
            registry.async_remove(entity_id)
        hass.config_entries.async_update_entry(entry, minor_version=2)
    return True
