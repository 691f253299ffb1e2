"""Fixtures for the Home Assistant tests: the integration set up against a mocked MQTT client."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from unittest.mock import Mock, PropertyMock, patch

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_mqtt_message
from pytest_homeassistant_custom_component.syrupy import HomeAssistantSnapshotExtension
from pytest_homeassistant_custom_component.typing import MqttMockHAClient, MqttMockPahoClient
from syrupy.assertion import SnapshotAssertion
from syrupy.location import PyTestLocation

from custom_components.sat_audio.const import CONF_LISTENER_ID, CONF_TOPIC_PREFIX, DOMAIN
from homeassistant.const import MAJOR_VERSION, MINOR_VERSION
from homeassistant.core import HomeAssistant
from payloads import BASE, LISTENER, PREFIX, Send, dumps, info

# Registry entries and states gain fields between Home Assistant releases: the snapshots of
# these test modules are kept per release, in snapshots-<major.minor>; the rest are shared.
# (Side by side, not nested: syrupy would count a nested folder's snapshots as unused, and
# --snapshot-update would delete the other release's.)
HA_RELEASE = f"{MAJOR_VERSION}.{MINOR_VERSION}"
PER_RELEASE = {"test_snapshots"}


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: None) -> None:
    """Let Home Assistant load custom_components/sat_audio in every test."""


@pytest.fixture
def mqtt_mock(
    mqtt_mock: MqttMockHAClient, mqtt_client_mock: MqttMockPahoClient
) -> Generator[MqttMockHAClient]:
    """Home Assistant's MQTT client on a mocked paho client, closed the way a real one closes.

    The harness's paho mock opens a socket but never reports it closed, so the MQTT client's
    once-a-second housekeeping timer outlives the test; report the close as paho would.
    """
    yield mqtt_mock
    mqtt_client_mock.on_socket_close(mqtt_client_mock, None, Mock(fileno=Mock(return_value=-1)))


class ReleaseSnapshotExtension(HomeAssistantSnapshotExtension):
    """Home Assistant's serializer; a release's own folder for formats that differ by release."""

    @classmethod
    def dirname(cls, *, test_location: PyTestLocation) -> str:
        """Return snapshots/ beside the test file, or snapshots-<major.minor> for PER_RELEASE."""
        test_file = Path(test_location.filepath)
        if test_file.stem in PER_RELEASE:
            return str(test_file.parent / f"snapshots-{HA_RELEASE}")
        return str(test_file.parent / "snapshots")


@pytest.fixture
def snapshot(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    """Snapshot with Home Assistant's serializer, which blanks ids and times that vary per run.

    The harness defines this too, but syrupy's own fixture of the same name wins over it.
    """
    return snapshot.use_extension(ReleaseSnapshotExtension)


@pytest.fixture
def entity_registry_enabled_by_default() -> Generator[None]:
    """Create every entity enabled, also those an integration disables by default."""
    with patch(
        "homeassistant.helpers.entity.Entity.entity_registry_enabled_default",
        new_callable=PropertyMock,
        return_value=True,
    ):
        yield


@pytest.fixture
def config_entry() -> MockConfigEntry:
    """Return the kitchen listener's config entry."""
    return MockConfigEntry(
        domain=DOMAIN,
        title="Kitchen",
        unique_id=LISTENER,
        data={CONF_TOPIC_PREFIX: PREFIX, CONF_LISTENER_ID: LISTENER},
    )


@pytest.fixture
def send(hass: HomeAssistant, mqtt_mock: MqttMockHAClient) -> Send:
    """Return a coroutine that delivers one message under the listener's topic and settles."""

    async def deliver(suffix: str, payload: str | bytes) -> None:
        async_fire_mqtt_message(hass, f"{BASE}/{suffix}", payload)
        await hass.async_block_till_done()

    return deliver


@pytest.fixture
async def setup_listener(
    hass: HomeAssistant, mqtt_mock: MqttMockHAClient, config_entry: MockConfigEntry, send: Send
) -> MockConfigEntry:
    """Set the entry up and deliver the listener's retained messages: online, info, states."""
    config_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    await hass.async_block_till_done()
    await send("status", "online")
    await send("info", dumps(info()))
    await send("listening", "ON")
    await send("event/glass_breaking/state", "OFF")
    await send("event/dog_bark/state", "OFF")
    return config_entry
