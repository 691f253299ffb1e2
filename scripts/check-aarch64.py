"""scripts/check-aarch64's Python side: the test data, the scoring it runs on both machines, and
the comparison.

  make DIR            (host, with torch) a random-weight SAT_T_2s checkpoint in upstream's format,
                      recordings, and a configuration whose events switch on those recordings
  score DIR OUT       (each machine, without torch) every recording through the onnx backend in
                      float32 and int8 as the listener scores a file; scores and episodes to OUT
  compare X86 ARM     the two machines' results; one line and exit 1 on a difference

`score` takes the listener's own path: the configuration's model section, engine.load_scorer,
the Engine, the event rules' Detector.
"""

import argparse
import itertools
import json
import os
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
VARIANT = "SAT_T_2s"
SEED = 44
CHUNK_S = 2.0
SECONDS = 16
"""Each recording's length: 32 chunks in all, each a few seconds' work under emulation."""
PRECISIONS = ("float32", "int8")
FLOAT32_BOUND = 1e-5
"""float32 on both machines: the same graph, so only the kernels' rounding may differ."""
EVENTS = 8
"""Events made from the labels whose scores fall into two groups furthest apart."""
MIN_GAP = 0.1
"""A label becomes an event only if its scores leave a gap this wide, with the thresholds inside
it, a quarter of it from either side: more than int8 moves a score from float32."""


def recordings() -> dict[str, tuple[np.ndarray, int]]:
    """Tones and noise bursts (name -> samples, rate), one of them stereo at 44.1 kHz to run the
    resampler too, each over a noise floor of -60 dBFS as a microphone's: in digital silence
    or beside a pure tone, the front end's dB of a near-empty frequency bin would take the
    FFT's rounding, which differs from machine to machine (up to 3e-5 in the scores)."""
    rng = np.random.default_rng(SEED)
    t = np.arange(SECONDS * SAMPLE_RATE) / SAMPLE_RATE
    chirp = 0.3 * np.sin(2 * np.pi * (100 * t + 4000 / (2 * SECONDS) * t**2))  # to 4.1 kHz
    beeps = 0.4 * np.sin(2 * np.pi * 3150 * t) * ((t % 1.0) < 0.5) * ((t % 8) < 4)
    envelope = np.zeros(t.size)
    start = rng.uniform(0.5, 2.0)
    while start < SECONDS:
        length = rng.uniform(0.3, 3.0)
        envelope[(t >= start) & (t < start + length)] = rng.uniform(0.05, 0.5)
        start += length + rng.uniform(0.5, 3.0)
    bursts = envelope * rng.standard_normal(t.size)
    t44 = np.arange(SECONDS * 44100) / 44100
    left = 0.3 * np.sin(2 * np.pi * 440 * t44) * ((t44 % 8) < 3)
    right = 0.05 * rng.standard_normal(t44.size) * ((t44 % 5) < 2)
    stereo = np.stack([left, right], axis=1)
    return {
        name: (samples + 1e-3 * rng.standard_normal(samples.shape), rate)
        for name, samples, rate in [
            ("chirp", chirp, SAMPLE_RATE),
            ("alarm", beeps, SAMPLE_RATE),
            ("bursts", bursts, SAMPLE_RATE),
            ("stereo-44k", stereo, 44100),
        ]
    }


def make(folder: Path) -> None:
    import soundfile as sf

    from sat_audio.audio import read_audio
    from sat_audio.engine import Engine
    from sat_audio.labels import all_labels
    from tests.checkpoints import random_model, save_upstream, upstream_name

    models = folder / "models"
    audio = folder / "audio"
    models.mkdir(parents=True, exist_ok=True)
    audio.mkdir(exist_ok=True)
    model = random_model(VARIANT, seed=SEED)
    save_upstream(model, models / upstream_name(VARIANT))
    scores = []
    for name, (samples, rate) in recordings().items():
        path = audio / f"{name}.wav"
        sf.write(path, samples.astype(np.float32), rate, subtype="PCM_16")
        engine = Engine(model, CHUNK_S)
        engine.feed("default", read_audio(path))
        scores += [chunk.scores for chunk in engine.flush("default")]
    events = {}
    for index, low, high in widest_gaps(np.stack(scores))[:EVENTS]:
        quarter = (high - low) / 4
        events[f"label_{index}"] = {
            "labels": [all_labels()[index].mid],
            "on_threshold": round(high - quarter, 4),
            "off_threshold": round(low + quarter, 4),
            "hold_s": 0.0,
        }
    if len(events) < 2:
        sys.exit(f"check-aarch64: only {len(events)} labels' scores split into two groups")
    config = {
        "model": {"name": VARIANT, "backend": "onnx", "chunk_seconds": CHUNK_S},
        "detection": {"min_level_dbfs": -70, "events": events},
    }
    (folder / "config.json").write_text(json.dumps(config, indent=1))


def widest_gaps(scores: np.ndarray) -> list[tuple[int, float, float]]:
    """(label, below, above) for each label whose sorted scores leave a gap of MIN_GAP or more,
    widest first."""
    found = []
    for index in range(scores.shape[1]):
        values = np.sort(scores[:, index])
        steps = np.diff(values)
        at = int(steps.argmax())
        if steps[at] >= MIN_GAP:
            found.append((index, float(values[at]), float(values[at + 1])))
    return sorted(found, key=lambda gap: gap[1] - gap[2])


def score(folder: Path, out: Path) -> None:
    """The listener's path over every recording, each from silence as `sat-audio detect` does."""
    from sat_audio.audio import read_audio
    from sat_audio.config import parse_config
    from sat_audio.engine import Engine, load_scorer
    from sat_audio.model.onnx_int8 import int8_plan
    from sat_audio.rules import Detector

    config = parse_config(json.loads((folder / "config.json").read_text()))
    model = replace(config.model, dir=str(folder / "models"))
    out.mkdir(parents=True, exist_ok=True)
    waves = {path.stem: read_audio(path) for path in sorted((folder / "audio").glob("*.wav"))}
    arrays: dict[str, np.ndarray] = {}
    episodes = []
    seconds = {}
    for precision in PRECISIONS:
        started = time.perf_counter()
        scorer = load_scorer(replace(model, precision=precision))
        engine = Engine(scorer, model.chunk_seconds or scorer.spec.chunk_s)
        for name, wave in waves.items():
            engine.reset()
            detector = Detector(config.detection.events, config.detection.min_level_dbfs, name)
            engine.feed("default", wave)
            chunks = engine.flush("default")
            arrays[f"{precision}/{name}"] = np.stack([chunk.scores for chunk in chunks])
            found = [t for chunk in chunks for t in detector.update(chunk)]
            found += detector.close(wave.size / SAMPLE_RATE)
            episodes += [{"precision": precision, **asdict(t)} for t in found]
        seconds[precision] = round(time.perf_counter() - started, 2)
    np.savez(out / "scores.npz", **arrays)
    import onnxruntime

    cpu = os.environ.get("QEMU_CPU")
    info = {
        "machine": f"{platform.machine()} ({cpu})" if cpu else platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__,
        "torch_imported": "torch" in sys.modules,
        # int8's bound on its change from float32 (models/int8.toml): each machine's int8 must
        # keep to it, and the two machines' int8 scores to each other
        "int8_bound": int8_plan(VARIANT).max_drift,
        "seconds": seconds,
        "episodes": episodes,
    }
    (out / "result.json").write_text(json.dumps(info, indent=1))
    print(f"{info['machine']}: {len(waves)} recordings, {len(episodes)} transitions, {seconds} s")


def compare(x86: Path, arm: Path) -> int:
    """Print what was compared; the first failure as one line on stderr, exit 1."""
    sides = [np.load(path / "scores.npz") for path in (x86, arm)]
    infos = [json.loads((path / "result.json").read_text()) for path in (x86, arm)]
    problems = []
    if sorted(sides[0].files) != sorted(sides[1].files):
        problems.append(f"scored different files: {sides[0].files} and {sides[1].files}")
        return report(problems)
    for info in infos:
        name = info["machine"]
        print(
            f"{name}: python {info['python']}, numpy {info['numpy']}, onnxruntime "
            f"{info['onnxruntime']}, scored in {info['seconds']} s"
        )
        if info["torch_imported"]:
            problems.append(f"{name}: scoring imported torch")
    int8_bound = infos[0]["int8_bound"]
    for precision, bound in (("float32", FLOAT32_BOUND), ("int8", int8_bound)):
        keys = [key for key in sides[0].files if key.startswith(f"{precision}/")]
        diff = max(float(np.abs(sides[0][k] - sides[1][k]).max()) for k in keys)
        chunks = sum(sides[0][k].shape[0] for k in keys)
        top5 = sum(same_top5(sides[0][k], sides[1][k]) for k in keys)
        print(
            f"{precision}: {chunks} chunks, max |x86-64 - aarch64| {diff:.3g} "
            f"(bound {bound:g}); same top-5 labels in {top5}/{chunks} chunks"
        )
        if not diff <= bound:
            problems.append(f"{precision} scores differ by {diff:.3g}, more than {bound:g}")
        episodes = [
            [episode_key(e) for e in info["episodes"] if e["precision"] == precision]
            for info in infos
        ]
        print(f"{precision}: {len(episodes[0])} and {len(episodes[1])} transitions")
        if not episodes[0]:
            problems.append(f"{precision}: no event switched, so episodes compare nothing")
        elif episodes[0] != episodes[1]:
            first = next((a, b) for a, b in itertools.zip_longest(*episodes) if a != b)
            problems.append(f"{precision} episodes differ (x86-64 {first[0]}, aarch64 {first[1]})")
    for side, info in zip(sides, infos, strict=True):
        keys = [key.removeprefix("int8/") for key in side.files if key.startswith("int8/")]
        drift = max(float(np.abs(side[f"int8/{k}"] - side[f"float32/{k}"]).max()) for k in keys)
        print(f"{info['machine']}: int8 against float32 at most {drift:.3g} (bound {int8_bound:g})")
        if not drift <= int8_bound:
            problems.append(f"{info['machine']}: int8 moves scores by {drift:.3g} from float32")
    return report(problems)


def same_top5(a: np.ndarray, b: np.ndarray) -> int:
    """Chunks whose five highest labels are the same set on both machines."""
    tops = [np.argsort(-scores, axis=1)[:, :5] for scores in (a, b)]
    return sum(set(x) == set(y) for x, y in zip(*tops, strict=True))


def episode_key(transition: dict[str, object]) -> tuple[object, ...]:
    """What must match: which event switched, how, where and on which label (not the score)."""
    return tuple(transition[k] for k in ("source", "event", "type", "label", "start_s", "end_s"))


def report(problems: list[str]) -> int:
    if problems:
        print(f"check-aarch64: {'; '.join(problems)}", file=sys.stderr)
        return 1
    print("check-aarch64: aarch64 scores as x86-64")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("make").add_argument("folder", type=Path)
    scoring = sub.add_parser("score")
    scoring.add_argument("folder", type=Path)
    scoring.add_argument("out", type=Path)
    comparing = sub.add_parser("compare")
    comparing.add_argument("x86", type=Path)
    comparing.add_argument("arm", type=Path)
    args = parser.parse_args()
    if args.action == "make":
        make(args.folder)
    elif args.action == "score":
        score(args.folder, args.out)
    else:
        return compare(args.x86, args.arm)
    return 0


if __name__ == "__main__":
    sys.exit(main())
