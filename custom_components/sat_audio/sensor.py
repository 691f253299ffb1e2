"""Sensors of a listener: the top sound and its score, the sound level, the last detection."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from homeassistant.components.sensor import (
    SensorDeviceClass,
    SensorEntity,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.const import EntityCategory
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


def _top(listener: SatAudioListener, field: str) -> StateType:
    if listener.scores is None or not listener.scores.top:
        return None
    value: str | float = getattr(listener.scores.top[0], field)
    return value


def _last_detection_attributes(listener: SatAudioListener) -> dict[str, Any] | None:
    if (last := listener.last_detection) is None:
        return None
    return {"event": last.event, "label": last.label}


SENSORS: tuple[SatAudioSensorEntityDescription, ...] = (
    SatAudioSensorEntityDescription(
        key="top_sound",
        translation_key="top_sound",
        value_fn=lambda listener: _top(listener, "label"),
    ),
    SatAudioSensorEntityDescription(
        key="top_sound_score",
        translation_key="top_sound_score",
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=2,
        value_fn=lambda listener: _top(listener, "score"),
    ),
    SatAudioSensorEntityDescription(
        key="level",
        translation_key="level",
        native_unit_of_measurement=DBFS,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=1,
        entity_category=EntityCategory.DIAGNOSTIC,
        # It changes every chunk: recorded only for those who turn it on.
        entity_registry_enabled_default=False,
        value_fn=lambda listener: listener.scores.level_dbfs if listener.scores else None,
    ),
    SatAudioSensorEntityDescription(
        key="last_detection",
        translation_key="last_detection",
        device_class=SensorDeviceClass.TIMESTAMP,
        value_fn=lambda listener: (
            listener.last_detection.start if listener.last_detection else None
        ),
        attributes_fn=_last_detection_attributes,
    ),
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: SatAudioConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the listener's sensors."""
    listener = entry.runtime_data
    async_add_entities(
        SatAudioSensor(listener, description, f"{listener.listener_id}-{description.key}")
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
