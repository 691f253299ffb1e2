"""What int8 weights would give the onnx backend: time per chunk, and how far the scores move.

Not a backend: evidence for deciding issue 8's 1-thread targets, which float32 cannot reach on
every CPU here. The exported SAT_T_2s graph is quantized by onnxruntime's dynamic quantization
(int8 weights per tensor, activations quantized per chunk) in its transformer blocks only: the
mel filterbank, the patch embedding and the classifier stay float32 (quantizing the patch
embedding alone moved scores by 0.3). Both graphs run through the engine taking turns, chunk by
chunk, on the same noise. Random weights cost what trained ones do, but their scores move less
than a trained model's may: what int8 does to mAP needs the released checkpoints. Run:
    .venv/bin/python benchmarks/bench_int8.py
"""

import argparse
import logging
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import torch
from bench_model import alone, cpu_name
from onnxruntime.quantization import QuantType, quantize_dynamic

from sat_audio.engine import Engine
from sat_audio.model.onnx_export import export_onnx
from sat_audio.model.onnx_runtime import OnnxScorer
from sat_audio.model.registry import get_spec
from sat_audio.model.sat import build_model

FLOAT_WEIGHTS = ("mel_filterbank", "patch_weight", "outputlayer.1.weight")
"""Products left in float32: the front end's, whose inputs span decades, and the classifier's."""


def quantize(f32: Path, q8: Path) -> Path:
    """The graph with its blocks' Gemm, MatMul and Attention weights in int8."""
    proto = onnx.load(f32)
    for i, node in enumerate(proto.graph.node):
        node.name = f"n{i}"  # nodes_to_exclude goes by name; the export leaves nodes unnamed
    excluded = [n.name for n in proto.graph.node if set(n.input) & set(FLOAT_WEIGHTS)]
    logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process, once per call
    quantize_dynamic(
        proto,
        q8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Gemm", "Attention"],
        nodes_to_exclude=excluded,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    return q8


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
    print(f"{cpu_name()}, {os.cpu_count()} CPUs; SAT_T_2s, random weights")
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        f32 = export_onnx(build_model(get_spec("SAT_T_2s")), Path(tmp) / "f32.onnx")
        q8 = quantize(f32, Path(tmp) / "q8.onnx")
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
                engines = {n: Engine(OnnxScorer(f, threads), chunk_s) for n, f in files.items()}
                times, exact, q8_scores = taking_turns(engines, args.repeats)
                diffs = np.abs(q8_scores - exact)
                drift = np.median(np.abs(np.diff(exact, axis=0)))
                median = {n: statistics.median(t) for n, t in times.items()}
                warm = {
                    n: alone(Engine(OnnxScorer(f, threads), chunk_s), args.repeats)[0]
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
