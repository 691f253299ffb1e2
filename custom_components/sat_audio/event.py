"""One event entity per configured event: `started` and `ended` per episode, and `clip` when the
episode's clip is saved in Home Assistant's media folder."""

from __future__ import annotations

from homeassistant.components.event import EventEntity, EventEntityDescription
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .const import TRIGGER_CLIP, TRIGGER_ENDED, TRIGGER_STARTED
from .entity import SatAudioEventKeyEntity, track_events
from .listener import (
    SatAudioConfigEntry,
    SatAudioListener,
    SavedClip,
    event_entity_unique_id,
    transition_data,
    trigger_name,
)
from .protocol import Transition

PARALLEL_UPDATES = 0

# Fixed types, translated ("Started", "Ended"): the event's name is the entity's own. Events that
# keep clips have a third, "Clip saved".
SOUND_EVENT = EventEntityDescription(
    key="sound_event",
    translation_key="sound_event",
    event_types=[TRIGGER_STARTED, TRIGGER_ENDED],
)
# The episode id and the event key mean nothing to a user; the bus event still has both.
HIDDEN_DATA = ("id", "event")


async def async_setup_entry(
    hass: HomeAssistant,
    entry: SatAudioConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add an event entity for each event in the listener's info, now and as it changes."""
    track_events(entry, async_add_entities, SatAudioEventEntity)


class SatAudioEventEntity(SatAudioEventKeyEntity, EventEntity):
    """Fires `started` and `ended` with the episode's label, scores and times, and `clip`."""

    def __init__(self, listener: SatAudioListener, key: str) -> None:
        """Name the entity after the event as the listener's config names it."""
        super().__init__(
            listener, SOUND_EVENT, event_entity_unique_id(listener.listener_id, key), key
        )
        self._set_event_types()

    def _set_event_types(self) -> None:
        # A clip may come while the info says the event keeps none (it just changed): it fires.
        if state := self.listener.events.get(self.key):
            clip = [TRIGGER_CLIP] if state.info.clip or state.last_clip else []
            self._attr_event_types = [TRIGGER_STARTED, TRIGGER_ENDED, *clip]

    @callback
    def _handle_update(self) -> None:
        self._set_event_types()
        super()._handle_update()

    async def async_added_to_hass(self) -> None:
        """Also fire for each new start and end of this event."""
        await super().async_added_to_hass()
        self.async_on_remove(self.listener.async_add_transition_listener(self._fire))
        self.async_on_remove(self.listener.async_add_clip_listener(self._fire_clip))

    @callback
    def _fire(self, transition: Transition) -> None:
        if transition.event != self.key:
            return
        data = transition_data(transition)
        for hidden in HIDDEN_DATA:
            del data[hidden]
        # The listener's update callbacks write the state right after.
        self._trigger_event(trigger_name(transition.type), data)

    @callback
    def _fire_clip(self, clip: SavedClip) -> None:
        if clip.event == self.key:
            self._set_event_types()
            self._trigger_event(TRIGGER_CLIP, clip.data())
