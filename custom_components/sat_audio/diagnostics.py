"""Diagnostics: the entry and what the listener last said, with user-chosen names redacted."""

from __future__ import annotations

from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.core import HomeAssistant

from .const import CONF_LISTENER_ID
from .listener import SatAudioConfigEntry

# Names people give listeners, sources and rooms can say who lives where.
TO_REDACT = {
    CONF_LISTENER_ID,
    "base_topic",
    "id",
    "name",
    "title",
    "unique_id",
    # A clip's paths name the listener.
    "media_content_id",
    "url",
}


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: SatAudioConfigEntry
) -> dict[str, Any]:
    """Return diagnostics for a config entry."""
    return async_redact_data(
        {
            "entry": {"title": entry.title, "unique_id": entry.unique_id, "data": dict(entry.data)},
            "listener": entry.runtime_data.diagnostics(),
        },
        TO_REDACT,
    )
