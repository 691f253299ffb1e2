"""Custom sounds: a household's own sound, taught from a few examples, scored as `custom:NAME`.

A custom sound is a linear probe: logistic regression on the model's chunk embeddings (the
pooled tokens its head reads, from the same pass as the scores), the examples' chunks against
background chunks. Its output is a probability like an AudioSet label's score, so an event uses
`custom:NAME` with the same thresholds, smoothing and hysteresis. docs/custom-sounds.md says why
a probe rather than prototypes, with the figures of benchmarks/teach_quality.py.

The file is JSON (no pickle, nothing executable): <model dir>/custom/<NAME>.json, versioned by
its `format`, and it names the variant it was taught on: embeddings of another variant mean
nothing to it.
"""

import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sat_audio import SAMPLE_RATE, __version__
from sat_audio.engine import level_dbfs
from sat_audio.errors import SatAudioError
from sat_audio.labels import CUSTOM_PREFIX, custom_name
from sat_audio.model.registry import ModelSpec, model_dir
from sat_audio.model.shapes import State

if TYPE_CHECKING:
    from sat_audio.engine import Scorer

log = logging.getLogger(__name__)

FORMAT = 1
"""The custom sound file's format; a file of a later one is refused, not guessed at."""
KIND = "sat_audio.custom_sound"
SILENT_DBFS = -70.0
"""A chunk quieter than this is silence: not an example of anything."""
EXAMPLE_RANGE_DB = 20.0
"""An example's chunks count if within this of its loudest chunk: a clip's silent tail is not
the sound."""
ABOVE_FLOOR_DB = 6.0
"""In an example with quiet stretches, its chunks must be this far above its quietest."""
LEADS = (0.0, 0.25, 0.5, 0.75)
"""Each example is taught at these offsets (fractions of a chunk) of silence before it: in a
live stream the sound falls anywhere within a chunk."""
MIX_SNRS_DB = (None, 30.0, 20.0, 10.0)
"""Each example is taught as recorded (None) and mixed with background at these
signal-to-noise ratios: a sound is heard over the room's own noise."""
PITCH_FACTORS = (0.5, 2.0)
"""Each example, played this many times as fast (an octave down and up), is taught as not the
sound: without it, any sound that is not the room's noise scores high (benchmarks/teach_quality.py:
closer factors cost recall at low signal-to-noise ratios)."""
L2 = 0.01
"""The probe's L2 penalty on standardised embeddings (benchmarks/teach_quality.py)."""
MAX_BACKGROUND_S = 600.0
"""Background beyond this many seconds is not used: enough for a probe of a few hundred inputs."""


def custom_dir(directory: str | Path | None = None) -> Path:
    """Where custom sounds are kept: beside the checkpoints (registry.model_dir), so the add-on's
    persistent folder keeps them."""
    return model_dir(directory) / "custom"


def sound_path(name: str, directory: str | Path | None = None) -> Path:
    return custom_dir(directory) / f"{custom_name(name)}.json"


def custom_labels(label_lists: Iterable[Sequence[str]]) -> tuple[str, ...]:
    """The custom labels among events' labels, each once, sorted: the order of their columns
    after AudioSet's 527 in a chunk's scores."""
    return tuple(
        sorted({x for labels in label_lists for x in labels if x.startswith(CUSTOM_PREFIX)})
    )


@dataclass(frozen=True)
class CustomSound:
    """A taught sound: the probe's standardisation, weights and bias, and where it came from."""

    name: str
    variant: str
    chunk_seconds: float
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    info: dict[str, Any]

    @property
    def label(self) -> str:
        return CUSTOM_PREFIX + self.name

    def probability(self, embeddings: np.ndarray) -> np.ndarray:
        """(B, D) embeddings -> (B,) probabilities that each chunk holds the sound."""
        z = ((embeddings - self.mean) / self.scale) @ self.weights + self.bias
        return _sigmoid(z).astype(np.float32)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "kind": KIND,
            "name": self.name,
            "variant": self.variant,
            "chunk_seconds": self.chunk_seconds,
            "embed_dim": int(self.mean.size),
            "probe": {
                "mean": self.mean.tolist(),
                "scale": self.scale.tolist(),
                "weights": self.weights.tolist(),
                "bias": self.bias,
            },
            **self.info,
        }

    def save(self, path: Path) -> Path:
        """Write through a temp file renamed when complete: a listener never reads half a file."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(self.to_json(), fh, allow_nan=False)
            Path(tmp).replace(path)
        except OSError as err:
            raise SatAudioError(f"cannot write the custom sound {path} ({err.strerror})") from None
        return path


def read_sound(path: Path) -> CustomSound:
    """A custom sound file, checked: its format, its fields and their sizes; one line if not."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SatAudioError(f"custom sound file {path} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SatAudioError(f"{path} is not a custom sound file ({err})") from None
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise SatAudioError(f"{path} is not a custom sound file (no kind {KIND!r})")
    version = data.get("format")
    if not isinstance(version, int) or isinstance(version, bool):
        raise SatAudioError(f"{path} is not a custom sound file (format {version!r})")
    if version > FORMAT:
        raise SatAudioError(
            f"{path} is custom sound format {version}, from a newer sat-audio; this version "
            f"reads format {FORMAT}: upgrade sat-audio, or teach the sound again"
        )
    try:
        probe = data["probe"]
        dim = int(data["embed_dim"])
        arrays = [np.asarray(probe[k], dtype=np.float64) for k in ("mean", "scale", "weights")]
        sound = CustomSound(
            name=custom_name(str(data["name"])),
            variant=str(data["variant"]),
            chunk_seconds=float(data["chunk_seconds"]),
            mean=arrays[0],
            scale=arrays[1],
            weights=arrays[2],
            bias=float(probe["bias"]),
            info={k: v for k, v in data.items() if k not in _FIELDS},
        )
    except (KeyError, TypeError, ValueError) as err:
        raise SatAudioError(f"{path} is not a complete custom sound file ({err!r})") from None
    if (
        any(a.shape != (dim,) or not np.isfinite(a).all() for a in arrays)
        or not (sound.scale > 0).all()
    ):
        raise SatAudioError(f"{path} is a damaged custom sound file: teach the sound again")
    return sound


_FIELDS = {"format", "kind", "name", "variant", "chunk_seconds", "embed_dim", "probe"}


def load_sounds(
    labels: Sequence[str], spec: ModelSpec, chunk_seconds: float, directory: str | None = None
) -> list[CustomSound]:
    """The custom sounds of these `custom:NAME` labels, for a model of this variant."""
    sounds = []
    for label in labels:
        name = custom_name(label)
        path = sound_path(name, directory)
        if not path.is_file():
            raise SatAudioError(
                f"{label}: no custom sound {path}; teach it with `sat-audio teach {name} CLIP...`"
            )
        sound = read_sound(path)
        if sound.variant != spec.name or sound.mean.size != spec.embed_dim:
            raise SatAudioError(
                f"{label} was taught on model {sound.variant}, this listener runs {spec.name}: "
                f"teach it again with `sat-audio teach {name} CLIP...` on this model"
            )
        if not math.isclose(sound.chunk_seconds, chunk_seconds):
            log.warning(
                "%s was taught with %.2f s chunks, the model runs %.2f s chunks: it may "
                "detect less well; teach it again with this chunk length",
                label,
                sound.chunk_seconds,
                chunk_seconds,
            )
        sounds.append(sound)
    return sounds


class CustomScorer:
    """A scorer whose chunks' scores are AudioSet's 527 followed by each custom sound's
    probability, from the same pass (the embeddings come with the scores)."""

    def __init__(self, scorer: "Scorer", sounds: Sequence[CustomSound]) -> None:
        if not hasattr(scorer, "score_embed"):
            raise SatAudioError(f"the {type(scorer).__name__} backend gives no embeddings")
        self.base = scorer
        self.spec = scorer.spec
        self.labels = tuple(s.label for s in sounds)
        self._mean = np.stack([s.mean for s in sounds]).astype(np.float32)  # (K, D)
        self._weights = np.stack([s.weights / s.scale for s in sounds]).T.astype(np.float32)
        self._bias = np.array(
            [s.bias - float(s.mean / s.scale @ s.weights) for s in sounds], np.float32
        )

    def check_chunk(self, samples: int) -> None:
        self.base.check_chunk(samples)

    def initial_state(self, batch: int) -> State:
        return self.base.initial_state(batch)

    def inference(self) -> AbstractContextManager[object]:
        return self.base.inference()

    def score(self, chunks: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        scores, embeddings, state = self.base.score_embed(chunks, state)  # type: ignore[attr-defined]
        custom = _sigmoid(np.asarray(embeddings, np.float32) @ self._weights + self._bias)
        return np.concatenate((np.asarray(scores), custom.astype(np.float32)), axis=1), state


def with_custom_sounds(
    scorer: "Scorer", labels: Sequence[str], chunk_seconds: float, directory: str | None = None
) -> "Scorer":
    """The scorer with these custom labels' columns appended; as it is when there are none."""
    if not labels:
        return scorer
    return CustomScorer(scorer, load_sounds(labels, scorer.spec, chunk_seconds, directory))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow warnings for large |z|


# -- teaching ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fit:
    """How the probe does on the chunks it was taught on (not a held-out measure)."""

    example_chunks: int
    background_chunks: int
    recall: float
    false_positive_rate: float


def fit_probe(
    positives: np.ndarray, negatives: np.ndarray, l2: float = L2, iterations: int = 50
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Logistic regression of positives against negatives -> (mean, scale, weights, bias).

    Each class weighs the same however many chunks it has; the inputs are standardised; Newton's
    method (a D x D system a step: small for D <= 768) with an L2 penalty, which keeps the
    weights finite when a few examples separate perfectly.
    """
    x = np.concatenate((positives, negatives)).astype(np.float64)
    y = np.concatenate((np.ones(len(positives)), np.zeros(len(negatives))))
    sample = np.where(y == 1, 0.5 / len(positives), 0.5 / len(negatives))
    mean = x.mean(axis=0)
    scale = x.std(axis=0) + 1e-6
    z = np.hstack(((x - mean) / scale, np.ones((len(x), 1))))
    dim = z.shape[1]
    penalty = np.full(dim, l2)
    penalty[-1] = 0.0  # the bias is not penalised
    w = np.zeros(dim)
    for _ in range(iterations):
        p = _sigmoid(z @ w)
        grad = z.T @ (sample * (p - y)) + penalty * w
        hessian = (z * (sample * p * (1 - p))[:, None]).T @ z + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, grad)
        w -= step
        if np.abs(step).max() < 1e-6:
            break
    return mean, scale, w[:-1], float(w[-1])


def embed(scorer: "Scorer", waves: np.ndarray, chunk_samples: int) -> np.ndarray:
    """Embeddings (B, chunks, D) of equal-length waves (B, S), each a stream from silence, as a
    listener's; S a multiple of chunk_samples."""
    state = scorer.initial_state(len(waves))
    out = []
    with scorer.inference():
        for start in range(0, waves.shape[1], chunk_samples):
            chunk = np.ascontiguousarray(waves[:, start : start + chunk_samples])
            _, embeddings, state = scorer.score_embed(chunk, state)  # type: ignore[attr-defined]
            out.append(np.asarray(embeddings, np.float32))
    return np.stack(out, axis=1)


def _levels(wave: np.ndarray, chunk_samples: int) -> np.ndarray:
    return np.array(
        [level_dbfs(wave[i : i + chunk_samples]) for i in range(0, wave.size, chunk_samples)]
    )


def _sounding(wave: np.ndarray, chunk_samples: int, floor_dbfs: float) -> np.ndarray:
    """Which chunks of an example hold the sound: within EXAMPLE_RANGE_DB of its loudest, not
    silent, and ABOVE_FLOOR_DB above floor_dbfs, the example's quietest chunk, when the example
    spans that much (a saved clip's room before and after the sound is not the sound)."""
    levels = _levels(wave, chunk_samples)
    keep = (levels >= levels.max() - EXAMPLE_RANGE_DB) & (levels > SILENT_DBFS)
    if levels.max() - floor_dbfs >= 2 * ABOVE_FLOOR_DB:
        keep &= levels >= floor_dbfs + ABOVE_FLOOR_DB
    return keep


def _padded(wave: np.ndarray, chunk_samples: int) -> np.ndarray:
    """Silence appended up to a whole number of chunks (at least one)."""
    total = max(1, math.ceil(wave.size / chunk_samples)) * chunk_samples
    return np.pad(wave, (0, total - wave.size))


def _at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """signal + noise scaled so that the signal's power over it is snr_db above the noise's."""
    loud = signal[np.abs(signal) > 1e-4]
    p_signal = float(np.mean(np.square(loud))) if loud.size else 0.0
    p_noise = float(np.mean(np.square(noise))) + 1e-12
    gain = math.sqrt(p_signal / p_noise / 10 ** (snr_db / 10))
    return np.clip(signal + gain * noise[: signal.size], -1.0, 1.0).astype(np.float32)


def _pitched(wave: np.ndarray, factor: float) -> np.ndarray:
    """The wave played `factor` times as fast: pitch and tempo scaled alike."""
    n = max(1, int(wave.size / factor))
    return np.interp(np.arange(n) * factor, np.arange(wave.size), wave).astype(np.float32)


def generic_background(seconds: float = 4.0, seed: int = 0) -> list[np.ndarray]:
    """Sounds that are nobody's custom sound, added to any background: silence, white, pink and
    brown noise at several levels, mains hum and clicks. No tones: a doorbell or a beep is one,
    and tones of chance pitches taught as "not it" make them harder to learn."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE

    def coloured(exponent: float) -> np.ndarray:
        spectrum = np.fft.rfft(rng.standard_normal(n))
        freqs = np.maximum(np.fft.rfftfreq(n, 1 / SAMPLE_RATE), 20.0)
        wave = np.fft.irfft(spectrum / freqs ** (exponent / 2), n)
        return wave / np.abs(wave).max()

    def at(wave: np.ndarray, dbfs: float) -> np.ndarray:
        rms = math.sqrt(float(np.mean(np.square(wave)))) + 1e-12
        return (wave * 10 ** (dbfs / 20) / rms).astype(np.float32)

    waves = [np.zeros(n, np.float32), at(rng.standard_normal(n), -80)]
    for exponent in (0.0, 1.0, 2.0):  # white, pink, brown
        waves += [at(coloured(exponent), level) for level in (-60, -45, -30, -20)]
    hum = np.asarray(sum(np.sin(2 * np.pi * 50 * k * t) / k for k in (1, 2, 3)))
    waves += [at(hum, -40), at(hum, -25)]
    clicks = np.zeros(n)
    clicks[rng.integers(0, n, 12)] = 1.0
    waves.append(at(clicks + 1e-3 * rng.standard_normal(n), -30))
    return waves


def teaching_set(
    scorer: "Scorer",
    examples: Sequence[np.ndarray],
    background: Sequence[np.ndarray],
    chunk_seconds: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(positive, negative) embeddings from example and background waves, or one clear line.

    Each example runs after a chunk of lead-in (a live stream's memory has heard the room first),
    at several offsets within a chunk (LEADS), as recorded and mixed with background at each of
    MIX_SNRS_DB; the chunks _sounding picks are the sound. The
    negatives: the background, generic noise (generic_background), and the examples at other
    pitches (PITCH_FACTORS).
    """
    chunk = int(chunk_seconds * SAMPLE_RATE)
    noise = np.concatenate(background or generic_background()[6:8])  # pink noise
    rng = np.random.default_rng(0)
    positives = []
    for wave in examples:
        length = _padded(np.zeros(chunk + int(max(LEADS) * chunk) + wave.size), chunk).size
        placed = []
        for lead in LEADS:
            w = np.zeros(length, np.float32)
            at = chunk + int(lead * chunk)
            w[at : at + wave.size] = wave
            placed.append(w)
        renderings = []
        for w in placed:
            for snr in MIX_SNRS_DB:
                start = int(rng.integers(0, max(1, noise.size - length)))
                segment = np.resize(noise[start:], length)
                renderings.append(w if snr is None else _at_snr(w, segment, snr))
        got = embed(scorer, np.stack(renderings), chunk)  # (renderings, chunks, D)
        floor = float(_levels(wave, chunk).min()) if wave.size >= 2 * chunk else -np.inf
        for i, w in enumerate(placed):
            keep = _sounding(w, chunk, floor)
            positives += [got[i * len(MIX_SNRS_DB) + j][keep] for j in range(len(MIX_SNRS_DB))]
    positive = np.concatenate(positives)
    if not len(positive):
        raise SatAudioError(
            f"the examples are silent (no chunk above {SILENT_DBFS:g} dBFS): record the sound "
            "louder or closer"
        )
    generic = np.stack([_padded(w, chunk) for w in generic_background()])
    negatives = list(embed(scorer, generic, chunk))
    for wave in examples:  # the same sound at other pitches is another sound
        shifted = [_pitched(wave, factor) for factor in PITCH_FACTORS]
        longest = _padded(np.zeros(max(w.size for w in shifted) + chunk), chunk).size
        waves = np.zeros((len(shifted), longest), np.float32)
        for row, w in zip(waves, shifted, strict=True):
            row[chunk : chunk + w.size] = w
        got = embed(scorer, waves, chunk)
        negatives += [
            rows[_sounding(w, chunk, -np.inf)] for w, rows in zip(waves, got, strict=True)
        ]
    budget = int(MAX_BACKGROUND_S * SAMPLE_RATE)
    for wave in background:
        wave = _padded(wave[:budget], chunk)
        budget -= wave.size
        negatives.append(embed(scorer, wave[None], chunk)[0])
    return positive, np.concatenate(negatives)


def teach(
    name: str,
    scorer: "Scorer",
    examples: Sequence[tuple[str, np.ndarray]],
    background: Sequence[tuple[str, np.ndarray]],
    chunk_seconds: float,
) -> tuple[CustomSound, Fit]:
    """A custom sound learned from named example waves against named background waves."""
    name = custom_name(name)
    if not examples:
        raise SatAudioError("teach needs at least one example clip")
    scorer.check_chunk(int(chunk_seconds * SAMPLE_RATE))
    positive, negative = teaching_set(
        scorer, [w for _, w in examples], [w for _, w in background], chunk_seconds
    )
    mean, scale, weights, bias = fit_probe(positive, negative)
    sound = CustomSound(
        name=name,
        variant=scorer.spec.name,
        chunk_seconds=chunk_seconds,
        mean=mean,
        scale=scale,
        weights=weights,
        bias=bias,
        info={
            "examples": [n for n, _ in examples],
            "background": [n for n, _ in background],
            "taught": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "sat_audio_version": __version__,
        },
    )
    fit = Fit(
        example_chunks=len(positive),
        background_chunks=len(negative),
        recall=float((sound.probability(positive) >= 0.5).mean()),
        false_positive_rate=float((sound.probability(negative) >= 0.5).mean()),
    )
    return sound, fit


def record(source: Any, seconds: float, timeout_s: float) -> np.ndarray:
    """The next `seconds` of audio from a started source (sources.Source), or one clear line."""
    want = int(seconds * SAMPLE_RATE)
    blocks: list[np.ndarray] = []
    got = 0
    deadline = time.monotonic() + timeout_s
    while got < want:
        block = source.read(0.5)
        if block is not None:
            blocks.append(block)
            got += block.size
        elif source.finished or time.monotonic() > deadline:
            break
    if got < want:
        raise SatAudioError(
            f"source {source.name} gave {got / SAMPLE_RATE:.1f} s of audio, not the "
            f"{seconds:g} s asked for ({source.status().state})"
        )
    return np.concatenate(blocks)[:want]
