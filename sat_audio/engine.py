"""Streaming engine: cuts each stream into chunks and scores ready chunks in one batched pass.

Every stream keeps its own memory, primed from silence as upstream inference starts, so N
streams batched together score exactly like N engines with one stream each.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from sat_audio import SAMPLE_RATE
from sat_audio.errors import SatAudioError
from sat_audio.model.frontend import HOP
from sat_audio.model.sat import PATCH, AudioTransformer

MIN_CHUNK_S = 0.16
"""One patch column: 0.16 s gives 17 mel frames, the shortest chunk a model can score."""
MIN_TAIL_SAMPLES = (PATCH - 1) * HOP
"""A final partial chunk needs this many samples (16 frames) to be scored at all."""


@dataclass(frozen=True)
class ChunkResult:
    """The 527 scores of one chunk of one stream, with its place in the stream."""

    stream: str
    index: int
    start_s: float
    end_s: float
    scores: np.ndarray
    level_dbfs: float


def level_dbfs(samples: np.ndarray) -> float:
    """RMS level of a chunk in dB relative to full scale, floored at -120."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0
    return max(-120.0, 20.0 * math.log10(max(rms, 1e-6)))


class Engine:
    """Chunker and batched model runner for one or more named streams."""

    def __init__(
        self, model: AudioTransformer, chunk_seconds: float, streams: Sequence[str] = ("default",)
    ) -> None:
        if chunk_seconds < MIN_CHUNK_S:
            raise SatAudioError(
                f"chunk length {chunk_seconds} s is too short; use at least {MIN_CHUNK_S} s"
            )
        if not streams or len(set(streams)) != len(streams):
            raise SatAudioError(f"stream names must be unique and non-empty, got {list(streams)}")
        self.model = model
        self.chunk_seconds = chunk_seconds
        # upstream: int(chunk_length * sr) truncates, so -c 2.01 gives 32159-sample chunks.
        self.chunk_samples = int(chunk_seconds * SAMPLE_RATE)
        model.check_chunk(self.chunk_samples)
        self.streams = list(streams)
        self._slot = {name: i for i, name in enumerate(self.streams)}
        self._silence = model.silence_memory(1)
        self._memory = (
            None if self._silence is None else self._silence.repeat(1, len(self.streams), 1, 1)
        )
        self._buffers = {name: np.zeros(0, np.float32) for name in self.streams}
        self._consumed = dict.fromkeys(self.streams, 0)
        self._index = dict.fromkeys(self.streams, 0)

    def feed(self, stream: str, samples: np.ndarray) -> None:
        """Queue 16 kHz mono float32 samples of any length for a stream."""
        if stream not in self._slot:
            raise SatAudioError(f"unknown stream {stream!r}; streams are {self.streams}")
        if samples.ndim != 1:
            raise SatAudioError(f"expected mono samples (1-D), got shape {samples.shape}")
        self._buffers[stream] = np.concatenate(
            (self._buffers[stream], samples.astype(np.float32, copy=False))
        )

    def step(self) -> list[ChunkResult]:
        """Score one chunk of every stream that has a full chunk queued, in one forward pass."""
        ready = [s for s in self.streams if self._buffers[s].size >= self.chunk_samples]
        if not ready:
            return []
        chunks = []
        for stream in ready:
            buf = self._buffers[stream]
            chunks.append(buf[: self.chunk_samples])
            self._buffers[stream] = buf[self.chunk_samples :]
        return self._run(ready, np.stack(chunks))

    def drain(self) -> list[ChunkResult]:
        """Score every full chunk queued, stream by stream in time order."""
        results: list[ChunkResult] = []
        while batch := self.step():
            results.extend(batch)
        return results

    def flush(self, stream: str) -> list[ChunkResult]:
        """At the end of a stream, score what is left, as upstream scores a file's last piece.

        A tail shorter than one patch column cannot be scored and is dropped.
        """
        results = self.drain()
        tail = self._buffers[stream]
        self._buffers[stream] = np.zeros(0, np.float32)
        if tail.size >= MIN_TAIL_SAMPLES:
            results.extend(self._run([stream], tail[None, :]))
        return results

    def reset(self, stream: str | None = None, *, keep_memory: bool = False) -> None:
        """Forget a stream's audio and memory (all streams when None), as a fresh engine.

        keep_memory restarts only the stream's clock and chunk count, for a new file that
        continues the same memory as upstream inference.py does across its input files.
        """
        for name in [stream] if stream is not None else self.streams:
            self._buffers[name] = np.zeros(0, np.float32)
            self._consumed[name] = 0
            self._index[name] = 0
            if not keep_memory and self._memory is not None and self._silence is not None:
                self._memory[:, self._slot[name]] = self._silence[:, 0]

    def pending_samples(self, stream: str) -> int:
        return int(self._buffers[stream].size)

    def _run(self, names: list[str], chunks: np.ndarray) -> list[ChunkResult]:
        slots = torch.tensor([self._slot[n] for n in names])
        with torch.inference_mode():
            memory = None if self._memory is None else self._memory[:, slots]
            scores, memory = self.model(torch.from_numpy(chunks), memory)
            if memory is not None and self._memory is not None:
                self._memory[:, slots] = memory
        out = []
        for name, chunk, row in zip(names, chunks, scores.numpy(), strict=True):
            start = self._consumed[name]
            self._consumed[name] += chunk.size
            out.append(
                ChunkResult(
                    stream=name,
                    index=self._index[name],
                    start_s=start / SAMPLE_RATE,
                    end_s=self._consumed[name] / SAMPLE_RATE,
                    scores=row,
                    level_dbfs=level_dbfs(chunk),
                )
            )
            self._index[name] += 1
        return out
