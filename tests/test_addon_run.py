"""The add-on end to end, as the Supervisor runs it, without Docker.

The package is built into a wheel and installed on its own, as the Dockerfile's `pip install`
does, and run from there: what the wheel lacks, the add-on lacks. `sat-audio addon` reads
options.json, asks a local stand-in for the Supervisor for the broker,
captures a microphone the way an add-on with `audio: true` does (PortAudio -> ALSA `default` ->
the ALSA pulse plugin -> a PulseAudio server's socket named in /etc/pulse/client.conf), runs a
checkpoint kept in the data folder, and publishes to a real mosquitto that needs a password.
Its heartbeat then passes `sat-audio health`, fails it once the sound server is gone, and
SIGTERM stops the add-on cleanly.
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from sat_audio.labels import find
from sat_audio.model.checkpoint import load_model
from sat_audio.model.registry import get_spec
from tests.broker import Broker, Subscriber
from tests.checkpoints import fire_label, save_upstream
from tests.pulse import PulseServer
from tests.test_addon_mode import DEFAULTS, TOKEN, FakeSupervisor, write_options
from tests.waiting import PATIENCE_S, wait_until

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "pw${HOME}x"  # the Mosquitto add-on's generated passwords could hold anything


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package as a wheel, built from a copy of the sources and unpacked on its own."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    skip = shutil.ignore_patterns("__pycache__", "*.pt", "*.part")
    for folder in ("sat_audio", "models"):
        shutil.copytree(ROOT / folder, src / folder, ignore=skip)
    for file in ("pyproject.toml", "README.md", "config.yaml"):
        shutil.copy(ROOT / file, src / file)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp), str(src)],
                   check=True, capture_output=True, timeout=PATIENCE_S)  # fmt: skip
    (wheel,) = tmp.glob("sat_audio-*.whl")
    site = tmp / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=PATIENCE_S)  # fmt: skip
    return site


def test_wheel_holds_every_module_and_the_defaults(installed: Path) -> None:
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "sat_audio").rglob("*.py")}
    shipped = {p.relative_to(installed).as_posix() for p in installed.rglob("*.py")}
    assert sources <= shipped, sources - shipped
    for data in (
        "defaults/config.yaml",
        "models_data/registry.toml",
        "models_data/audioset_labels.csv",
    ):
        assert (installed / "sat_audio" / data).is_file(), data
    # The tests below run this copy, not the checkout: PYTHONPATH wins over the editable install.
    where = subprocess.run(
        [sys.executable, "-c", "import sat_audio; print(sat_audio.__file__)"],
        env={"PYTHONPATH": str(installed)}, cwd=installed, capture_output=True, text=True,
    )  # fmt: skip
    assert where.stdout.strip() == str(installed / "sat_audio" / "__init__.py"), where.stderr


@pytest.fixture
def pulse(tmp_path: Path) -> Iterator[PulseServer]:
    """A PulseAudio server with a 440 Hz sine as default source; ~/.asoundrc routes ALSA's
    `default` to it, as the /etc/asound.conf the Supervisor mounts into the add-on does."""
    with PulseServer(tmp_path / "pulse") as server:
        yield server


def addon_audio_env(pulse: PulseServer) -> dict[str, str]:
    """What an add-on with `audio: true` gets: the server named in a pulse client.conf (the
    Supervisor mounts one at /etc/pulse/client.conf), not in PULSE_SERVER."""
    client_conf = pulse.folder / "client.conf"
    client_conf.write_text(f"default-server = unix:{pulse.socket}\nautospawn = no\n")
    keep = ("HOME", "XDG_CONFIG_HOME", "XDG_RUNTIME_DIR", "PULSE_RUNTIME_PATH")
    return {**{k: pulse.env[k] for k in keep}, "PULSE_CLIENTCONFIG": str(client_conf)}


@pytest.fixture
def shatter_checkpoint(tmp_path: Path, sat_t_checkpoint: Path) -> Path:
    """A SAT_T_2s checkpoint in upstream format whose head always says "Shatter"."""
    model = load_model(str(sat_t_checkpoint))
    return save_upstream(fire_label(model, find("Shatter").index), tmp_path / "shatter.pt")


@dataclass
class RunningAddon:
    """`sat-audio addon` as the Supervisor runs it, with its broker, subscriber and stand-in."""

    proc: subprocess.Popen
    sub: Subscriber
    supervisor: FakeSupervisor
    broker: Broker
    env: dict[str, str]
    err_log: IO[str]
    code: int | None = None
    stderr: str = ""

    def stop(self) -> int:
        """SIGTERM, as the Supervisor stops an add-on; returns the exit code, keeps stderr."""
        if self.code is None:
            self.proc.send_signal(signal.SIGTERM)
            self.code = self.proc.wait(timeout=PATIENCE_S)
            self.err_log.seek(0)
            self.stderr = self.err_log.read()
            print(self.stderr)  # pytest shows it when the test fails
        return self.code


@contextlib.contextmanager
def running_addon(
    folder: Path, data: Path, installed: Path, pulse: PulseServer, options: dict, health: Path
) -> Iterator[RunningAddon]:
    """The installed add-on on its data folder, a password-protected broker (in folder) that the
    Supervisor stand-in names, and the add-on's audio; stopped on the way out."""
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(installed), "SUPERVISOR_TOKEN": TOKEN}
    env.update(addon_audio_env(pulse))
    write_options(data, options)
    folder.mkdir(exist_ok=True)
    with contextlib.ExitStack() as cleanup:
        broker = Broker(folder / "broker", users={"addons": PASSWORD})
        broker.start()
        cleanup.callback(broker.stop)
        supervisor = FakeSupervisor()
        supervisor.thread.start()
        cleanup.callback(supervisor.server.server_close)
        cleanup.callback(supervisor.server.shutdown)
        supervisor.answer(200, {"result": "ok", "data": {
            "host": broker.host, "port": broker.port, "ssl": False, "protocol": "3.1.1",
            "username": "addons", "password": PASSWORD, "addon": "core_mosquitto"}})  # fmt: skip
        sub = Subscriber(broker, ("sat_audio/#",), username="addons", password=PASSWORD).start()
        cleanup.callback(sub.stop)
        err_log = cleanup.enter_context((folder / "addon.err").open("w+"))
        proc = subprocess.Popen(
            [sys.executable, "-m", "sat_audio", "addon", "--supervisor", supervisor.url,
             "--data", str(data), "--health-file", str(health)],
            env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=err_log, text=True,
        )  # fmt: skip
        running = RunningAddon(proc, sub, supervisor, broker, env, err_log)
        cleanup.callback(running.stop)
        yield running


def keep_checkpoint(data: Path, checkpoint: Path) -> Path:
    """The checkpoint in the data folder's models/, from an earlier start: no download (this
    machine could not)."""
    models = data / "models"
    models.mkdir(parents=True)
    shutil.copy(checkpoint, models / get_spec("SAT_T_2s").file)
    return models


def test_addon_listens_publishes_reports_health_and_stops(
    tmp_path: Path, installed: Path, pulse: PulseServer, shatter_checkpoint: Path
) -> None:
    data = tmp_path / "data"
    models = keep_checkpoint(data, shatter_checkpoint)
    health = tmp_path / "health" / "health.json"
    # torch, as in an image built with TORCH_PACKAGE; the default, onnx, is the next test's
    options = {**DEFAULTS, "backend": "torch", "log_level": "debug"}
    with running_addon(tmp_path, data, installed, pulse, options, health) as addon:
        sub, broker = addon.sub, addon.broker

        def health_check(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [sys.executable, "-m", "sat_audio", "health", "--file", str(health), *args],
                capture_output=True, text=True, cwd=tmp_path, env=addon.env, timeout=PATIENCE_S,
            )  # fmt: skip

        sub.wait_text("sat_audio/home/status", "online")
        info = sub.wait_for(lambda: sub.last("sat_audio/home/info"), "info").json()
        assert info["model"] == "SAT_T_2s"
        assert [e["key"] for e in info["events"]][:2] == ["glass_breaking", "running_water"]
        sub.wait_text("sat_audio/home/event/glass_breaking/state", "ON")
        start = sub.last("sat_audio/home/event/glass_breaking").json()
        assert (start["type"], start["label"], start["source"]) == ("start", "Shatter", "mic")
        assert sub.last("sat_audio/home/event/running_water/state").text == "OFF"
        assert addon.supervisor.requests == [("/services/mqtt", f"Bearer {TOKEN}")]

        wait_until(  # the heartbeat is rewritten every 5 s
            lambda: health.exists() and json.loads(health.read_text())["chunks"] >= 1,
            "a heartbeat counting chunks",
        )
        assert json.loads(health.read_text())["listening"] is True
        check = health_check()
        assert (check.returncode, check.stdout) == (0, "healthy\n")
        # A stall limit of 8 s (above the 5 s heartbeat) passes while audio flows ...
        assert health_check("--stall", "8").returncode == 0
        pulse.kill()  # ... and fails once the sound server is gone and no chunk comes
        check = wait_until(
            lambda: (c := health_check("--stall", "8")).returncode == 1 and c,
            "unhealthy once the audio stopped",
            poll_s=1,
        )
        assert check.stderr.startswith("no audio analysed for "), check.stderr
        assert addon.stop() == 0, addon.stderr
        sub.wait_text("sat_audio/home/status", "offline")
        sub.wait_text("sat_audio/home/event/glass_breaking/state", "OFF")
    stderr = addon.stderr
    assert (
        f"SAT Audio 0.1.0 add-on: listener home: model SAT_T_2s on torch from {models}, audio "
        "input default, events glass_breaking, running_water, smoke_alarm, baby_crying, "
        f"dog_barking, doorbell, knocking, screaming; MQTT {broker.host}:{broker.port} as addons"
    ) in stderr
    assert "input device" in stderr  # the debug list of devices the device option can name
    assert "pw${HOME}x" not in stderr and TOKEN not in stderr


def test_addon_on_onnx_exports_once_and_listens_without_torch(
    tmp_path: Path, installed: Path, pulse: PulseServer, shatter_checkpoint: Path
) -> None:
    """backend: onnx. The first start exports the model in a child process; the listener never
    maps torch's library, hears the shatter as on torch, and a restart reuses the export."""
    data = tmp_path / "data"
    models = keep_checkpoint(data, shatter_checkpoint)
    onnx_file = models / Path(get_spec("SAT_T_2s").file).with_suffix(".onnx").name
    options = {**DEFAULTS, "backend": "onnx"}
    exported: list[int] = []
    for start in ("first", "second"):
        folder, health = tmp_path / start, tmp_path / start / "health.json"
        with running_addon(folder, data, installed, pulse, options, health) as addon:
            sub = addon.sub
            sub.wait_text("sat_audio/home/event/glass_breaking/state", "ON")
            start_message = sub.last("sat_audio/home/event/glass_breaking").json()
            assert (start_message["type"], start_message["label"]) == ("start", "Shatter")
            maps = Path(f"/proc/{addon.proc.pid}/maps").read_text()
            assert "onnxruntime" in maps and "libtorch" not in maps
            exported.append(onnx_file.stat().st_mtime_ns)
            assert addon.stop() == 0, addon.stderr
        assert f"model SAT_T_2s on onnx from {models}" in addon.stderr
        assert ("exporting SAT_T_2s for the onnx backend" in addon.stderr) == (start == "first")
    assert exported[0] == exported[1]  # the second start used the first one's export
