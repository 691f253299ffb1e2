"""A real mosquitto for tests: free port, temp config, optional users and TLS, stop and restart.

Also a recording subscriber and the openssl commands that make a CA, a server and a client
certificate, so TLS is tested with certificates made on the spot.
"""

import getpass
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.waiting import PATIENCE_S, deadline

MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"


def require_tool(path: str) -> str:
    """The tests need these installed (scripts/test does it); fail loudly, never skip."""
    found = shutil.which(path)
    if found is None:
        raise RuntimeError(f"{path} is not installed; run scripts/test to install it")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str | Path) -> None:
    subprocess.run(
        [require_tool("openssl"), *map(str, args)],
        check=True,
        capture_output=True,
        timeout=PATIENCE_S,
    )


def make_certs(folder: Path) -> Certs:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca = folder / "ca.key", folder / "ca.crt"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             "/CN=sat-audio test CA", "-keyout", ca_key, "-out", ca)  # fmt: skip
    out = {}
    for name, ext in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        key, csr, crt = folder / f"{name}.key", folder / f"{name}.csr", folder / f"{name}.crt"
        ext_file = folder / f"{name}.ext"
        ext_file.write_text(ext + "\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", key, "-out", csr)  # fmt: skip
        _openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
                 "-days", "2", "-extfile", ext_file, "-out", crt)  # fmt: skip
        out[name] = (crt, key)
    return Certs(ca, out["server"][0], out["server"][1], out["client"][0], out["client"][1])


class Broker:
    """One mosquitto process on a fixed free port; stop() and start() keep the port."""

    host = "127.0.0.1"

    def __init__(
        self,
        folder: Path,
        *,
        users: dict[str, str] | None = None,
        certs: Certs | None = None,
        require_certificate: bool = False,
        persistence: bool = False,
        max_packet_size: int | None = None,
    ) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = folder / "mosquitto.log"
        self.proc: subprocess.Popen | None = None
        lines = [
            f"listener {self.port} {self.host}",
            f"user {getpass.getuser()}",
            "log_dest stderr",
            "log_type all",
            "connection_messages true",
            f"allow_anonymous {'false' if users else 'true'}",
        ]
        if users:
            pwfile = folder / "passwd"
            pwfile.write_text("")
            for user, password in users.items():
                subprocess.run(
                    [require_tool(MOSQUITTO_PASSWD), "-b", str(pwfile), user, password],
                    check=True,
                    capture_output=True,
                )
            lines.append(f"password_file {pwfile}")
        if certs:
            lines += [f"cafile {certs.ca}", f"certfile {certs.server_cert}"]
            lines += [f"keyfile {certs.server_key}", "tls_version tlsv1.2"]
            lines.append(f"require_certificate {str(require_certificate).lower()}")
        if max_packet_size is not None:
            # told to MQTT 5 clients in CONNACK; a client that sends more is disconnected
            lines.append(f"max_packet_size {max_packet_size}")
        if persistence:
            # Save on every change, so a SIGKILLed broker keeps sessions and queued messages.
            store = folder / "store"
            store.mkdir(exist_ok=True)
            lines += ["persistence true", f"persistence_location {store}/"]
            lines += ["autosave_on_changes true", "autosave_interval 1"]
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        assert self.proc is None, "broker already running"
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [require_tool(MOSQUITTO), "-c", str(self.conf)], stdout=log, stderr=log
        )
        log.close()
        end = deadline()
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited at start:\n{self.log()}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto accepted no connection:\n{self.log()}")

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (clean, saves persistence) or SIGKILL (a crash)."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        self.proc.wait(timeout=PATIENCE_S)
        self.proc = None

    def restart(self, *, kill: bool = False) -> None:
        self.stop(kill=kill)
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool
    at: float  # time.time() when received

    @property
    def text(self) -> str:
        return self.payload.decode()

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class Subscriber:
    """Records every message on `topics`; reconnects by itself. `persistent` keeps its session
    (and the broker's queue for it) across its own and the broker's restarts."""

    broker: Broker
    topics: tuple[str, ...] = ("#",)
    persistent: bool = False
    client_id: str = "test-subscriber"
    username: str | None = None
    password: str | None = None
    certs: Certs | None = None
    messages: list[Message] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=not self.persistent,
        )
        if self.username:
            self.client.username_pw_set(self.username, self.password)
        if self.certs:
            self.client.tls_set(
                str(self.certs.ca), str(self.certs.client_cert), str(self.certs.client_key)
            )
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.connected = threading.Event()

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if not reason.is_failure:
            client.subscribe([(t, 1) for t in self.topics])
            self.connected.set()

    def _on_message(self, client, userdata, msg) -> None:
        with self._cond:
            self.messages.append(Message(msg.topic, msg.payload, msg.retain, time.time()))
            self._cond.notify_all()

    def start(self) -> "Subscriber":
        self.client.connect(self.broker.host, self.broker.port)
        self.client.loop_start()
        assert self.connected.wait(PATIENCE_S), "test subscriber could not connect"
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def on(self, topic: str) -> list[Message]:
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def last(self, topic: str) -> Message | None:
        found = self.on(topic)
        return found[-1] if found else None

    def wait_for(self, check: Callable[[], Any], what: str = "") -> Any:
        """Wait until check() is truthy; fail with what was received if it never is."""
        end = deadline()
        with self._cond:
            while True:
                result = check()
                if result:
                    return result
                left = end - time.monotonic()
                if left <= 0:
                    seen = [(m.topic, m.payload[:80]) for m in self.messages[-30:]]
                    raise AssertionError(f"timed out waiting for {what or check}; got {seen}")
                self._cond.wait(min(left, 0.2))

    def wait_text(self, topic: str, text: str) -> Message:
        def check() -> Message | None:
            last = self.last(topic)
            return last if last is not None and last.text == text else None

        return self.wait_for(check, f"{topic} = {text}")
