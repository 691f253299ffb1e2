"""Per-chunk latency, FLOPs, streaming RSS and offline real-time factor of the SAT models.

Random weights cost exactly what trained ones do. Run: .venv/bin/python benchmarks/bench_model.py
Figures on a shared machine are noisy: compare rows of one run, not runs of different days.
"""

import argparse
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from sat_audio.engine import Engine
from sat_audio.model.registry import get_spec
from sat_audio.model.sat import build_model

RSS_SCRIPT = """
import resource, sys, numpy as np, torch
torch.set_num_threads(1)
from sat_audio.engine import Engine
from sat_audio.model.registry import get_spec
from sat_audio.model.sat import build_model
engine = Engine(build_model(get_spec(sys.argv[1])), float(sys.argv[2]))
block = (0.1 * np.random.default_rng(0).standard_normal(1600)).astype(np.float32)
for _ in range(int(60 / 0.1)):
    engine.feed("default", block)
    engine.drain()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def chunk_latency(variant: str, chunk_s: float, threads: int, repeats: int) -> list[float]:
    torch.set_num_threads(threads)
    engine = Engine(build_model(get_spec(variant)), chunk_s)
    chunk = (0.1 * np.random.default_rng(0).standard_normal(engine.chunk_samples)).astype(
        np.float32
    )
    times = []
    for i in range(repeats + 5):
        engine.feed("default", chunk)
        start = time.perf_counter()
        engine.step()
        if i >= 5:  # warm-up
            times.append((time.perf_counter() - start) * 1000)
    return times


def flops_per_chunk(variant: str, chunk_s: float) -> float:
    model = build_model(get_spec(variant))
    memory = model.silence_memory(1)
    wave = torch.zeros(1, round(chunk_s * 16000))
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(wave, memory)
    return counter.get_total_flops() / 1e9


def streaming_rss_mb(variant: str, chunk_s: float) -> float:
    out = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, variant, str(chunk_s)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip())


def offline_rtf(variant: str, chunk_s: float, seconds: float, threads: int) -> float:
    torch.set_num_threads(threads)
    engine = Engine(build_model(get_spec(variant)), chunk_s)
    wave = (0.1 * np.random.default_rng(1).standard_normal(int(seconds * 16000))).astype(np.float32)
    start = time.perf_counter()
    engine.feed("default", wave)
    engine.flush("default")
    return (time.perf_counter() - start) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=100, help="timed chunks per setting")
    parser.add_argument("--offline-seconds", type=float, default=600.0, help="audio for the RTF")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads available")
    print(
        f"{'model':<10}{'chunk':>6}{'threads':>8}{'median ms':>11}{'p95 ms':>8}"
        f"{'GFLOPs':>8}{'RSS MB':>8}"
    )
    for variant, chunk_s in [("SAT_T_2s", 2.0), ("SAT_T_1s", 1.0)]:
        gflops = flops_per_chunk(variant, chunk_s)
        rss = streaming_rss_mb(variant, chunk_s)
        for threads in (1, 2):
            times = chunk_latency(variant, chunk_s, threads, args.repeats)
            p95 = float(np.percentile(times, 95))
            print(
                f"{variant:<10}{chunk_s:>5}s{threads:>8}{statistics.median(times):>11.2f}"
                f"{p95:>8.2f}{gflops:>8.3f}{rss:>8.0f}"
            )
    for threads in (1, 2):
        rtf = offline_rtf("SAT_T_2s", 2.0, args.offline_seconds, threads)
        print(
            f"offline SAT_T_2s, {args.offline_seconds:.0f} s of audio, {threads} thread(s): "
            f"real-time factor {rtf:.4f} ({1 / rtf:.0f}x faster than real time)"
        )
    print(
        f"this process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )


if __name__ == "__main__":
    main()
