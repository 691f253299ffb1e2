"""The real listener for the Home Assistant tests: `sat-audio run` from the listener's .venv."""

from __future__ import annotations

import os
from pathlib import Path
import signal
import subprocess
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
LISTENER_VENV = ROOT / ".venv" / "bin"
SIDE = Path(__file__).with_name("listener_side.py")


def listener_python() -> Path:
    """Return the listener's Python; scripts/test creates it before these tests run."""
    python = LISTENER_VENV / "python"
    if not python.exists():
        raise RuntimeError(f"{python} is missing; run scripts/setup --test (scripts/test does)")
    return python


def listener_side(*args: str | Path) -> str:
    """Run tests/ha/listener_side.py in the listener's environment; return its stdout."""
    done = subprocess.run(
        [listener_python(), SIDE, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"listener_side.py {args[0]} failed:\n{done.stderr}")
    return done.stdout


def write_config(
    folder: Path,
    checkpoint: Path,
    sources: list[dict[str, Any]],
    port: int,
    mqtt: dict[str, Any] | None = None,
    glass: dict[str, Any] | None = None,
    events: dict[str, Any] | None = None,
    **extra: Any,
) -> Path:
    """Write a listener config: one 'glass' event on Shatter behind a -40 dBFS volume gate.

    `mqtt` adds to the broker settings, `glass` to the glass event, `events` more events;
    `extra` adds top-level sections.
    """
    config = {
        "listener": {"id": "e2e", "name": "End to end"},
        "model": {"name": str(checkpoint), "chunk_seconds": 1.0},
        "sources": sources,
        "detection": {
            "min_level_dbfs": -40,
            "events": {
                "glass": {
                    "name": "Glass",
                    "labels": ["Shatter"],
                    "on_threshold": 0.5,
                    "off_threshold": 0.3,
                    "hold_s": 0,
                    **(glass or {}),
                },
                **(events or {}),
            },
        },
        "mqtt": {"host": "127.0.0.1", "port": port, **(mqtt or {})},
        **extra,
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class Listener:
    """`sat-audio run -c CONFIG` as a subprocess; its logs kept in a file for failures."""

    def __init__(self, folder: Path, config: Path) -> None:
        """Start the listener."""
        self.log = folder / "listener.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [LISTENER_VENV / "sat-audio", "run", "-c", config, "--log-level", "debug"],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=folder,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def output(self) -> str:
        """Return what the listener logged so far."""
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        """Wait for the listener to exit by itself; fail with its log otherwise."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"listener still running:\n{self.output()}") from None

    def stop(self) -> None:
        """Stop it as a service manager would (SIGTERM), or kill it if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
