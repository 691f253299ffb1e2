"""Cost of the event rules per chunk, with the shipped config.yaml's eight events.

The rules run once per chunk (every 2 s by default), so their cost should be negligible next to
the model's. Run: .venv/bin/python benchmarks/bench_rules.py [--chunks N]
"""

import argparse
import time
from pathlib import Path

import numpy as np

from sat_audio.config import load_config
from sat_audio.engine import ChunkResult
from sat_audio.rules import Detector

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=50_000)
    args = parser.parse_args()

    config = load_config(ROOT / "config.yaml")
    detector = Detector(config.detection.events, config.detection.min_level_dbfs, source="mic")
    rng = np.random.default_rng(0)
    # Scores that wander in and out of every event, so transitions happen along the way.
    scores = rng.beta(0.5, 2.0, size=(1000, 527)).astype(np.float32)
    levels = rng.uniform(-90, -10, size=1000)
    chunks = [
        ChunkResult("mic", i, 2.0 * i, 2.0 * i + 2.0, scores[i % 1000], float(levels[i % 1000]))
        for i in range(args.chunks)
    ]
    transitions = 0
    start = time.perf_counter()
    for chunk in chunks:
        transitions += len(detector.update(chunk))
    elapsed = time.perf_counter() - start
    n_events = len(config.detection.events)
    print(
        f"{args.chunks} chunks x {n_events} events: {elapsed / args.chunks * 1e6:.1f} us per chunk "
        f"({elapsed / args.chunks / n_events * 1e6:.1f} us per event), {transitions} transitions"
    )


if __name__ == "__main__":
    main()
