"""The shipped blueprints, as a user meets them: imported by URL, saved, used, and fired.

Each blueprint is imported through Home Assistant's own `blueprint/import` (its GitHub URL,
answered from the repository's file), saved with `blueprint/save`, instantiated as an
automation, and its trigger fired by the listener's real messages.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest.mock import patch

from freezegun.api import FrozenDateTimeFactory
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_fire_time_changed,
    async_mock_service,
)
from pytest_homeassistant_custom_component.test_util.aiohttp import AiohttpClientMocker
from pytest_homeassistant_custom_component.typing import MqttMockHAClient, WebSocketGenerator

from homeassistant.components import automation
from homeassistant.core import HomeAssistant, ServiceCall
from homeassistant.helpers import area_registry as ar, entity_registry as er
from homeassistant.setup import async_setup_component
from payloads import GLASS, LOUD, Send, clip_name, dumps, info, loud_transition, transition

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "blueprints" / "automation" / "sat_audio"
REPO = "https://github.com/sat-audio/sat-audio/blob/main/blueprints/automation/sat_audio"
RAW = "https://raw.githubusercontent.com/sat-audio/sat-audio/main/blueprints/automation/sat_audio"

SMOKE = GLASS | {"key": "smoke_alarm", "name": "Smoke alarm", "labels": ["Smoke detector"]}
WATER = GLASS | {"key": "water", "name": "Water running", "labels": ["Water tap, faucet"]}


@pytest.fixture
async def listener(
    hass: HomeAssistant,
    tmp_path: Path,
    mqtt_mock: MqttMockHAClient,
    config_entry: MockConfigEntry,
    send: Send,
) -> MockConfigEntry:
    """The kitchen listener hearing glass, smoke alarms and water; blueprints saved in tmp_path."""
    hass.config.config_dir = str(tmp_path)
    config_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    await send("status", "online")
    await send("info", dumps(info(events=[GLASS, SMOKE, WATER])))
    for key in ("glass_breaking", "smoke_alarm", "water"):
        await send(f"event/{key}/state", "OFF")
    return config_entry


async def import_blueprint(
    hass: HomeAssistant,
    hass_ws_client: WebSocketGenerator,
    aioclient_mock: AiohttpClientMocker,
    name: str,
) -> str:
    """Import a blueprint by its GitHub URL and save it; return its path for use_blueprint."""
    aioclient_mock.get(f"{RAW}/{name}.yaml", text=(FOLDER / f"{name}.yaml").read_text())
    assert await async_setup_component(hass, "blueprint", {})
    assert await async_setup_component(hass, automation.DOMAIN, {})
    client = await hass_ws_client()
    url = f"{REPO}/{name}.yaml"
    await client.send_json({"id": 1, "type": "blueprint/import", "url": url})
    imported = await client.receive_json()
    assert imported["success"], imported
    assert imported["result"]["validation_errors"] is None
    assert imported["result"]["blueprint"]["metadata"]["source_url"] == url
    path = f"{imported['result']['suggested_filename']}.yaml"
    await client.send_json(
        {
            "id": 2,
            "type": "blueprint/save",
            "domain": automation.DOMAIN,
            "path": path,
            "yaml": imported["result"]["raw_data"],
            "source_url": url,
        }
    )
    saved = await client.receive_json()
    assert saved["success"], saved
    return path


async def use(hass: HomeAssistant, path: str, inputs: dict[str, Any]) -> None:
    """Create an automation from a saved blueprint and reload, as the editor does."""
    config = {
        "id": "1",
        "alias": "From the blueprint",
        "use_blueprint": {"path": path, "input": inputs},
    }
    with patch(
        "homeassistant.config.load_yaml_config_file",
        return_value={automation.DOMAIN: [config]},
    ):
        await hass.services.async_call(automation.DOMAIN, "reload", blocking=True)
    state = hass.states.get("automation.from_the_blueprint")
    assert state is not None and state.state == "on", hass.states.async_entity_ids("automation")


def messages(calls: list[ServiceCall]) -> list[tuple[str, str]]:
    """Return each notification's title and message."""
    return [(call.data["title"], call.data["message"]) for call in calls]


async def test_blueprint_files_are_the_shipped_ones() -> None:
    """Every blueprint in the folder is one of those tested here."""
    assert {path.stem for path in FOLDER.glob("*.yaml")} == {
        "notify_on_sound",
        "alarm_while_away",
        "water_running",
        "notify_with_clip",
    }


async def test_notify_on_sound(
    hass: HomeAssistant,
    hass_ws_client: WebSocketGenerator,
    aioclient_mock: AiohttpClientMocker,
    listener: MockConfigEntry,
    send: Send,
) -> None:
    """A start of a chosen sound notifies with the room, the sound, label and score."""
    path = await import_blueprint(hass, hass_ws_client, aioclient_mock, "notify_on_sound")
    calls = async_mock_service(hass, "notify", "mobile_app_phone")
    await use(
        hass,
        path,
        {
            "sounds": ["binary_sensor.kitchen_glass_breaking"],
            "notify_action": "notify.mobile_app_phone",
        },
    )
    await send("event/smoke_alarm", dumps(transition("start", "smoke_alarm", id="s1")))
    assert calls == []  # not a chosen sound
    await send("event/glass_breaking", dumps(transition("start")))
    assert messages(calls) == [("Kitchen", "Kitchen heard glass breaking (Shatter, 62 %)")]

    # The sensor's area, when it has one, is the room.
    area = ar.async_get(hass).async_create("Living room")
    er.async_get(hass).async_update_entity("binary_sensor.kitchen_glass_breaking", area_id=area.id)
    await send("event/glass_breaking", dumps(transition("end")))
    await send("event/glass_breaking", dumps(transition("start", id="g2", score=0.915)))
    assert messages(calls)[1:] == [
        ("Living room", "Living room heard glass breaking (Shatter, 92 %)")
    ]


async def test_notify_on_loud_sound(
    hass: HomeAssistant,
    hass_ws_client: WebSocketGenerator,
    aioclient_mock: AiohttpClientMocker,
    listener: MockConfigEntry,
    send: Send,
) -> None:
    """A loud-sound event notifies with its level, having no label or score."""
    await send("info", dumps(info(events=[GLASS, LOUD])))
    await send("event/loud_noise/state", "OFF")
    path = await import_blueprint(hass, hass_ws_client, aioclient_mock, "notify_on_sound")
    calls = async_mock_service(hass, "notify", "notify")
    await use(hass, path, {"sounds": ["binary_sensor.kitchen_loud_noise"]})
    await send("event/loud_noise", dumps(loud_transition("start", score=-18.46)))
    assert messages(calls) == [("Kitchen", "Kitchen heard loud noise (-18.5 dBFS)")]


async def test_alarm_while_away(
    hass: HomeAssistant,
    hass_ws_client: WebSocketGenerator,
    aioclient_mock: AiohttpClientMocker,
    listener: MockConfigEntry,
    send: Send,
) -> None:
    """A smoke alarm notifies while the home zone is empty, not while someone is home."""
    path = await import_blueprint(hass, hass_ws_client, aioclient_mock, "alarm_while_away")
    assert await async_setup_component(hass, "zone", {})
    calls = async_mock_service(hass, "notify", "notify")
    await use(hass, path, {"alarms": ["binary_sensor.kitchen_smoke_alarm"]})
    # zone.home counts the people in it; a person arriving is what sets it to 1.
    hass.states.async_set("zone.home", "1", hass.states.get("zone.home").attributes)
    await send("event/smoke_alarm", dumps(transition("start", "smoke_alarm", id="s1")))
    assert calls == []
    await send("event/smoke_alarm", dumps(transition("end", "smoke_alarm", id="s1")))

    hass.states.async_set("zone.home", "0", hass.states.get("zone.home").attributes)
    await send("event/smoke_alarm", dumps(transition("start", "smoke_alarm", id="s2")))
    assert messages(calls) == [
        (
            "Smoke alarm in Kitchen",
            "Smoke alarm heard in Kitchen while nobody is home (Shatter, 62 %).",
        )
    ]


async def test_water_running(
    hass: HomeAssistant,
    hass_ws_client: WebSocketGenerator,
    aioclient_mock: AiohttpClientMocker,
    listener: MockConfigEntry,
    send: Send,
    freezer: FrozenDateTimeFactory,
) -> None:
    """Water heard for the set minutes notifies once; a shorter run does not."""
    path = await import_blueprint(hass, hass_ws_client, aioclient_mock, "water_running")
    calls = async_mock_service(hass, "notify", "notify")
    await use(hass, path, {"water": "binary_sensor.kitchen_water_running", "minutes": 5})

    async def minutes(n: float) -> None:
        freezer.tick(timedelta(minutes=n))
        async_fire_time_changed(hass)
        await hass.async_block_till_done()

    await send("event/water", dumps(transition("start", "water", id="w1")))
    await minutes(4)
    await send("event/water", dumps(transition("end", "water", id="w1")))
    await minutes(2)
    assert calls == []

    await send("event/water", dumps(transition("start", "water", id="w2")))
    await minutes(5.1)
    assert messages(calls) == [
        ("Water running in Kitchen", "Water has been running in Kitchen for 5 minutes.")
    ]


async def test_notify_with_clip(
    hass: HomeAssistant,
    hass_ws_client: WebSocketGenerator,
    aioclient_mock: AiohttpClientMocker,
    listener: MockConfigEntry,
    send: Send,
    tmp_path: Path,
) -> None:
    """A saved clip of a chosen sound notifies with the clip's authenticated URL attached."""
    hass.config.media_dirs = {"local": str(tmp_path / "media")}
    path = await import_blueprint(hass, hass_ws_client, aioclient_mock, "notify_with_clip")
    calls = async_mock_service(hass, "notify", "mobile_app_phone")
    await use(
        hass,
        path,
        {
            "sounds": ["event.kitchen_glass_breaking"],
            "notify_action": "notify.mobile_app_phone",
        },
    )
    # Starts, ends and other events' clips notify nothing.
    await send("event/glass_breaking", dumps(transition("start", clip=clip_name())))
    await send("event/glass_breaking", dumps(transition("end", clip=clip_name())))
    await send(f"clip/{clip_name('smoke_alarm')}", b"fLaC-smoke")
    await hass.async_block_till_done(wait_background_tasks=True)
    assert calls == []

    await send(f"clip/{clip_name()}", b"fLaC-glass")
    await hass.async_block_till_done(wait_background_tasks=True)
    url = f"/media/local/sat_audio/kitchen/{clip_name()}"
    assert messages(calls) == [("Kitchen", "Kitchen heard glass breaking: the clip is attached.")]
    assert calls[0].data["data"] == {
        "attachment": {"url": url, "content-type": "flac"},
        "url": url,
        "clickAction": url,
        "group": "sat_audio",
    }
    assert (tmp_path / "media" / "sat_audio" / "kitchen" / clip_name()).read_bytes() == (
        b"fLaC-glass"
    )
