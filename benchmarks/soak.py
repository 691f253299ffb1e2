"""Soak: does `sat-audio run` stay flat and lose nothing over a day of audio or broker restarts?

The real listener runs as a subprocess against a real mosquitto on a free port. Its source is a
looping file, three quiet chunks and one loud (bench_listener's pattern); the test checkpoint's
head always says "Bark" and a volume gate makes every loud chunk start an episode and the next
quiet one end it, so every 4 chunks give two transitions.

- `--mode fast`: `--audio-hours` of audio (24 by default) read faster than real time
  (`realtime: false`), until that many episodes were received.
- `--mode realtime`: `--seconds` (an hour by default) in real time; every `--restart-every`
  seconds the broker is stopped, SIGTERM and SIGKILL in turn, and started again after a few
  seconds (its persistence saves every change, so a killed broker keeps the subscriber's session).
  After each restart a fresh client checks the retained status, info and state came back.

Sampled at the start, every `--sample-every` seconds and at the end: the listener's RSS, open
file descriptors, threads and CPU time. At the end (the listener stopped by SIGTERM) the
transitions the listener logged as sent are compared with those a persistent QoS 1 subscriber
received (redeliveries of one id counted once): every start must have exactly one end, episodes
follow one another (start A, end A, start B, ...), their start times rise, and the retained state
is OFF and the status offline. Any failed check is printed as FAIL and the exit code is 1.

Run from the repository root:
    .venv/bin/python benchmarks/soak.py --mode fast [--audio-hours 24] [--backend onnx|torch]
    .venv/bin/python benchmarks/soak.py --mode realtime [--seconds 3600] [--restart-every 180]
"""

import argparse
import collections
import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import yaml
from bench_listener import make_wav

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.broker, tests.checkpoints

from sat_audio.labels import find
from tests.broker import Broker, Message, Subscriber
from tests.checkpoints import fire_label, random_model, save_upstream, upstream_name
from tests.waiting import wait_until

PREFIX = "sat_audio/soak"
EVENT_TOPIC = f"{PREFIX}/event/dog"
STATE_TOPIC = f"{PREFIX}/event/dog/state"
PERIOD_CHUNKS = 4
"""make_wav's pattern: one episode every 4 chunks."""
SENT = re.compile(r"\bdog (start|end): ")
CONNECTED = "connected to the MQTT broker"
DOWN_S = (3.0, 12.0)
"""How long the broker stays down at each restart, in turn: shorter and longer than the
listener's first reconnect delays (1, 2, 4, 8 s)."""


@dataclass(frozen=True)
class Sample:
    """The listener's resources at one moment."""

    what: str
    wall_s: float
    audio_s: float
    rss_mb: float
    fds: collections.Counter[str]
    threads: int
    cpu_s: float


def sample(ps: psutil.Process, what: str, began: float, episodes: int, chunk_s: float) -> Sample:
    cpu = ps.cpu_times()
    found = Sample(
        what,
        time.monotonic() - began,
        episodes * PERIOD_CHUNKS * chunk_s,
        ps.memory_info().rss / 2**20,
        fd_kinds(ps.pid),
        ps.num_threads(),
        cpu.user + cpu.system,
    )
    print(
        f"{found.what:>6}: {found.wall_s / 60:7.1f} min, audio {found.audio_s / 3600:6.2f} h, "
        f"RSS {found.rss_mb:6.1f} MB, {found.fds.total()} fds, {found.threads} threads, "
        f"CPU {found.cpu_s:7.1f} s",
        flush=True,
    )
    return found


def received(sub: Subscriber) -> list[dict]:
    """The transitions received, in order, each (id, type) once: QoS 1 may deliver twice."""
    seen: set[tuple[str, str]] = set()
    out = []
    for message in sub.on(EVENT_TOPIC):
        payload = message.json()
        key = (payload["id"], payload["type"])
        if key not in seen:
            seen.add(key)
            out.append(payload)
    return out


def episodes_received(sub: Subscriber) -> int:
    """Episodes whose end arrived."""
    return len({m.json()["id"] for m in sub.on(EVENT_TOPIC) if b'"type":"end"' in m.payload})


def sequence_problems(transitions: list[dict]) -> list[str]:
    """Where the received transitions break start A, end A, start B, end B, ... in rising time."""
    problems = []
    open_id: str | None = None
    last_start = ""
    for n, t in enumerate(transitions):
        if t["type"] == "start":
            if open_id is not None:
                problems.append(f"#{n}: start {t['id']} while {open_id} is open")
            if t["start"] < last_start:
                problems.append(f"#{n}: start {t['start']} before the previous {last_start}")
            open_id, last_start = t["id"], t["start"]
        else:
            if t["id"] != open_id:
                problems.append(f"#{n}: end {t['id']} but {open_id} is open")
            elif t["start"] != last_start:
                problems.append(f"#{n}: end {t['id']} has start {t['start']} != {last_start}")
            open_id = None
    if open_id is not None:
        problems.append(f"episode {open_id} never ended")
    return problems


def retained(broker: Broker, topics: tuple[str, ...], client_id: str) -> dict[str, Message]:
    """The retained values a client that subscribes now gets (it waits for each topic)."""
    fresh = Subscriber(broker, topics, client_id=client_id).start()
    try:
        fresh.wait_for(lambda: all(fresh.on(t) for t in topics), f"retained {topics}")
        return {t: fresh.on(t)[-1] for t in topics}
    finally:
        fresh.stop()


def listener_config(args: argparse.Namespace, checkpoint: Path, wav: Path, broker: Broker) -> dict:
    return {
        "listener": {"id": "soak", "name": "Soak"},
        "model": {"name": str(checkpoint), "chunk_seconds": args.chunk, "backend": args.backend},
        "sources": [
            {
                "name": "mic",
                "kind": "file",
                "path": str(wav),
                "realtime": args.mode == "realtime",
                "loop": True,
            }
        ],
        "detection": {
            "min_level_dbfs": -40,
            "events": {
                "dog": {"labels": ["Bark"], "on_threshold": 0.5, "off_threshold": 0.3, "hold_s": 0}
            },
        },
        "mqtt": {"host": broker.host, "port": broker.port},
    }


def restart_broker(broker: Broker, stderr_path: Path, n: int) -> list[str]:
    """Stop the broker (SIGTERM on even n, SIGKILL on odd), start it after a pause, and check
    that the listener puts its retained values back; the problems found.

    Mosquitto publishes the listener's will (status offline, retained) when it shuts down, and a
    killed one keeps what it last saved: until the listener has reconnected and re-published,
    the broker may hold either.
    """
    kill = n % 2 == 1
    connects = stderr_path.read_text(errors="replace").count(CONNECTED)
    broker.stop(kill=kill)
    time.sleep(DOWN_S[(n // 2) % len(DOWN_S)])
    broker.start()
    wait_until(
        lambda: stderr_path.read_text(errors="replace").count(CONNECTED) > connects,
        "the listener's reconnect",
    )
    topics = (f"{PREFIX}/status", f"{PREFIX}/info", STATE_TOPIC)
    checks = itertools.count()

    def back_online() -> dict[str, Message] | None:
        values = retained(broker, topics, f"soak-check-{n}-{next(checks)}")
        return values if values[f"{PREFIX}/status"].text == "online" else None

    values = wait_until(back_online, "the retained status online after a reconnect", 0.5)
    print(
        f"restart {n + 1} ({'SIGKILL' if kill else 'SIGTERM'}): listener back, retained status "
        f"{values[f'{PREFIX}/status'].text}, state {values[STATE_TOPIC].text} "
        f"({next(checks)} look(s))",
        flush=True,
    )
    if values[STATE_TOPIC].text not in ("ON", "OFF"):
        return [f"restart {n + 1}: retained state {values[STATE_TOPIC].text!r}"]
    return []


def fd_kinds(pid: int) -> collections.Counter[str]:
    """The process's open file descriptors by what they point at (socket, pipe, a file...)."""
    kinds: collections.Counter[str] = collections.Counter()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):
            kinds[re.sub(r":\[\d+\]$", "", os.readlink(fd))] += 1
    return kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["fast", "realtime"], required=True)
    parser.add_argument("--audio-hours", type=float, default=24.0, help="fast: audio to read")
    parser.add_argument("--seconds", type=float, default=3600.0, help="realtime: how long")
    parser.add_argument("--restart-every", type=float, default=180.0, help="realtime: seconds")
    parser.add_argument("--sample-every", type=float, default=300.0, help="seconds")
    parser.add_argument("--chunk", type=float, default=2.0, help="chunk length in seconds")
    parser.add_argument("--backend", choices=["onnx", "torch"], default="onnx")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix=f"soak_{args.mode}_"))
    print(f"soak {args.mode} on {args.backend}; files in {folder}", flush=True)
    model = fire_label(random_model("SAT_T_2s", seed=0), find("Bark").index)
    checkpoint = save_upstream(model, folder / upstream_name("SAT_T_2s"))
    del model
    wav = make_wav(folder / "pattern.wav", args.chunk)
    stderr_path = folder / "stderr.txt"
    problems: list[str] = []
    samples: list[Sample] = []
    restarts = 0
    with contextlib.ExitStack() as running:
        broker = Broker(folder / "broker", persistence=True)
        broker.start()
        running.callback(broker.stop)
        (folder / "config.yaml").write_text(
            yaml.safe_dump(listener_config(args, checkpoint, wav, broker))
        )
        sub = Subscriber(
            broker, (f"{PREFIX}/#",), persistent=True, client_id="soak-subscriber"
        ).start()
        running.callback(sub.stop)
        cmd = [sys.executable, "-m", "sat_audio", "run", "-c", str(folder / "config.yaml")]
        with stderr_path.open("wb") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        running.callback(lambda: proc.poll() is None and proc.kill())
        ps = psutil.Process(proc.pid)
        # the start: the first episode is over (the first chunk scored, start-up memory given back)
        sub.wait_for(lambda: episodes_received(sub) > 0, f"a first episode (see {stderr_path})")
        began = time.monotonic()
        samples.append(sample(ps, "start", began, episodes_received(sub), args.chunk))
        target = args.audio_hours * 3600 / (PERIOD_CHUNKS * args.chunk)
        next_sample = began + args.sample_every
        next_restart = began + args.restart_every
        while True:
            now = time.monotonic()
            if args.mode == "fast" and episodes_received(sub) >= target:
                break
            if args.mode == "realtime" and now - began >= args.seconds:
                break
            if proc.poll() is not None:
                raise SystemExit(f"the listener exited with {proc.returncode}; see {stderr_path}")
            if now >= next_sample:
                samples.append(sample(ps, "", began, episodes_received(sub), args.chunk))
                next_sample += args.sample_every
            if args.mode == "realtime" and now >= next_restart:
                problems += restart_broker(broker, stderr_path, restarts)
                restarts += 1
                next_restart = time.monotonic() + args.restart_every
            time.sleep(1.0)
        samples.append(sample(ps, "end", began, episodes_received(sub), args.chunk))
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        log = stderr_path.read_text(errors="replace")
        sent = SENT.findall(log)
        # the last end (the listener's shutdown ends an open episode) may still be on its way
        sub.wait_for(lambda: len(received(sub)) >= len(sent), "every transition the listener sent")
        end_values = retained(
            broker, (f"{PREFIX}/status", STATE_TOPIC, f"{PREFIX}/info"), "soak-check-end"
        )
    transitions = received(sub)
    deliveries = len(sub.on(EVENT_TOPIC))

    print(f"command: {' '.join(cmd)}")
    print(
        f"listener exit code {code}; broker restarts {restarts} "
        f"({(restarts + 1) // 2} SIGTERM, {restarts // 2} SIGKILL)"
    )
    first, last = samples[0], samples[-1]
    print(
        f"audio {last.audio_s / 3600:.2f} h in {last.wall_s / 3600:.2f} h "
        f"({last.audio_s / max(last.wall_s, 1e-9):.1f}x real time), listener CPU "
        f"{last.cpu_s - first.cpu_s:.0f} s"
    )
    for name, unit, a, b in (
        ("RSS", " MB", first.rss_mb, last.rss_mb),
        ("open fds", "", first.fds.total(), last.fds.total()),
        ("threads", "", first.threads, last.threads),
    ):
        print(f"{name}: start {a:.1f}{unit}, end {b:.1f}{unit}, change {b - a:+.1f}{unit}")
    print(f"RSS samples (MB): {' '.join(f'{s.rss_mb:.1f}' for s in samples)}")
    kinds = {kind: sum(1 for k in sent if k == kind) for kind in ("start", "end")}
    got = {kind: sum(1 for t in transitions if t["type"] == kind) for kind in ("start", "end")}
    print(
        f"transitions: sent {kinds['start']} starts + {kinds['end']} ends (listener log), "
        f"received {got['start']} + {got['end']} ({deliveries} deliveries: "
        f"{deliveries - len(transitions)} redelivered)"
    )
    queued = re.findall(r"delivering (\d+) queued transitions", log)
    print(
        f"queued while the broker was down and delivered later: "
        f"{sum(map(int, queued))} transitions over {len(queued)} reconnects"
    )

    if code != 0:
        problems.append(f"listener exit code {code}")
    if kinds != got:
        problems.append(f"sent {kinds} but received {got}")
    problems += sequence_problems(transitions)
    if "MQTT queue full" in log:
        problems.append("the listener dropped transitions (MQTT queue full)")
    if last.fds != first.fds:
        problems.append(f"open fds {dict(first.fds)} -> {dict(last.fds)}")
    if last.threads != first.threads:
        problems.append(f"threads {first.threads} -> {last.threads}")
    for topic, want in ((f"{PREFIX}/status", "offline"), (STATE_TOPIC, "OFF")):
        if end_values[topic].text != want:
            problems.append(f"retained {topic} is {end_values[topic].text} at the end, not {want}")
    print(
        f"retained at the end: status {end_values[f'{PREFIX}/status'].text}, "
        f"state {end_values[STATE_TOPIC].text}"
    )
    for problem in itertools.islice(problems, 50):
        print(f"FAIL: {problem}")
    if problems:
        print(f"files kept in {folder}")
        raise SystemExit(1)
    print("every check passed")
    shutil.rmtree(folder)


if __name__ == "__main__":
    main()
