"""The listener's event entity: fires `<event>_started` and `<event>_ended` for every episode."""

from __future__ import annotations

from homeassistant.components.event import EventEntity, EventEntityDescription
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .const import TRIGGER_ENDED, TRIGGER_STARTED
from .entity import SatAudioEntity
from .listener import (
    SatAudioConfigEntry,
    SatAudioListener,
    transition_data,
    trigger_name,
)
from .protocol import Transition

PARALLEL_UPDATES = 0

SOUND = EventEntityDescription(key="sound", translation_key="sound")


async def async_setup_entry(
    hass: HomeAssistant,
    entry: SatAudioConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the listener's one event entity."""
    listener = entry.runtime_data
    async_add_entities([SatAudioEventEntity(listener)])


def event_type(key: str, trigger: str) -> str:
    """Return the event type for an event key and a trigger type (started/ended)."""
    return f"{key}_{trigger}"


class SatAudioEventEntity(SatAudioEntity, EventEntity):
    """One event entity per listener; its event types follow the configured events."""

    def __init__(self, listener: SatAudioListener) -> None:
        """Start with the events the listener has announced so far."""
        super().__init__(listener, SOUND, f"{listener.listener_id}-{SOUND.key}")
        self._attr_event_types = self._current_types()

    def _current_types(self) -> list[str]:
        return [
            event_type(key, trigger)
            for key in self.listener.events
            for trigger in (TRIGGER_STARTED, TRIGGER_ENDED)
        ]

    async def async_added_to_hass(self) -> None:
        """Also fire for each new start and end."""
        await super().async_added_to_hass()
        self.async_on_remove(self.listener.async_add_transition_listener(self._fire))

    @callback
    def _handle_update(self) -> None:
        if (types := self._current_types()) != self.event_types:
            self._attr_event_types = types
        super()._handle_update()

    @callback
    def _fire(self, transition: Transition) -> None:
        self._attr_event_types = self._current_types()
        self._trigger_event(
            event_type(transition.event, trigger_name(transition.type)),
            transition_data(transition),
        )
