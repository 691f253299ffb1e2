"""model.precision int8 against float32 on the onnx backend, per variant: score change and speed.

Each streaming variant (or --variants) is exported from random weights of several seeds, then
quantized twice: per tensor with every block in int8 (what int8 was before models/int8.toml),
and by the variant's plan there (model/onnx_int8.py). Five sounds stream through each graph:
noise switching between loud and quiet, quiet noise, tones with harmonics that come and go, a
chirp, and speech (espeak-ng's, when it is installed). The change is the largest |int8 - float32|
of any score of any chunk, over the seeds and the sounds; the bound is the plan's. The times are
medians per Engine.step at 1 thread, the three graphs of the first seed taking turns chunk by
chunk on the same noise, so the speed-ups compare within one run on a shared machine. Every
weight is random (tests/checkpoints.py), not trained: what int8 does to mAP needs the released
checkpoints. Run:
    .venv/bin/python benchmarks/bench_int8.py [--variants SAT_T_2s,SAT_S_2s] [--seeds 1,7,11]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import soundfile as sf
import soxr
from bench_model import cpu_name

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.checkpoints

from sat_audio import SAMPLE_RATE
from sat_audio.engine import Engine
from sat_audio.model.onnx_export import export_onnx
from sat_audio.model.onnx_int8 import Int8Plan, int8_plans, offered_int8, quantize_int8
from sat_audio.model.onnx_runtime import OnnxScorer
from sat_audio.model.registry import get_spec
from tests.checkpoints import random_model

PER_TENSOR = Int8Plan(per_channel=False, float_blocks=(), max_drift=float("nan"))
"""int8 before per-variant plans: one scale per weight, every block quantized."""
SPEECH = (
    "The quick brown fox jumps over the lazy dog. Please put the kettle on, it is cold outside "
    "and the children will be home from school soon. Did you hear that noise at the door?"
)


def speech(seconds: float, folder: Path) -> np.ndarray | None:
    """espeak-ng's voice reading SPEECH, repeated to length; None without espeak-ng."""
    if shutil.which("espeak-ng") is None:
        return None
    wav = folder / "speech.wav"
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(wav), SPEECH], check=True)
    data, rate = sf.read(wav, dtype="float32")
    return np.resize(soxr.resample(data, rate, SAMPLE_RATE), int(seconds * SAMPLE_RATE))


def sounds(seconds: float, folder: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(123)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    harmonics = sum(0.1 / k * np.sin(2 * np.pi * 440 * k * t) for k in range(1, 6))
    found = {
        "noise": (0.01 + 0.5 * (np.sin(4.57 * t) > 0)) * rng.standard_normal(t.size),
        "quiet noise": 0.003 * rng.standard_normal(t.size),
        "tones": harmonics * (np.sin(2 * np.pi * 0.3 * t) > -0.3),
        "chirp": 0.3 * np.sin(2 * np.pi * (100 * t + 200 * t**2)),
        "speech": speech(seconds, folder),
    }
    return {name: wave.astype(np.float32) for name, wave in found.items() if wave is not None}


def stream_scores(scorer: OnnxScorer, chunk_s: float, wave: np.ndarray) -> np.ndarray:
    engine = Engine(scorer, chunk_s)
    engine.feed(engine.streams[0], wave)
    return np.stack([r.scores for r in engine.drain()])


def taking_turns(engines: dict[str, Engine], repeats: int) -> dict[str, float]:
    """Median ms per step of each engine, on the same noise chunks, one after the other."""
    rng = np.random.default_rng(0)
    times: dict[str, list[float]] = {name: [] for name in engines}
    samples = next(iter(engines.values())).chunk_samples
    for i in range(repeats + 3):
        chunk = (0.1 * rng.standard_normal(samples)).astype(np.float32)
        for name, engine in engines.items():
            engine.feed(engine.streams[0], chunk)
            start = time.perf_counter()
            engine.step()
            if i >= 3:  # warm-up
                times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(t) for name, t in times.items()}


def describe(plan: Int8Plan) -> str:
    scales = "per channel" if plan.per_channel else "per tensor"
    blocks = ",".join(map(str, plan.float_blocks))
    return scales + (f", block {blocks} float32" if blocks else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(int8_plans()), help="comma-separated")
    parser.add_argument("--seeds", default="1,7,11", help="random weights' seeds")
    parser.add_argument("--seconds", type=float, default=16.0, help="length of each sound")
    parser.add_argument("--repeats", type=int, default=40, help="timed chunks per graph")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"{cpu_name()}, {os.cpu_count()} CPUs; every weight random, seeds {seeds}; 1 thread")
    print(
        f"{'variant':<9} {'plan (models/int8.toml)':<32}{'before':>8}{'after':>8}{'bound':>7}"
        f"{'offered':>8}{'float32 ms':>11}{'before ms':>15}{'after ms':>15}{'MB':>6}"
    )
    for variant in args.variants.split(","):
        spec, plan = get_spec(variant), int8_plans()[variant]
        drift = {"before": 0.0, "after": 0.0}
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            waves = sounds(args.seconds, folder)
            for seed in seeds:
                f32 = export_onnx(random_model(variant, seed), folder / f"{seed}.onnx")
                files = {"float32": f32}
                for name, each in (("before", PER_TENSOR), ("after", plan)):
                    files[name] = folder / f"{seed}.{name}.int8.onnx"
                    quantize_int8(onnx.load(f32), files[name], each)
                scorers = {
                    name: OnnxScorer(path, 1, "float32" if name == "float32" else "int8")
                    for name, path in files.items()
                }
                for wave in waves.values():
                    exact = stream_scores(scorers["float32"], spec.chunk_s, wave)
                    for name in drift:
                        moved = stream_scores(scorers[name], spec.chunk_s, wave)
                        drift[name] = max(drift[name], float(np.abs(moved - exact).max()))
                if seed == seeds[0]:
                    engines = {n: Engine(s, spec.chunk_s) for n, s in scorers.items()}
                    ms = taking_turns(engines, args.repeats)
                    size = files["after"].stat().st_size / 1e6
                del scorers
                for path in files.values():
                    path.unlink()
        speed = {name: f"{ms[name]:.1f} ({ms['float32'] / ms[name]:.2f}x)" for name in drift}
        print(
            f"{variant:<9} {describe(plan):<32}{drift['before']:>8.4f}{drift['after']:>8.4f}"
            f"{plan.max_drift:>7}{'yes' if variant in offered_int8() else 'no':>8}"
            f"{ms['float32']:>11.1f}{speed['before']:>15}{speed['after']:>15}{size:>6.1f}",
            flush=True,
        )
    print(
        f"before/after: the largest |int8 - float32| score over the seeds and {len(waves)} "
        f"sounds ({', '.join(waves)}), per tensor with every block in int8, then by the plan; "
        "ms: median per 2 s or 1 s chunk (the variant's), the speed-up against float32 beside it; "
        "MB: the plan's int8 file"
    )


if __name__ == "__main__":
    main()
