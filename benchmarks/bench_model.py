"""Per-chunk latency, FLOPs, streaming RSS and real-time factor of the SAT-T models.

Random weights cost exactly what trained ones do. Run from the repository root:
    .venv/bin/python benchmarks/bench_model.py
Figures on a shared machine are noisy: compare rows of one run, not runs of different days.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from sat_audio.engine import Engine
from sat_audio.model.registry import get_spec
from sat_audio.model.sat import build_model

STREAMING = [("SAT_T_2s", 2.0), ("SAT_T_1s", 1.0)]

RSS_SCRIPT = """
import re, sys
import numpy as np, torch
def status(key):
    return int(re.search(key + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) / 1024
torch.set_num_threads(1)
print(status("VmRSS"))
from sat_audio.engine import Engine
from sat_audio.model.registry import get_spec
from sat_audio.model.sat import build_model
engine = Engine(build_model(get_spec(sys.argv[1])), float(sys.argv[2]))
block = (0.1 * np.random.default_rng(0).standard_normal(1600)).astype(np.float32)
for _ in range(int(float(sys.argv[3]) / 0.1)):
    engine.feed("default", block)
    engine.drain()
print(status("VmRSS"), status("VmHWM"))
"""
"""A separate process streams 0.1 s blocks, as the listener does: its RSS after importing
torch, its RSS at the end and its peak (VmHWM)."""


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    """torch's counter knows the CUDA attention kernels only; CPU's flash kernel costs the same."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def chunk_latency(variant: str, chunk_s: float, threads: int, repeats: int) -> list[float]:
    """Milliseconds per chunk through Engine.step (front end, model, memory update)."""
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
    """Counted GFLOPs (2 per multiply-add) of one chunk after the silence-primed memory."""
    model = build_model(get_spec(variant))
    memory = model.silence_memory(1)
    wave = torch.zeros(1, int(chunk_s * 16000))
    sdpa = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    with (
        torch.inference_mode(),
        FlopCounterMode(display=False, custom_mapping={sdpa: _cpu_sdpa_flops}) as counter,
    ):
        model(wave, memory)
    return counter.get_total_flops() / 1e9


def streaming_rss_mb(variant: str, chunk_s: float, seconds: float) -> tuple[float, float, float]:
    """(RSS after imports, RSS after streaming, peak RSS) of a fresh process, MB."""
    out = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, variant, str(chunk_s), str(seconds)],
        capture_output=True,
        text=True,
        check=True,
    )
    base, end, peak = (float(v) for v in out.stdout.split())
    return base, end, peak


def engine_rtf(variant: str, chunk_s: float, seconds: float, threads: int) -> float:
    """Processing time / audio time of the engine alone over `seconds` of 16 kHz audio."""
    torch.set_num_threads(threads)
    engine = Engine(build_model(get_spec(variant)), chunk_s)
    wave = (0.1 * np.random.default_rng(1).standard_normal(int(seconds * 16000))).astype(np.float32)
    start = time.perf_counter()
    engine.feed("default", wave)
    engine.flush("default")
    return (time.perf_counter() - start) / seconds


def tag_rtf(folder: Path, variant: str, seconds: float, threads: int) -> tuple[float, float]:
    """(wall time / audio time, seconds) of `sat-audio tag` on a 44.1 kHz stereo wav, end to end:
    start-up, checkpoint load, reading, resampling, every chunk, printing."""
    spec = get_spec(variant)
    ckpt = folder / spec.file
    if not ckpt.exists():
        torch.save({"model": build_model(spec).state_dict()}, ckpt)
    wav = folder / f"bench_{seconds:.0f}s.wav"
    if not wav.exists():
        rng = np.random.default_rng(2)
        frames = (0.1 * rng.standard_normal((int(seconds * 44100), 2))).astype(np.float32)
        sf.write(wav, frames, 44100, subtype="PCM_16")
    cmd = [sys.executable, "-m", "sat_audio", "tag", str(wav), "-m", str(ckpt)]
    start = time.perf_counter()
    subprocess.run([*cmd, "--threads", str(threads)], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    return wall / seconds, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=100, help="timed chunks per setting")
    parser.add_argument("--rtf-seconds", type=float, default=600.0, help="audio for the RTF")
    parser.add_argument("--rss-seconds", type=float, default=60.0, help="audio streamed for RSS")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()}")
    print(
        f"{'model':<10}{'chunk':>6}{'threads':>8}{'median ms':>11}{'p95 ms':>8}"
        f"{'x realtime':>11}{'GFLOPs':>8}{'RSS MB':>8}"
    )
    rss_notes: list[str] = []
    for variant, chunk_s in STREAMING:
        gflops = flops_per_chunk(variant, chunk_s)
        base, end, rss = streaming_rss_mb(variant, chunk_s, args.rss_seconds)
        rss_notes.append(f"{variant} {base:.0f} -> {end:.0f} MB (peak {rss:.0f})")
        for threads in (1, 2):
            times = chunk_latency(variant, chunk_s, threads, args.repeats)
            median = statistics.median(times)
            p95 = float(np.percentile(times, 95))
            print(
                f"{variant:<10}{chunk_s:>5}s{threads:>8}{median:>11.2f}{p95:>8.2f}"
                f"{chunk_s * 1000 / median:>11.0f}{gflops:>8.3f}{rss:>8.0f}"
            )
    print(
        f"RSS MB = peak of a process streaming {args.rss_seconds:.0f} s in 0.1 s blocks "
        f"(1 thread); RSS after imports -> after streaming: {'; '.join(rss_notes)}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for variant, chunk_s in STREAMING:
            for threads in (1, 2):
                engine = engine_rtf(variant, chunk_s, args.rtf_seconds, threads)
                cli, wall = tag_rtf(Path(tmp), variant, args.rtf_seconds, threads)
                print(
                    f"{args.rtf_seconds:.0f} s of audio, {variant} at {chunk_s} s, "
                    f"{threads} thread(s): "
                    f"engine RTF {engine:.4f} ({1 / engine:.0f}x real time); `sat-audio tag` "
                    f"44.1 kHz stereo wav RTF {cli:.4f} ({wall:.1f} s wall)"
                )


if __name__ == "__main__":
    main()
