"""Sensors of a listener: the top sound and its score, the sound level, the last detection."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from homeassistant.components.sensor import (
    RestoreSensor,
    SensorDeviceClass,
    SensorEntity,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.const import PERCENTAGE, EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.typing import StateType

from .entity import SatAudioEntity
from .listener import SatAudioConfigEntry, SatAudioListener

PARALLEL_UPDATES = 0

DBFS = "dBFS"


@dataclass(frozen=True, kw_only=True)
class SatAudioSensorEntityDescription(SensorEntityDescription):
    """A listener sensor: where its value and attributes come from."""

    value_fn: Callable[[SatAudioListener], StateType | datetime]
    attributes_fn: Callable[[SatAudioListener], dict[str, Any] | None] = lambda _: None


def _top_label(listener: SatAudioListener) -> str | None:
    if listener.scores is None or not listener.scores.top:
        return None
    return listener.scores.top[0].label


def _top_score(listener: SatAudioListener) -> float | None:
    """Return the top label's score in percent, as people read a confidence."""
    if listener.scores is None or not listener.scores.top:
        return None
    return round(listener.scores.top[0].score * 100, 2)


def _last_detection_attributes(listener: SatAudioListener) -> dict[str, Any] | None:
    if (last := listener.last_detection) is None:
        return None
    return {"event": last.name, "label": last.label}


LAST_DETECTION = SatAudioSensorEntityDescription(
    key="last_detection",
    translation_key="last_detection",
    device_class=SensorDeviceClass.TIMESTAMP,
    value_fn=lambda listener: listener.last_detection.start if listener.last_detection else None,
    attributes_fn=_last_detection_attributes,
)
SENSORS: tuple[SatAudioSensorEntityDescription, ...] = (
    SatAudioSensorEntityDescription(
        key="top_sound",
        translation_key="top_sound",
        # Like the level, it changes with every chunk: the logbook would be a list of its
        # changes, and the recorder fills. For those who turn it (and the listener's scores) on.
        entity_registry_enabled_default=False,
        value_fn=_top_label,
    ),
    SatAudioSensorEntityDescription(
        key="top_sound_score",
        translation_key="top_sound_score",
        native_unit_of_measurement=PERCENTAGE,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=0,
        entity_registry_enabled_default=False,
        value_fn=_top_score,
    ),
    SatAudioSensorEntityDescription(
        key="level",
        translation_key="level",
        native_unit_of_measurement=DBFS,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=1,
        entity_category=EntityCategory.DIAGNOSTIC,
        entity_registry_enabled_default=False,
        value_fn=lambda listener: listener.scores.level_dbfs if listener.scores else None,
    ),
    LAST_DETECTION,
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: SatAudioConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the listener's sensors."""
    listener = entry.runtime_data
    async_add_entities(
        (SatAudioLastDetectionSensor if description is LAST_DETECTION else SatAudioSensor)(
            listener, description, f"{listener.listener_id}-{description.key}"
        )
        for description in SENSORS
    )


class SatAudioSensor(SatAudioEntity, SensorEntity):
    """A listener sensor described by a SatAudioSensorEntityDescription."""

    entity_description: SatAudioSensorEntityDescription

    @property
    def native_value(self) -> StateType | datetime:
        """Return the value from the listener's latest messages."""
        return self.entity_description.value_fn(self.listener)

    @property
    def extra_state_attributes(self) -> dict[str, Any] | None:
        """Return extra attributes, where the description has any."""
        return self.entity_description.attributes_fn(self.listener)


class SatAudioLastDetectionSensor(SatAudioSensor, RestoreSensor):
    """When the last event started; what it was before a restart until the next one.

    Transitions are not retained, so after Home Assistant restarts only this entity's own
    stored state knows the last detection.
    """

    _restored_value: datetime | None = None
    _restored_attributes: dict[str, Any] | None = None

    async def async_added_to_hass(self) -> None:
        """Read back the value and attributes stored before the restart."""
        await super().async_added_to_hass()
        if (data := await self.async_get_last_sensor_data()) is None:
            return
        if isinstance(data.native_value, datetime):
            self._restored_value = data.native_value
        if (state := await self.async_get_last_state()) is not None:
            self._restored_attributes = {
                key: state.attributes[key] for key in ("event", "label") if key in state.attributes
            } or None

    @property
    def native_value(self) -> datetime | None:
        """Return the latest start heard, else the one stored before the restart."""
        if self.listener.last_detection is not None:
            return self.listener.last_detection.start
        return self._restored_value

    @property
    def extra_state_attributes(self) -> dict[str, Any] | None:
        """Return the event's name and label, from the same source as the value."""
        if self.listener.last_detection is not None:
            return _last_detection_attributes(self.listener)
        return self._restored_attributes
