"""Switches: the privacy switch pauses the listener; one per event switches its detection."""

from __future__ import annotations

from typing import Any

from homeassistant.components import mqtt
from homeassistant.components.switch import SwitchEntity, SwitchEntityDescription
from homeassistant.const import EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .entity import SatAudioEntity, SatAudioEventKeyEntity, track_events
from .listener import SatAudioConfigEntry, SatAudioListener, enabled_unique_id

PARALLEL_UPDATES = 1

LISTENING = SwitchEntityDescription(key="listening", translation_key="listening")
# "Glass breaking detection": the event's name goes into the translated name.
DETECTION = SwitchEntityDescription(
    key="detection", translation_key="detection", entity_category=EntityCategory.CONFIG
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: SatAudioConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the privacy switch, and a detection switch per event of a v2 listener."""
    listener = entry.runtime_data
    async_add_entities(
        [SatAudioListeningSwitch(listener, LISTENING, f"{listener.listener_id}-{LISTENING.key}")]
    )
    # A v1 listener announces no `enabled`: it cannot switch its events, so it gets no switch.
    track_events(
        entry,
        async_add_entities,
        SatAudioDetectionSwitch,
        wanted=lambda state: state.info.enabled is not None,
    )


class SatAudioListeningSwitch(SatAudioEntity, SwitchEntity):
    """On while the listener analyses audio; its state is what the listener reports back."""

    @property
    def is_on(self) -> bool | None:
        """Return the listening state the listener last published."""
        return self.listener.listening

    async def async_turn_on(self, **kwargs: Any) -> None:
        """Ask the listener to resume analysis."""
        await self._send("ON")

    async def async_turn_off(self, **kwargs: Any) -> None:
        """Ask the listener to pause analysis."""
        await self._send("OFF")

    async def _send(self, command: str) -> None:
        await mqtt.async_publish(
            self.hass, self.listener.command_topic, command, qos=1, retain=False
        )


class SatAudioDetectionSwitch(SatAudioEventKeyEntity, SwitchEntity):
    """Whether the listener detects one event; its state is what the listener reports back.

    The command is retained, so the choice holds across restarts of the listener; switching an
    event off ends its open episode there.
    """

    def __init__(self, listener: SatAudioListener, key: str) -> None:
        """Name the switch after the event as the listener's config names it."""
        super().__init__(listener, DETECTION, enabled_unique_id(listener.listener_id, key), key)

    def _set_name(self, name: str) -> None:
        self._attr_translation_placeholders = {"event": name}

    @property
    def is_on(self) -> bool | None:
        """Return the listener's report, else what its info announced."""
        state = self.listener.events.get(self.key)
        return state.enabled if state else None

    async def async_turn_on(self, **kwargs: Any) -> None:
        """Ask the listener to detect the event."""
        await self._send("ON")

    async def async_turn_off(self, **kwargs: Any) -> None:
        """Ask the listener to stop detecting the event (an open episode ends)."""
        await self._send("OFF")

    async def _send(self, command: str) -> None:
        await mqtt.async_publish(
            self.hass, self.listener.enabled_command_topic(self.key), command, qos=1, retain=True
        )
