"""One listener's live state, fed by its MQTT topics; the entities and triggers read it."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
import logging
from typing import Any

from homeassistant.components import mqtt
from homeassistant.config_entries import ConfigEntry
from homeassistant.const import ATTR_ENTITY_ID, CONF_DEVICE_ID, CONF_TYPE, Platform
from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.helpers import (
    device_registry as dr,
    entity_registry as er,
    issue_registry as ir,
)
from homeassistant.helpers.event import async_call_later

from .clips import DEFAULT_RETENTION, MediaFolder, media_folder, write_clip
from .const import (
    CONF_LISTENER_ID,
    CONF_TOPIC_PREFIX,
    DOMAIN,
    EVENT_SOUND,
    ISSUE_OFFLINE,
    ISSUE_PROTOCOL,
    ISSUE_SOURCE_FAILED,
    MANUFACTURER,
    OFFLINE_ISSUE_AFTER,
    TRIGGER_CLIP,
    TRIGGER_ENDED,
    TRIGGER_STARTED,
)
from .protocol import (
    Active,
    Clip,
    Dropped,
    EventInfo,
    Kind,
    ListenerInfo,
    Scores,
    Transition,
    classify,
    command_topic,
    event_enabled_command_topic,
    parse,
    parse_clip,
    topic_base,
)

_LOGGER = logging.getLogger(__name__)

# Start/end pairs remembered to discard QoS 1 redeliveries; a few minutes of busy events.
SEEN_TRANSITIONS = 256
# Retained ON/OFF states may arrive before the info that names their events; kept until it does.
EARLY_STATES = 128
# Clip names remembered to skip QoS 1 redeliveries, and transitions' clip names to find the
# episode a clip belongs to.
SEEN_CLIPS = 64

type SatAudioConfigEntry = ConfigEntry[SatAudioListener]


def event_unique_id(listener_id: str, key: str) -> str:
    """Return the unique id of an event's binary sensor (listener ids and keys hold no '-')."""
    return f"{listener_id}-event-{key}"


def event_entity_unique_id(listener_id: str, key: str) -> str:
    """Return the unique id of an event's event entity."""
    return f"{listener_id}-sound-{key}"


def enabled_unique_id(listener_id: str, key: str) -> str:
    """Return the unique id of an event's detection switch."""
    return f"{listener_id}-enabled-{key}"


def trigger_name(transition_type: str) -> str:
    """Map a protocol transition type to its device trigger type."""
    return TRIGGER_STARTED if transition_type == "start" else TRIGGER_ENDED


@dataclass(slots=True)
class EventState:
    """What is known about one sound event: on or off, and its latest episode."""

    info: EventInfo
    on: bool | None = None
    last: Transition | None = None
    # The listener's report on event/<key>/enabled (v2); None until one arrives.
    enabled_report: bool | None = None
    last_clip: SavedClip | None = None

    @property
    def enabled(self) -> bool | None:
        """Whether the listener detects the event: its report, else what its info said."""
        return self.enabled_report if self.enabled_report is not None else self.info.enabled


@dataclass(frozen=True, slots=True)
class SavedClip:
    """A clip written to the media folder, and how to reach it."""

    name: str
    event: str
    episode: str
    media_content_id: str
    url: str

    def data(self) -> dict[str, str]:
        """Return it as event data: what an automation needs to attach or play it."""
        return {
            "clip": self.name,
            "episode": self.episode,
            "media_content_id": self.media_content_id,
            "url": self.url,
        }


@dataclass(frozen=True, slots=True)
class Detection:
    """The start of the latest episode, by the event's name (a key means nothing to a user)."""

    start: datetime
    name: str
    label: str | None


class SatAudioListener:
    """Subscribe to one listener's topics and keep what they say.

    Every payload goes through protocol.parse; anything it drops is logged at debug level and
    changes nothing (a dropped info is worth a warning: the entities then lag the listener).
    Entities register callbacks and are told after each accepted message. Repair issues say
    what the user should act on: a listener offline too long, a failed source, a protocol this
    integration does not know; each goes when its cause does.
    """

    def __init__(self, hass: HomeAssistant, entry: SatAudioConfigEntry) -> None:
        """Read the listener's topics from the config entry."""
        self.hass = hass
        self.entry = entry
        self.listener_id: str = entry.data[CONF_LISTENER_ID]
        self.base = topic_base(entry.data[CONF_TOPIC_PREFIX], self.listener_id)
        self.command_topic = command_topic(entry.data[CONF_TOPIC_PREFIX], self.listener_id)
        self.info: ListenerInfo | None = None
        # None until the first status: only a return from offline is "back online".
        self.online: bool | None = None
        self.listening_state: bool | None = None
        self.events: dict[str, EventState] = {}
        # The keys of the events on now, from the v2 `active` topic; None from a v1 listener.
        self.active: tuple[str, ...] | None = None
        self.scores: Scores | None = None
        self.last_detection: Detection | None = None
        self.device_id = ""
        self.dropped = 0
        self._early_states: dict[str, bool] = {}
        self._early_enabled: dict[str, bool] = {}
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._seen_clips: OrderedDict[str, None] = OrderedDict()
        self._clip_episodes: OrderedDict[str, str] = OrderedDict()
        self._unknown_version: int | None = None
        self._info_warned = False
        self._offline_timer: CALLBACK_TYPE | None = None
        self._update_callbacks: list[CALLBACK_TYPE] = []
        self._info_callbacks: list[CALLBACK_TYPE] = []
        self._transition_callbacks: list[Callable[[Transition], None]] = []
        self._clip_callbacks: list[Callable[[SavedClip], None]] = []

    @property
    def listening(self) -> bool | None:
        """Whether analysis runs: the listening topic, else what the info said."""
        if self.listening_state is not None:
            return self.listening_state
        return self.info.listening if self.info else None

    @property
    def active_keys(self) -> tuple[str, ...] | None:
        """The events on now: the `active` topic, else (v1) the events whose state is on."""
        if self.active is not None:
            return self.active
        states = [state.on for state in self.events.values()]
        if all(on is None for on in states):
            return None
        return tuple(key for key, state in self.events.items() if state.on)

    def enabled_command_topic(self, key: str) -> str:
        """Return the retained topic that switches an event on or off."""
        return event_enabled_command_topic(self.base, key)

    async def async_start(self) -> None:
        """Create the device and subscribe to everything under the listener's topic."""
        device = dr.async_get(self.hass).async_get_or_create(
            config_entry_id=self.entry.entry_id,
            identifiers={(DOMAIN, self.listener_id)},
            manufacturer=MANUFACTURER,
            name=self.entry.title,
        )
        self.device_id = device.id
        self.entry.async_on_unload(self._stop)
        # encoding=None: payloads arrive as bytes, which clip/<name> needs (and protocol.parse
        # decodes the rest); this one subscription carries the clips too.
        self.entry.async_on_unload(
            await mqtt.async_subscribe(
                self.hass, f"{self.base}/#", self._message_received, qos=1, encoding=None
            )
        )
        # A listener that never says online (not running, another broker) is offline too.
        self._watch_offline()

    @callback
    def _stop(self) -> None:
        """Forget the timer and the issues: nothing watches this listener any more."""
        if self._offline_timer is not None:
            self._offline_timer()
            self._offline_timer = None
        for issue in (ISSUE_OFFLINE, ISSUE_SOURCE_FAILED, ISSUE_PROTOCOL):
            ir.async_delete_issue(self.hass, DOMAIN, self.issue_id(issue))

    def issue_id(self, issue: str) -> str:
        """Return the id of one of this entry's repair issues."""
        return f"{issue}_{self.entry.entry_id}"

    @property
    def name(self) -> str:
        """Return the listener's name: its info's, else the entry's title."""
        return self.info.name if self.info else self.entry.title

    @callback
    def async_add_listener(self, update: CALLBACK_TYPE) -> CALLBACK_TYPE:
        """Call `update` after every accepted message; return the remover."""
        return _add(self._update_callbacks, update)

    @callback
    def async_add_info_listener(self, update: CALLBACK_TYPE) -> CALLBACK_TYPE:
        """Call `update` after each accepted info message; return the remover."""
        return _add(self._info_callbacks, update)

    @callback
    def async_add_transition_listener(self, update: Callable[[Transition], None]) -> CALLBACK_TYPE:
        """Call `update` with each new start or end; return the remover."""
        return _add(self._transition_callbacks, update)

    @callback
    def async_add_clip_listener(self, update: Callable[[SavedClip], None]) -> CALLBACK_TYPE:
        """Call `update` with each clip saved in the media folder; return the remover."""
        return _add(self._clip_callbacks, update)

    @callback
    def _message_received(self, msg: mqtt.ReceiveMessage) -> None:
        topic = classify(self.base, msg.topic)
        if topic.kind in ("command", "unknown"):
            return
        if topic.kind == "clip":
            self._clip_received(topic.clip or "", msg.payload)
            return
        value = parse(topic.kind, msg.payload)
        if isinstance(value, Dropped):
            self._drop(msg.topic, topic.kind, value)
            return
        match topic.kind, value:
            case "status", bool():
                self._set_online(value)
            case "info", ListenerInfo():
                if value.id != self.listener_id:
                    self._drop(msg.topic, "info", Dropped(f"it is listener {value.id!r}'s"))
                    return
                self._set_info(value)
            case "event_state", bool() if topic.event in self.events:
                self.events[topic.event].on = value
            case "event_state", bool() if topic.event and len(self._early_states) < EARLY_STATES:
                self._early_states[topic.event] = value
                return
            case "event_enabled", bool() if topic.event in self.events:
                self.events[topic.event].enabled_report = value
            case "event_enabled", bool() if topic.event and len(self._early_enabled) < EARLY_STATES:
                self._early_enabled[topic.event] = value
                return
            case "active", Active():
                self.active = value.events
            case "transition", Transition() if topic.event in self.events:
                if value.event != topic.event:
                    self._drop(
                        msg.topic, topic.kind, Dropped(f"transition of event {value.event!r}")
                    )
                    return
                if not self._set_transition(value):
                    return
            case "scores", Scores():
                self.scores = value
            case "listening", bool():
                self.listening_state = value
            case _:
                self._drop(
                    msg.topic, topic.kind, Dropped(f"event {topic.event!r} is not configured")
                )
                return
        # Top sound and level describe what is heard now: nothing while paused or offline.
        if self.listening is False or self.online is False:
            self.scores = None
        for update in list(self._update_callbacks):
            update()

    def _drop(self, topic: str, kind: Kind, dropped: Dropped) -> None:
        self.dropped += 1
        if dropped.version is not None:
            if self._unknown_version is None:
                _LOGGER.warning(
                    "Listener %s speaks a protocol this integration does not know (%s); its "
                    "messages are ignored until the integration is updated",
                    self.listener_id,
                    dropped.reason,
                )
            if self._unknown_version != dropped.version:
                self._unknown_version = dropped.version
                self._raise_issue(ISSUE_PROTOCOL, version=str(dropped.version))
        elif kind == "info" and not self._info_warned:
            # Once until a valid info comes: a listener re-publishes its info every few seconds.
            self._info_warned = True
            _LOGGER.warning(
                "Ignored the info message of SAT Audio listener %s on %s (%s); its device and "
                "entities stay as the last valid info made them",
                self.listener_id,
                topic,
                dropped.reason,
            )
        _LOGGER.debug("Dropped a message on %s: %s", topic, dropped.reason)

    def _raise_issue(self, issue: str, *, fixable: bool = False, **placeholders: str) -> None:
        ir.async_create_issue(
            self.hass,
            DOMAIN,
            self.issue_id(issue),
            is_fixable=fixable,
            severity=ir.IssueSeverity.WARNING,
            translation_key=issue,
            translation_placeholders={"name": self.name, **placeholders},
            data={"entry_id": self.entry.entry_id},
        )

    def _set_online(self, online: bool) -> None:
        if online and self.online is False:
            _LOGGER.info("SAT Audio listener %s is back online", self.listener_id)
        elif not online and self.online is not False:
            _LOGGER.info("SAT Audio listener %s is offline", self.listener_id)
        self.online = online
        if online:
            if self._offline_timer is not None:
                self._offline_timer()
                self._offline_timer = None
            ir.async_delete_issue(self.hass, DOMAIN, self.issue_id(ISSUE_OFFLINE))
        else:
            self._watch_offline()

    def _watch_offline(self) -> None:
        """Raise the offline issue unless the listener is online within OFFLINE_ISSUE_AFTER."""
        if self._offline_timer is None:
            self._offline_timer = async_call_later(
                self.hass, OFFLINE_ISSUE_AFTER, self._offline_too_long
            )

    @callback
    def _offline_too_long(self, _now: datetime) -> None:
        self._offline_timer = None
        if not self.online:
            minutes = int(OFFLINE_ISSUE_AFTER.total_seconds() // 60)
            self._raise_issue(ISSUE_OFFLINE, fixable=True, minutes=str(minutes))

    def _set_info(self, info: ListenerInfo) -> None:
        self.info = info
        self._info_warned = False
        if self._unknown_version is not None:
            self._unknown_version = None
            ir.async_delete_issue(self.hass, DOMAIN, self.issue_id(ISSUE_PROTOCOL))
        if failed := [source for source in info.sources if source.state == "failed"]:
            self._raise_issue(
                ISSUE_SOURCE_FAILED,
                sources=", ".join(f"{s.name} ({s.error})" if s.error else s.name for s in failed),
            )
        else:
            ir.async_delete_issue(self.hass, DOMAIN, self.issue_id(ISSUE_SOURCE_FAILED))
        # The entities of an event the listener no longer has take themselves away, and keep
        # their registry entries (names, areas, customisations) until the user deletes them.
        keys = {event.key for event in info.events}
        for key in self.events.keys() - keys:
            del self.events[key]
        for event in info.events:
            if key_state := self.events.get(event.key):
                key_state.info = event
            else:
                self.events[event.key] = EventState(event, self._early_states.get(event.key))
        for key, enabled in self._early_enabled.items():
            if key_state := self.events.get(key):
                key_state.enabled_report = enabled
        self._early_states.clear()
        self._early_enabled.clear()
        dr.async_get(self.hass).async_update_device(
            self.device_id,
            name=info.name,
            model=info.model,
            sw_version=info.version,
        )
        for update in list(self._info_callbacks):
            update()

    def _set_transition(self, transition: Transition) -> bool:
        """Record a start or end; False if it is a redelivery already seen."""
        seen = (transition.id, transition.type)
        if seen in self._seen:
            _LOGGER.debug("Dropped a repeated %s of episode %s", transition.type, transition.id)
            return False
        self._seen[seen] = None
        if len(self._seen) > SEEN_TRANSITIONS:
            self._seen.popitem(last=False)
        state = self.events[transition.event]
        state.on = transition.type == "start"
        state.last = transition
        if transition.clip:
            _remember(self._clip_episodes, transition.clip, transition.id)
        if transition.type == "start":
            self.last_detection = Detection(transition.start, state.info.name, transition.label)
        for update in list(self._transition_callbacks):
            update(transition)
        self._fire(
            trigger_name(transition.type),
            state.info.name,
            transition.event,
            transition_data(transition),
        )
        return True

    def _clip_received(self, name: str, payload: bytes | bytearray | str) -> None:
        """Check a clip, then save it in the background: the disk is not the event loop's."""
        clip = parse_clip(name, payload)
        if isinstance(clip, Dropped):
            self.dropped += 1
            _LOGGER.warning(
                "Ignored a clip from SAT Audio listener %s: %s", self.listener_id, clip.reason
            )
            return
        if clip.event not in self.events:
            self._drop(f"{self.base}/clip/{name}", "clip", Dropped("its event is not configured"))
            return
        if clip.name in self._seen_clips:
            _LOGGER.debug("Dropped a repeated clip %s", clip.name)
            return
        _remember(self._seen_clips, clip.name, None)
        folder = media_folder(self.hass, self.listener_id)
        if folder is None:
            _LOGGER.warning(
                "Ignored clip %s of SAT Audio listener %s: Home Assistant has no media folder",
                clip.name,
                self.listener_id,
            )
            return
        self.entry.async_create_background_task(
            self.hass, self._save_clip(clip, folder), f"{DOMAIN} clip {clip.name}"
        )

    async def _save_clip(self, clip: Clip, folder: MediaFolder) -> None:
        retention = (self.info.clips if self.info else None) or DEFAULT_RETENTION
        try:
            written = await self.hass.async_add_executor_job(
                write_clip, folder.path, clip, retention
            )
        except OSError as err:
            _LOGGER.warning(
                "Could not save clip %s of SAT Audio listener %s in %s: %s",
                clip.name,
                self.listener_id,
                folder.path,
                err,
            )
            return
        if not written or (state := self.events.get(clip.event)) is None:
            return
        saved = SavedClip(
            clip.name,
            clip.event,
            self._clip_episodes.get(clip.name, clip.episode),
            folder.media_content_id(clip.name),
            folder.url(clip.name),
        )
        state.last_clip = saved
        for clip_saved in list(self._clip_callbacks):
            clip_saved(saved)
        self._fire(TRIGGER_CLIP, state.info.name, clip.event, saved.data())
        for update in list(self._update_callbacks):
            update()

    def _fire(self, trigger: str, name: str, key: str, data: dict[str, Any]) -> None:
        """Fire the bus event that device triggers and the logbook read."""
        event = {
            CONF_DEVICE_ID: self.device_id,
            CONF_TYPE: trigger,
            "subtype": key,
            "name": name,
            **data,
        }
        # The event's binary sensor: the logbook files the line under it (and its card shows it).
        unique_id = event_unique_id(self.listener_id, key)
        registry = er.async_get(self.hass)
        if sensor := registry.async_get_entity_id(Platform.BINARY_SENSOR, DOMAIN, unique_id):
            event[ATTR_ENTITY_ID] = sensor
        self.hass.bus.async_fire(EVENT_SOUND, event)

    def diagnostics(self) -> dict[str, Any]:
        """Return the state a bug report needs (redacted by the caller)."""
        return {
            "base_topic": self.base,
            "online": self.online,
            "listening": self.listening,
            "dropped_messages": self.dropped,
            "info": _as_dict(self.info),
            "active": _as_dict(self.active),
            "events": {
                key: {
                    "on": state.on,
                    "enabled": state.enabled,
                    "last": _as_dict(state.last),
                    "last_clip": _as_dict(state.last_clip),
                }
                for key, state in self.events.items()
            },
            "scores": _as_dict(self.scores),
        }


def transition_data(transition: Transition) -> dict[str, Any]:
    """Return a transition as event data: JSON-friendly, times as ISO strings."""
    return {
        "id": transition.id,
        "event": transition.event,
        "source": transition.source,
        "label": transition.label,
        "score": transition.score,
        "peak": transition.peak,
        "start": transition.start.isoformat(),
        "end": transition.end.isoformat() if transition.end else None,
        "duration_s": transition.duration_s,
        "clip": transition.clip,
        "reason": transition.reason,
    }


def _as_dict(value: Any) -> Any:
    """Turn the protocol's dataclasses into plain data for diagnostics."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        return {key: _as_dict(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [_as_dict(item) for item in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return {name: _as_dict(getattr(value, name)) for name in value.__slots__}


def _remember[T](memory: OrderedDict[str, T], key: str, value: T) -> None:
    """Add to a bounded memory, forgetting the oldest beyond SEEN_CLIPS."""
    memory[key] = value
    if len(memory) > SEEN_CLIPS:
        memory.popitem(last=False)


def _add[T](callbacks: list[T], update: T) -> CALLBACK_TYPE:
    callbacks.append(update)

    @callback
    def remove() -> None:
        callbacks.remove(update)

    return remove
