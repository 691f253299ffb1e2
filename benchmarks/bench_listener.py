"""`sat-audio run` as a user runs it: detection latency, CPU and peak RSS on a real-time source.

A real mosquitto and a real-time, looping file source; the test checkpoint's head always says
"Bark" and a volume gate makes the event follow the loud seconds of the wav (random weights cost
what trained ones do). Latency is measured per start message: from the end of the chunk that
crossed the threshold (the transition's `start` + one chunk, in the listener's wall-clock mapping)
to the message's arrival at a subscriber of the broker. The real-time file source hands out each
block when the span it covers begins, a microphone when it ends; so the chunk's last block reaches
the listener one block (0.1 s) before the chunk's end, and the figure a microphone would show is
the raw one plus one block. Both are printed.

Memory while streaming is printed twice: the RSS at the end, between chunks, and the peak from
SETTLE_S after the first info on (VmHWM, reset then), which includes the height of every chunk.
Minor page faults per chunk count the memory a chunk touches anew.

RSS counts in full the library pages the listener shares with other processes (here the broker
and this script, which map libc, libcrypto, libpython), and the kernel leaves those in place when
the listener gives back its start-up pages; USS, the pages only the listener maps, and PSS, the
shared ones divided among their users, are printed beside it, and so is where the pages are:
malloc's heap, other anonymous memory, mapped files. --as-addon runs the listener as in the
add-on's own container: on copies of the shared libraries it maps (LD_LIBRARY_PATH, under every
name the loader asks for; the loader and Python's extension modules aside), so its RSS leaves out
what only sharing kept resident, and with the add-on image's ALSA configuration, where only the
pulse plugin's file is left (addon/Dockerfile).

--chunk-times runs the listener at log level debug and prints how long it took to score each
chunk (its own debug line, from the engine's step to the scores), the per-chunk latency as a
listener meets it: a chunk every chunk's length, other work between, what a chunk works on no
longer in the CPU's caches. paho's debug lines then cost a little more CPU.

--web measures what the live view costs instead: a listener with web off, then one with it on,
measured idle and then with a browser's event stream attached (a client reading api/events),
each over --seconds, printed as differences.

--source mic captures instead through a private PulseAudio server playing a sine, by ALSA's
`default` device as an add-on does: the memory and CPU of a microphone listener (PortAudio and
its ALSA plugins loaded); a steady tone gives no latency figure.

Run from the repository root:
    .venv/bin/python benchmarks/bench_listener.py [--seconds 60] [--backend torch|onnx]
        [--precision float32|int8] [--source file|mic] [--as-addon] [--chunk-times] [--web]
"""

import argparse
import collections
import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import numpy as np
import psutil
import soundfile as sf
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.broker, tests.checkpoints

from sat_audio.labels import find
from sat_audio.memory import release_startup_code
from sat_audio.model.onnx_export import export_onnx
from sat_audio.model.onnx_runtime import onnx_path
from tests.broker import Broker, Subscriber
from tests.checkpoints import fire_label, random_model, save_upstream, upstream_name
from tests.pulse import PulseServer

RATE = 16000
SCORED = re.compile(r"scored 1 chunk\(s\) in ([0-9.]+) ms")
BLOCK_S = 0.1
"""The sources' default block length."""
SETTLE_S = 5.0
"""From the first chunk (a chunk's length after the first info) to the measured streaming: the
listener has given back its start-up pages."""
LIBRARY_DIRS = {
    Path(sysconfig.get_config_var("LIBDIR")),  # libpython
    *(Path(root) / (sysconfig.get_config_var("MULTIARCH") or "") for root in ("/lib", "/usr/lib")),
    *(Path(root) for root in ("/lib", "/usr/lib", "/lib64", "/usr/lib64")),
}
"""Where the loader looks for a library by name: the ones LD_LIBRARY_PATH can replace."""


def make_wav(path: Path, chunk_s: float) -> Path:
    """Repeats: three quiet chunks, one loud chunk (aligned to chunk boundaries)."""
    n = round(chunk_s * RATE)
    t = np.arange(n) / RATE
    loud = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    quiet = (0.001 * np.random.default_rng(0).standard_normal(n)).astype(np.float32)
    sf.write(path, np.concatenate([quiet, quiet, quiet, loud]), RATE)
    return path


def status_mb(pid: int, key: str) -> float:
    """A memory figure of /proc/<pid>/status: VmRSS (now) or VmHWM (peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key}")


def minor_faults(pid: int) -> int:
    """Pages the process has faulted in without reading a file: fresh memory, each a trip to the
    kernel (/proc/<pid>/stat, field 10)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


def rss_by_kind(ps: psutil.Process) -> str:
    """Where the resident pages are: malloc's heap, other anonymous memory, mapped files."""
    heap = anon = 0
    files: dict[str, int] = {}
    for region in ps.memory_maps(grouped=True):
        if region.path == "[heap]":
            heap += region.rss
        elif region.path.startswith("/"):
            name = Path(region.path).name
            files[name] = files.get(name, 0) + region.rss
        else:
            anon += region.rss
    largest = sorted(files.items(), key=lambda item: -item[1])[:3]
    return (
        f"heap (malloc: the weights among it) {heap / 2**20:.1f} MB, other anonymous (Python's "
        f"object arenas, stacks) {anon / 2**20:.1f} MB, files {sum(files.values()) / 2**20:.1f} MB"
        f" (largest: {', '.join(f'{name} {rss / 2**20:.1f}' for name, rss in largest)})"
    )


def own_libraries(pid: int, folder: Path) -> dict[str, str]:
    """LD_LIBRARY_PATH to copies of the libraries a running listener loaded by name.

    The broker, PulseAudio and this script map the host's libc, libcrypto, libpython, libpulse
    too, and the kernel leaves a page another process maps resident in the listener after its
    release; in the add-on's container those files are the listener's alone. A mapping names the
    file (libpulse.so.0.24.2), the loader looks for its soname (libpulse.so.0): each copy gets the
    links its folder has to it. The loader itself stays shared.
    """
    libs = folder / "libs"
    libs.mkdir(exist_ok=True)
    links: dict[Path, dict[Path, list[str]]] = {}  # folder -> file -> the names linking to it
    for region in psutil.Process(pid).memory_maps():
        path = Path(region.path)
        copy = libs / path.name
        if copy.exists() or ".so" not in path.name or path.name.startswith("ld-"):
            continue
        if not any(path.is_relative_to(d) for d in LIBRARY_DIRS):
            continue
        shutil.copy2(path, copy)
        if path.parent not in links:
            names = links[path.parent] = collections.defaultdict(list)
            for entry in path.parent.iterdir():
                if entry.is_symlink():
                    names[entry.resolve()].append(entry.name)
        for name in links[path.parent].get(path, []):
            (libs / name).unlink(missing_ok=True)
            (libs / name).symlink_to(path.name)
    os.sync()  # the image's files are on disk: a page the kernel has yet to write is not reclaimed
    return {"LD_LIBRARY_PATH": str(libs)}


def addon_alsa(folder: Path) -> dict[str, str]:
    """ALSA_CONFIG_PATH to alsa.conf reading only the pulse plugin's file, as the add-on image.

    The image deletes every file of /etc/alsa/conf.d but 50-pulseaudio.conf; here the host's
    alsa.conf is copied with its configuration folders swapped for one holding that file alone.
    """
    top = Path(os.environ.get("ALSA_CONFIG_PATH", "/usr/share/alsa/alsa.conf"))
    pulse = Path("/usr/share/alsa/alsa.conf.d/50-pulseaudio.conf")
    if not top.is_file() or not pulse.is_file():
        raise SystemExit(f"--as-addon needs {top} and {pulse} (libasound2-plugins)")
    conf_d = folder / "alsa" / "conf.d"
    conf_d.mkdir(parents=True)
    shutil.copy2(pulse, conf_d)
    text = top.read_text()
    for host_folder in ("/var/lib/alsa/conf.d", "/usr/etc/alsa/conf.d", "/etc/alsa/conf.d"):
        text = text.replace(f'"{host_folder}"', f'"{conf_d}"')
    (folder / "alsa" / "alsa.conf").write_text(text)
    return {"ALSA_CONFIG_PATH": str(folder / "alsa" / "alsa.conf")}


def event_starts(sub: Subscriber) -> list:
    """The event's start messages received so far."""
    messages = sub.on("sat_audio/bench/event/dog")
    return [m for m in messages if json.loads(m.payload)["type"] == "start"]


def print_latency(starts: list, chunk_s: float) -> None:
    """Per start message: its arrival after the end of the chunk that crossed the threshold."""
    latencies = sorted(
        (m.at - datetime.fromisoformat(json.loads(m.payload)["start"]).timestamp() - chunk_s) * 1000
        for m in starts
    )
    if not latencies:
        raise SystemExit("no detections while measuring: stream for longer (--seconds)")
    p95 = latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))]
    block_ms = BLOCK_S * 1000
    for what, shift in (("raw (file pacing)", 0.0), ("as from a microphone", block_ms)):
        print(
            f"detection latency {what}, {len(latencies)} detections: median "
            f"{statistics.median(latencies) + shift:.0f} ms, p95 {p95 + shift:.0f} ms, "
            f"max {latencies[-1] + shift:.0f} ms"
        )


def print_chunk_times(stderr: str, chunk_s: float) -> None:
    """The listener's own per-chunk scoring times (its debug lines), the first two left out."""
    times = [float(ms) for ms in SCORED.findall(stderr)][2:]
    if not times:
        raise SystemExit("no 'scored 1 chunk(s)' lines in the listener's stderr")
    print(
        f"scoring a {chunk_s} s chunk in the listener, {len(times)} chunks: median "
        f"{statistics.median(times):.2f} ms, p95 {np.percentile(times, 95):.2f}, "
        f"max {max(times):.2f}"
    )


WEB_PORT = re.compile(r"live view on http://[\d.]+:(\d+)/")


class EventStream:
    """A browser's live view, as far as the listener sees it: the page's state, then the stream
    of api/events read as it comes."""

    def __init__(self, port: int) -> None:
        self.frames = 0
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=30).read()
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self._sock.sendall(b"GET /api/events HTTP/1.1\r\nHost: bench\r\n\r\n")
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(OSError, ValueError), self._sock.makefile("rb") as stream:
            for line in stream:
                self.frames += line.startswith(b"data: ")

    def close(self) -> None:
        self._sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(30)
        self._sock.close()


def usage(pid: int, seconds: float) -> tuple[float, float, float]:
    """CPU (% of one core) over the next `seconds`, then RSS and USS (MB)."""
    ps = psutil.Process(pid)
    cpu0, wall0 = ps.cpu_times(), time.monotonic()
    time.sleep(seconds)
    cpu1, wall1 = ps.cpu_times(), time.monotonic()
    cpu = 100 * ((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)) / (wall1 - wall0)
    return cpu, status_mb(pid, "VmRSS"), ps.memory_full_info().uss / 2**20


def web_budget(args: argparse.Namespace, folder: Path, env: dict, sub: Subscriber) -> None:
    """--web: the live view off, on and idle, on with a browser attached (issue 41's budget:
    at most 10 MB and 1 % of a core more than off with a browser attached)."""
    config = yaml.safe_load((folder / "config.yaml").read_text())
    rows: list[tuple[str, tuple[float, float, float]]] = []
    frames = 0
    for phase, web in (("off", {"enabled": False}), ("on", {"enabled": True, "port": 0})):
        path = folder / f"config-web-{phase}.yaml"
        path.write_text(yaml.safe_dump({**config, "web": web}))
        stderr = folder / f"stderr-web-{phase}.txt"
        infos = len(sub.on("sat_audio/bench/info"))
        with stderr.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "sat_audio", "run", "-c", str(path)],
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=env,
            )
        try:
            sub.wait_for(
                lambda n=infos: len(sub.on("sat_audio/bench/info")) > n,
                f"the listener's info (its stderr: {stderr})",
            )
            time.sleep(args.chunk + SETTLE_S)
            rows.append(
                (
                    f"web {phase}" + (", nobody watching" if web["enabled"] else ""),
                    usage(proc.pid, args.seconds),
                )
            )
            if web["enabled"]:
                found = WEB_PORT.search(stderr.read_text())
                if found is None:
                    raise SystemExit(f"no live view address in {stderr}")
                stream = EventStream(int(found[1]))
                try:
                    time.sleep(args.chunk)
                    rows.append(("web on, a browser attached", usage(proc.pid, args.seconds)))
                finally:
                    stream.close()
                frames = stream.frames
        finally:
            proc.terminate()
            proc.wait(30)
    print(
        f"live view budget: SAT_T_2s on {args.backend} {args.precision}, {args.chunk} s chunks, "
        f"{args.seconds:.0f} s per measurement, {frames} frames to the browser"
    )
    base = rows[0][1]
    for name, (cpu, rss, uss) in rows:
        print(
            f"{name}: CPU {cpu:.2f} % of one core ({cpu - base[0]:+.2f}), RSS {rss:.1f} MB "
            f"({rss - base[1]:+.1f}), USS {uss:.1f} MB ({uss - base[2]:+.1f})"
        )
    shutil.rmtree(folder)


def listener_config(args: argparse.Namespace, checkpoint: Path, wav: Path, broker: Broker) -> dict:
    """The listener's config.yaml: one source, one event on "Bark", the test broker."""
    file_source = {"kind": "file", "path": str(wav), "realtime": True, "loop": True}
    return {
        "listener": {"id": "bench", "name": "Benchmark"},
        "model": {
            "name": str(checkpoint),
            "chunk_seconds": args.chunk,
            "threads": args.threads,
            "backend": args.backend,
            "precision": args.precision,
        },
        "sources": [
            {
                "name": "mic",
                **(file_source if args.source == "file" else {"kind": "mic"}),
                "block_seconds": BLOCK_S,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="streaming time measured")
    parser.add_argument("--chunk", type=float, default=2.0, help="chunk length in seconds")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backend", choices=["torch", "onnx"], default="torch")
    parser.add_argument(
        "--precision", choices=["float32", "int8"], default="float32", help="int8: onnx only"
    )
    parser.add_argument("--source", choices=["file", "mic"], default="file")
    parser.add_argument(
        "--as-addon",
        action="store_true",
        help="the listener as in the add-on's container: its own libraries, its ALSA files",
    )
    parser.add_argument(
        "--chunk-times",
        action="store_true",
        help="run the listener at log level debug and print its per-chunk scoring times",
    )
    parser.add_argument(
        "--web",
        action="store_true",
        help="the live view's cost: web off, on with nobody watching, on with a browser",
    )
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="bench_listener_"))
    model = fire_label(random_model("SAT_T_2s", seed=0), find("Bark").index)
    checkpoint = save_upstream(model, folder / upstream_name("SAT_T_2s"))
    if args.backend == "onnx":
        export_onnx(model, onnx_path(str(checkpoint), precision=args.precision), args.precision)
    wav = make_wav(folder / "pattern.wav", args.chunk)
    with contextlib.ExitStack() as running:  # stops what started, however this ends
        broker = Broker(folder / "broker")
        running.callback(broker.stop)
        broker.start()
        env = dict(os.environ)
        if args.source == "mic":
            env = running.enter_context(PulseServer(folder / "pulse")).env
        (folder / "config.yaml").write_text(
            yaml.safe_dump(listener_config(args, checkpoint, wav, broker))
        )
        sub = Subscriber(broker, ("sat_audio/bench/#",)).start()
        running.callback(sub.stop)
        cmd = [sys.executable, "-m", "sat_audio", "run", "-c", str(folder / "config.yaml")]
        if args.chunk_times:
            cmd += ["--log-level", "debug"]
        if args.web:
            web_budget(args, folder, env, sub)
            return
        waiting = f"the listener's info (its stderr: {folder / 'stderr.txt'})"
        if args.as_addon:
            env |= addon_alsa(folder)
            # a first listener, run to its first chunk, shows which libraries it loads
            with (folder / "stderr.txt").open("wb") as err:
                probe = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
            try:
                sub.wait_for(lambda: len(sub.on("sat_audio/bench/info")) > 0, waiting)
                time.sleep(args.chunk + 1)
                env |= own_libraries(probe.pid, folder)
            finally:
                probe.terminate()
                probe.wait(30)
        infos, probed = len(sub.on("sat_audio/bench/info")), len(event_starts(sub))
        # the kernel reclaims only pages no other process maps: this one must not hold torch's too
        release_startup_code()
        launched = time.monotonic()
        with (folder / "stderr.txt").open("wb") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        ps = psutil.Process(proc.pid)
        try:
            sub.wait_for(lambda: len(sub.on("sat_audio/bench/info")) > infos, waiting)
            startup_s = time.monotonic() - launched
            started_rss = status_mb(proc.pid, "VmRSS")
            startup_peak = status_mb(proc.pid, "VmHWM")
            time.sleep(args.chunk + SETTLE_S)
            Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # VmHWM anew from here
            cpu0, wall0, faults0 = ps.cpu_times(), time.monotonic(), minor_faults(proc.pid)
            n0 = len(event_starts(sub))
            time.sleep(args.seconds)
            cpu1, wall1, faults1 = ps.cpu_times(), time.monotonic(), minor_faults(proc.pid)
            rss = status_mb(proc.pid, "VmRSS")
            streaming_peak = status_mb(proc.pid, "VmHWM")
            own = ps.memory_full_info()
            kinds = rss_by_kind(ps)
        finally:
            proc.terminate()
            code = proc.wait(30)
    cpu_pct = 100 * ((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)) / (wall1 - wall0)
    starts = event_starts(sub)
    if len(starts) == probed:  # the tone and the loud seconds both open the event: no audio came
        raise SystemExit(f"no detections; see {folder / 'stderr.txt'}")
    print(f"command: {' '.join(cmd)}")
    print(
        f"SAT_T_2s on {args.backend} {args.precision}, {args.chunk} s chunks, "
        f"{args.threads} thread(s), "
        + ("real-time file source" if args.source == "file" else "microphone (PulseAudio, ALSA)")
        + ("; as in the add-on's container" if args.as_addon else "")
    )
    print(f"startup to first info: {startup_s:.1f} s; exit code after SIGTERM: {code}")
    if args.source == "file":
        print_latency(starts[n0:], args.chunk)
    chunks = (wall1 - wall0) / args.chunk
    print(
        f"CPU over {wall1 - wall0:.0f} s of streaming: {cpu_pct:.1f} % of one core; "
        f"{(faults1 - faults0) / chunks:.0f} minor page faults per chunk"
    )
    print(
        f"RSS: {started_rss:.0f} MB at the first info (peak {startup_peak:.0f}), {rss:.0f} MB "
        f"after {wall1 - wall0:.0f} s of streaming, peak while streaming {streaming_peak:.0f} MB; "
        f"its own pages (USS) {own.uss / 2**20:.0f} MB, PSS {own.pss / 2**20:.0f} MB"
    )
    print(f"RSS by kind after streaming: {kinds}")
    if args.chunk_times:
        print_chunk_times((folder / "stderr.txt").read_text(), args.chunk)
    shutil.rmtree(folder)


if __name__ == "__main__":
    main()
