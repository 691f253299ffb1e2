"""The light runtime: a streaming model exported to ONNX, run by onnxruntime, no torch.

OnnxScorer has the interface the engine runs (engine.Scorer). numpy computes the power
spectrogram (its FFT agrees with torch.stft to float32 rounding); the graph does the rest: mel,
dB, the model. `sat-audio models export-onnx` writes the graph (model/onnx_export.py), without
torch; a listener exports it itself when it is missing (engine.onnx_export_of).

onnxruntime's PyPI wheels (1.32 here) report usage to Microsoft on Linux as well: at
import they write a device id and an event queue under ~/.cache/Microsoft and start an uploader
thread, whose first event names this program, the CPU and the OS. A listener that promises
privacy turns that off here, before anything in the package imports onnxruntime; onnxruntime
reads the switch once, at import.
"""

import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import numpy as np

from sat_audio.errors import SatAudioError
from sat_audio.memory import release_free_heap, weights_on_huge_pages
from sat_audio.model.registry import ModelSpec, get_spec, model_dir, registry
from sat_audio.model.shapes import HOP, N_FFT, PATCH, State

os.environ["ORT_DISABLE_TELEMETRY"] = "1"
if TYPE_CHECKING:
    import onnxruntime

FORMAT = "6"
"""The graph's inputs and metadata as model/onnx_export.py writes them; bumped when they change."""
SUFFIX = {"float32": ".onnx", "int8": ".int8.onnx"}
"""An export's file name ends by its precision: both can sit beside the checkpoint."""
WINDOW = (N_FFT * (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT))).astype(np.float32)
"""Periodic Hann window, as torch.hann_window, times N_FFT: rfft's norm="forward" divides it out.

numpy 2.4 runs a float32 rfft in double precision unless a float32 norm factor comes with it
(1.5x the time in a running listener, and twice the memory); "forward" gives one, and scaling
by a power of two is exact, so the power is the float32 transform's.
"""
FFT_ROWS = 32
"""Frames per FFT call in power_spectrum."""


def power_spectrum(wave: np.ndarray) -> np.ndarray:
    """(B, S) float32 -> (B, 1 + S // 160, 257) power, centred and reflect-padded as torch.stft.

    numpy's FFT, not a matmul: no BLAS threads spinning beside the configured ones. Frames go
    through it FFT_ROWS at a time, into the result: a block's temporaries (under 70 KB each) stay
    below glibc's mmap threshold and reuse the same heap. A whole 2 s chunk's (400 KB each) are
    mapped and unmapped once, which raises the threshold (mallopt(3)), and from then on come from
    the heap and leave holes the listener holds between chunks. The power is bit for bit the same.
    """
    half = N_FFT // 2  # reflect padding leaves out the edge sample: x[256] .. x[1], x, x[-2] ..
    padded = np.concatenate((wave[:, half:0:-1], wave, wave[:, -2 : -half - 2 : -1]), axis=1)
    step = padded.strides[1]
    batch, frames = wave.shape[0], 1 + wave.shape[1] // HOP
    framed = np.lib.stride_tricks.as_strided(
        padded, (batch, frames, N_FFT), (padded.strides[0], HOP * step, step), writeable=False
    )
    power = np.empty((batch, frames, N_FFT // 2 + 1), np.float32)
    for b in range(batch):
        for rows in range(0, frames, FFT_ROWS):
            block = slice(rows, rows + FFT_ROWS)
            spec = np.fft.rfft(framed[b, block] * WINDOW, axis=-1, norm="forward")
            np.square(spec.real, out=power[b, block])
            power[b, block] += np.square(spec.imag)
    return power


def session_options(threads: int) -> "onnxruntime.SessionOptions":
    """How the scorer runs a graph: its threads on one node at a time, tensors in the arena.

    onnxruntime's arena keeps a chunk's tensors from one run to the next; from malloc, a listener
    faults in 20-50 pages a chunk that glibc gave back, and holds 1-4 MB more. Without a memory
    pattern (one block planned per input shape) it runs as fast, in 1 MB less.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.enable_cpu_mem_arena = True
    options.enable_mem_pattern = False
    return options


class OnnxScorer:
    """Scores chunks through an exported streaming model, of the precision the config names."""

    def __init__(self, path: str | Path, threads: int = 1, precision: str = "float32") -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise SatAudioError(
                "model.backend onnx needs onnxruntime: pip install onnxruntime"
            ) from err
        path = Path(path)
        flag = "" if precision == "float32" else f" --precision {precision}"
        export = f"sat-audio models export-onnx{flag}"
        if not path.is_file():
            raise SatAudioError(f"ONNX model {path} not found; make it with `{export}`")
        try:
            self.session = ort.InferenceSession(
                str(path), session_options(threads), providers=["CPUExecutionProvider"]
            )
            meta = self.session.get_modelmeta().custom_metadata_map
            if meta["sat_audio.format"] != FORMAT:
                raise ValueError(f"format {meta['sat_audio.format']}, this version reads {FORMAT}")
            self.spec = ModelSpec(**json.loads(meta["sat_audio.spec"]))
            found = meta["sat_audio.precision"]
            self._inputs = [i.name for i in self.session.get_inputs()]
            outputs = [o.name for o in self.session.get_outputs()]
            self._embeds = "embedding" in outputs  # not in exports made before it was added
            self._outputs = [o for o in outputs if o != "embedding"]
            self._export = export
            self._silence = self._silence_state()
        except Exception as err:  # onnxruntime raises its own types for a bad file
            raise SatAudioError(
                f"{path} is not a SAT Audio ONNX model of this version ({err}); "
                f"re-export it with `{export}`"
            ) from err
        if found != precision:
            raise SatAudioError(
                f"{path} holds {found} weights, model.precision is {precision}; make the "
                f"{precision} export with `{export}`"
            )
        release_free_heap()  # the parsed file and the graph before optimisation are gone
        weights_on_huge_pages()

    def _silence_state(self) -> State:
        """The state after a memory-length of silence, from an empty memory, as TorchScorer."""
        spec = self.spec
        no_past = np.zeros((1, 2, spec.num_heads, 0, spec.embed_dim // spec.num_heads), np.float32)
        empty = (np.zeros((1, 0, spec.embed_dim), np.float32), *[no_past] * (spec.depth - 1))
        return self.score(np.zeros((1, spec.memory_samples), np.float32), empty)[1]

    def check_chunk(self, samples: int) -> None:
        """Any chunk of at least one patch column fits: longer ones run as target pieces."""
        if 1 + samples // HOP < PATCH:
            raise SatAudioError(f"a chunk needs at least {(PATCH - 1) * HOP} samples")

    def initial_state(self, batch: int) -> State:
        return tuple(np.repeat(s, batch, axis=0) for s in self._silence)

    def score(self, chunks: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        scores, _, state = self._run(chunks, state, embed=False)
        return scores, state

    def score_embed(self, chunks: np.ndarray, state: State) -> tuple[np.ndarray, np.ndarray, State]:
        """score, with each chunk's embedding (B, D): one more output of the same run."""
        if not self._embeds:
            raise SatAudioError(
                f"this ONNX export has no embedding output (made by an older version), which "
                f"custom sounds need; re-export it with `{self._export}`"
            )
        scores, embedding, state = self._run(chunks, state, embed=True)
        assert embedding is not None
        return scores, embedding, state

    def _run(
        self, chunks: np.ndarray, state: State, embed: bool
    ) -> tuple[np.ndarray, np.ndarray | None, State]:
        power = power_spectrum(chunks)
        target = self.spec.target_frames
        frames = power.shape[1]
        if frames > target:
            # upstream: target-length pieces through the memory; a short last piece is dropped.
            starts = range(0, frames - target + 1, target)
            bounds = [(start, start + target) for start in starts]
        else:
            bounds = [(0, frames // PATCH * PATCH)]
        names = [*self._outputs, "embedding"] if embed else self._outputs
        outs, embeddings = [], []
        for start, end in bounds:
            feed = self.graph_inputs(power, start, end, state)
            scores, first, *pasts = self.session.run(names, feed)
            if embed:
                embeddings.append(pasts.pop())
            state = (first, *(p.swapaxes(0, 1) for p in pasts))  # batch first again, as views
            outs.append(scores)
        embedding = None
        if embed:
            embedding = np.mean(embeddings, axis=0) if len(outs) > 1 else embeddings[0]
        return np.mean(outs, axis=0) if len(outs) > 1 else outs[0], embedding, state

    def graph_inputs(
        self, power: np.ndarray, start: int, end: int, state: State
    ) -> dict[str, np.ndarray]:
        """The graph's inputs for the piece of frames start:end.

        The engine holds each past batch first, as the fast path; the graph takes keys/values
        first, as onnxruntime's Attention. The axes swap as views, so a past returns to the graph
        as the array it left; only a batch the engine gathers anew (a subset of its streams, or
        the silence of several) is copied.
        """
        piece = (np.array([start], np.int64), np.array([end], np.int64))
        pasts = (np.ascontiguousarray(p.swapaxes(0, 1)) for p in state[1:])
        return dict(zip(self._inputs, (power, *piece, state[0], *pasts), strict=True))

    def inference(self) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()


def checkpoint_file(name: str, directory: str | Path | None = None) -> Path:
    """Where a model's checkpoint is, or where checkpoint.locate downloads it: a registry name's
    or an http(s) URL's in registry.model_dir, a path as it is."""
    folder = model_dir(directory)
    if name in registry():
        return folder / get_spec(name).file
    if urlparse(name).scheme in ("http", "https"):
        file = Path(urlparse(name).path).name
        if not file:
            raise SatAudioError(f"model URL {name} does not end in a file name")
        return folder / file
    return Path(name).expanduser()


def onnx_path(name: str, directory: str | Path | None = None, precision: str = "float32") -> Path:
    """Where the ONNX export of a model lives: beside its checkpoint (checkpoint_file), `.onnx`
    for `.pt` (int8: `.int8.onnx`); an .onnx path is taken as it is."""
    path = checkpoint_file(name, directory)
    return path if path.suffix == ".onnx" else path.with_suffix(SUFFIX[precision])
