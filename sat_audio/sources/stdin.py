"""Raw PCM on standard input (s16le or f32le, any rate and channel count), e.g. from arecord."""

import os
import select
import stat
import sys
import time
from typing import BinaryIO

import numpy as np
import soxr

from sat_audio import SAMPLE_RATE
from sat_audio.audio import to_mono
from sat_audio.config import SourceConfig
from sat_audio.errors import SatAudioError
from sat_audio.sources.base import Source

FORMATS: dict[str, np.dtype] = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}
POLL_S = 0.2
"""The reader wakes this often to notice stop(); a blocking read could never be interrupted."""
STALL_S = 15.0
"""A live pipe silent this long is reported stalled (state reconnecting) until audio returns."""


class StdinSource(Source):
    """Decodes interleaved PCM from a pipe (standard input unless another stream is given)."""

    kind = "stdin"

    def __init__(self, cfg: SourceConfig, stream: BinaryIO | None = None) -> None:
        super().__init__(cfg)
        if cfg.format not in FORMATS:
            raise SatAudioError(
                f"source {cfg.name}: format must be one of {', '.join(FORMATS)}, got {cfg.format!r}"
            )
        if cfg.rate <= 0 or cfg.channels < 1:
            raise SatAudioError(f"source {cfg.name}: rate and channels must be positive")
        if cfg.channel is not None and not 0 <= cfg.channel < cfg.channels:
            raise SatAudioError(
                f"source {cfg.name}: channel {cfg.channel} does not exist; "
                f"the input has {cfg.channels}"
            )
        self.stream = stream if stream is not None else sys.stdin.buffer
        self.dtype = FORMATS[cfg.format]
        self.frame_bytes = self.dtype.itemsize * cfg.channels

    def _prepare(self) -> None:
        self.fd = self.stream.fileno()
        # Redirected from a file: read at the consumer's pace, losing nothing; a pipe is live.
        self.live = not stat.S_ISREG(os.fstat(self.fd).st_mode)

    def _run(self) -> None:
        cfg = self.cfg
        resampler = (
            soxr.ResampleStream(cfg.rate, SAMPLE_RATE, 1, dtype="float32")
            if cfg.rate != SAMPLE_RATE
            else None
        )
        chunk_bytes = max(1, round(cfg.block_seconds * cfg.rate)) * self.frame_bytes
        rest = b""
        last_data = time.monotonic()
        stalled = False
        while not self._stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], POLL_S)
            if not ready:
                if self.live and not stalled and time.monotonic() - last_data >= STALL_S:
                    stalled = True
                    self._set_state("reconnecting", f"no audio for {STALL_S:g} s")
                continue
            last_data = time.monotonic()
            if stalled:
                stalled = False
                self._set_state("ok")
            data = os.read(self.fd, chunk_bytes)
            eof = not data
            data = rest + data
            usable = len(data) // self.frame_bytes * self.frame_bytes
            rest = data[usable:]
            pcm = np.frombuffer(data[:usable], dtype=self.dtype).reshape(-1, cfg.channels)
            if self.dtype.kind == "i":
                pcm = pcm.astype(np.float32) / 32768.0
            mono = to_mono(pcm.astype(np.float32, copy=False), cfg.channel)
            if resampler is not None:
                mono = resampler.resample_chunk(mono, last=eof)
            self._emit(mono)
            if eof:
                self._finish()
                return
