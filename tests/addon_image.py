"""The add-on's image end to end: scripts/build-addon-image runs this once the image is built.

The container runs `sat-audio addon` as its command, as the add-on's s6 service does; the
stand-in base image the script builds on has no s6-overlay (/init), so nothing else starts it.
Around it, on this machine: a mosquitto on a free port, a stand-in for the Supervisor that names
that broker and serves a WAV file as a never-ending live stream at real-time pace (as a camera
would; the add-on's stream_url option), and in the data folder the options and a SAT_T_2s
checkpoint whose head always says "Shatter". The run passes when the glass_breaking event's
start transition arrives over MQTT and the listener, stopped with SIGTERM as the Supervisor stops
an add-on, exits 0; in an image without torch, the torch backend is refused with one line. It
prints how long the listener took to its first scored chunk and its memory.

Run from the repository root (the script does): .venv/bin/python -m tests.addon_image
    --docker-host unix:///path/docker.sock --image IMAGE --work DIR [--backend onnx|torch]
"""

import argparse
import json
import signal
import struct
import subprocess
import sys
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sat_audio import SAMPLE_RATE
from sat_audio.labels import find
from sat_audio.model.registry import get_spec
from tests.broker import Broker, Subscriber
from tests.checkpoints import fire_label, random_model, save_upstream

ROOT = Path(__file__).resolve().parents[1]
MODEL = "SAT_T_2s"
EVENT_TOPIC = "sat_audio/home/event/glass_breaking"
TOKEN = "0123456789abcdef0123456789abcdef"
BLOCK_S = 0.1
SETTLE_S = 10.0
"""Streaming after the event before the listener's memory is read: five chunks of 2 s."""


def write_checkpoint(models: Path) -> Path:
    """A random-weight SAT_T_2s in the upstream format, under its upstream name, that hears
    "Shatter" in anything: the add-on finds it as if downloaded on an earlier start."""
    models.mkdir(parents=True, exist_ok=True)
    model = fire_label(random_model(MODEL), find("Shatter").index)
    return save_upstream(model, models / get_spec(MODEL).file)


def wav_header() -> bytes:
    """16-bit mono WAV at the model's rate with its sizes at the maximum: a stream of no end."""
    rate, width = SAMPLE_RATE, 2
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * width, width, 8 * width)
    return (
        b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE"
        + b"fmt " + struct.pack("<I", len(fmt)) + fmt
        + b"data" + struct.pack("<I", 0xFFFFFFFF)
    )  # fmt: skip


class StandIn:
    """http.server on 127.0.0.1: the Supervisor's /services/mqtt, and /audio.wav live."""

    def __init__(self, broker: Broker) -> None:
        answer = json.dumps({"result": "ok", "data": {
            "host": broker.host, "port": broker.port, "ssl": False, "protocol": "3.1.1",
            "addon": "core_mosquitto"}}).encode()  # fmt: skip
        noise = np.random.default_rng(0).normal(0, 0.1, SAMPLE_RATE * 10)  # about -20 dBFS
        audio = (noise.clip(-1, 1) * 32767).astype("<i2").tobytes()
        block = int(SAMPLE_RATE * BLOCK_S) * 2

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/services/mqtt":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                elif self.path == "/audio.wav":
                    self.send_response(200)
                    self.send_header("Content-Type", "audio/wav")
                    self.end_headers()
                    self._stream()
                else:
                    self.send_error(404)

            def _stream(self) -> None:
                """The audio looped, one block each BLOCK_S, until the reader goes away."""
                self.wfile.write(wav_header())
                start, sent = time.monotonic(), 0
                try:
                    while True:
                        at = (sent * block) % len(audio)
                        self.wfile.write(audio[at : at + block])
                        sent += 1
                        time.sleep(max(0.0, start + sent * BLOCK_S - time.monotonic()))
                except (BrokenPipeError, ConnectionResetError):
                    return

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def options(stream_url: str, backend: str) -> dict[str, Any]:
    """The add-on's default options, listening to the stream, at debug level (scoring times)."""
    manifest = yaml.safe_load((ROOT / "addon" / "config.yaml").read_text(encoding="utf-8"))
    return {**manifest["options"], "stream_url": stream_url, "backend": backend,
            "log_level": "debug"}  # fmt: skip


def status_mb(pid: int, field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


def seconds(stamp: str) -> float:
    """A Docker RFC 3339 time (nanoseconds, Z) as a POSIX timestamp."""
    day, _, fraction = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(day + "+00:00").timestamp() + float(f"0.{fraction or 0}")


class Container:
    """One `docker run -d` of the image, inspected and logged through the same daemon."""

    def __init__(self, docker: list[str], name: str) -> None:
        self.docker, self.name = docker, name

    def run(self, *args: str) -> None:
        self._docker("run", "-d", "--name", self.name, *args)

    def inspect(self, template: str) -> str:
        return self._docker("inspect", "-f", template, self.name).strip()

    def logs(self) -> list[str]:
        done = subprocess.run([*self.docker, "logs", "-t", self.name], capture_output=True,
                              text=True, timeout=60, check=True)  # fmt: skip
        return (done.stdout + done.stderr).splitlines()

    def first(self, needle: str) -> float | None:
        """When the first log line holding needle was written (the stamps Docker adds)."""
        lines = sorted(line for line in self.logs() if needle in line)
        return seconds(lines[0].split(" ", 1)[0]) if lines else None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after the --stop-timeout the container was started with."""
        self._docker("stop", self.name)

    def remove(self) -> None:
        subprocess.run([*self.docker, "rm", "-f", self.name], capture_output=True, timeout=60)

    def _docker(self, *args: str) -> str:
        return subprocess.run([*self.docker, *args], capture_output=True, text=True,
                              timeout=120, check=True).stdout  # fmt: skip


def wait_for_start(sub: Subscriber, container: Container, timeout: float) -> dict[str, Any]:
    """The event's first transition; fails at once if the container stops before it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sub.on(EVENT_TOPIC):
            return sub.on(EVENT_TOPIC)[0].json()
        if container.inspect("{{.State.Running}}") != "true":
            raise SystemExit(
                "the listener stopped before the event started:\n" + log_tail(container)
            )
        time.sleep(0.5)
    raise SystemExit(f"no transition on {EVENT_TOPIC} in {timeout:.0f} s:\n" + log_tail(container))


def log_tail(container: Container, lines: int = 40) -> str:
    return "\n".join(container.logs()[-lines:])


def refuses_torch(docker: list[str], image: str, data: Path, supervisor: str) -> None:
    """The image without torch, told to run torch: one line naming the option, exit 2."""
    (data / "options.json").write_text(
        json.dumps(options(f"{supervisor}/audio.wav", "torch")), encoding="utf-8"
    )
    done = subprocess.run([*docker, "run", "--rm", "--network", "host", "-v", f"{data}:/data",
                           "-e", f"SUPERVISOR_TOKEN={TOKEN}", "--entrypoint", "sat-audio", image,
                           "addon", "--supervisor", supervisor],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    expected = "sat-audio: error: option 'backend': torch is not in this add-on's image"
    if done.returncode != 2 or not done.stderr.startswith(expected):
        raise SystemExit(f"backend torch without torch gave {done.returncode}:\n{done.stderr}")


def run(args: argparse.Namespace) -> None:
    docker = [args.docker, "-H", args.docker_host]
    data = args.work / "data"
    write_checkpoint(data / "models")
    broker = Broker(args.work / "broker")
    broker.start()
    standin = StandIn(broker)
    container = Container(docker, f"sat-audio-test-{broker.port}")
    sub = Subscriber(broker, ("sat_audio/#",)).start()
    try:
        (data / "options.json").write_text(
            json.dumps(options(f"{standin.url}/audio.wav", args.backend)), encoding="utf-8"
        )
        # --network host: the broker and the stand-in listen on this machine's loopback.
        container.run("--network", "host", "--stop-timeout", "20", "-v", f"{data}:/data",
                      "-e", f"SUPERVISOR_TOKEN={TOKEN}", "--entrypoint", "sat-audio", args.image,
                      "addon", "--supervisor", standin.url)  # fmt: skip
        transition = wait_for_start(sub, container, args.timeout)
        assert (transition["type"], transition["label"]) == ("start", "Shatter"), transition
        time.sleep(SETTLE_S)
        pid = int(container.inspect("{{.State.Pid}}"))
        rss, peak = status_mb(pid, "VmRSS"), status_mb(pid, "VmHWM")
        container.stop()
        code = container.inspect("{{.State.ExitCode}}")
        if code != "0" or not container.first("stopped cleanly"):
            raise SystemExit(f"the listener exited {code} on SIGTERM:\n" + log_tail(container))
        started = seconds(container.inspect("{{.State.StartedAt}}"))
        ready = container.first("; publishing to MQTT")
        scored = container.first("scored ")
        assert ready is not None and scored is not None, log_tail(container)
        heard = transition["label"]
        if args.backend == "onnx":
            refuses_torch(docker, args.image, data, standin.url)
        print(
            f"{args.backend} listener in the image: '{heard}' heard; listening "
            f"{ready - started:.1f} s after the container started, first chunk scored at "
            f"{scored - started:.1f} s (2 s of live audio come first); RSS {rss:.0f} MB "
            f"{SETTLE_S:.0f} s after the event (peak {peak:.0f} MB); stopped cleanly"
        )
    finally:
        sub.stop()
        container.remove()
        standin.close()
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--docker", default="/usr/bin/docker", help="the Docker CLI to run")
    parser.add_argument("--docker-host", required=True, help="the daemon's socket, unix://...")
    parser.add_argument("--image", required=True)
    parser.add_argument("--work", type=Path, required=True, help="a folder for data and broker")
    parser.add_argument("--backend", choices=("onnx", "torch"), default="onnx")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for the event")
    # SIGTERM (the script's cleanup) ends the run through its finally: nothing is left running
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    run(parser.parse_args())


if __name__ == "__main__":
    main()
