"""MQTT publisher (paho-mqtt 2.x) that loses no transition short of its queue bound.

Delivery rules (docs/protocol.md, "Delivery"):
- Retained topics (status, info, listening, event states, discovery) keep only their latest value
  here and are all re-published after every connect, so the broker always ends on the truth.
- Transitions are QoS 1. While the connection is down they wait in a bounded queue (oldest dropped
  past `mqtt.queue_size`, counted and logged) and go out in order after the reconnect.
- After a reconnect paho first re-sends what was in flight when the link died; our queue and the
  retained values follow only once those are acknowledged, so an old value never lands last.
- Scores and levels are QoS 0 and only sent while connected: they are stale a second later.

MQTT 5, so that the broker learns the largest packet the listener takes (MAX_PACKET_BYTES) and
keeps anything larger to itself: paho reads a whole message into memory before anyone can look at
its size.
"""

import json
import logging
import queue
import threading
import time
from collections import deque
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from sat_audio.config import MqttConfig
from sat_audio.errors import SatAudioError
from sat_audio.publish.base import EnabledCallback, ListeningCallback, Publisher
from sat_audio.publish.protocol import (
    OFF,
    OFFLINE,
    ON,
    ONLINE,
    Payload,
    Topics,
    discovery_filter,
    level_payload,
    parse_switch,
    to_json,
)
from sat_audio.sources.base import RateLimitedLog

log = logging.getLogger(__name__)

RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30
"""Reconnect backoff: doubles from the minimum up to this cap."""
MAX_PACKET_BYTES = 64 * 1024
"""The largest message the listener takes: its commands are a few bytes, discovery configs about
one kilobyte. The broker is told (MQTT 5's Maximum Packet Size) and drops larger ones; a broker
that ignores it still gets them dropped here, before they are read."""
PACKET_OVERHEAD = 16
"""Bytes a PUBLISH packet adds to its payload and topic, at most: fixed header (5), topic length
(2), packet id (2), properties (1), rounded up."""
SESSION_TAKEN_OVER = 142
"""MQTT 5's reason code when the broker hands the connection to another client with our id."""
TAKEOVER_S = 10.0
TAKEOVER_REPEATS = 3
"""Connections the broker closes within TAKEOVER_S of connecting, this many in a row, each made
at the first attempt, say that another client uses our id: Mosquitto 2.0 closes them without a
reason code. (A broker that restarts refuses an attempt or more in between.)"""


class MqttPublisher(Publisher):
    """Publishes one listener's topics to one broker, reconnecting in the background."""

    def __init__(
        self, cfg: MqttConfig, topics: Topics, discovery: dict[str, Payload] | None = None
    ) -> None:
        self._cfg = cfg
        self._topics = topics
        self._discovery = {t: to_json(p) for t, p in (discovery or {}).items()}
        self._discovery_filter = discovery_filter(cfg.discovery_prefix, topics.listener_id)
        self._lock = threading.Lock()
        self._retained: dict[str, str] = {topics.status: ONLINE, **self._discovery}
        self._queue: deque[tuple[str, str]] = deque()
        self._dropped = 0
        self._handed: list[mqtt.MQTTMessageInfo] = []  # QoS 1 messages not yet acknowledged
        self._cleanup: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._connected = False
        self._generation = 0  # successful connects so far
        self._flushed = 0  # the generation whose retained values and queue went out
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._restored = False
        self._problem: str | None = None
        self._connected_at: float | None = None  # when a first-attempt connection was made
        self._retried = False  # a connection attempt failed since the last one that worked
        self._quick_drops = 0  # connections in a row the broker closed within TAKEOVER_S
        self._oversized = RateLimitedLog(60.0, log)
        self._on_listening: ListeningCallback = lambda on: None
        self._on_enabled: EnabledCallback = lambda key, on: None
        self._max_packet: int | None = None  # the broker's Maximum Packet Size (CONNACK)
        self._flusher = threading.Thread(target=self._flush_loop, name="mqtt-flush", daemon=True)
        self._client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        cfg = self._cfg
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=mqtt.MQTTv5,
        )
        if log.isEnabledFor(logging.DEBUG):
            # paho's own lines only when debugging: at other levels it repeats an error line per
            # reconnect attempt, and our own log says what matters once.
            client.enable_logger(logging.getLogger("paho.mqtt"))
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password)
        if cfg.tls is not None:
            try:
                client.tls_set(ca_certs=cfg.tls.ca, certfile=cfg.tls.cert, keyfile=cfg.tls.key)
            except (OSError, ValueError) as err:
                raise SatAudioError(f"mqtt.tls: cannot load the certificates: {err}") from None
            client.tls_insecure_set(cfg.tls.insecure)
        client.will_set(self._topics.status, OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(min_delay=RECONNECT_MIN_S, max_delay=RECONNECT_MAX_S)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    @property
    def _where(self) -> str:
        return f"{self._cfg.host}:{self._cfg.port}"

    @property
    def _client_id(self) -> str:
        return self._cfg.client_id or f"sat-audio-{self._topics.listener_id}"

    def _connect(self, connect: Any) -> None:
        """client.connect or connect_async: a clean start (as a clean session before), and the
        largest packet the listener takes. paho's reconnects keep both."""
        properties = Properties(PacketTypes.CONNECT)
        properties.MaximumPacketSize = MAX_PACKET_BYTES
        connect(
            self._cfg.host,
            self._cfg.port,
            self._cfg.keepalive,
            clean_start=True,
            properties=properties,
        )

    # -- the listener's side ------------------------------------------------------------------

    def start(self, on_listening: ListeningCallback) -> None:
        self._on_listening = on_listening
        self._flusher.start()
        try:
            self._connect(self._client.connect)
        except (OSError, ValueError) as err:
            self._report(
                "unreachable", f"cannot connect to the MQTT broker at {self._where}: {err}"
            )
            # paho's loop retries the first connection too, with the same backoff.
            self._connect(self._client.connect_async)
        self._client.loop_start()

    def on_enabled(self, callback: EnabledCallback) -> None:
        self._on_enabled = callback

    def info(self, payload: Payload) -> None:
        self._set_retained(self._topics.info, to_json(payload))

    def enabled(self, key: str, on: bool) -> None:
        self._set_retained(self._topics.enabled(key), ON if on else OFF)

    def active(self, payload: Payload) -> None:
        self._set_retained(self._topics.active, to_json(payload))

    def clip(self, name: str, data: bytes) -> str | None:
        """QoS 1, only while connected: a clip is large, and it stays on disk anyway. A packet
        over the broker's Maximum Packet Size would make the broker close the connection."""
        topic = self._topics.clip(name)
        with self._lock:
            if not self._ready():
                return f"not connected to the MQTT broker at {self._where}"
            size = len(data) + len(topic.encode()) + PACKET_OVERHEAD
            if self._max_packet is not None and size > self._max_packet:
                return f"over the broker's Maximum Packet Size of {self._max_packet} bytes"
            self._send(topic, data, qos=1, retain=False)
        return None

    def listening(self, on: bool) -> None:
        self._set_retained(self._topics.listening, ON if on else OFF)

    def state(self, key: str, on: bool) -> None:
        self._set_retained(self._topics.state(key), ON if on else OFF)

    def transition(self, key: str, payload: Payload) -> None:
        topic, text = self._topics.event(key), to_json(payload)
        with self._lock:
            if self._ready():
                self._send(topic, text, qos=1, retain=False)
                return
            self._queue.append((topic, text))
            if len(self._queue) > self._cfg.queue_size:
                lost_topic, lost = self._queue.popleft()
                self._dropped += 1
                log.warning(
                    "MQTT queue full (%d transitions): dropped %s %s; %d dropped so far",
                    self._cfg.queue_size,
                    lost_topic,
                    json.loads(lost).get("id"),
                    self._dropped,
                )

    def scores(self, payload: Payload) -> None:
        self._send_if_ready(self._topics.scores, to_json(payload))

    def level(self, source: str, level_dbfs: float) -> None:
        self._send_if_ready(self._topics.level(source), level_payload(level_dbfs))

    def close(self, timeout: float) -> bool:
        """Publish `offline`, wait up to `timeout` s for every message's PUBACK, disconnect."""
        self._set_retained(self._topics.status, OFFLINE)
        deadline = time.monotonic() + timeout
        done = False
        while True:
            with self._lock:
                unacked = self._unacked()
                done = self._ready() and not self._queue and not unacked
                left = len(self._queue) + unacked
            if done or time.monotonic() >= deadline:
                break
            self._wake.set()
            time.sleep(0.02)
        if not done:
            log.warning(
                "shutting down with %d MQTT messages not acknowledged by %s", left, self._where
            )
        self._stopping.set()
        self._wake.set()
        if self._flusher.is_alive():
            self._flusher.join(timeout=2.0)
        self._client.disconnect()
        self._client.loop_stop()
        return done

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def queued(self) -> int:
        return len(self._queue)

    # -- delivery -----------------------------------------------------------------------------

    def _ready(self) -> bool:
        """Connected, and this connection's catch-up (retained values, queue) is done."""
        return self._connected and self._flushed == self._generation

    def _send(self, topic: str, text: str | bytes, *, qos: int, retain: bool) -> None:
        """Hand a message to paho (lock held). QoS 1 ones are tracked until their PUBACK; paho
        keeps them across a reconnect and re-sends them itself."""
        info = self._client.publish(topic, text, qos=qos, retain=retain)
        if qos:
            self._handed.append(info)

    def _send_if_ready(self, topic: str, text: str) -> None:
        with self._lock:
            if self._ready():
                self._send(topic, text, qos=0, retain=False)

    def _set_retained(self, topic: str, text: str) -> None:
        with self._lock:
            if self._retained.get(topic) == text:
                return  # already sent, or goes out with every retained value at the next connect
            self._retained[topic] = text
            if self._ready():
                self._send(topic, text, qos=1, retain=True)

    def _unacked(self) -> int:
        """QoS 1 messages paho still holds (lock held), forgotten once acknowledged. paho marks
        each message's own info at its PUBACK: message ids are 16 bits and QoS 0 messages use
        them too, so after a day of scores an id says nothing about which message was meant."""
        self._handed = [info for info in self._handed if not info.is_published()]
        return len(self._handed)

    def _flush_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(0.25)
            self._wake.clear()
            with self._lock:
                generation = self._generation
                unacked = self._unacked()  # at every ack: what was acknowledged is forgotten
                if self._connected and self._flushed != generation and not unacked:
                    self._catch_up()
                    self._flushed = generation
                while self._ready():
                    try:
                        topic = self._cleanup.get_nowait()
                    except queue.Empty:
                        break
                    if topic in self._retained:
                        continue  # published again since (an event state at start-up)
                    self._send(topic, "", qos=1, retain=True)
                    log.info("removed %s, which this listener no longer publishes", topic)

    def _catch_up(self) -> None:
        """After a connect: queued transitions in order, then every retained topic's value."""
        if self._queue:
            log.info("delivering %d queued transitions", len(self._queue))
        while self._queue:
            topic, text = self._queue.popleft()
            self._send(topic, text, qos=1, retain=False)
        for topic, text in self._retained.items():
            self._send(topic, text, qos=1, retain=True)

    def _report(self, kind: str, problem: str) -> None:
        """Log a connection problem at warning once, repeats of its kind at debug."""
        if kind != self._problem:
            log.warning("%s; retrying with backoff up to %d s", problem, RECONNECT_MAX_S)
            self._problem = kind
        else:
            log.debug(problem)

    # -- paho's thread: no lock of ours is taken here (paho holds its own while calling) --------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            self._retried = True
            self._report(
                f"refused {reason}",
                f"the MQTT broker at {self._where} refused the connection: {reason}",
            )
            return
        log.info("connected to the MQTT broker at %s", self._where)
        self._problem = None
        self._connected_at = None if self._retried else time.monotonic()
        self._retried = False
        self._max_packet = getattr(properties, "MaximumPacketSize", None)
        client.subscribe(
            [
                (self._topics.listening_set, 1),
                (self._topics.listening, 1),
                (self._discovery_filter, 1),
                # Retained states of events no longer configured are cleared like discovery.
                (self._topics.state("+"), 1),
                (self._topics.enabled("+"), 1),
                (self._topics.enabled_set_filter, 1),
            ]
        )
        self._generation += 1
        self._connected = True
        self._wake.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._retried = True
        self._report("unreachable", f"cannot connect to the MQTT broker at {self._where}")

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self._connected = False
        self._wake.set()
        if self._stopping.is_set():
            return
        at, self._connected_at = self._connected_at, None
        quick = at is not None and time.monotonic() - at < TAKEOVER_S
        self._quick_drops = self._quick_drops + 1 if quick else 0
        if reason == SESSION_TAKEN_OVER or self._quick_drops == TAKEOVER_REPEATS:
            cause = (
                ""
                if reason == SESSION_TAKEN_OVER
                else f"the broker closed the last {TAKEOVER_REPEATS} connections right after "
                "they were made; likely "
            )
            log.warning(
                "%sanother client with id %s took over the connection; is a second listener "
                "running with listener id %s?",
                cause,
                self._client_id,
                self._topics.listener_id,
            )
        elif self._quick_drops > TAKEOVER_REPEATS:
            log.debug("lost the MQTT broker at %s (%s) again", self._where, reason)
        else:
            log.warning("lost the MQTT broker at %s (%s); reconnecting", self._where, reason)

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any
    ) -> None:
        self._wake.set()  # an acknowledgement may complete a reconnect's catch-up

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if len(msg.payload) > MAX_PACKET_BYTES:
            self._oversized(
                "dropped a message of %d bytes on %s: too large (the listener takes at most %d)",
                len(msg.payload),
                msg.topic,
                MAX_PACKET_BYTES,
            )
            return
        topic = msg.topic
        if topic == self._topics.listening_set:
            on = parse_switch(msg.payload)
            if on is None:
                log.warning("ignoring %s %r: expected ON or OFF", topic, msg.payload[:20])
            else:
                self._on_listening(on)
        elif topic == self._topics.listening:
            # Only a value retained from before this process started is a state to restore.
            if msg.retain and not self._restored and self._generation == 1:
                self._restored = True
                if parse_switch(msg.payload) is False:
                    log.info("listening was switched off before this start; staying paused")
                    self._on_listening(False)
        elif (key := self._topics.enabled_key(topic)) is not None:
            on = parse_switch(msg.payload)
            if on is None:
                if msg.payload:  # an empty retained payload clears the command: not a problem
                    log.warning("ignoring %s %r: expected ON or OFF", topic, msg.payload[:20])
            else:
                self._on_enabled(key, on)
        elif msg.payload and topic not in self._retained:
            self._cleanup.put(topic)
            self._wake.set()
