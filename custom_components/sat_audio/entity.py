"""Base entities: one SAT Audio listener device, available while the listener says online."""

from __future__ import annotations

from collections.abc import Callable

from homeassistant.core import callback
from homeassistant.helpers.device_registry import DeviceInfo
from homeassistant.helpers.entity import Entity, EntityDescription
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .const import DOMAIN
from .listener import EventState, SatAudioConfigEntry, SatAudioListener


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
        return self.listener.online is True

    async def async_added_to_hass(self) -> None:
        """Follow the listener's messages while the entity exists."""
        await super().async_added_to_hass()
        self.async_on_remove(self.listener.async_add_listener(self._handle_update))

    @callback
    def _handle_update(self) -> None:
        self.async_write_ha_state()


class SatAudioEventKeyEntity(SatAudioEntity):
    """An entity of one configured sound event, named as the listener's config names it."""

    def __init__(
        self,
        listener: SatAudioListener,
        description: EntityDescription,
        unique_id: str,
        key: str,
    ) -> None:
        """Take the event's name from the listener's info."""
        super().__init__(listener, description, unique_id)
        self.key = key
        self._set_name(listener.events[key].info.name)

    def _set_name(self, name: str) -> None:
        """Name the entity after its event (an entity with a translated name overrides this)."""
        self._attr_name = name

    @callback
    def _handle_update(self) -> None:
        # track_events removes the entity when its event goes; until then, keep up.
        if state := self.listener.events.get(self.key):
            self._set_name(state.info.name)
            super()._handle_update()


def track_events[T: SatAudioEventKeyEntity](
    entry: SatAudioConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
    make: Callable[[SatAudioListener, str], T],
    wanted: Callable[[EventState], bool] = lambda _: True,
) -> None:
    """Keep one entity per (wanted) event of the listener's info, now and as the info changes.

    An event that leaves the info takes its entity away without deleting its registry entry:
    Home Assistant shows it unavailable, names and areas kept, until the user deletes it or
    the event comes back (a misconfigured listener that announces no events loses nothing).
    """
    listener = entry.runtime_data
    live: dict[str, T] = {}

    @callback
    def follow_info() -> None:
        keys = [key for key, state in listener.events.items() if wanted(state)]
        for key in live.keys() - set(keys):
            # An entity the user disabled was never added, and has nothing to remove.
            if (gone := live.pop(key)).hass is not None:
                entry.async_create_task(listener.hass, gone.async_remove())
        new = [make(listener, key) for key in keys if key not in live]
        live.update((entity.key, entity) for entity in new)
        async_add_entities(new)

    follow_info()
    entry.async_on_unload(listener.async_add_info_listener(follow_info))
