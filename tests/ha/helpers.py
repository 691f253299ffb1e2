"""Look-ups the tests share that work on every supported Home Assistant version."""

from __future__ import annotations

import logging

import pytest

from custom_components.sat_audio.const import DOMAIN
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from payloads import LISTENER


def listener_device(hass: HomeAssistant, listener_id: str = LISTENER) -> dr.DeviceEntry:
    """Return a listener's device, through its config entry.

    Not `async_get_device(identifiers=...)` nor the registry's `devices` as a mapping: Home
    Assistant 2026 deprecated both (they raise in tests), and their replacements do not exist
    in 2025.4.
    """
    (entry,) = [
        entry
        for entry in hass.config_entries.async_entries(DOMAIN)
        if entry.unique_id == listener_id
    ]
    (device,) = dr.async_entries_for_config_entry(dr.async_get(hass), entry.entry_id)
    assert (DOMAIN, listener_id) in device.identifiers
    return device


def our_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Return the integration's warnings (asyncio warns about slow steps on a busy machine)."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.name.startswith("custom_components.sat_audio")
        and record.levelno == logging.WARNING
    ]
