"""Logbook lines for heard sounds: "Kitchen heard glass breaking (Shatter, 62 %)"."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from homeassistant.components.logbook.const import (
    LOGBOOK_ENTRY_ENTITY_ID,
    LOGBOOK_ENTRY_MESSAGE,
    LOGBOOK_ENTRY_NAME,
)
from homeassistant.const import ATTR_ENTITY_ID, CONF_DEVICE_ID, CONF_TYPE
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.helpers import device_registry as dr

from .const import DOMAIN, EVENT_SOUND, TRIGGER_CLIP, TRIGGER_STARTED

# How an episode ended, when it was not simply quiet again (protocol v2's end reasons).
END_REASONS = {
    "disabled": "its detection was switched off",
    "paused": "listening was paused",
    "stopped": "the listener stopped",
}


def sentence_case(name: str) -> str:
    """Lower a name's first letter to sit inside a sentence, unless it starts an acronym (CO)."""
    first = name.split(" ", 1)[0]
    if len(first) > 1 and first.isupper():
        return name
    return name[:1].lower() + name[1:]


def percent(score: float) -> str:
    """Return a 0..1 score as Home Assistant shows a percentage: "62 %"."""
    return f"{score * 100:.0f} %"


def dbfs(level: float) -> str:
    """Return a level as the level sensor shows it: "-18.5 dBFS"."""
    return f"{level:.1f} dBFS"


def describe(device_name: str, data: Mapping[str, Any]) -> dict[str, str]:
    """Return the logbook entry for one start, end or saved clip of an event.

    A loud event's transition has no label: its score and peak are levels in dBFS.
    """
    sound = sentence_case(str(data.get("name") or data.get("subtype")))
    loud = data.get("label") is None
    if data.get(CONF_TYPE) == TRIGGER_CLIP:
        message = f"saved a clip of {sound} ({data.get('clip')})"
    elif data.get(CONF_TYPE) == TRIGGER_STARTED:
        heard = dbfs(data["score"]) if loud else f"{data['label']}, {percent(data['score'])}"
        message = f"heard {sound} ({heard})"
    else:
        peak = (
            f"peak {dbfs(data['peak'])}"
            if loud
            else f"{data['label']}, peak {percent(data['peak'])}"
        )
        message = f"stopped hearing {sound} after {data['duration_s']:.1f} s ({peak})"
        if reason := END_REASONS.get(str(data.get("reason"))):
            message += f": {reason}"
    entry = {LOGBOOK_ENTRY_NAME: device_name, LOGBOOK_ENTRY_MESSAGE: message}
    if sensor := data.get(ATTR_ENTITY_ID):
        entry[LOGBOOK_ENTRY_ENTITY_ID] = sensor
    return entry


@callback
def async_describe_events(
    hass: HomeAssistant,
    async_describe_event: Callable[[str, str, Callable[[Event], dict[str, str]]], None],
) -> None:
    """Describe the bus event every start and end fires."""
    devices = dr.async_get(hass)

    @callback
    def describe_event(event: Event) -> dict[str, str]:
        device = devices.async_get(event.data.get(CONF_DEVICE_ID, ""))
        name = (device.name_by_user or device.name) if device else None
        return describe(name or "SAT Audio", event.data)

    async_describe_event(DOMAIN, EVENT_SOUND, describe_event)
