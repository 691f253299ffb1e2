"""One binary sensor per configured sound event: on while the listener hears it."""

from __future__ import annotations

from typing import Any

# Home Assistant 2026 defines the device classes in .const and no longer re-exports them.
from homeassistant.components.binary_sensor import (  # type: ignore[attr-defined, unused-ignore]
    BinarySensorDeviceClass,
    BinarySensorEntity,
    BinarySensorEntityDescription,
)
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .entity import SatAudioEventKeyEntity, track_events
from .listener import SatAudioConfigEntry, SatAudioListener, event_unique_id

PARALLEL_UPDATES = 0

SOUND_EVENT = BinarySensorEntityDescription(
    key="sound_event",
    translation_key="sound_event",
    device_class=BinarySensorDeviceClass.SOUND,
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: SatAudioConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add a sensor for each event in the listener's info, now and whenever the info changes."""
    track_events(entry, async_add_entities, SatAudioEventBinarySensor)


class SatAudioEventBinarySensor(SatAudioEventKeyEntity, BinarySensorEntity):
    """On from an event's start to its end; attributes describe the latest episode."""

    def __init__(self, listener: SatAudioListener, key: str) -> None:
        """Name the sensor after the event as the listener's config names it."""
        super().__init__(listener, SOUND_EVENT, event_unique_id(listener.listener_id, key), key)

    @property
    def is_on(self) -> bool | None:
        """Return whether the event is going on."""
        state = self.listener.events.get(self.key)
        return state.on if state else None

    @property
    def extra_state_attributes(self) -> dict[str, Any] | None:
        """Return the top label, score, peak and start of the latest episode."""
        state = self.listener.events.get(self.key)
        if state is None or state.last is None:
            return None
        return {
            "label": state.last.label,
            "score": state.last.score,
            "peak": state.last.peak,
            "started": state.last.start,
        }
