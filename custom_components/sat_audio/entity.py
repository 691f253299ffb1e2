"""Base entity: one SAT Audio listener device, available while the listener says it is online."""

from __future__ import annotations

from homeassistant.core import callback
from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.entity import Entity, EntityDescription

from .const import DOMAIN
from .listener import SatAudioListener


class SatAudioEntity(Entity):
    """An entity of a listener's device, redrawn after each accepted message."""

    _attr_has_entity_name = True
    _attr_should_poll = False

    def __init__(
        self, listener: SatAudioListener, description: EntityDescription, unique_id: str
    ) -> None:
        """Attach the entity to the listener's device (created by the listener itself)."""
        self.listener = listener
        self.entity_description = description
        self._attr_unique_id = unique_id
        self._attr_device_info = DeviceInfo(identifiers={(DOMAIN, listener.listener_id)})

    @property
    def available(self) -> bool:
        """Return whether the listener's status topic says online."""
        return self.listener.online

    async def async_added_to_hass(self) -> None:
        """Follow the listener's messages while the entity exists."""
        await super().async_added_to_hass()
        self.async_on_remove(self.listener.async_add_listener(self._handle_update))

    @callback
    def _handle_update(self) -> None:
        self.async_write_ha_state()
