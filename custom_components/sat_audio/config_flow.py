"""Config flow: listeners are found by their retained info message, or added by prefix and id."""

from __future__ import annotations

import asyncio
from typing import Any

import voluptuous as vol

from homeassistant.components import mqtt
from homeassistant.config_entries import ConfigFlow, ConfigFlowResult
from homeassistant.core import callback
from homeassistant.helpers.service_info.mqtt import MqttServiceInfo

from .const import (
    CONF_LISTENER_ID,
    CONF_TOPIC_PREFIX,
    DEFAULT_TOPIC_PREFIX,
    DISCOVERY_TOPIC,
    DOMAIN,
    INFO_WAIT_SECONDS,
)
from .protocol import SLUG_RE, ListenerInfo, parse, topic_base


def _valid_prefix(prefix: str) -> bool:
    """Return whether a topic prefix can carry a listener's topics (no wildcards, no ends)."""
    try:
        mqtt.valid_publish_topic(f"{prefix}/x")
    except vol.Invalid:
        return False
    return bool(prefix) and not prefix.startswith("/") and not prefix.endswith("/")


class SatAudioConfigFlow(ConfigFlow, domain=DOMAIN):
    """Add one SAT Audio listener per config entry, its unique id the listener id."""

    VERSION = 1

    def __init__(self) -> None:
        """Start without a listener in view."""
        self._prefix = DEFAULT_TOPIC_PREFIX
        self._info: ListenerInfo | None = None

    async def async_step_mqtt(self, discovery_info: MqttServiceInfo) -> ConfigFlowResult:
        """Handle a listener's retained info message on the default prefix."""
        info = parse("info", discovery_info.payload)
        prefix, _, listener_id = discovery_info.topic.removesuffix("/info").rpartition("/")
        if (
            discovery_info.subscribed_topic != DISCOVERY_TOPIC
            or not isinstance(info, ListenerInfo)
            or info.id != listener_id
        ):
            return self.async_abort(reason="invalid_discovery_info")
        await self.async_set_unique_id(info.id)
        self._abort_if_unique_id_configured(updates={CONF_TOPIC_PREFIX: prefix})
        self._prefix, self._info = prefix, info
        self.context["title_placeholders"] = {"name": info.name}
        return await self.async_step_discovery_confirm()

    async def async_step_discovery_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Ask before adding a discovered listener."""
        assert self._info is not None
        if user_input is not None:
            return self._create(self._info)
        self._set_confirm_only()
        return self.async_show_form(
            step_id="discovery_confirm",
            description_placeholders={"name": self._info.name, "model": self._info.model},
        )

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> ConfigFlowResult:
        """Add a listener by its topic prefix and id, once its info message is seen."""
        errors: dict[str, str] = {}
        if user_input is not None:
            prefix = user_input[CONF_TOPIC_PREFIX].strip()
            listener_id = user_input[CONF_LISTENER_ID].strip()
            if not _valid_prefix(prefix):
                errors[CONF_TOPIC_PREFIX] = "invalid_prefix"
            elif not SLUG_RE.fullmatch(listener_id):
                errors[CONF_LISTENER_ID] = "invalid_listener_id"
            else:
                await self.async_set_unique_id(listener_id)
                self._abort_if_unique_id_configured()
                found = await self._async_find_listener(prefix, listener_id)
                if isinstance(found, str):
                    errors["base"] = found
                else:
                    self._prefix = prefix
                    return self._create(found)
        return self.async_show_form(
            step_id="user",
            data_schema=self.add_suggested_values_to_schema(
                vol.Schema(
                    {
                        vol.Required(CONF_TOPIC_PREFIX, default=DEFAULT_TOPIC_PREFIX): str,
                        vol.Required(CONF_LISTENER_ID): str,
                    }
                ),
                user_input,
            ),
            errors=errors,
            description_placeholders={"seconds": str(int(INFO_WAIT_SECONDS))},
        )

    async def async_step_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Move a listener to another topic prefix; it must answer there."""
        entry = self._get_reconfigure_entry()
        errors: dict[str, str] = {}
        if user_input is not None:
            prefix = user_input[CONF_TOPIC_PREFIX].strip()
            if not _valid_prefix(prefix):
                errors[CONF_TOPIC_PREFIX] = "invalid_prefix"
            elif isinstance(
                found := await self._async_find_listener(prefix, entry.data[CONF_LISTENER_ID]),
                str,
            ):
                errors["base"] = found
            else:
                return self.async_update_reload_and_abort(
                    entry, data_updates={CONF_TOPIC_PREFIX: prefix}
                )
        return self.async_show_form(
            step_id="reconfigure",
            data_schema=self.add_suggested_values_to_schema(
                vol.Schema({vol.Required(CONF_TOPIC_PREFIX): str}),
                user_input or {CONF_TOPIC_PREFIX: entry.data[CONF_TOPIC_PREFIX]},
            ),
            errors=errors,
            description_placeholders={
                "listener_id": entry.data[CONF_LISTENER_ID],
                "seconds": str(int(INFO_WAIT_SECONDS)),
            },
        )

    def _create(self, info: ListenerInfo) -> ConfigFlowResult:
        return self.async_create_entry(
            title=info.name, data={CONF_TOPIC_PREFIX: self._prefix, CONF_LISTENER_ID: info.id}
        )

    async def _async_find_listener(self, prefix: str, listener_id: str) -> ListenerInfo | str:
        """Return the listener's retained info, or the error key saying why there is none."""
        if not await mqtt.async_wait_for_mqtt_client(self.hass):
            return "mqtt_not_connected"
        found: asyncio.Future[ListenerInfo] = self.hass.loop.create_future()

        @callback
        def received(msg: mqtt.ReceiveMessage) -> None:
            info = parse("info", msg.payload)
            if isinstance(info, ListenerInfo) and info.id == listener_id and not found.done():
                found.set_result(info)

        unsubscribe = await mqtt.async_subscribe(
            self.hass, f"{topic_base(prefix, listener_id)}/info", received, qos=1, encoding=None
        )
        try:
            async with asyncio.timeout(INFO_WAIT_SECONDS):
                return await found
        except TimeoutError:
            return "no_info"
        finally:
            unsubscribe()
