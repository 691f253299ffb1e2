"""Repair issues: what the user should act on, each gone when its cause is.

`freezer` comes last in each test: frozen while the MQTT integration loads, its imports fail.
"""

from __future__ import annotations

from datetime import timedelta
from http import HTTPStatus

from freezegun.api import FrozenDateTimeFactory
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_time_changed
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator, MqttMockHAClient

from custom_components.sat_audio.const import DOMAIN, OFFLINE_ISSUE_AFTER
from homeassistant.core import HomeAssistant
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.translation import async_get_translations
from homeassistant.setup import async_setup_component
from payloads import Send, dumps, info, transition

SECOND = timedelta(seconds=1)


def issue(hass: HomeAssistant, entry: MockConfigEntry, key: str) -> ir.IssueEntry | None:
    """Return one of the entry's issues, or None."""
    return ir.async_get(hass).async_get_issue(DOMAIN, f"{key}_{entry.entry_id}")


async def wait(hass: HomeAssistant, freezer: FrozenDateTimeFactory, delta: timedelta) -> None:
    """Move the clock on and let the timers that fall due run."""
    freezer.tick(delta)
    async_fire_time_changed(hass)
    await hass.async_block_till_done()


async def test_offline_too_long(
    hass: HomeAssistant,
    setup_listener: MockConfigEntry,
    send: Send,
    freezer: FrozenDateTimeFactory,
) -> None:
    """Offline past the set time raises a fixable issue; online again clears it."""
    await send("status", "offline")
    await wait(hass, freezer, OFFLINE_ISSUE_AFTER - SECOND)
    assert issue(hass, setup_listener, "listener_offline") is None
    await wait(hass, freezer, 2 * SECOND)
    found = issue(hass, setup_listener, "listener_offline")
    assert found is not None
    assert found.is_fixable
    assert found.severity is ir.IssueSeverity.WARNING
    assert found.translation_placeholders == {"name": "Kitchen", "minutes": "10"}

    await send("status", "online")
    assert issue(hass, setup_listener, "listener_offline") is None


async def test_short_outage_raises_nothing(
    hass: HomeAssistant,
    setup_listener: MockConfigEntry,
    send: Send,
    freezer: FrozenDateTimeFactory,
) -> None:
    """A listener back within the set time never raises the issue, even after the time."""
    await send("status", "offline")
    await wait(hass, freezer, OFFLINE_ISSUE_AFTER / 2)
    await send("status", "online")
    await wait(hass, freezer, OFFLINE_ISSUE_AFTER)
    assert issue(hass, setup_listener, "listener_offline") is None


async def test_never_online_since_setup(
    hass: HomeAssistant,
    mqtt_mock: MqttMockHAClient,
    config_entry: MockConfigEntry,
    freezer: FrozenDateTimeFactory,
) -> None:
    """A listener that never says anything (stopped, another broker) is offline too."""
    config_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    await wait(hass, freezer, OFFLINE_ISSUE_AFTER + SECOND)
    assert issue(hass, config_entry, "listener_offline") is not None
    # Unloading stops watching: its issues go with it.
    assert await hass.config_entries.async_unload(config_entry.entry_id)
    assert issue(hass, config_entry, "listener_offline") is None


async def test_fix_removes_the_listener(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    setup_listener: MockConfigEntry,
    send: Send,
    freezer: FrozenDateTimeFactory,
) -> None:
    """The offline issue's fix, for a listener no longer used, removes its entry."""
    assert await async_setup_component(hass, "repairs", {})
    await send("status", "offline")
    await wait(hass, freezer, OFFLINE_ISSUE_AFTER + SECOND)
    issue_id = f"listener_offline_{setup_listener.entry_id}"
    client = await hass_client()
    response = await client.post(
        "/api/repairs/issues/fix", json={"handler": DOMAIN, "issue_id": issue_id}
    )
    assert response.status == HTTPStatus.OK
    flow = await response.json()
    assert (flow["step_id"], flow["description_placeholders"]) == (
        "confirm",
        {"name": "Kitchen", "minutes": "10"},
    )
    response = await client.post(f"/api/repairs/issues/fix/{flow['flow_id']}", json={})
    assert response.status == HTTPStatus.OK
    assert (await response.json())["type"] == "create_entry"
    await hass.async_block_till_done()
    assert hass.config_entries.async_get_entry(setup_listener.entry_id) is None
    assert ir.async_get(hass).async_get_issue(DOMAIN, issue_id) is None


async def test_failed_source(
    hass: HomeAssistant, setup_listener: MockConfigEntry, send: Send
) -> None:
    """A source the info reports failed raises an issue naming it; working again clears it."""
    sources = [
        {"name": "mic", "kind": "mic", "state": "ok"},
        {"name": "porch", "kind": "ffmpeg", "state": "failed", "error": "end of stream"},
    ]
    await send("info", dumps(info(sources=sources)))
    found = issue(hass, setup_listener, "source_failed")
    assert found is not None
    assert not found.is_fixable
    assert found.translation_placeholders == {"name": "Kitchen", "sources": "porch (end of stream)"}

    sources[1] |= {"state": "reconnecting", "error": None}
    await send("info", dumps(info(sources=sources)))
    assert issue(hass, setup_listener, "source_failed") is None


async def test_unknown_protocol_version(
    hass: HomeAssistant, setup_listener: MockConfigEntry, send: Send
) -> None:
    """A newer protocol raises an issue naming its version; a readable info clears it."""
    await send("event/glass_breaking", dumps(transition("start", v=3)))
    found = issue(hass, setup_listener, "unsupported_protocol")
    assert found is not None
    assert found.translation_placeholders == {"name": "Kitchen", "version": "3"}
    await send("info", dumps(info(v=3)))
    assert issue(hass, setup_listener, "unsupported_protocol").translation_placeholders == {
        "name": "Kitchen",
        "version": "3",
    }
    await send("info", dumps(info()))
    assert issue(hass, setup_listener, "unsupported_protocol") is None


@pytest.mark.parametrize(
    ("key", "placeholders"),
    [
        ("listener_offline", {"name", "minutes"}),
        ("source_failed", {"name", "sources"}),
        ("unsupported_protocol", {"name", "version"}),
    ],
)
async def test_issue_texts(
    hass: HomeAssistant, setup_listener: MockConfigEntry, key: str, placeholders: set[str]
) -> None:
    """Each issue has a title and a text, and they use exactly the placeholders it is given."""
    strings = await async_get_translations(hass, "en", "issues", [DOMAIN])
    prefix = f"component.{DOMAIN}.issues.{key}"
    texts = {name: text for name, text in strings.items() if name.startswith(f"{prefix}.")}
    assert f"{prefix}.title" in texts
    assert any(name.endswith("description") for name in texts)
    used = {part.split("}")[0] for text in texts.values() for part in text.split("{")[1:]}
    assert used == placeholders
