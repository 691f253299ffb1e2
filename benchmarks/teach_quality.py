"""How well `sat-audio teach` learns a sound: per sound precision and recall on held-out mixes.

Five kinds of sound are generated here (two-tone chimes, beep patterns, noise bursts, espeak-ng
speech, filtered noise like running water), six renditions each that differ in pitch, timing,
level and voice. Each sound is taught from the first EXAMPLES renditions against a recording of
the room (noise, no sound); the rest are held out. Test streams of room noise (another seed)
carry held-out renditions of every kind at random times, at each SNR; every chunk is scored by
all custom sounds at once, and a chunk counts as holding a sound when it overlaps the sound by
OVERLAP_S or more. Precision and recall are over chunks, at probability 0.5 (the probe) or the
prototypes' own threshold.

Embedders: the model (by default SAT_T_2s with random weights as initialised for training; any
checkpoint with --model), and a control that knows nothing: each chunk's log-mel mean and
standard deviation per band. Methods: the linear probe sat-audio uses (custom.fit_probe), and
prototypes (cosine similarity to the nearest example chunk, threshold from the teaching set).

    .venv/bin/python benchmarks/teach_quality.py                 # random weights, onnx
    .venv/bin/python benchmarks/teach_quality.py --model SAT_T_2s --model-dir DIR  # a real one
"""

import argparse
import contextlib
import io
import math
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from sat_audio import SAMPLE_RATE
from sat_audio.config import ModelConfig
from sat_audio.custom import L2, _at_snr, fit_probe, teaching_set
from sat_audio.engine import load_scorer
from sat_audio.model.mel import mel_filterbank
from sat_audio.model.onnx_runtime import power_spectrum
from sat_audio.model.shapes import N_CLASSES, State

SNRS = (20, 10, 0)
RENDITIONS = 6
EXAMPLES = 3
STREAMS = 12
STREAM_S = 16.0
OVERLAP_S = 0.25
NOISE_DBFS = -45.0
SR = SAMPLE_RATE


def _t(seconds: float) -> np.ndarray:
    return np.arange(int(seconds * SR)) / SR


def _norm(wave: np.ndarray) -> np.ndarray:
    return (0.5 * wave / (np.abs(wave).max() + 1e-9)).astype(np.float32)


def chime(rng: np.random.Generator) -> np.ndarray:
    """Ding-dong: two decaying tones a major third apart, pitch within 3 %."""
    f = 660 * rng.uniform(0.97, 1.03)
    t = _t(0.7)
    parts = [np.sin(2 * np.pi * g * t) * np.exp(-4 * t) for g in (f, f * 0.8)]
    return _norm(np.concatenate(parts))


def beeps(rng: np.random.Generator) -> np.ndarray:
    """An appliance's end beep: three (or four) 2 kHz beeps."""
    f = 2000 * rng.uniform(0.98, 1.02)
    beep = np.sin(2 * np.pi * f * _t(0.15))
    gap = np.zeros(int(rng.uniform(0.1, 0.2) * SR))
    return _norm(np.concatenate([np.concatenate((beep, gap)) for _ in range(rng.integers(3, 5))]))


def burst(rng: np.random.Generator) -> np.ndarray:
    """A knock or a bang: a short band-passed noise burst, sharp attack."""
    n = int(rng.uniform(0.15, 0.3) * SR)
    noise = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / SR)
    noise[(freqs < 300) | (freqs > 1500)] = 0
    wave = np.fft.irfft(noise, n) * np.exp(-np.arange(n) / (0.05 * SR))
    return _norm(np.tile(np.concatenate((wave, np.zeros(int(0.15 * SR)))), 2))


def speech(rng: np.random.Generator) -> np.ndarray:
    """espeak-ng saying the same phrase in varied voices and speeds."""
    voice = str(rng.choice(["en", "en-us", "en-gb-scotland", "en+f3", "en+m3"]))
    speed = str(int(rng.uniform(140, 190)))
    out = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", speed, "--stdout", "dinner is ready"],
        capture_output=True,
        check=True,
    ).stdout
    wave, rate = sf.read(io.BytesIO(out), dtype="float32")
    return _norm(soxr.resample(wave, rate, SR))


def water(rng: np.random.Generator) -> np.ndarray:
    """A running tap: noise band-passed around 1-4 kHz with a fast random flutter."""
    n = int(rng.uniform(2.0, 3.0) * SR)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / SR)
    spectrum *= np.exp(-0.5 * ((freqs - 2500) / 900) ** 2)
    steps = np.arange(0, n, 160)
    flutter = 1 + 0.5 * np.interp(np.arange(n), steps, rng.random(steps.size))
    return _norm(np.fft.irfft(spectrum, n) * flutter)


SOUNDS: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
    "chime": chime,
    "beeps": beeps,
    "burst": burst,
    "speech": speech,
    "water": water,
}


def room(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """A quiet room: pink noise and a little mains hum, at NOISE_DBFS."""
    n = int(seconds * SR)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum /= np.sqrt(np.maximum(np.fft.rfftfreq(n, 1 / SR), 20.0))
    wave = np.fft.irfft(spectrum, n) + 0.02 * np.sin(2 * np.pi * 50 * _t(seconds))
    return (wave * 10 ** (NOISE_DBFS / 20) / np.sqrt(np.mean(wave**2))).astype(np.float32)


@dataclass(frozen=True)
class _Spec:
    name: str
    embed_dim: int


class MelStats:
    """The control: an "embedding" of each chunk's log-mel mean and standard deviation per band,
    through the same interface as a model's scorer (no memory, no scores)."""

    spec = _Spec("mel-baseline", 128)

    def check_chunk(self, samples: int) -> None:
        pass

    def initial_state(self, batch: int) -> State:
        return ()

    def inference(self) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()

    def score_embed(self, chunks: np.ndarray, state: State) -> tuple[np.ndarray, np.ndarray, State]:
        mel = 10 * np.log10(np.maximum(power_spectrum(chunks) @ mel_filterbank(), 1e-10))
        embedding = np.concatenate((mel.mean(axis=1), mel.std(axis=1)), axis=1)
        return np.zeros((len(chunks), N_CLASSES), np.float32), embedding, state


@contextlib.contextmanager
def random_sat(name: str, init: str) -> Iterator[object]:
    """The onnx scorer of a model of this variant with random weights: as initialised for
    training, or (init "tests") every weight drawn as tests/checkpoints.py draws them; the mel
    BatchNorm set to typical log-mel statistics."""
    import torch

    from sat_audio.model.onnx_export import export_onnx
    from sat_audio.model.onnx_runtime import OnnxScorer
    from sat_audio.model.registry import get_spec
    from sat_audio.model.sat import build_model

    torch.manual_seed(0)
    model = build_model(get_spec(name))
    with torch.no_grad():
        if init == "tests":
            for key, tensor in model.state_dict().items():
                if not key.startswith("init_bn"):
                    noise = torch.randn(tensor.shape)
                    is_scale = tensor.ndim == 1 and key.endswith("weight")
                    tensor.copy_(1.0 + 0.2 * noise if is_scale else 0.05 * noise)
        model.init_bn[1].running_mean.fill_(-50.0)
        model.init_bn[1].running_var.fill_(400.0)
    with tempfile.TemporaryDirectory() as tmp:
        yield OnnxScorer(export_onnx(model, Path(tmp) / "random.onnx"))


def prototypes(pos: np.ndarray, neg: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Cosine similarity to the nearest example chunk (standardised on the teaching set), as a
    score of 1 when it is above every background chunk's, else 0."""
    x = np.concatenate((pos, neg))
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6

    def unit(e: np.ndarray) -> np.ndarray:
        z = (e - mean) / scale
        return z / (np.linalg.norm(z, axis=1, keepdims=True) + 1e-9)

    p = unit(pos)
    threshold = float((unit(neg) @ p.T).max())

    def score(e: np.ndarray) -> np.ndarray:
        return 0.5 + 0.5 * np.sign((unit(e) @ p.T).max(axis=1) - threshold)

    return score


def test_streams(
    rng: np.random.Generator, held_out: dict[str, list[np.ndarray]], snr: float, chunk: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """STREAMS streams (B, S) of room noise with held-out renditions at random times, and per
    sound the truth per chunk (B, chunks)."""
    n = int(STREAM_S * SR)
    waves, truth = [], {k: np.zeros((STREAMS, n // chunk), bool) for k in held_out}
    for s in range(STREAMS):
        wave = room(rng, STREAM_S)
        at = 1.0 * SR
        while True:
            kind = str(rng.choice(list(held_out)))
            sound = held_out[kind][int(rng.integers(len(held_out[kind])))]
            at += int(rng.uniform(1.0, 3.0) * SR)
            if at + sound.size > n:
                break
            wave[int(at) : int(at) + sound.size] = _at_snr(
                sound, wave[int(at) : int(at) + sound.size], snr
            )
            for c in range(n // chunk):
                overlap = min(at + sound.size, (c + 1) * chunk) - max(at, c * chunk)
                truth[kind][s, c] |= overlap >= OVERLAP_S * SR
            at += sound.size
        waves.append(wave)
    return np.stack(waves), truth


def evaluate(
    scorer: object, chunk_s: float, l2: float = L2, seed: int = 0
) -> dict[tuple[str, str, int], tuple]:
    """(method, sound, snr) -> (precision, recall, positives) over the test streams."""
    from sat_audio.custom import embed

    rng = np.random.default_rng(seed)
    renditions = {k: [make(rng) for _ in range(RENDITIONS)] for k, make in SOUNDS.items()}
    background = [room(np.random.default_rng(seed + 100), 30.0)]
    chunk = int(chunk_s * SR)
    scorers: dict[str, dict[str, Callable[[np.ndarray], np.ndarray]]] = {"probe": {}, "proto": {}}
    for kind, waves in renditions.items():
        started = time.perf_counter()
        pos, neg = teaching_set(scorer, waves[:EXAMPLES], background, chunk_s)  # type: ignore[arg-type]
        mean, scale, w, b = fit_probe(pos, neg, l2)
        scorers["probe"][kind] = lambda e, m=mean, s=scale, w=w, b=b: (
            1 / (1 + np.exp(-(((e - m) / s) @ w + b)))
        )
        scorers["proto"][kind] = prototypes(pos, neg)
        print(
            f"  taught {kind}: {len(pos)} example and {len(neg)} background chunks "
            f"in {time.perf_counter() - started:.1f} s"
        )
    held_out = {k: v[EXAMPLES:] for k, v in renditions.items()}
    results = {}
    for snr in SNRS:
        waves, truth = test_streams(np.random.default_rng(seed + snr + 1), held_out, snr, chunk)
        emb = embed(scorer, waves[:, : waves.shape[1] // chunk * chunk], chunk)  # type: ignore[arg-type]
        flat = emb.reshape(-1, emb.shape[-1])
        for method, by_kind in scorers.items():
            for kind, score in by_kind.items():
                said = score(flat) >= 0.5
                real = truth[kind].reshape(-1)
                tp = int((said & real).sum())
                precision = tp / int(said.sum()) if said.any() else math.nan  # none said
                recall = tp / max(1, int(real.sum()))
                results[(method, kind, snr)] = (precision, recall, int(real.sum()))
    return results


def report(name: str, results: dict[tuple[str, str, int], tuple], chunk_s: float) -> None:
    print(f"\n{name}: precision / recall per sound (chunks holding it), at SNR dB")
    head = "".join(f"{f'{snr} dB':>14}" for snr in SNRS)
    for method in ("probe", "proto"):
        print(f"{method:<8}{'sound':<8}{head}")
        rows = sorted({k for m, k, _ in results if m == method})
        means = {snr: [] for snr in SNRS}
        for kind in rows:
            cells = []
            for snr in SNRS:
                p, r, _ = results[(method, kind, snr)]
                means[snr].append((p, r))
                cells.append(f"{_cell(p)} / {r:.2f}".rjust(14))
            print(f"{'':<8}{kind:<8}" + "".join(cells))
        mean_cells = "".join(
            f"{_cell(_mean([p for p, _ in v]))} / {np.mean([r for _, r in v]):.2f}".rjust(14)
            for v in means.values()
        )
        print(f"{'':<8}{'mean':<8}" + mean_cells)
    positives = {snr: sum(results[("probe", k, snr)][2] for k in SOUNDS) for snr in SNRS}
    total = STREAMS * int(STREAM_S / chunk_s)
    print(
        f"  chunks holding a sound per SNR: {positives} of {total} ({STREAMS} streams of "
        f"{STREAM_S:g} s); one sound's share is the precision of a detector that always fires"
    )


def _mean(precisions: list[float]) -> float:
    """The mean of the precisions that are defined."""
    defined = [p for p in precisions if not math.isnan(p)]
    return float(np.mean(defined)) if defined else math.nan


def _cell(precision: float) -> str:
    """A precision, or "-" where nothing was detected (it is undefined then)."""
    return "  -" if math.isnan(precision) else f"{precision:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a checkpoint (registry name or path)")
    parser.add_argument("--model-dir", default=None, help="where --model's checkpoint is")
    parser.add_argument("--backend", default="onnx", choices=("onnx", "torch"))
    parser.add_argument("--random", default="SAT_T_2s", help="variant with random weights")
    parser.add_argument("--chunk", type=float, default=2.0, help="chunk length in seconds")
    parser.add_argument("--l2", type=float, default=L2, help="the probe's L2 penalty")
    parser.add_argument(
        "--init",
        choices=("training", "tests"),
        default="training",
        help="random weights as initialised for training, or as the tests' checkpoints make "
        "them (every weight noticeably random)",
    )
    args = parser.parse_args()
    print(f"sounds {', '.join(SOUNDS)}; taught from {EXAMPLES} examples; SNRs {SNRS} dB")
    if args.model:
        scorer = load_scorer(ModelConfig(args.model, args.model_dir, backend=args.backend))
        report(f"{args.model}", evaluate(scorer, args.chunk, args.l2), args.chunk)
    else:
        with random_sat(args.random, args.init) as scorer:
            name = f"{args.random}, random weights ({args.init})"
            report(name, evaluate(scorer, args.chunk, args.l2), args.chunk)
    report("mel-baseline (control)", evaluate(MelStats(), args.chunk, args.l2), args.chunk)


if __name__ == "__main__":
    main()
