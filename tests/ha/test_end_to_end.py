"""End to end: a real mosquitto, the real `sat-audio run`, Home Assistant's real MQTT client.

The listener reads a looping wav (silence, then a loud tone) with a checkpoint that hears
"Shatter" in everything; its -40 dBFS volume gate makes the glass event follow the tone. Home
Assistant discovers the listener from its retained info, and the test watches the binary sensor,
the event entity and a device-trigger automation follow the episodes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_homeassistant_custom_component.common import MockConfigEntry, async_mock_service
from tests.broker import Broker

from custom_components.sat_audio.const import DOMAIN
from helpers import listener_device
from homeassistant.components import automation, mqtt
from homeassistant.components.switch import DOMAIN as SWITCH_DOMAIN
from homeassistant.config_entries import ConfigEntry, ConfigEntryState
from homeassistant.const import (
    ATTR_ENTITY_ID,
    SERVICE_TURN_OFF,
    STATE_OFF,
    STATE_ON,
    STATE_UNAVAILABLE,
)
from homeassistant.core import Event, EventStateChangedData, HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import device_registry as dr
from homeassistant.setup import async_setup_component
from real_listener import Listener, listener_side, write_config

SENSOR = "binary_sensor.end_to_end_glass"
EVENT = "event.end_to_end_glass"


async def wait_for(check: Callable[[], Any], timeout: float, what: str, log: Path) -> Any:
    """Poll `check` on the event loop until it is truthy; fail with the listener's log."""
    try:
        async with asyncio.timeout(timeout):
            while not (result := check()):
                await asyncio.sleep(0.1)
            return result
    except TimeoutError:
        listener_log = log.read_text(errors="replace") if log.exists() else "(no log)"
        raise AssertionError(f"timed out waiting for {what}:\n{listener_log}") from None


async def test_listener_to_automation(
    hass: HomeAssistant, mock_hass_config: None, socket_enabled: None, tmp_path: Path
) -> None:
    """Discovery, on then off, the event entity, and a device trigger, all from a real run."""
    checkpoint = Path(
        (
            await hass.async_add_executor_job(listener_side, "checkpoint", tmp_path, "Shatter")
        ).strip()
    )
    wav = tmp_path / "glass.wav"
    await hass.async_add_executor_job(listener_side, "wav", wav, "___XXX____")
    broker = Broker(tmp_path / "broker")
    await hass.async_add_executor_job(broker.start)
    log = tmp_path / "listener.log"
    listener: Listener | None = None
    try:
        source = {"name": "mic", "kind": "file", "path": str(wav), "realtime": True, "loop": True}
        config = write_config(tmp_path, checkpoint, [source], broker.port)
        listener = await hass.async_add_executor_job(Listener, tmp_path, config)
        mqtt_entry, entry = await connect_and_discover(hass, broker, log)

        device = listener_device(hass, "e2e")
        calls = async_mock_service(hass, "test", "automation")
        assert await async_setup_component(
            hass,
            automation.DOMAIN,
            {
                automation.DOMAIN: {
                    "trigger": {
                        "platform": "device",
                        "domain": DOMAIN,
                        "device_id": device.id,
                        "type": "started",
                        "subtype": "glass",
                    },
                    "action": {
                        "service": "test.automation",
                        "data_template": {"label": "{{ trigger.event.data.label }}"},
                    },
                }
            },
        )
        fired: list[str] = []

        def on_event_entity(event: Event[EventStateChangedData]) -> None:
            new = event.data["new_state"]
            if event.data["entity_id"] == EVENT and new and new.attributes.get("event_type"):
                fired.append(new.attributes["event_type"])

        hass.bus.async_listen("state_changed", on_event_entity)

        await wait_for(lambda: hass.states.get(SENSOR), 30, "the glass sensor", log)
        assert dr.async_get(hass).async_get(device.id).model == "SAT_T_2s"
        await wait_for(lambda: hass.states.get(SENSOR).state == STATE_ON, 60, "glass on", log)
        on = hass.states.get(SENSOR)
        assert on.attributes["label"] == "Shatter"
        assert on.attributes["score"] > 0.99
        assert on.attributes["device_class"] == "sound"
        await wait_for(lambda: hass.states.get(SENSOR).state == STATE_OFF, 30, "glass off", log)
        await wait_for(lambda: "ended" in fired, 10, "the ended event", log)
        assert fired[fired.index("ended") - 1] == "started"
        assert [call.data["label"] for call in calls][:1] == ["Shatter"]

        # A clean stop says offline: everything becomes unavailable.
        await hass.async_add_executor_job(listener.stop)
        assert listener.proc.returncode == 0, listener.output()
        await wait_for(
            lambda: hass.states.get(SENSOR).state == STATE_UNAVAILABLE, 20, "unavailable", log
        )
        assert await hass.config_entries.async_unload(entry.entry_id)
        assert await hass.config_entries.async_unload(mqtt_entry.entry_id)
    finally:
        if listener is not None:
            await hass.async_add_executor_job(listener.stop)
        await hass.async_add_executor_job(broker.stop)


async def connect_and_discover(
    hass: HomeAssistant, broker: Broker, log: Path
) -> tuple[MockConfigEntry, ConfigEntry]:
    """Connect Home Assistant's MQTT to the broker; the retained info starts a discovery flow,
    which the user confirms."""
    mqtt_entry = MockConfigEntry(
        domain=mqtt.DOMAIN,
        data={mqtt.CONF_BROKER: broker.host, "port": broker.port},
        options={mqtt.CONF_BIRTH_MESSAGE: {}},
        version=1,
        minor_version=2,
    )
    mqtt_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(mqtt_entry.entry_id)
    assert await mqtt.async_wait_for_mqtt_client(hass)
    flows = await wait_for(
        lambda: hass.config_entries.flow.async_progress_by_handler(DOMAIN),
        60,
        "the discovery flow",
        log,
    )
    assert flows[0]["context"]["unique_id"] == "e2e"
    result = await hass.config_entries.flow.async_configure(flows[0]["flow_id"], {})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    assert result["result"].state is ConfigEntryState.LOADED
    return mqtt_entry, result["result"]


async def test_loud_event_clip_and_switch(
    hass: HomeAssistant, mock_hass_config: None, socket_enabled: None, tmp_path: Path
) -> None:
    """A loud event and any sound follow the tone; the glass clip reaches the media folder
    byte for byte; the loud event's switch goes off through the listener's own report."""
    hass.config.media_dirs = {"local": str(tmp_path / "media")}
    checkpoint = Path(
        (
            await hass.async_add_executor_job(listener_side, "checkpoint", tmp_path, "Shatter")
        ).strip()
    )
    wav = tmp_path / "glass.wav"
    await hass.async_add_executor_job(listener_side, "wav", wav, "___XXX____")
    broker = Broker(tmp_path / "broker")
    await hass.async_add_executor_job(broker.start)
    log = tmp_path / "listener.log"
    listener: Listener | None = None
    try:
        source = {"name": "mic", "kind": "file", "path": str(wav), "realtime": True, "loop": True}
        config = write_config(
            tmp_path,
            checkpoint,
            [source],
            broker.port,
            glass={"clip": {"pre_s": 1, "post_s": 1}},
            events={"loud": {"name": "Loud", "kind": "loud", "on_dbfs": -20, "hold_s": 0}},
            clips={"dir": str(tmp_path / "clips"), "format": "flac"},
        )
        listener = await hass.async_add_executor_job(Listener, tmp_path, config)
        mqtt_entry, entry = await connect_and_discover(hass, broker, log)
        clips: list[str] = []

        def on_glass_event(event: Event[EventStateChangedData]) -> None:
            new = event.data["new_state"]
            if (
                event.data["entity_id"] == EVENT
                and new
                and new.attributes.get("event_type") == "clip"
            ):
                clips.append(new.attributes["clip"])

        hass.bus.async_listen("state_changed", on_glass_event)

        loud = "binary_sensor.end_to_end_loud"
        any_sound = "binary_sensor.end_to_end_any_sound"
        await wait_for(lambda: hass.states.get(loud), 30, "the loud sensor", log)
        await wait_for(lambda: hass.states.get(loud).state == STATE_ON, 60, "loud on", log)
        on = hass.states.get(loud)
        assert on.attributes["on_dbfs"] == -20
        assert -20 <= on.attributes["level_dbfs"] <= 0
        await wait_for(
            lambda: "Loud" in hass.states.get(any_sound).attributes["active_events"],
            30,
            "any sound naming the loud event",
            log,
        )
        assert hass.states.get(any_sound).state == STATE_ON

        # The clip of the glass episode: the listener's file, byte for byte, in the media folder.
        await wait_for(lambda: clips, 60, "the glass clip", log)
        name = clips[0]
        saved = tmp_path / "media" / "sat_audio" / "e2e" / name
        kept = tmp_path / "clips" / name
        data = await hass.async_add_executor_job(saved.read_bytes)
        assert data.startswith(b"fLaC")
        assert data == await hass.async_add_executor_job(kept.read_bytes)
        assert hass.states.get(EVENT).attributes["url"] == f"/media/local/sat_audio/e2e/{name}"

        # Switching the loud event off: the listener reports it, and the switch follows.
        switch = "switch.end_to_end_loud_detection"
        assert hass.states.get(switch).state == STATE_ON
        await hass.services.async_call(
            SWITCH_DOMAIN, SERVICE_TURN_OFF, {ATTR_ENTITY_ID: switch}, blocking=True
        )
        await wait_for(lambda: hass.states.get(switch).state == STATE_OFF, 30, "switch off", log)
        await wait_for(
            lambda: hass.states.get(loud).state == STATE_OFF, 30, "loud off once disabled", log
        )

        await hass.async_add_executor_job(listener.stop)
        assert listener.proc.returncode == 0, listener.output()
        assert await hass.config_entries.async_unload(entry.entry_id)
        assert await hass.config_entries.async_unload(mqtt_entry.entry_id)
    finally:
        if listener is not None:
            await hass.async_add_executor_job(listener.stop)
        await hass.async_add_executor_job(broker.stop)
