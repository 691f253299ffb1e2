"""The MQTT publisher against a real mosquitto: retained topics, queueing, TLS, commands."""

import json
import logging
import signal
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from sat_audio.config import MqttConfig, TlsConfig
from sat_audio.publish.mqtt import MqttPublisher
from sat_audio.publish.protocol import Topics, discovery_configs, transition_payload
from tests.broker import Broker, Subscriber
from tests.waiting import PATIENCE_S, returns, wait_until

pytestmark = pytest.mark.slow

TOPICS = Topics("sat_audio", "test")


def _transition(n: int, kind: str = "start") -> dict:
    return transition_payload(
        transition_id=f"id{n:04d}",
        kind=kind,
        event="dog",
        source="mic",
        label="Bark",
        score=0.9,
        peak=0.9,
        start_wall=time.time(),
        end_wall=None,
        duration_s=0.0,
    )


def _publisher(broker: Broker, **kw) -> MqttPublisher:
    return MqttPublisher(MqttConfig(host=broker.host, port=broker.port, **kw), TOPICS)


def _ids(sub: Subscriber, topic: str) -> list[str]:
    return [m.json()["id"] for m in sub.on(topic)]


def test_retained_topics_and_transitions_reach_the_broker(broker: Broker) -> None:
    live = Subscriber(broker, ("sat_audio/test/#",), client_id="live").start()
    pub = _publisher(broker)
    pub.start(lambda on: None)
    pub.info({"v": 1, "id": "test"})
    pub.listening(True)
    pub.state("dog", False)
    pub.transition("dog", _transition(1))
    pub.state("dog", True)
    live.wait_for(lambda: live.on(TOPICS.event("dog")), "the transition")
    live.wait_text(TOPICS.state("dog"), "ON")
    live.stop()

    # A late subscriber still learns the listener's whole state from retained messages.
    late = Subscriber(broker, ("sat_audio/test/#",), client_id="late").start()
    late.wait_text(TOPICS.status, "online")
    late.wait_text(TOPICS.state("dog"), "ON")
    late.wait_text(TOPICS.listening, "ON")
    assert late.last(TOPICS.info).json() == {"v": 1, "id": "test"}
    assert all(m.retain for m in late.messages)
    assert late.on(TOPICS.event("dog")) == []  # transitions are not retained

    assert pub.close(5.0) is True
    late.wait_text(TOPICS.status, "offline")
    late.stop()


def test_broker_down_at_start_then_everything_delivered_in_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = Broker(tmp_path / "b", persistence=True)
    broker.start()
    # A subscriber with a persistent session: the broker queues for it while it is away.
    sub = Subscriber(broker, ("sat_audio/test/#",), persistent=True).start()
    broker.stop()
    pub = _publisher(broker, queue_size=10)
    with caplog.at_level(logging.WARNING):
        pub.start(lambda on: None)
        for n in range(4):
            pub.transition("dog", _transition(n))
            pub.state("dog", n % 2 == 0)
        assert pub.queued == 4
        assert "cannot connect to the MQTT broker" in caplog.text
    broker.start()
    sub.wait_for(lambda: len(sub.on(TOPICS.event("dog"))) >= 4, "4 transitions")
    assert _ids(sub, TOPICS.event("dog")) == [f"id{n:04d}" for n in range(4)]
    sub.wait_text(TOPICS.state("dog"), "OFF")  # only the latest state matters
    assert pub.close(5.0) is True
    sub.stop()
    broker.stop()


def test_queue_bound_drops_oldest_and_counts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = Broker(tmp_path / "b")  # never started
    pub = _publisher(broker, queue_size=3)
    with caplog.at_level(logging.WARNING):
        pub.start(lambda on: None)
        for n in range(5):
            pub.transition("dog", _transition(n))
        assert (pub.dropped, pub.queued) == (2, 3)
        assert "dropped sat_audio/test/event/dog id0000" in caplog.text
        assert "dropped sat_audio/test/event/dog id0001" in caplog.text
        assert returns(lambda: pub.close(0.5), "close() with no broker") is False
    assert "3 MQTT messages not acknowledged" in caplog.text


def test_password_and_tls_with_client_certificate(
    tmp_path: Path, mqtt_certs, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "pw-7f3a-do-not-log"
    broker = Broker(
        tmp_path / "b", users={"sat": secret}, certs=mqtt_certs, require_certificate=True
    )
    broker.start()
    try:
        sub = Subscriber(
            broker, ("sat_audio/test/#",), username="sat", password=secret, certs=mqtt_certs
        ).start()
        tls = TlsConfig(
            ca=str(mqtt_certs.ca), cert=str(mqtt_certs.client_cert), key=str(mqtt_certs.client_key)
        )
        with caplog.at_level(logging.DEBUG):
            wrong = _publisher(broker, username="sat", password="wrong-" + secret, tls=tls)
            wrong.start(lambda on: None)
            time.sleep(1.5)
            wrong.close(0.2)
            assert "refused the connection: Not authorized" in caplog.text
            pub = _publisher(broker, username="sat", password=secret, tls=tls)
            pub.start(lambda on: None)
            pub.transition("dog", _transition(7))
            sub.wait_for(lambda: _ids(sub, TOPICS.event("dog")) == ["id0007"], "id0007")
            assert pub.close(5.0) is True
        assert "connected to the MQTT broker" in caplog.text
        assert secret not in caplog.text
        assert secret not in broker.log()
        sub.stop()
    finally:
        broker.stop()


def test_tls_rejects_an_unknown_server_certificate(
    tmp_path: Path, mqtt_certs, caplog: pytest.LogCaptureFixture
) -> None:
    broker = Broker(tmp_path / "b", certs=mqtt_certs)
    broker.start()
    try:
        pub = _publisher(broker, tls=TlsConfig())  # system CAs do not know the test CA
        with caplog.at_level(logging.WARNING):
            pub.start(lambda on: None)
            assert pub.close(0.5) is False
        assert "certificate verify failed" in caplog.text
    finally:
        broker.stop()


def test_privacy_switch_commands_and_restore(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    got: list[bool] = []
    seen = threading.Event()

    def on_listening(on: bool) -> None:
        got.append(on)
        seen.set()

    pub = _publisher(broker)
    pub.start(on_listening)
    ctl = Subscriber(broker, ("sat_audio/test/#",), client_id="ctl").start()
    ctl.wait_text(TOPICS.status, "online")
    with caplog.at_level(logging.WARNING):
        for text in ("off", " On ", "maybe", "OFF"):
            ctl.client.publish(TOPICS.listening_set, text, qos=1)
        wait_until(lambda: len(got) >= 3, "three listening commands")
    assert got == [False, True, False]
    assert "ignoring sat_audio/test/listening/set b'maybe'" in caplog.text
    pub.listening(False)
    ctl.wait_text(TOPICS.listening, "OFF")
    pub.close(5.0)

    # The retained OFF survives a restart of the listener: the next one starts paused.
    restored: list[bool] = []
    again = _publisher(broker)
    again.start(restored.append)
    ctl.wait_for(lambda: restored == [False], "the restored switch")
    again.close(5.0)
    ctl.stop()


def test_discovery_published_then_removed(broker: Broker) -> None:
    from sat_audio.publish.protocol import PublishedEvent

    events = [PublishedEvent("dog", "mic", "Dog", ("Bark",), 0.5, 0.3)]
    configs = discovery_configs(
        TOPICS, discovery_prefix="homeassistant", name="Test", model="SAT_T_2s",
        events=events, sources=["mic"],
    )  # fmt: skip
    sub = Subscriber(broker, ("homeassistant/#",), client_id="ha").start()
    pub = MqttPublisher(MqttConfig(host=broker.host, port=broker.port), TOPICS, configs)
    pub.start(lambda on: None)
    for topic, payload in configs.items():
        sub.wait_for(lambda t=topic: sub.last(t), topic)
        assert sub.last(topic).json() == payload
    assert pub.close(5.0)

    # Discovery off: every config this listener left on the broker is cleared.
    off = _publisher(broker)
    off.start(lambda on: None)
    for topic in configs:
        sub.wait_for(lambda t=topic: sub.last(t).payload == b"", f"{topic} cleared")
    assert off.close(5.0)
    sub.stop()
    late = Subscriber(broker, ("homeassistant/#",), client_id="ha2").start()
    time.sleep(0.5)
    assert late.messages == []  # nothing retained any more
    late.stop()


def test_scores_and_level_are_sent_only_while_connected(broker: Broker) -> None:
    pub = _publisher(broker)
    sub = Subscriber(broker, ("sat_audio/test/#",), client_id="s").start()
    pub.start(lambda on: None)
    sub.wait_text(TOPICS.status, "online")
    pub.level("mic", -31.25)
    pub.scores({"v": 1, "top": []})
    sub.wait_for(lambda: sub.on(TOPICS.level("mic")), "level")
    sub.wait_for(lambda: sub.on(TOPICS.scores), "scores")
    assert sub.last(TOPICS.level("mic")).text == "-31.2"
    assert json.loads(sub.last(TOPICS.scores).payload) == {"v": 1, "top": []}
    pub.close(5.0)
    sub.stop()


def test_acknowledged_messages_are_forgotten_while_connected(broker: Broker) -> None:
    """Each QoS 1 message is tracked until its PUBACK and no longer: a listener that stays
    connected for months holds none of them (each held 60-100 bytes until the next reconnect)."""
    sub = Subscriber(broker, ("sat_audio/test/#",), client_id="s").start()
    pub = _publisher(broker)
    pub.start(lambda on: None)
    sub.wait_text(TOPICS.status, "online")
    for n in range(300):
        pub.transition("dog", _transition(n))
        pub.state("dog", n % 2 == 0)
    sub.wait_for(lambda: len(sub.on(TOPICS.event("dog"))) == 300, "300 transitions")
    # the bookkeeping itself
    wait_until(lambda: not pub._handed, "no message kept")
    assert pub.close(5.0) is True
    sub.stop()


def test_qos0_ids_never_acknowledge_a_qos1_message_after_the_id_wraps(broker: Broker) -> None:
    """Message ids are 16 bits: 66 000 levels (18 hours of 1 Hz scores) wrap them. A QoS 1
    message that reuses an old level's id is done only when the broker acknowledges it."""
    sub = Subscriber(broker, (TOPICS.info,), client_id="s").start()
    pub = _publisher(broker)
    pub.start(lambda on: None)
    pub.info({"v": 1, "n": 0})
    sub.wait_for(lambda: sub.on(TOPICS.info), "the first info")
    for _ in range(66_000):
        pub.level("mic", -50.0)
    pub.info({"v": 1, "n": 1})  # after every level on the same connection
    sub.wait_for(lambda: sub.last(TOPICS.info).json()["n"] == 1, "the second info")
    assert broker.proc is not None
    broker.proc.send_signal(signal.SIGSTOP)  # the broker acknowledges nothing from here on
    try:
        pub.transition("dog", _transition(1))
        assert pub.close(1.0) is False
    finally:
        broker.proc.send_signal(signal.SIGCONT)
        sub.stop()


def test_an_oversized_message_never_reaches_the_listener(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    """The broker is told the largest packet the listener takes: an 8 MB command is dropped
    there (a listener given 250 MB grew to 1.25 GB), and the next command still works."""
    got: list[bool] = []
    pub = _publisher(broker)
    ctl = Subscriber(broker, (TOPICS.status,), client_id="ctl").start()
    with caplog.at_level(logging.DEBUG, logger="sat_audio.publish.mqtt"):
        pub.start(got.append)
        ctl.wait_text(TOPICS.status, "online")
        for command in (b"O" * (8 << 20), b"OFF"):
            ctl.client.publish(TOPICS.listening_set, command, qos=1).wait_for_publish(PATIENCE_S)
        ctl.wait_for(lambda: got == [False], "the OFF command")
    pub.close(5.0)
    ctl.stop()
    assert "Dropping too large outgoing PUBLISH" in broker.log()
    assert "b'OOOO" not in caplog.text


def test_an_oversized_payload_is_dropped_with_a_rate_limited_warning(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    """A broker that ignores the packet limit: the payload is dropped before it is read."""
    got: list[bool] = []
    pub = _publisher(broker)
    pub.start(got.append)
    big = mqtt.MQTTMessage(topic=TOPICS.listening_set.encode())
    big.payload = b"OFF" + b" " * (1 << 20)  # a valid command, padded past any sane size
    with caplog.at_level(logging.WARNING, logger="sat_audio.publish.mqtt"):
        for _ in range(3):
            pub._on_message(pub._client, None, big)
    pub.close(1.0)
    assert got == []
    dropped = [r.getMessage() for r in caplog.records if "too large" in r.getMessage()]
    assert len(dropped) == 1, dropped
    assert f"dropped a message of 1048579 bytes on {TOPICS.listening_set}" in dropped[0]


def test_a_second_listener_with_the_same_id_is_named(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    """Two listeners with one id take the connection from each other: the log says so."""
    sub = Subscriber(broker, (TOPICS.status,), client_id="s").start()
    first, second = _publisher(broker), _publisher(broker)
    with caplog.at_level(logging.WARNING, logger="sat_audio.publish.mqtt"):
        first.start(lambda on: None)
        sub.wait_text(TOPICS.status, "online")
        second.start(lambda on: None)
        sub.wait_for(lambda: "a second listener" in caplog.text, "the takeover warning")
    first.close(0.5)
    second.close(0.5)
    sub.stop()
    assert (
        "another client with id sat-audio-test took over the connection; is a second listener "
        "running with listener id test?"
    ) in caplog.text
    lost = [r for r in caplog.records if "lost the MQTT broker" in r.getMessage()]
    assert len(lost) <= 4, [r.getMessage() for r in lost]  # not one warning per takeover


def test_retained_state_of_a_removed_event_is_cleared(broker: Broker) -> None:
    """A restart without an event clears its retained state; the events it has keep theirs."""
    sub = Subscriber(broker, (TOPICS.state("+"),), client_id="ha").start()
    before = _publisher(broker)
    before.start(lambda on: None)
    before.state("dog", True)
    before.state("cat", False)
    sub.wait_text(TOPICS.state("cat"), "OFF")
    assert before.close(5.0)

    after = _publisher(broker)
    after.start(lambda on: None)
    after.state("dog", False)
    sub.wait_for(lambda: sub.last(TOPICS.state("cat")).payload == b"", "cat's state cleared")
    sub.wait_text(TOPICS.state("dog"), "OFF")
    assert after.close(5.0)
    sub.stop()
    late = Subscriber(broker, (TOPICS.state("+"),), client_id="late").start()
    late.wait_text(TOPICS.state("dog"), "OFF")
    assert late.on(TOPICS.state("cat")) == []
    late.stop()
