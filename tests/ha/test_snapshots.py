"""Snapshots of every platform's entities: registry entries and states after real messages."""

from __future__ import annotations

from unittest.mock import patch

from freezegun.api import FrozenDateTimeFactory
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, snapshot_platform
from syrupy.assertion import SnapshotAssertion

from homeassistant.const import Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
from payloads import (
    DOG,
    GLASS,
    LOUD,
    Send,
    active,
    dumps,
    info,
    loud_transition,
    scores,
    transition,
)


@pytest.mark.parametrize(
    "platform", [Platform.BINARY_SENSOR, Platform.EVENT, Platform.SENSOR, Platform.SWITCH]
)
async def test_platform_snapshot(
    hass: HomeAssistant,
    entity_registry_enabled_by_default: None,
    config_entry: MockConfigEntry,
    mqtt_mock: None,
    send: Send,
    entity_registry: er.EntityRegistry,
    snapshot: SnapshotAssertion,
    freezer: FrozenDateTimeFactory,
    platform: Platform,
) -> None:
    """Each platform's entities after info, scores, a glass-breaking start and a loud end."""
    freezer.move_to("2026-11-25T05:01:03+00:00")
    with patch("custom_components.sat_audio.PLATFORMS", (platform,)):
        config_entry.add_to_hass(hass)
        assert await hass.config_entries.async_setup(config_entry.entry_id)
        await send("status", "online")
        await send("info", dumps(info(events=[GLASS, DOG, LOUD])))
        await send("listening", "ON")
        await send("event/glass_breaking/state", "OFF")
        await send("event/dog_bark/state", "OFF")
        await send("event/dog_bark/enabled", "OFF")
        await send("scores", dumps(scores()))
        await send("event/loud_noise", dumps(loud_transition("start")))
        await send("event/loud_noise", dumps(loud_transition("end")))
        await send("event/glass_breaking", dumps(transition("start")))
        await send("event/glass_breaking/state", "ON")
        await send("active", dumps(active("glass_breaking")))
    await snapshot_platform(hass, entity_registry, snapshot, config_entry.entry_id)
