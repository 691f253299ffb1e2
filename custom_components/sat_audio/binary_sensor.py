"""One binary sensor per configured event, on while the listener hears it, and one for any."""

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

from .entity import SatAudioEntity, SatAudioEventKeyEntity, track_events
from .listener import SatAudioConfigEntry, SatAudioListener, event_unique_id

PARALLEL_UPDATES = 0

SOUND_EVENT = BinarySensorEntityDescription(
    key="sound_event",
    translation_key="sound_event",
    device_class=BinarySensorDeviceClass.SOUND,
)
ANY_SOUND = BinarySensorEntityDescription(
    key="any_sound",
    translation_key="any_sound",
    device_class=BinarySensorDeviceClass.SOUND,
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: SatAudioConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the any-sound sensor, and one for each event in the listener's info as it changes."""
    listener = entry.runtime_data
    async_add_entities(
        [SatAudioAnySoundSensor(listener, ANY_SOUND, f"{listener.listener_id}-{ANY_SOUND.key}")]
    )
    track_events(entry, async_add_entities, SatAudioEventBinarySensor)


class SatAudioAnySoundSensor(SatAudioEntity, BinarySensorEntity):
    """On while any of the listener's events is on; which ones, by name, as an attribute."""

    @property
    def is_on(self) -> bool | None:
        """Return whether any event is going on."""
        keys = self.listener.active_keys
        return None if keys is None else bool(keys)

    @property
    def extra_state_attributes(self) -> dict[str, Any]:
        """Return the names of the events on now (a key the info does not name, as it is)."""
        events = self.listener.events
        return {
            "active_events": [
                events[key].info.name if key in events else key
                for key in self.listener.active_keys or ()
            ]
        }


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
        """Return the latest episode: top label, score and peak (a loud event: levels in dBFS
        and its thresholds), start, and its clip."""
        state = self.listener.events.get(self.key)
        if state is None:
            return None
        attributes: dict[str, Any] = {}
        last = state.last
        if state.info.kind == "loud":
            attributes = {"on_dbfs": state.info.on_dbfs, "off_dbfs": state.info.off_dbfs}
            if last is not None:
                attributes |= {"level_dbfs": last.score, "peak_dbfs": last.peak}
        elif last is not None:
            attributes = {"label": last.label, "score": last.score, "peak": last.peak}
        if last is not None:
            attributes["started"] = last.start
        if state.last_clip is not None:
            attributes["clip"] = state.last_clip.media_content_id
        return attributes or None
