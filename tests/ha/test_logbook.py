"""The logbook names what was heard in words: "Kitchen heard glass breaking (Shatter, 62 %)"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.recorder.common import (
    async_wait_recording_done,
)
from pytest_homeassistant_custom_component.typing import WebSocketGenerator

from custom_components.sat_audio.logbook import describe, sentence_case
from homeassistant.components.recorder import Recorder
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component
import homeassistant.util.dt as dt_util
from payloads import (
    DOG,
    GLASS as GLASS_EVENT,
    LOUD,
    Send,
    clip_name,
    dumps,
    info,
    loud_transition,
    transition,
)

GLASS = "binary_sensor.kitchen_glass_breaking"


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(
    recorder_mock: Recorder, enable_custom_integrations: None
) -> None:
    """The recorder (which the logbook reads) must start before Home Assistant does."""


async def test_logbook_lines(
    hass: HomeAssistant,
    hass_ws_client: WebSocketGenerator,
    setup_listener: MockConfigEntry,
    send: Send,
) -> None:
    """A start and its end read as sentences with the listener's and the event's names."""
    assert await async_setup_component(hass, "logbook", {})
    since = dt_util.utcnow()
    await send("event/glass_breaking", dumps(transition("start")))
    await send("event/glass_breaking", dumps(transition("end")))
    await async_wait_recording_done(hass)

    client = await hass_ws_client()
    await client.send_json({"id": 1, "type": "logbook/get_events", "start_time": since.isoformat()})
    response = await client.receive_json()
    assert response["success"], response
    ours = [entry for entry in response["result"] if entry.get("domain") == "sat_audio"]
    assert [(entry["name"], entry["message"]) for entry in ours] == [
        ("Kitchen", "heard glass breaking (Shatter, 62 %)"),
        ("Kitchen", "stopped hearing glass breaking after 4.5 s (Shatter, peak 71 %)"),
    ]
    # Filed under the event's sensor: a logbook card of the sensors shows these lines.
    assert {entry["entity_id"] for entry in ours} == {GLASS}
    await client.send_json(
        {
            "id": 2,
            "type": "logbook/get_events",
            "start_time": since.isoformat(),
            "entity_ids": [GLASS],
        }
    )
    response = await client.receive_json()
    messages = [entry.get("message") for entry in response["result"]]
    assert "heard glass breaking (Shatter, 62 %)" in messages


async def test_logbook_lines_of_loud_events_and_clips(
    hass: HomeAssistant,
    hass_ws_client: WebSocketGenerator,
    setup_listener: MockConfigEntry,
    send: Send,
    tmp_path: Path,
) -> None:
    """A loud event reads in dBFS with why it ended; a saved clip is a line of its own."""
    hass.config.media_dirs = {"local": str(tmp_path / "media")}
    assert await async_setup_component(hass, "logbook", {})
    await send("info", dumps(info(events=[GLASS_EVENT, DOG, LOUD])))
    since = dt_util.utcnow()
    await send("event/loud_noise", dumps(loud_transition("start")))
    await send("event/loud_noise", dumps(loud_transition("end", reason="paused")))
    await send(f"clip/{clip_name('loud_noise', '9a8b7c6d')}", b"fLaC")
    await hass.async_block_till_done(wait_background_tasks=True)
    await async_wait_recording_done(hass)

    client = await hass_ws_client()
    await client.send_json({"id": 1, "type": "logbook/get_events", "start_time": since.isoformat()})
    response = await client.receive_json()
    ours = [entry for entry in response["result"] if entry.get("domain") == "sat_audio"]
    assert [entry["message"] for entry in ours] == [
        "heard loud noise (-18.5 dBFS)",
        "stopped hearing loud noise after 4.5 s (peak -12.1 dBFS): listening was paused",
        f"saved a clip of loud noise ({clip_name('loud_noise', '9a8b7c6d')})",
    ]
    assert {entry["entity_id"] for entry in ours} == {"binary_sensor.kitchen_loud_noise"}


def test_names_inside_a_sentence() -> None:
    """Only the first letter is lowered, and an acronym keeps its capitals."""
    assert sentence_case("Glass breaking") == "glass breaking"
    assert sentence_case("CO alarm") == "CO alarm"
    assert sentence_case("Dog barking (porch)") == "dog barking (porch)"


def test_description_without_a_name() -> None:
    """A bus event from before names were carried still reads, with its subtype."""
    data: dict[str, Any] = {"type": "started", "subtype": "doorbell", "label": "Ding", "score": 1}
    assert describe("Hall", data)["message"] == "heard doorbell (Ding, 100 %)"
