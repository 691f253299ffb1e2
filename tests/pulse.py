"""A private PulseAudio server for capture tests, and a child process that records through it.

The server listens on a unix socket in a temp folder and plays a sine wave as its default source;
ALSA's `default` device points at it (`type pulse`), which is the path a Home Assistant add-on
with `audio: true` uses. PortAudio reads the ALSA configuration when it initialises, so capture
runs in a child process (`python -m tests.pulse DEVICE ...`) started with this server's env.
"""

import argparse
import contextlib
import glob
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests.waiting import PATIENCE_S, deadline

ROOT = Path(__file__).resolve().parent.parent


class PulseServer:
    """`pulseaudio` with a sine source (`sine`) as default source and a null sink."""

    def __init__(self, folder: Path, *, frequency: int = 440, rate: int = 48000) -> None:
        missing = [tool for tool in ("pulseaudio", "pactl") if shutil.which(tool) is None]
        if missing:
            raise RuntimeError(f"{', '.join(missing)} not installed (scripts/test installs it)")
        if not glob.glob("/usr/lib/*/alsa-lib/libasound_module_pcm_pulse.so"):
            raise RuntimeError("ALSA's pulse plugin is missing: install libasound2-plugins")
        self.folder = folder
        self.socket = folder / "native"
        home = folder / "home"
        runtime = folder / "runtime"
        for d in (home / ".config", runtime):
            d.mkdir(parents=True, exist_ok=True)
        runtime.chmod(0o700)
        self.script = folder / "server.pa"
        self.script.write_text(
            f"load-module module-native-protocol-unix socket={self.socket} auth-anonymous=1\n"
            f"load-module module-null-sink sink_name=silence rate={rate}\n"
            f"load-module module-sine-source source_name=sine rate={rate} frequency={frequency}\n"
            "set-default-sink silence\n"
            "set-default-source sine\n"
        )
        (home / ".asoundrc").write_text(
            "pcm.!default { type pulse }\nctl.!default { type pulse }\n"
        )
        self.env = {
            **os.environ,
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_RUNTIME_DIR": str(runtime),
            "PULSE_RUNTIME_PATH": str(runtime),
            "PULSE_SERVER": f"unix:{self.socket}",
            "PYTHONPATH": str(ROOT),
        }
        self.log = folder / "pulseaudio.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server (again, on the same socket) and wait until it answers."""
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        # As root PulseAudio warns but runs when told it is a per-user (not system) daemon.
        cmd = [
            "pulseaudio",
            "-n",
            "--daemonize=no",
            "--exit-idle-time=-1",
            "--use-pid-file=no",
            "--system=false",
            "--disallow-exit",
            "--log-target=stderr",
            "-F",
            str(self.script),
        ]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, env=self.env, stdout=log, stderr=log, stdin=subprocess.DEVNULL
            )
        end = deadline()
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                break
            done = subprocess.run(
                ["pactl", "info"], env=self.env, capture_output=True, timeout=PATIENCE_S
            )
            if done.returncode == 0:
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"pulseaudio did not start:\n{self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        """The server dies abruptly, as a crashed or restarted audio server does."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def pactl(self, *args: str) -> None:
        """Run a pactl command against this server; fail loudly if it fails."""
        done = subprocess.run(
            ["pactl", *args], env=self.env, capture_output=True, timeout=PATIENCE_S
        )
        if done.returncode != 0:
            raise RuntimeError(f"pactl {' '.join(args)}: {done.stderr.decode().strip()}")

    def capture(self, *args: str) -> subprocess.Popen[str]:
        """A child recording through sounddevice with this server's env (see main())."""
        return subprocess.Popen(
            [sys.executable, "-m", "tests.pulse", *args],
            env=self.env,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def __enter__(self) -> "PulseServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def peak_hz(samples: np.ndarray, rate: int = 16000) -> float:
    """The strongest frequency of a signal (Hann window, FFT)."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.argmax(spectrum) * rate / samples.size)


def alsa_pcm_plugins() -> list[str]:
    """The ALSA PCM plugin libraries this process maps (libasound_module_pcm_*.so)."""
    maps = Path("/proc/self/maps").read_text().splitlines()
    return sorted({Path(line.split()[-1]).name for line in maps if "libasound_module_pcm_" in line})


class Reports:
    """Reads a capture child's JSON lines in the background; wait_for() polls them."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[dict] = []
        self._cursor = 0
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def wait_for(self, what: str, test: Callable[[dict], bool]) -> dict:
        """The first report after the last one returned for which test() holds."""
        end = deadline()
        seen = self._cursor
        while time.monotonic() < end:
            batch = self.lines[seen:]
            for i, report in enumerate(batch, seen):
                if "start_error" in report:
                    raise AssertionError(f"capture did not start: {report['start_error']}")
                if test(report):
                    self._cursor = i + 1
                    return report
            seen += len(batch)
            if self.proc.poll() is not None and seen == len(self.lines):
                break
            time.sleep(0.05)
        tail = self.lines[-3:]
        if self.proc.poll() is not None and self.proc.stderr is not None:
            tail.append({"exit": self.proc.returncode, "stderr": self.proc.stderr.read()[-2000:]})
        raise AssertionError(f"timed out waiting for {what}; last reports {tail}")

    def finish(self) -> str:
        """Close the child's stdin (it stops) and return its stderr."""
        assert self.proc.stdin is not None and self.proc.stderr is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(PATIENCE_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("capture child did not stop") from None
        self._thread.join(5)
        return self.proc.stderr.read()


def main() -> int:
    """Child: record from a mic source, print a JSON report every 0.25 s until stdin closes."""
    from sat_audio.config import SourceConfig
    from sat_audio.errors import SatAudioError
    from sat_audio.sources import open_source
    from sat_audio.sources.mic import input_devices

    parser = argparse.ArgumentParser()
    parser.add_argument("device", nargs="?")
    parser.add_argument("--samplerate", type=int)
    parser.add_argument("--channel", type=int)
    args = parser.parse_args()
    device: str | int | None = args.device
    if device is not None and device.isdigit():
        device = int(device)
    cfg = SourceConfig(
        name="mic", kind="mic", device=device, samplerate=args.samplerate, channel=args.channel
    )
    source = open_source(cfg)
    input_devices()  # PortAudio starts: it opens every ALSA device to list them
    listed = alsa_pcm_plugins()
    try:
        source.start()
    except SatAudioError as err:
        print(json.dumps({"start_error": str(err)}), flush=True)
        return 2
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    recent: list[np.ndarray] = []
    total = 0
    next_report = time.monotonic()
    while not stop.is_set():
        block = source.read(0.05)
        if block is not None:
            total += block.size
            recent.append(block)
            recent = recent[-10:]  # the last second at 0.1 s blocks
        if time.monotonic() >= next_report:
            next_report += 0.25
            last = np.concatenate(recent) if recent else np.zeros(0, np.float32)
            s = source.status()
            print(
                json.dumps(
                    {
                        "state": s.state,
                        "reconnects": s.reconnects,
                        "error": s.error,
                        "overflows": s.overflows,
                        "dropped_s": s.dropped_s,
                        "samples": total,
                        "peak_hz": peak_hz(last) if last.size >= 16000 else None,
                        "rms": float(np.sqrt(np.mean(last**2))) if last.size else None,
                        "device_rate": source.device_rate,  # type: ignore[attr-defined]
                        "device_channels": source.device_channels,  # type: ignore[attr-defined]
                        "device_name": source.device.name,  # type: ignore[attr-defined]
                        "plugins_listed": listed,
                        "plugins_mapped": alsa_pcm_plugins(),
                    }
                ),
                flush=True,
            )
    source.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
