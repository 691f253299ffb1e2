"""The privacy switch: turning it off asks the listener to pause its analysis."""

from __future__ import annotations

from typing import Any

from homeassistant.components import mqtt
from homeassistant.components.switch import SwitchEntity, SwitchEntityDescription
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .entity import SatAudioEntity
from .listener import SatAudioConfigEntry

PARALLEL_UPDATES = 1

LISTENING = SwitchEntityDescription(key="listening", translation_key="listening")


async def async_setup_entry(
    hass: HomeAssistant,
    entry: SatAudioConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the listener's privacy switch."""
    listener = entry.runtime_data
    async_add_entities(
        [SatAudioListeningSwitch(listener, LISTENING, f"{listener.listener_id}-{LISTENING.key}")]
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
