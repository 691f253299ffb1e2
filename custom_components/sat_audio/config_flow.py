"""Config flow: listeners are found by their retained info message, or added by prefix and id."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import voluptuous as vol

from homeassistant.components import mqtt
from homeassistant.config_entries import SOURCE_MQTT, ConfigFlow, ConfigFlowResult
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.service_info.mqtt import MqttServiceInfo
from homeassistant.util.hass_dict import HassKey

from .const import (
    CONF_LISTENER_ID,
    CONF_TOPIC_PREFIX,
    DEFAULT_TOPIC_PREFIX,
    DISCOVERY_TOPIC,
    DOMAIN,
    INFO_WAIT_SECONDS,
    MAX_DISCOVERY_FLOWS,
)
from .protocol import SLUG_RE, Dropped, ListenerInfo, parse, topic_base

_LOGGER = logging.getLogger(__name__)

# What a dropped discovery was warned about: topics with a bad info, and FULL for too many
# open flows; each until a discovery gets through. Bounded: a flood warns a few times at most.
_WARNED: HassKey[set[str]] = HassKey(f"{DOMAIN}_discovery_warned")
WARNED_TOPICS = 16
FULL = ""


def _warn_dropped_info(hass: HomeAssistant, topic: str, why: str, *, full: bool = False) -> None:
    """Warn once per cause (a listener re-publishes its info), then log at debug level."""
    warned = hass.data.setdefault(_WARNED, set())
    cause = FULL if full else topic
    if cause in warned or len(warned) >= WARNED_TOPICS:
        _LOGGER.debug("Ignored the info on %s: %s", topic, why)
        return
    warned.add(cause)
    _LOGGER.warning("Ignored the SAT Audio listener info on %s: %s", topic, why)


def _form(fields: dict[vol.Marker, type]) -> Any:
    """Return a form's schema, typed Any on purpose.

    Home Assistant's forms are typed for voluptuous schemas up to 2025 and for probatio's (its
    API-compatible successor) after; both take a voluptuous schema at run time.
    """
    return vol.Schema(fields)


def _suggested(values: dict[str, Any] | None, key: str) -> dict[str, Any] | None:
    """Return a field's description that fills in what the user typed last.

    Written out rather than with add_suggested_values_to_schema, whose schema type differs
    between the Home Assistant releases this integration supports (see _form).
    """
    if values is None or key not in values:
        return None
    return {"suggested_value": values[key]}


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
    # 1.2: one event entity per sound event replaces the listener's single one.
    MINOR_VERSION = 2

    def __init__(self) -> None:
        """Start without a listener in view."""
        self._prefix = DEFAULT_TOPIC_PREFIX
        self._info: ListenerInfo | None = None

    async def async_step_mqtt(self, discovery_info: MqttServiceInfo) -> ConfigFlowResult:
        """Handle a listener's retained info message on the default prefix.

        A configured listener id aborts before anything else, and its entry stays on its own
        prefix: another listener that takes the same id elsewhere must not move it.
        """
        topic = discovery_info.topic
        prefix, _, listener_id = topic.removesuffix("/info").rpartition("/")
        if discovery_info.subscribed_topic != DISCOVERY_TOPIC:
            return self.async_abort(reason="invalid_discovery_info")
        await self.async_set_unique_id(listener_id)
        self._abort_if_unique_id_configured()
        info = parse("info", discovery_info.payload)
        if not isinstance(info, ListenerInfo) or info.id != listener_id:
            why = info.reason if isinstance(info, Dropped) else "it names another listener"
            _warn_dropped_info(self.hass, topic, why)
            return self.async_abort(reason="invalid_discovery_info")
        waiting = [
            flow
            for flow in self._async_in_progress(include_uninitialized=True)
            if flow["context"].get("source") == SOURCE_MQTT and flow["flow_id"] != self.flow_id
        ]
        if len(waiting) >= MAX_DISCOVERY_FLOWS:
            _warn_dropped_info(
                self.hass,
                topic,
                f"{len(waiting)} discovered listeners already wait to be added or ignored (at "
                f"most {MAX_DISCOVERY_FLOWS}); add this one by hand or wait for its next info",
                full=True,
            )
            return self.async_abort(reason="too_many_discoveries")
        self.hass.data.get(_WARNED, set()).difference_update((topic, FULL))
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
            description_placeholders={
                "name": self._info.name,
                "model": self._info.model,
                "events": ", ".join(event.name for event in self._info.events) or "-",
            },
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
            data_schema=_form(
                {
                    vol.Required(
                        CONF_TOPIC_PREFIX,
                        default=DEFAULT_TOPIC_PREFIX,
                        description=_suggested(user_input, CONF_TOPIC_PREFIX),
                    ): str,
                    vol.Required(
                        CONF_LISTENER_ID, description=_suggested(user_input, CONF_LISTENER_ID)
                    ): str,
                }
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
            data_schema=_form(
                {
                    vol.Required(
                        CONF_TOPIC_PREFIX,
                        description=_suggested(
                            user_input or {CONF_TOPIC_PREFIX: entry.data[CONF_TOPIC_PREFIX]},
                            CONF_TOPIC_PREFIX,
                        ),
                    ): str
                }
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
