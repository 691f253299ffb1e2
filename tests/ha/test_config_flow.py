"""Config flow: MQTT discovery with confirm, duplicates, the manual step and reconfigure."""

from __future__ import annotations

import asyncio
from unittest.mock import patch

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_mqtt_message
from pytest_homeassistant_custom_component.typing import MqttMockHAClient

from custom_components.sat_audio.const import (
    CONF_LISTENER_ID,
    CONF_TOPIC_PREFIX,
    DOMAIN,
    MAX_DISCOVERY_FLOWS,
)
from helpers import our_warnings
from homeassistant.config_entries import SOURCE_MQTT, SOURCE_USER, ConfigFlowResult
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers.service_info.mqtt import MqttServiceInfo
from payloads import LISTENER, dumps, info


def discovery(payload: str, topic: str = f"sat_audio/{LISTENER}/info") -> MqttServiceInfo:
    """Return the service info MQTT discovery hands the flow for a retained info message."""
    return MqttServiceInfo(
        topic=topic,
        payload=payload,
        qos=1,
        retain=True,
        subscribed_topic="sat_audio/+/info",
        timestamp=0.0,
    )


async def test_discovery_creates_entry(hass: HomeAssistant, mqtt_mock: MqttMockHAClient) -> None:
    """A listener's info starts a flow; confirming creates the entry named after it."""
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_MQTT}, data=discovery(dumps(info()))
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "discovery_confirm"
    assert result["description_placeholders"] == {
        "name": "Kitchen",
        "model": "SAT_T_2s",
        "events": "Glass breaking, Dog barking",
    }

    result = await hass.config_entries.flow.async_configure(result["flow_id"], {})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == "Kitchen"
    assert result["data"] == {CONF_TOPIC_PREFIX: "sat_audio", CONF_LISTENER_ID: LISTENER}
    assert result["result"].unique_id == LISTENER


async def test_discovery_from_the_broker(hass: HomeAssistant, mqtt_mock: MqttMockHAClient) -> None:
    """The manifest's topic is subscribed: a retained info on it starts the flow by itself."""
    async_fire_mqtt_message(
        hass, "sat_audio/hall/info", dumps(info(id="hall", name="Hall")), 1, True
    )
    await hass.async_block_till_done()
    flows = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert [flow["context"]["unique_id"] for flow in flows] == ["hall"]
    assert flows[0]["context"]["title_placeholders"] == {"name": "Hall"}


@pytest.mark.parametrize(
    ("payload", "topic"),
    [
        ("", f"sat_audio/{LISTENER}/info"),
        ("{not json", f"sat_audio/{LISTENER}/info"),
        (dumps(info(v=3)), f"sat_audio/{LISTENER}/info"),
        (dumps(info(events=[{"key": "Bad Key"}])), f"sat_audio/{LISTENER}/info"),
        (dumps(info()), "sat_audio/other/info"),
    ],
    ids=["empty", "not-json", "version-3", "bad-event", "id-mismatch"],
)
async def test_discovery_rejects_bad_info(
    hass: HomeAssistant, mqtt_mock: MqttMockHAClient, payload: str, topic: str
) -> None:
    """Anything but a valid info of the listener the topic names aborts."""
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_MQTT}, data=discovery(payload, topic)
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "invalid_discovery_info"


async def test_discovery_of_configured_listener_aborts_and_stays(
    hass: HomeAssistant, mqtt_mock: MqttMockHAClient
) -> None:
    """A known listener id aborts as a duplicate; its entry keeps its own prefix.

    The info under another prefix may be a second listener given the same id by mistake:
    moving the entry would take the user's device over to it.
    """
    entry = MockConfigEntry(
        domain=DOMAIN,
        unique_id=LISTENER,
        data={CONF_TOPIC_PREFIX: "old", CONF_LISTENER_ID: LISTENER},
    )
    entry.add_to_hass(hass)
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_MQTT}, data=discovery(dumps(info()))
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert entry.data[CONF_TOPIC_PREFIX] == "old"
    assert len(hass.config_entries.async_entries(DOMAIN)) == 1


async def test_many_listeners_at_once_are_capped(
    hass: HomeAssistant, mqtt_mock: MqttMockHAClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A burst of distinct ids opens a few discovery flows, not one per id; a warning says why."""
    for n in range(3 * MAX_DISCOVERY_FLOWS):
        async_fire_mqtt_message(
            hass, f"sat_audio/l{n}/info", dumps(info(id=f"l{n}", name=f"L{n}")), 1, True
        )
    await hass.async_block_till_done()
    flows = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert len(flows) == MAX_DISCOVERY_FLOWS
    warnings = our_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert f"{MAX_DISCOVERY_FLOWS} discovered listeners already wait" in warnings[0]

    # Once the user deals with one, the next listener's info is offered again.
    hass.config_entries.flow.async_abort(flows[0]["flow_id"])
    async_fire_mqtt_message(hass, "sat_audio/late/info", dumps(info(id="late")), 1, True)
    await hass.async_block_till_done()
    flows = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert "late" in [flow["context"]["unique_id"] for flow in flows]


async def test_dropped_discovery_is_warned_about(
    hass: HomeAssistant, mqtt_mock: MqttMockHAClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A discovered info that is dropped is a warning naming why, once per topic."""
    bad = dumps(info(events=[{"key": "Bad Key"}]))
    for payload in (bad, bad):
        await hass.config_entries.flow.async_init(
            DOMAIN, context={"source": SOURCE_MQTT}, data=discovery(payload)
        )
    warnings = our_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert f"sat_audio/{LISTENER}/info" in warnings[0]
    assert "not a slug" in warnings[0]


async def test_second_discovery_while_first_is_open_aborts(
    hass: HomeAssistant, mqtt_mock: MqttMockHAClient
) -> None:
    """A second info (counters moved on) while the confirm form is open does not add a flow."""
    first = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_MQTT}, data=discovery(dumps(info()))
    )
    second = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_MQTT}, data=discovery(dumps(info(counters={"chunks": 9})))
    )
    assert first["type"] is FlowResultType.FORM
    assert second["type"] is FlowResultType.ABORT
    assert second["reason"] == "already_in_progress"


async def subscribed(mqtt_mock: MqttMockHAClient, topic: str) -> None:
    """Return once Home Assistant's MQTT client has a subscription to `topic`."""
    async with asyncio.timeout(5):
        while not any(call.args[0] == topic for call in mqtt_mock.async_subscribe.call_args_list):
            await asyncio.sleep(0.01)


async def answer_with_info(
    hass: HomeAssistant,
    mqtt_mock: MqttMockHAClient,
    flow: asyncio.Task[ConfigFlowResult],
    topic: str,
    payload: str,
) -> ConfigFlowResult:
    """Publish a retained info once the flow has subscribed, then return the flow's result."""
    await subscribed(mqtt_mock, topic)
    async_fire_mqtt_message(hass, topic, payload, 1, True)
    return await flow


async def test_manual_step_waits_for_info(hass: HomeAssistant, mqtt_mock: MqttMockHAClient) -> None:
    """Prefix and id are checked by waiting for the listener's info under them."""
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "user"

    flow = asyncio.create_task(
        hass.config_entries.flow.async_configure(
            result["flow_id"], {CONF_TOPIC_PREFIX: "home/audio", CONF_LISTENER_ID: "hall"}
        )
    )
    # Another listener's info on the topic is not taken for this one; the next message is.
    await subscribed(mqtt_mock, "home/audio/hall/info")
    async_fire_mqtt_message(hass, "home/audio/hall/info", dumps(info(id="porch")), 1, True)
    await hass.async_block_till_done()
    assert not flow.done()
    async_fire_mqtt_message(hass, "home/audio/hall/info", dumps(info(id="hall", name="Hall")), 1)
    result = await flow
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == "Hall"
    assert result["data"] == {CONF_TOPIC_PREFIX: "home/audio", CONF_LISTENER_ID: "hall"}
    assert result["result"].unique_id == "hall"


@pytest.mark.parametrize(
    ("user_input", "errors"),
    [
        (
            {CONF_TOPIC_PREFIX: "a/+/b", CONF_LISTENER_ID: "hall"},
            {CONF_TOPIC_PREFIX: "invalid_prefix"},
        ),
        (
            {CONF_TOPIC_PREFIX: "a/", CONF_LISTENER_ID: "hall"},
            {CONF_TOPIC_PREFIX: "invalid_prefix"},
        ),
        ({CONF_TOPIC_PREFIX: "", CONF_LISTENER_ID: "hall"}, {CONF_TOPIC_PREFIX: "invalid_prefix"}),
        (
            {CONF_TOPIC_PREFIX: "sat_audio", CONF_LISTENER_ID: "Hall Way"},
            {CONF_LISTENER_ID: "invalid_listener_id"},
        ),
        ({CONF_TOPIC_PREFIX: "sat_audio", CONF_LISTENER_ID: "hall"}, {"base": "no_info"}),
    ],
    ids=["wildcard", "trailing-slash", "empty", "bad-id", "silent"],
)
async def test_manual_step_errors(
    hass: HomeAssistant,
    mqtt_mock: MqttMockHAClient,
    user_input: dict[str, str],
    errors: dict[str, str],
) -> None:
    """Bad prefixes and ids are named; a listener that never answers is reported."""
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    with patch("custom_components.sat_audio.config_flow.INFO_WAIT_SECONDS", 0.05):
        result = await hass.config_entries.flow.async_configure(result["flow_id"], user_input)
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == errors


async def test_manual_step_of_configured_listener_aborts(
    hass: HomeAssistant, mqtt_mock: MqttMockHAClient, config_entry: MockConfigEntry
) -> None:
    """Adding a listener id that already has an entry aborts before waiting."""
    config_entry.add_to_hass(hass)
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_TOPIC_PREFIX: "sat_audio", CONF_LISTENER_ID: LISTENER}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"


async def test_reconfigure_moves_prefix(
    hass: HomeAssistant, mqtt_mock: MqttMockHAClient, config_entry: MockConfigEntry
) -> None:
    """Reconfigure checks the listener answers under the new prefix, then updates the entry."""
    config_entry.add_to_hass(hass)
    result = await config_entry.start_reconfigure_flow(hass)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reconfigure"

    with patch("custom_components.sat_audio.config_flow.INFO_WAIT_SECONDS", 0.05):
        silent = await hass.config_entries.flow.async_configure(
            result["flow_id"], {CONF_TOPIC_PREFIX: "nobody/here"}
        )
    assert silent["errors"] == {"base": "no_info"}
    bad = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_TOPIC_PREFIX: "#"}
    )
    assert bad["errors"] == {CONF_TOPIC_PREFIX: "invalid_prefix"}

    flow = asyncio.create_task(
        hass.config_entries.flow.async_configure(result["flow_id"], {CONF_TOPIC_PREFIX: "audio"})
    )
    result = await answer_with_info(hass, mqtt_mock, flow, f"audio/{LISTENER}/info", dumps(info()))
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    assert config_entry.data == {CONF_TOPIC_PREFIX: "audio", CONF_LISTENER_ID: LISTENER}
    await hass.async_block_till_done()


async def test_manual_step_without_mqtt_connection(
    hass: HomeAssistant, mqtt_mock: MqttMockHAClient
) -> None:
    """With the MQTT integration not connected, the form says so instead of waiting."""
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    with patch(
        "custom_components.sat_audio.config_flow.mqtt.async_wait_for_mqtt_client",
        return_value=False,
    ):
        result = await hass.config_entries.flow.async_configure(
            result["flow_id"], {CONF_TOPIC_PREFIX: "sat_audio", CONF_LISTENER_ID: "hall"}
        )
    assert result["errors"] == {"base": "mqtt_not_connected"}
