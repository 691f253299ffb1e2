"""Anything ffmpeg reads (rtsp://, http://, a file), decoded to 16 kHz mono in a subprocess.

A stream that ends or breaks is reopened with capped backoff; a local file without loop ends the
source instead. ffmpeg's last stderr line is kept as the error the publisher reports.
"""

import contextlib
import logging
import os
import select
import shutil
import subprocess
import threading
from collections import deque
from pathlib import Path
from typing import IO

import numpy as np

from sat_audio import SAMPLE_RATE
from sat_audio.config import SourceConfig
from sat_audio.errors import SatAudioError
from sat_audio.sources.base import Backoff, Source

log = logging.getLogger(__name__)

TERMINATE_WAIT_S = 2.0
"""How long ffmpeg gets to exit after SIGTERM before it is killed."""
STALL_S = 15.0
"""ffmpeg silent this long (a hung network stream) is restarted."""


def is_local_file(url: str) -> bool:
    """A path or file: URL (finite input) rather than a network stream."""
    return url.startswith("file:") or "://" not in url


class FfmpegSource(Source):
    """Runs ffmpeg, reads f32le from its stdout, restarts it when it exits."""

    kind = "ffmpeg"

    def __init__(self, cfg: SourceConfig) -> None:
        super().__init__(cfg)
        if not cfg.url:
            raise SatAudioError(f"source {cfg.name}: an ffmpeg source needs a url")
        self.url = cfg.url
        self.local = is_local_file(cfg.url)
        # A file is decoded as fast as the consumer reads; a network stream cannot wait.
        self.live = not self.local
        self.backoff = Backoff()
        self._proc: subprocess.Popen[bytes] | None = None
        self._proc_lock = threading.Lock()
        self._stderr: deque[str] = deque(maxlen=1)

    def command(self) -> list[str]:
        """The ffmpeg command line: quiet, no stdin, raw float32 16 kHz mono on stdout."""
        cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", *self.cfg.input_args]
        cmd += ["-i", self.url]
        if self.cfg.channel is not None:
            cmd += ["-af", f"pan=mono|c0=c{self.cfg.channel}"]
        return [*cmd, "-f", "f32le", "-ac", "1", "-ar", str(SAMPLE_RATE), "-"]

    def _prepare(self) -> None:
        if shutil.which("ffmpeg") is None:
            raise SatAudioError(f"source {self.name}: ffmpeg is not installed (not on PATH)")
        if self.local:
            path = Path(self.url.removeprefix("file:")).expanduser()
            if not path.is_file():
                raise SatAudioError(f"source {self.name}: {path}: no such file")

    def _run(self) -> None:
        while not self._stop.is_set():
            flowed = self._run_once()
            if self._stop.is_set():
                return
            code = self._proc.returncode if self._proc else None
            reason = self._stderr[-1] if self._stderr else f"ffmpeg exited with code {code}"
            if self.local and not self.cfg.loop:
                if code == 0:
                    self._finish()
                else:
                    self._set_state("failed", reason)
                    self._ended = True
                return
            if self.local and code == 0:
                continue  # looping a file: start it again at once
            if flowed:
                self.backoff.reset()
            self._set_state("reconnecting", reason)
            delay = self.backoff.next()
            log.info("source %s: restarting ffmpeg in %.1f s", self.name, delay)
            if self._stop.wait(delay):
                return

    def _run_once(self) -> bool:
        """Run ffmpeg until it exits; True if any audio arrived."""
        self._stderr.clear()
        with self._proc_lock:
            if self._stop.is_set():
                return False
            self._proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        proc = self._proc
        assert proc.stdout is not None and proc.stderr is not None
        errors = threading.Thread(target=self._read_stderr, args=(proc.stderr,), daemon=True)
        errors.start()
        chunk = self.block_samples * 4
        rest = b""
        flowed = False
        fd = proc.stdout.fileno()
        stalled = False
        while not self._stop.is_set():
            ready, _, _ = select.select([fd], [], [], STALL_S)
            if not ready:
                stalled = True
                break
            data = os.read(fd, chunk)
            if not data:
                break
            data = rest + data
            usable = len(data) // 4 * 4
            rest = data[usable:]
            if not flowed:
                flowed = True
                self._set_state("ok")
            self._emit(np.frombuffer(data[:usable], dtype="<f4"))
        self._end(proc)
        errors.join(TERMINATE_WAIT_S)
        if stalled:  # the reason, rather than what ffmpeg says as it is stopped
            self._stderr.append(f"no audio for {STALL_S:g} s")
        for pipe in (proc.stdout, proc.stderr):
            with contextlib.suppress(OSError):
                pipe.close()
        return flowed

    def _read_stderr(self, pipe: IO[bytes]) -> None:
        for line in pipe:
            text = line.decode(errors="replace").strip()
            if text:
                self._stderr.append(text)

    @staticmethod
    def _end(proc: subprocess.Popen[bytes]) -> None:
        """Terminate, then kill: shutdown never waits on a stuck ffmpeg."""
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(TERMINATE_WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _interrupt(self) -> None:
        with self._proc_lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.terminate()
