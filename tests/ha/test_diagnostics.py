"""Diagnostics: what a bug report gets, with the names people chose redacted."""

from __future__ import annotations

from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator
from syrupy.assertion import SnapshotAssertion

from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component
from payloads import Send, dumps, scores, transition


async def test_diagnostics(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    setup_listener: MockConfigEntry,
    send: Send,
    snapshot: SnapshotAssertion,
) -> None:
    """The entry, the listener's info, states and latest episode; names and ids redacted."""
    await send("scores", dumps(scores()))
    await send("event/glass_breaking", dumps(transition("start")))
    assert await async_setup_component(hass, "diagnostics", {})
    result = await get_diagnostics_for_config_entry(hass, hass_client, setup_listener)
    assert result == snapshot
    text = str(result)
    assert "Kitchen" not in text
    assert "kitchen" not in text
    assert result["listener"]["events"]["glass_breaking"]["on"] is True
