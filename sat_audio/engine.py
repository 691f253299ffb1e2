"""Streaming engine: cuts each stream into chunks and scores ready chunks in batched passes.

Every stream keeps its own memory, primed from silence as upstream inference starts, so N
streams batched together score exactly like N engines with one stream each (in float32; int8
shares its activations' scale across a pass, model/onnx_int8.py).
"""

import logging
import math
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from sat_audio import SAMPLE_RATE
from sat_audio.errors import SatAudioError
from sat_audio.model.registry import ModelSpec
from sat_audio.model.shapes import HOP, PATCH, State

if TYPE_CHECKING:
    from sat_audio.config import ModelConfig
    from sat_audio.model.sat import AudioTransformer

log = logging.getLogger(__name__)

MIN_CHUNK_S = 0.16
"""One patch column: 0.16 s gives 17 mel frames, the shortest chunk a model can score."""
MIN_TAIL_SAMPLES = (PATCH - 1) * HOP
"""A final partial chunk needs this many samples (16 frames) to be scored at all."""
MAX_BATCH = 16
"""Streams in one pass at most; more go in passes of this many. A pass's activations then stay
in the CPU's caches: one pass of 256 streams of SAT_T_2s took 1.18x (onnx) and 1.44x (torch)
the time of sixteen passes of 16 on this 2-core machine (bench_model.py, many streams)."""


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
    """RMS level of a chunk in dB relative to full scale, floored at -120.

    One pass, no squared copy of the chunk, no BLAS threads: a float32 sum is ample for 0.1 dB.
    """
    if not samples.size:
        return -120.0
    return dbfs(float(np.einsum("i,i->", samples, samples)) / samples.size)


def dbfs(mean_square: float) -> float:
    """The level of a mean square in dB relative to full scale, floored at -120."""
    return max(-120.0, 20.0 * math.log10(max(math.sqrt(mean_square), 1e-6)))


@runtime_checkable
class Scorer(Protocol):
    """What the engine runs: the torch model (model/fast.py) or the ONNX runtime."""

    spec: ModelSpec

    def check_chunk(self, samples: int) -> None: ...

    def initial_state(self, batch: int) -> State: ...

    def score(self, chunks: np.ndarray, state: State) -> tuple[np.ndarray, State]: ...

    def inference(self) -> AbstractContextManager[object]: ...


def load_scorer(cfg: "ModelConfig") -> Scorer:
    """The configured model on its backend; the onnx backend never imports torch.

    cfg.variant names the architecture of a checkpoint whose file name is not upstream's. threads
    0 leaves the runtime its own default (all cores), as the file commands do unless told.
    """
    variant = cfg.variant
    if cfg.backend == "onnx":
        from sat_audio.model.onnx_runtime import OnnxScorer

        path = onnx_export_of(cfg)
        scorer = OnnxScorer(path, threads=cfg.threads, precision=cfg.precision)
        if variant is None or scorer.spec.name == variant:
            return scorer
        if Path(cfg.name).suffix == ".onnx":
            raise SatAudioError(f"{path} holds {scorer.spec.name}, not {variant}")
        # an export of another variant beside the checkpoint: the checkpoint itself decides
        export_in_child(cfg.name, cfg.dir, path, cfg.precision, variant)
        return OnnxScorer(path, threads=cfg.threads, precision=cfg.precision)
    from sat_audio.model.checkpoint import load_model

    model = load_model(cfg.name, variant=variant, directory=cfg.dir)  # says if torch is missing
    return _torch_scorer(model, fast=True, threads=cfg.threads)


def onnx_export_of(cfg: "ModelConfig") -> Path:
    """The onnx backend's graph of the configured model, exported from its checkpoint (downloaded
    first for a registry name or URL) when there is none yet, or the checkpoint is newer (replaced
    since). A named .onnx file is taken as it is."""
    from sat_audio.model.onnx_runtime import checkpoint_file, onnx_path

    path = onnx_path(cfg.name, cfg.dir, cfg.precision)
    if Path(cfg.name).suffix == ".onnx":
        return path
    checkpoint = checkpoint_file(cfg.name, cfg.dir)
    if not path.is_file():
        log.info("exporting %s for the %s backend to %s (once)", cfg.name, cfg.runtime, path)
    elif checkpoint.is_file() and checkpoint.stat().st_mtime_ns > path.stat().st_mtime_ns:
        log.info("%s is newer than its export: exporting it again to %s", checkpoint, path)
    else:
        return path
    export_in_child(cfg.name, cfg.dir, path, cfg.precision, cfg.variant)
    return path


def export_in_child(
    name: str, directory: str | None, path: Path, precision: str, variant: str | None = None
) -> None:
    """`sat-audio models export-onnx` in a fresh interpreter (spawn: it shares nothing).

    Exporting needs no torch, but onnx's import, the checkpoint's arrays and the graph being
    written would stay in a listener's memory: this way they leave with the child.
    """
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as child:
        child.apply(_export, (name, directory, path, precision, variant))


def _export(
    name: str, directory: str | None, path: Path, precision: str, variant: str | None
) -> None:
    from sat_audio.model.checkpoint import read_weights
    from sat_audio.model.onnx_export import export_onnx

    export_onnx(read_weights(name, variant=variant, directory=directory), path, precision)


def _torch_scorer(model: "AudioTransformer", fast: bool, threads: int = 0) -> Scorer:
    from sat_audio.model.fast import TorchScorer  # torch only when a torch model is given

    return TorchScorer(model, fast=fast, threads=threads)


class Engine:
    """Chunker and batched model runner for one or more named streams.

    model is a torch AudioTransformer (fast=False runs its plain reference forward) or any
    Scorer, such as the ONNX runtime's.
    """

    def __init__(
        self,
        model: "AudioTransformer | Scorer",
        chunk_seconds: float,
        streams: Sequence[str] = ("default",),
        *,
        fast: bool = True,
        max_batch: int = MAX_BATCH,
    ) -> None:
        if chunk_seconds < MIN_CHUNK_S:
            raise SatAudioError(
                f"chunk length {chunk_seconds} s is too short; use at least {MIN_CHUNK_S} s"
            )
        if not streams or len(set(streams)) != len(streams):
            raise SatAudioError(f"stream names must be unique and non-empty, got {list(streams)}")
        self.scorer = model if isinstance(model, Scorer) else _torch_scorer(model, fast)
        self.spec = self.scorer.spec
        self.chunk_seconds = chunk_seconds
        # upstream: int(chunk_length * sr) truncates, so -c 2.01 gives 32159-sample chunks.
        self.chunk_samples = int(chunk_seconds * SAMPLE_RATE)
        self.scorer.check_chunk(self.chunk_samples)
        self.streams = list(streams)
        self.max_batch = max_batch
        self._slot = {name: i for i, name in enumerate(self.streams)}
        self._silence = self.scorer.initial_state(1)
        self._state = self.scorer.initial_state(len(self.streams))
        self._buffers = {name: np.zeros(0, np.float32) for name in self.streams}
        self._consumed = dict.fromkeys(self.streams, 0)
        self._index = dict.fromkeys(self.streams, 0)
        self._warned: set[str] = set()

    def feed(self, stream: str, samples: np.ndarray) -> None:
        """Queue 16 kHz mono float32 samples of any length for a stream."""
        if stream not in self._slot:
            raise SatAudioError(f"unknown stream {stream!r}; streams are {self.streams}")
        if samples.ndim != 1:
            raise SatAudioError(f"expected mono samples (1-D), got shape {samples.shape}")
        buffer = np.concatenate((self._buffers[stream], samples.astype(np.float32, copy=False)))
        self._buffers[stream] = buffer
        self._sanitize(stream, buffer[buffer.size - samples.size :])

    def _sanitize(self, stream: str, new: np.ndarray) -> None:
        """In place, once, for every input: a sample that is not a number (NaN, infinite: a
        broken decoder, wrong PCM settings) becomes silence, and the rest is clipped to full
        scale. Either would otherwise reach the stream's memory and spoil its next chunks' scores
        (a garbage float like 3e38 overflows the spectrum)."""
        finite = np.isfinite(new)
        if not finite.all():
            self._warn_once(
                f"samples {stream}",
                "stream %s: %d samples were not numbers (NaN or infinite); they are analysed as "
                "silence (said once per stream)",
                stream,
                new.size - int(np.count_nonzero(finite)),
            )
            new[~finite] = 0.0
        np.clip(new, -1.0, 1.0, out=new)

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        """A problem that recurs with the input (every chunk, perhaps) is logged the first time."""
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    def step(self) -> list[ChunkResult]:
        """Score one chunk of every stream that has a full chunk queued, max_batch at a time."""
        ready = [s for s in self.streams if self._buffers[s].size >= self.chunk_samples]
        if not ready:
            return []
        chunks = []
        for stream in ready:
            buf = self._buffers[stream]
            chunks.append(buf[: self.chunk_samples])
            self._buffers[stream] = buf[self.chunk_samples :]
        return self._run(ready, np.stack(chunks) if len(chunks) > 1 else chunks[0][None])

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
            if not keep_memory:
                with self.scorer.inference():
                    for part, silence in zip(self._state, self._silence, strict=True):
                        part[self._slot[name]] = silence[0]

    def time_pass(self) -> float:
        """Seconds one chunk of every stream takes to score here (passes of max_batch), on a
        throwaway memory of silence: the second of two passes, the first warms the runtime."""
        n = len(self.streams)
        chunks = np.zeros((n, self.chunk_samples), np.float32)
        state = self.scorer.initial_state(n)
        took = 0.0
        with self.scorer.inference():
            for _ in range(2):
                started = time.perf_counter()
                for start in range(0, n, self.max_batch):
                    part = tuple(p[start : start + self.max_batch] for p in state)
                    self.scorer.score(chunks[start : start + self.max_batch], part)
                took = time.perf_counter() - started
        return took

    def pending_samples(self, stream: str) -> int:
        return int(self._buffers[stream].size)

    def _run(self, names: list[str], chunks: np.ndarray) -> list[ChunkResult]:
        slots = [self._slot[n] for n in names]
        size = self.max_batch
        with self.scorer.inference():
            passes = [
                self._score(slots[start : start + size], chunks[start : start + size])
                for start in range(0, len(slots), size)
            ]
        scores = passes[0] if len(passes) == 1 else np.concatenate(passes)
        finite = np.isfinite(scores)
        if not finite.all():
            for name, row in zip(names, finite, strict=True):
                if not row.all():
                    self._warn_once(
                        f"scores {name}",
                        "stream %s: the model gave scores that are not numbers; they count as 0 "
                        "(said once per stream)",
                        name,
                    )
            scores = np.where(finite, scores, np.float32(0.0))
        out = []
        for name, chunk, row in zip(names, chunks, scores, strict=True):
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

    def _score(self, slots: list[int], chunks: np.ndarray) -> np.ndarray:
        """One pass over the streams at slots; their memory is gathered and written back, unless
        the pass holds every stream: then the new state simply replaces the old."""
        everyone = slots == list(range(len(self.streams)))
        state = self._state if everyone else tuple(part[slots] for part in self._state)
        scores, state = self.scorer.score(chunks, state)
        if everyone:
            self._state = state
        else:
            for part, new in zip(self._state, state, strict=True):
                part[slots] = new
        return scores
