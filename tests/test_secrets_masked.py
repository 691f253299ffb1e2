"""A camera's password stays in the process: logs, the retained info and errors show it masked.

`sat-audio run` and `sat-audio addon` are run for real, with real ffmpeg failing to reach the
camera (its error line repeats the URL), a real mosquitto and a subscriber reading everything.
"""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sat_audio.model.registry import get_spec
from tests.broker import Broker, Subscriber, free_port
from tests.waiting import PATIENCE_S

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2 * PATIENCE_S)]

ROOT = Path(__file__).resolve().parents[1]
SECRET = "S3cret-cam-4417"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (
            f"rtsp://admin:{SECRET}@127.0.0.1:9/live: Connection refused",
            "rtsp://admin:***@127.0.0.1:9/live: Connection refused",
        ),
        (
            f"Error opening input file http://cam:{SECRET}@cam.local/a.wav.",
            "Error opening input file http://cam:***@cam.local/a.wav.",
        ),
        (f"rtsp://:{SECRET}@cam/x", "rtsp://:***@cam/x"),
        (f"rtsp://admin:p@ss:{SECRET}@cam/x y", "rtsp://admin:***@cam/x y"),
        (
            f"http://cam/video.cgi?user=admin&pwd={SECRET}&res=1 failed",
            "http://cam/video.cgi?user=admin&pwd=***&res=1 failed",
        ),
        (f"http://cam/x?Password={SECRET}", "http://cam/x?Password=***"),
        (f"http://cam/x?api_key={SECRET}#top", "http://cam/x?api_key=***#top"),
        ("rtsp://admin@cam/x and mailto:a@b", "rtsp://admin@cam/x and mailto:a@b"),
        ("no URL here: key=value, a:b@c", "no URL here: key=value, a:b@c"),
    ],
)
def test_mask_secrets_in_any_text(text: str, masked: str) -> None:
    from sat_audio.redact import mask_secrets

    assert mask_secrets(text) == masked


def _dead_urls() -> list[str]:
    """Camera URLs on a port where nothing listens: ffmpeg's error repeats each one."""
    port = free_port()
    return [
        f"rtsp://admin:{SECRET}@127.0.0.1:{port}/live",
        f"http://127.0.0.1:{port}/video.cgi?user=admin&pwd={SECRET}",
    ]


def _wait_for_errors(sub: Subscriber, topic: str, proc: subprocess.Popen, names: set[str]):
    """The retained info once every named source reports ffmpeg's error."""

    def failing() -> dict | None:
        last = sub.last(topic)
        if proc.poll() is not None:
            raise AssertionError(f"the listener exited with {proc.returncode}")
        if last is None:
            return None
        info = last.json()
        errors = {s["name"]: s["error"] for s in info["sources"]}
        return info if all(errors.get(n) for n in names) else None

    return sub.wait_for(failing, "every source's error in info")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(PATIENCE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _assert_masked(info: dict, sub: Subscriber, stderr: str) -> None:
    errors = [s["error"] for s in info["sources"]]
    assert any("admin:***@127.0.0.1" in e for e in errors), errors
    assert any("pwd=***" in e for e in errors), errors
    assert "WARNING" in stderr and "Connection refused" in stderr
    assert "admin:***@127.0.0.1" in stderr
    assert SECRET not in stderr
    assert all(SECRET.encode() not in m.payload for m in sub.messages)


def test_run_masks_a_camera_password(
    tmp_path: Path, broker: Broker, sat_t_checkpoint: Path
) -> None:
    urls = _dead_urls()
    config = {
        "listener": {"id": "cam"},
        "model": {"name": str(sat_t_checkpoint)},
        "sources": [
            {"name": "door", "kind": "ffmpeg", "url": urls[0]},
            {"name": "yard", "kind": "ffmpeg", "url": urls[1]},
        ],
        "detection": {"events": {"dog": {"labels": ["Bark"], "on_threshold": 0.5}}},
        "mqtt": {"host": broker.host, "port": broker.port},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    sub = Subscriber(broker, ("sat_audio/#",)).start()
    err = tmp_path / "stderr.txt"
    with err.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sat_audio", "run", "-c", str(path), "--log-level", "debug"],
            stdout=subprocess.DEVNULL,
            stderr=out,
            cwd=ROOT,
        )
    try:
        info = _wait_for_errors(sub, "sat_audio/cam/info", proc, {"door", "yard"})
    finally:
        _stop(proc)
        sub.stop()
    _assert_masked(info, sub, err.read_text(errors="replace"))


def test_addon_masks_a_camera_password(
    tmp_path: Path, broker: Broker, sat_t_checkpoint: Path
) -> None:
    from tests.test_addon_mode import DEFAULTS, TOKEN, FakeSupervisor, write_options

    data = tmp_path / "data"
    (data / "models").mkdir(parents=True)
    shutil.copy(sat_t_checkpoint, data / "models" / get_spec("SAT_T_2s").file)
    write_options(
        data,
        {**DEFAULTS, "backend": "torch", "precision": "float32", "stream_url": _dead_urls()[0]},
    )
    supervisor = FakeSupervisor()
    supervisor.answer(200, {"result": "ok", "data": {"host": broker.host, "port": broker.port}})
    supervisor.thread.start()
    sub = Subscriber(broker, ("sat_audio/#",)).start()
    err = tmp_path / "stderr.txt"
    env = {**os.environ, "SUPERVISOR_TOKEN": TOKEN}
    with err.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sat_audio", "addon", "--supervisor", supervisor.url,
             "--data", str(data), "--health-file", str(tmp_path / "health.json")],
            stdout=subprocess.DEVNULL, stderr=out, cwd=ROOT, env=env,
        )  # fmt: skip
    try:
        topic = f"{DEFAULTS['topic_prefix']}/{DEFAULTS['listener_id']}/info"
        info = _wait_for_errors(sub, topic, proc, {"stream"})
    finally:
        _stop(proc)
        sub.stop()
        supervisor.server.shutdown()
        supervisor.server.server_close()
    stderr = err.read_text(errors="replace")
    (error,) = [s["error"] for s in info["sources"]]
    assert "admin:***@127.0.0.1" in error and "Connection refused" in error
    assert "admin:***@127.0.0.1" in stderr and SECRET not in stderr
    assert all(SECRET.encode() not in m.payload for m in sub.messages)
