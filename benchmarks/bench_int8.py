"""model.precision int8 against float32 on the onnx backend: time per chunk, and score change.

SAT_T_2s is exported both ways (int8: model/onnx_int8.py); both graphs run through the engine
taking turns, chunk by chunk, on the same noise, then each alone. Random weights cost what
trained ones do. Every weight is random here (tests/checkpoints.py), not as initialised for
training, whose near-constant scores moved 25x less under int8; what int8 does to mAP needs the
released checkpoints. Run:
    .venv/bin/python benchmarks/bench_int8.py
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from bench_model import alone, cpu_name

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.checkpoints

from sat_audio.engine import Engine
from sat_audio.model.onnx_export import export_onnx
from sat_audio.model.onnx_runtime import OnnxScorer
from tests.checkpoints import random_model


def taking_turns(
    engines: dict[str, Engine], repeats: int
) -> tuple[dict[str, list[float]], np.ndarray, np.ndarray]:
    """ms per step of each engine on the same chunks; both graphs' scores, chunk by chunk."""
    rng = np.random.default_rng(0)
    times: dict[str, list[float]] = defaultdict(list)
    scores: dict[str, list[np.ndarray]] = defaultdict(list)
    for i in range(repeats + 5):
        chunk = (0.1 * rng.standard_normal(engines["float32"].chunk_samples)).astype(np.float32)
        for name, engine in engines.items():
            engine.feed(engine.streams[0], chunk)
            start = time.perf_counter()
            (result,) = engine.step()
            if i >= 5:  # warm-up
                times[name].append((time.perf_counter() - start) * 1000)
            scores[name].append(result.scores)
    return times, np.array(scores["float32"]), np.array(scores["int8"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200, help="timed chunks per setting")
    args = parser.parse_args()
    print(f"{cpu_name()}, {os.cpu_count()} CPUs; SAT_T_2s, every weight random")
    with tempfile.TemporaryDirectory() as tmp:
        model = random_model("SAT_T_2s")
        f32 = export_onnx(model, Path(tmp) / "f32.onnx")
        q8 = export_onnx(model, Path(tmp) / "q8.int8.onnx", "int8")
        print(
            f"graph file: float32 {f32.stat().st_size / 1e6:.1f} MB, int8 "
            f"{q8.stat().st_size / 1e6:.1f} MB"
        )
        print(
            f"{'chunk':>6}{'thr':>4}{'float32 ms':>12}{'int8 ms':>10}{'speed-up':>9}"
            f"{'float32 alone':>15}{'int8 alone':>12}{'max |dscore|':>14}{'median':>9}{'drift':>8}"
        )
        files = {"float32": f32, "int8": q8}
        for chunk_s in (2.0, 0.16):
            for threads in (1, 2):
                engines = {n: Engine(OnnxScorer(f, threads, n), chunk_s) for n, f in files.items()}
                times, exact, q8_scores = taking_turns(engines, args.repeats)
                diffs = np.abs(q8_scores - exact)
                drift = np.median(np.abs(np.diff(exact, axis=0)))
                median = {n: statistics.median(t) for n, t in times.items()}
                warm = {
                    n: alone(Engine(OnnxScorer(f, threads, n), chunk_s), args.repeats)[0]
                    for n, f in files.items()
                }
                print(
                    f"{chunk_s:>5}s{threads:>4}{median['float32']:>12.2f}{median['int8']:>10.2f}"
                    f"{median['float32'] / median['int8']:>8.2f}x{warm['float32']:>15.2f}"
                    f"{warm['int8']:>12.2f}{diffs.max():>14.4f}{np.median(diffs):>9.4f}{drift:>8.4f}"
                )
        print(
            "ms: median per Engine.step, taking turns; alone: one graph by itself, warm; "
            "dscore: int8 - float32 per chunk and class; drift: for scale, the float32 "
            "scores' median change from one chunk to the next"
        )


if __name__ == "__main__":
    main()
