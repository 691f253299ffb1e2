"""Per-chunk latency, FLOP floor, profile, streams per 2 cores, RSS and RTF of SAT_T models.

Four backends: "reference" (the plain forward, fast=False: the figure before issue 8), "fast"
(model/fast.py), "onnx" (onnxruntime, model/onnx_runtime.py) and "int8" (onnx with
model.precision int8, model/onnx_int8.py; its floor is float32's too). Random weights cost
exactly what trained ones do. Run from the repository root:
    .venv/bin/python benchmarks/bench_model.py
    .venv/bin/python benchmarks/bench_model.py --embedding-only   # what custom sounds add
The machine is shared: backends are timed interleaved, chunk by chunk, so their ratios within one
run are fair even when the absolute figures move with the load.
"""

import argparse
import contextlib
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from sat_audio import SAMPLE_RATE
from sat_audio.engine import MAX_BATCH, Engine
from sat_audio.memory import release_startup_code
from sat_audio.model.onnx_export import export_onnx
from sat_audio.model.onnx_runtime import SUFFIX, OnnxScorer, power_spectrum, session_options
from sat_audio.model.registry import ModelSpec, get_spec
from sat_audio.model.sat import AudioTransformer, build_model
from sat_audio.model.shapes import FREQ_ROWS, N_CLASSES, N_FFT, N_MELS, PATCH, frames_for

CASES = [("SAT_T_2s", 2.0), ("SAT_T_2s", 0.16), ("SAT_T_1s", 1.0)]
BACKENDS = ("reference", "fast", "onnx", "int8")
ONNX_BACKENDS = ("onnx", "int8")
VECTOR_UNITS = (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("asimd", "NEON"))
"""/proc/cpuinfo flags, widest first: what the matmul kernels run on."""

RSS_SCRIPT = """
import re, sys
def status(key, file="status"):
    text = open("/proc/self/" + file).read()
    return int(re.search(key + r":\\s+(\\d+) kB", text).group(1)) / 1024
import numpy as np
backend, model, chunk_s, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
release = sys.argv[5] == "1"
from sat_audio.engine import Engine
from sat_audio.memory import release_free_heap, release_startup_code
if backend in ("onnx", "int8"):
    from sat_audio.model.onnx_runtime import OnnxScorer
    scorer = OnnxScorer(model, precision="int8" if backend == "int8" else "float32")
else:
    import torch
    from sat_audio.model.checkpoint import load_model
    torch.set_num_threads(1)
    scorer = load_model(model)
base = status("VmRSS")
engine = Engine(scorer, chunk_s, fast=backend != "reference")
if release:
    release_startup_code()
block = (0.1 * np.random.default_rng(0).standard_normal(1600)).astype(np.float32)
first = None
for _ in range(int(seconds / 0.1)):
    engine.feed("default", block)
    if engine.drain() and first is None:
        if release:
            release_free_heap()
            release_startup_code()
        first = status("VmRSS")
anon = status("Anonymous", "smaps_rollup")
print(base, first, status("VmRSS"), status("VmHWM"), anon, int("torch" in sys.modules))
"""
"""A separate process loads a checkpoint (or .onnx file) and streams 0.1 s blocks; the onnx one
never imports torch (it prints whether it did). With release, it gives back what only start-up
touched as `sat-audio run` does (sat_audio/memory.py): code pages once loaded, and code pages and
free heap again after the first chunk. RSS after loading,
after the first chunk, at the end, the peak (VmHWM) and the anonymous (private) part at the end."""


def cpu_name() -> str:
    """The CPU's name, family/model and widest vector unit: machines of one kind here differ (an
    AVX2 EPYC ran a 2 s chunk on onnx in 10.2 ms, an AVX-512 one in 4.9), so figures of two runs
    compare only on the same CPU."""
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            key, _, value = line.partition(":")
            if not key.strip():
                break  # the first processor is enough
            fields[key.strip()] = value.strip()
    flags = set(fields.get("flags", "").split())
    vector = next((name for flag, name in VECTOR_UNITS if flag in flags), "no AVX or NEON")
    return (
        f"{fields.get('model name', 'unknown CPU')} (family {fields.get('cpu family', '?')} "
        f"model {fields.get('model', '?')}, {vector})"
    )


def matmul_gflops(threads: int) -> float:
    """Measured float32 matmul rate (512^3 sgemm), the ceiling the floor is computed from."""
    torch.set_num_threads(threads)
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    for _ in range(10):
        a @ b
    best = 0.0
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(20):
            a @ b
        best = max(best, 20 * 2 * 512**3 / (time.perf_counter() - start) / 1e9)
    return best


def matmuls_alone(spec: ModelSpec, chunk_s: float, repeats: int) -> tuple[float, float]:
    """Median ms and GFLOPs of one chunk's matmuls alone: every product the fast path computes
    (mel, patches, projections, attention, MLPs, head), at its shape, with weights of their own
    (the model's 22 MB, more than this CPU's cache keeps between chunks), run by onnxruntime at 1
    thread and nothing between them. The time the chunk would take if all else were free."""
    import onnx
    import onnxruntime as ort

    rows, dim, heads = chunk_tokens(spec, chunk_s), spec.embed_dim, spec.num_heads
    keys = FREQ_ROWS * (spec.memory_frames // PATCH) + rows  # the memory, then the chunk
    frames = frames_for(round(chunk_s * SAMPLE_RATE))
    bins = N_FFT // 2 + 1
    products = [((frames, bins), (bins, N_MELS)), ((rows, PATCH**2), (PATCH**2, dim))]
    for block in range(spec.depth):
        if block == 0:  # its memory's keys and values anew, as fast.py
            products += [((rows, dim), (dim, dim)), ((keys, dim), (dim, 2 * dim))]
        else:
            products.append(((rows, dim), (dim, 3 * dim)))
        products += [
            ((heads, rows, dim // heads), (heads, dim // heads, keys)),
            ((heads, rows, keys), (heads, keys, dim // heads)),
            ((rows, dim), (dim, dim)),
            ((rows, dim), (dim, 4 * dim)),
            ((rows, 4 * dim), (4 * dim, dim)),
        ]
    products.append(((1, dim), (dim, N_CLASSES)))
    rng = np.random.default_rng(0)
    nodes, weights, inputs, feed = [], [], [], {}
    for i, (a, b) in enumerate(products):
        name = "x" + "_".join(map(str, a))
        if name not in feed:
            feed[name] = rng.standard_normal(a, np.float32)
            inputs.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, a))
        weights.append(onnx.numpy_helper.from_array(rng.standard_normal(b, np.float32), f"w{i}"))
        nodes.append(onnx.helper.make_node("MatMul", [name, f"w{i}"], [f"y{i}"]))
    outputs = [
        onnx.helper.make_tensor_value_info(f"y{i}", onnx.TensorProto.FLOAT, None)
        for i in range(len(products))
    ]
    graph = onnx.helper.make_graph(nodes, "matmuls", inputs, outputs, weights)
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 20)])
    session = ort.InferenceSession(proto.SerializeToString(), session_options(1))
    times = []
    for i in range(repeats + 10):
        start = time.perf_counter()
        session.run(None, feed)
        if i >= 10:
            times.append((time.perf_counter() - start) * 1000)
    flops = sum(2 * math.prod(a) * b[-1] for a, b in products)
    return statistics.median(times), flops / 1e9


def chunk_tokens(spec: ModelSpec, chunk_s: float) -> int:
    """Patch tokens of one chunk: the rows of every matmul in it."""
    frames = min(frames_for(round(chunk_s * SAMPLE_RATE)), spec.target_frames)
    return frames // PATCH * FREQ_ROWS


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    """torch's counter knows the CUDA attention kernels only; CPU's flash kernel costs the same."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def chunk_flops(model: AudioTransformer, chunk_s: float, fast: bool) -> float:
    """Counted GFLOPs (2 per multiply-add) of one chunk after the silence-primed memory."""
    engine = Engine(model, chunk_s, fast=fast)
    engine.feed("default", np.zeros(engine.chunk_samples, np.float32))
    sdpa = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    with FlopCounterMode(display=False, custom_mapping={sdpa: _cpu_sdpa_flops}) as counter:
        engine.step()
    return counter.get_total_flops() / 1e9


def make_engines(
    model: AudioTransformer, onnx_file: Path, chunk_s: float, streams: int = 1
) -> dict[str, Engine]:
    names = [f"s{i}" for i in range(streams)]
    threads = torch.get_num_threads()
    return {
        "reference": Engine(model, chunk_s, names, fast=False),
        "fast": Engine(model, chunk_s, names),
        **{b: Engine(onnx_scorer(onnx_file, b, threads), chunk_s, names) for b in ONNX_BACKENDS},
    }


def int8_file(onnx_file: Path) -> Path:
    """The int8 export main() writes beside each float32 one."""
    return onnx_file.with_suffix(SUFFIX["int8"])


def onnx_scorer(onnx_file: Path, backend: str, threads: int) -> OnnxScorer:
    """The float32 export for "onnx", the int8 one beside it for "int8"."""
    if backend == "int8":
        return OnnxScorer(int8_file(onnx_file), threads, "int8")
    return OnnxScorer(onnx_file, threads)


def interleaved(
    engines: dict[str, Engine], repeats: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Milliseconds per Engine.step of each engine, the engines taking turns chunk by chunk:
    (wall, CPU). CPU time (all threads of the process) leaves out time lost to other processes
    on this shared machine; at 1 thread it is what the step would take on an idle one."""
    first = next(iter(engines.values()))
    rng = np.random.default_rng(0)
    chunk = (0.1 * rng.standard_normal(first.chunk_samples)).astype(np.float32)
    wall: dict[str, list[float]] = defaultdict(list)
    cpu: dict[str, list[float]] = defaultdict(list)
    for i in range(repeats + 5):
        for name, engine in engines.items():
            for stream in engine.streams:
                engine.feed(stream, chunk)
            start, start_cpu = time.perf_counter(), time.process_time()
            engine.step()
            if i >= 5:  # warm-up
                wall[name].append((time.perf_counter() - start) * 1000)
                cpu[name].append((time.process_time() - start_cpu) * 1000)
    return wall, cpu


def alone(engine: Engine, repeats: int) -> tuple[float, float, float]:
    """Median ms per step of one engine running by itself: (warm, cold, idle). Warm and cold take
    turns: warm, right after another step, the weights still in the CPU's caches; cold, 64 MB
    written first evicts them, as other work between chunks can. Idle, a run of its own (its
    sleeps would slow the others): 20 ms asleep before each step, as a listener waits for its next
    chunk, while the CPU may slow down or be lent out. The first 5 of each are warm-up."""
    chunk = (0.1 * np.random.default_rng(0).standard_normal(engine.chunk_samples)).astype(
        np.float32
    )
    other = np.ones(16 << 20, np.float32)

    def step_ms() -> float:
        engine.feed(engine.streams[0], chunk)
        start = time.perf_counter()
        engine.step()
        return (time.perf_counter() - start) * 1000

    warm: list[float] = []
    cold: list[float] = []
    idle: list[float] = []
    for i in range(2 * repeats + 10):
        if i % 2:
            other += 1.0
        (cold if i % 2 else warm).append(step_ms())
    for _ in range(repeats + 5):
        time.sleep(0.02)
        idle.append(step_ms())
    return statistics.median(warm[5:]), statistics.median(cold[5:]), statistics.median(idle[5:])


def embedding_cost(model: AudioTransformer, onnx_file: Path, chunk_s: float, repeats: int) -> None:
    """Scores alone against scores with the embedding (custom sounds), per backend, the two taking
    turns chunk by chunk on the same chunk and state: the embedding is one more output of the
    same pass, so the ratio should be 1 within the noise."""
    from sat_audio.model.fast import TorchScorer

    threads = torch.get_num_threads()
    scorers = {
        "fast": TorchScorer(model),
        **{b: onnx_scorer(onnx_file, b, threads) for b in ONNX_BACKENDS},
    }
    chunk = 0.1 * np.random.default_rng(0).standard_normal((1, int(chunk_s * SAMPLE_RATE)))
    chunk = chunk.astype(np.float32)
    for name, scorer in scorers.items():
        state = scorer.initial_state(1)
        took: dict[str, list[float]] = defaultdict(list)
        with scorer.inference():
            pair = [("without", scorer.score), ("with", scorer.score_embed)]
            for i in range(repeats + 5):
                for kind, run in pair if i % 2 else pair[::-1]:  # neither always goes first
                    start = time.perf_counter()
                    run(chunk, state)
                    if i >= 5:
                        took[kind].append((time.perf_counter() - start) * 1000)
        without, with_ = (statistics.median(took[k]) for k in ("without", "with"))
        print(
            f"SAT_T_2s {chunk_s:>5}s{threads:>4}{name:>10}: scores {without:.3f} ms, scores and "
            f"embedding {with_:.3f} ms; ratio {with_ / without:.3f}"
        )


def print_embedding_cost(model: AudioTransformer, onnx_file: Path, repeats: int) -> None:
    print(
        "\nThe embedding custom sounds learn on (median ms per chunk, one stream, with and "
        "without it taking turns)"
    )
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for chunk_s in (2.0, 0.16):
            embedding_cost(model, onnx_file, chunk_s, repeats)


def _category(name: str, shapes: list) -> str:
    if name == "aten::addmm" and len(shapes) > 2 and len(shapes[2]) == 2:
        k, n = shapes[2]
        if k == 256:
            return "patching (matmul)"
        if n == 527:
            return "head"
        return "MLP matmuls" if max(k, n) == 4 * min(k, n) else "attention projections"
    if "scaled_dot_product" in name:
        return "attention softmax(QK)V"
    if any(s in name for s in ("fft", "stft", "abs", "pow", "log10", "clamp", "amax", "maximum")):
        return "front end"
    if name in ("aten::mm", "aten::reflection_pad1d"):
        return "front end"
    return "norms, GELU, adds, copies"


def _event_flops(name: str, shapes: list) -> float:
    if name == "aten::addmm" and len(shapes) > 2:
        (m, k), (_, n) = shapes[1][-2:], shapes[2][-2:]
        return 2.0 * m * k * n
    if name == "aten::mm":
        (m, k), (_, n) = shapes[0][-2:], shapes[1][-2:]
        return 2.0 * m * k * n
    if name.startswith("aten::_scaled_dot_product") and len(shapes) > 2:
        b, h, nq, d = shapes[0]
        return 4.0 * b * h * nq * shapes[1][2] * d
    return 0.0


def profile_chunk(model: AudioTransformer, chunk_s: float, gflops_rate: float) -> None:
    """Where one chunk of the fast path spends its time, 1 thread, with each part's FLOP floor."""
    torch.set_num_threads(1)
    engine = Engine(model, chunk_s)
    chunk = (0.1 * np.random.default_rng(0).standard_normal(engine.chunk_samples)).astype(
        np.float32
    )
    runs = 30
    for _ in range(5):
        engine.feed("default", chunk)
        engine.step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        start = time.perf_counter()
        for _ in range(runs):
            engine.feed("default", chunk)
            engine.step()
        wall = (time.perf_counter() - start) * 1000 / runs
    spent: dict[str, float] = defaultdict(float)
    flops: dict[str, float] = defaultdict(float)
    for event in prof.events():
        category = _category(event.name, event.input_shapes or [])
        spent[category] += event.self_cpu_time_total / 1000 / runs
        flops[category] += _event_flops(event.name, event.input_shapes or []) / runs
    spent["Python and dispatch"] = max(0.0, wall - sum(spent.values()))
    print(
        f"\nProfile of one {chunk_s} s chunk of {model.spec.name}, fast path, 1 thread "
        f"(profiler on: {wall:.2f} ms per chunk; floor = FLOPs / {gflops_rate:.0f} GFLOP/s)"
    )
    print(f"{'part':<28}{'ms':>8}{'share':>7}{'MFLOPs':>9}{'floor ms':>10}{'x floor':>8}")
    for category, ms in sorted(spent.items(), key=lambda kv: -kv[1]):
        mflops = flops.get(category, 0.0) / 1e6
        floor = mflops / gflops_rate  # MFLOP / (GFLOP/s) = ms
        ratio = f"{ms / floor:8.1f}" if floor else f"{'-':>8}"
        print(f"{category:<28}{ms:>8.2f}{ms / wall:>7.0%}{mflops:>9.1f}{floor:>10.3f}{ratio}")


def _onnx_node_flops(op: str, inputs: list[list[int]], output: list[int]) -> float:
    """FLOPs of one profiled onnxruntime node (matmul-like ones). The profile lists the shapes
    of non-constant inputs only: weights are not there, the output's last axis gives N."""
    if op in ("Gemm", "MatMul", "FusedGemm", "FusedMatMul"):
        return 2.0 * float(np.prod(inputs[0])) * output[-1]
    if op == "MultiHeadAttention":  # query, key, value
        batch, queries, dim = inputs[0]
        return 4.0 * batch * queries * inputs[1][1] * dim
    if op == "Attention":  # tokens, [bias,] past (2, B, heads, M, D / heads): q/k/v, attention
        batch, queries, dim = inputs[0]
        keys = next(shape for shape in inputs if len(shape) == 5)[3] + queries
        return 2.0 * batch * queries * dim * 3 * dim + 4.0 * batch * queries * keys * dim
    return 0.0


def profile_onnx(onnx_file: Path, chunk_s: float, gflops_rate: float) -> None:
    """onnxruntime's own profiler: time per op type of one chunk, 1 thread, with FLOP floors."""
    import json

    import onnxruntime as ort

    scorer = OnnxScorer(onnx_file)
    options = session_options(1)
    options.enable_profiling = True
    options.profile_file_prefix = str(onnx_file.with_name("ort_profile"))
    scorer.session = ort.InferenceSession(str(onnx_file), options)
    engine = Engine(scorer, chunk_s)
    chunk = (0.1 * np.random.default_rng(0).standard_normal(engine.chunk_samples)).astype(
        np.float32
    )
    runs = 60
    for _ in range(runs):
        engine.feed("default", chunk)
        engine.step()
    trace = Path(scorer.session.end_profiling())
    spent: dict[str, float] = defaultdict(float)
    flops: dict[str, float] = defaultdict(float)
    run_us = 0.0
    for event in json.loads(trace.read_text()):
        if event.get("name") == "model_run":
            run_us += event["dur"]
        elif event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"]["op_name"]
            inputs, outputs = (
                [next(iter(t.values())) for t in event["args"][key]]
                for key in ("input_type_shape", "output_type_shape")
            )
            spent[op] += event["dur"] / 1000 / runs
            flops[op] += _onnx_node_flops(op, inputs, outputs[0]) / runs
    trace.unlink()
    run_ms = run_us / 1000 / runs
    spent["executor between nodes"] = max(0.0, run_ms - sum(spent.values()))
    print(
        f"\nProfile of one {chunk_s} s chunk, onnx, 1 thread, onnxruntime's profiler on "
        f"({run_ms:.2f} ms per run, the FFT outside it; floor = FLOPs / {gflops_rate:.0f} GFLOP/s)"
    )
    print(f"{'op type':<28}{'ms':>8}{'share':>7}{'MFLOPs':>9}{'floor ms':>10}{'x floor':>8}")
    for op, ms in sorted(spent.items(), key=lambda kv: -kv[1])[:10]:
        mflops = flops.get(op, 0.0) / 1e6
        floor = mflops / gflops_rate
        ratio = f"{ms / floor:8.1f}" if floor else f"{'-':>8}"
        print(f"{op:<28}{ms:>8.2f}{ms / run_ms:>7.0%}{mflops:>9.1f}{floor:>10.3f}{ratio}")


ABLATIONS = {
    "Gelu": lambda node: node.op_type == "Gelu",
    "LayerNormalization": lambda node: node.op_type == "LayerNormalization",
    "attention (+ q/k/v Gemm)": lambda node: node.op_type in ("MultiHeadAttention", "Attention"),
    "residual Add": lambda node: node.op_type == "Add" and node.input[1].startswith("Gemm"),
    "state Slice": lambda node: node.op_type == "Slice" and node.input[-1] == "past_token_axis",
}
"""Op families whose cost ablate_onnx measures; Attention projects the later blocks' q, k and v
itself, the residual Adds take a Gemm's output, the state Slices keep a block's last M keys and
values."""


def ablate_onnx(onnx_file: Path, chunk_s: float, repeats: int) -> None:
    """What each op family costs in place, without a profiler's per-node overhead: the chunk's
    time with the family replaced by Identity (outputs meaningless), all graphs taking turns."""
    import onnx
    import onnxruntime as ort

    scorer = OnnxScorer(onnx_file)
    samples = int(chunk_s * 16000)
    power = power_spectrum(np.random.default_rng(0).standard_normal((1, samples), np.float32))
    end = min(scorer.spec.target_frames, power.shape[1] // 16 * 16)
    feed = scorer.graph_inputs(power, 0, end, scorer.initial_state(1))
    sessions = {"whole graph": scorer.session}
    for family, chosen in ABLATIONS.items():
        proto = onnx.load(onnx_file)
        nodes = []
        for node in proto.graph.node:
            if not chosen(node):
                nodes.append(node)
                continue
            # Attention's present keys and values become its past ones (input 4)
            sources = [node.input[0], *node.input[4:5]][: len(node.output)]
            for source, output in zip(sources, node.output, strict=True):
                nodes.append(onnx.helper.make_node("Identity", [source], [output]))
        del proto.graph.node[:]
        proto.graph.node.extend(nodes)
        options = session_options(1)
        options.log_severity_level = 3  # unused norm weights, unused axes: expected here
        sessions[family] = ort.InferenceSession(proto.SerializeToString(), options)
    times: dict[str, list[float]] = defaultdict(list)
    for i in range(repeats + 10):
        for name, session in sessions.items():
            start = time.thread_time()
            session.run(None, feed)
            if i >= 10:
                times[name].append((time.thread_time() - start) * 1000)
    whole = statistics.median(times["whole graph"])
    print(
        f"\nWhat each op family costs in one {chunk_s} s chunk, onnx, 1 thread: the chunk with "
        "the family replaced by Identity, graphs taking turns "
        f"(no profiler; whole graph {whole:.2f} ms)"
    )
    for name in ABLATIONS:
        count = sum(map(ABLATIONS[name], onnx.load(onnx_file).graph.node))
        print(f"{name:<26}{count:>4} nodes{whole - statistics.median(times[name]):>8.2f} ms")


def streams_sustained(
    model: AudioTransformer, onnx_file: Path, chunk_s: float, counts: list[int]
) -> dict[str, float]:
    """Batched streams at 2 threads: step time for N streams and the real-time capacity.

    Beyond MAX_BATCH streams, each backend also runs "in one pass" (max_batch = N, as before
    passes were capped), taking turns with the capped engine. Returns each engine's best capacity
    among the counts whose p95 step keeps up (< chunk)."""
    torch.set_num_threads(2)
    print(
        f"\nMany streams: {model.spec.name} at {chunk_s} s chunks, every stream's chunk in one "
        f"step of passes of at most {MAX_BATCH} streams, 2 threads. per-stream latency = the step "
        "(all wait for the batch); capacity = N x chunk / step"
    )
    print(
        f"{'streams':>8}{'backend':>18}{'step ms':>10}{'p95 ms':>9}{'ms/stream':>11}"
        f"{'capacity':>10}"
    )
    best: dict[str, float] = defaultdict(float)
    for count in counts:
        engines = make_engines(model, onnx_file, chunk_s, count)
        del engines["reference"]
        if count > MAX_BATCH:
            for name, engine in list(engines.items()):
                engines[f"{name} in one pass"] = Engine(
                    engine.scorer, chunk_s, engine.streams, max_batch=count
                )
        times, _ = interleaved(engines, repeats=max(3, 40 // count))
        for name, values in times.items():
            median = statistics.median(values)
            if np.percentile(values, 95) < chunk_s * 1000:
                best[name] = max(best[name], count * chunk_s * 1000 / median)
            print(
                f"{count:>8}{name:>18}{median:>10.1f}{np.percentile(values, 95):>9.1f}"
                f"{median / count:>11.2f}{count * chunk_s * 1000 / median:>10.0f}"
            )
    return best


def streaming_rss(
    backend: str, model: str, chunk_s: float, seconds: float, release: bool
) -> tuple[str, float, float]:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            RSS_SCRIPT,
            backend,
            model,
            str(chunk_s),
            str(seconds),
            str(int(release)),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    base, first, end, peak, anon, torch_loaded = (float(v) for v in out.stdout.split())
    line = (
        f"{backend:<10}{'released' if release else 'kept':>9}: after load {base:4.0f} MB, "
        f"first chunk {first:4.0f}, after streaming {end:4.0f} (anonymous {anon:4.0f}), "
        f"peak {peak:4.0f}; torch imported: {'yes' if torch_loaded else 'no'}"
    )
    return line, end, peak


def engine_rtf(make: Callable[[], Engine], seconds: float) -> float:
    """Processing time / audio time of an engine over `seconds` of 16 kHz audio, in one feed."""
    engine = make()
    wave = (0.1 * np.random.default_rng(1).standard_normal(int(seconds * 16000))).astype(np.float32)
    start = time.perf_counter()
    engine.feed("default", wave)
    engine.flush("default")
    return (time.perf_counter() - start) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=100, help="timed chunks per setting")
    parser.add_argument("--rtf-seconds", type=float, default=300.0, help="audio for the RTF")
    parser.add_argument("--rss-seconds", type=float, default=60.0, help="audio streamed for RSS")
    parser.add_argument(
        "--streams", default="1,16,64,128,256", help="stream counts for the batched run"
    )
    parser.add_argument(
        "--embedding-only", action="store_true", help="only the embedding's cost (custom sounds)"
    )
    args = parser.parse_args()
    if args.embedding_only:
        with tempfile.TemporaryDirectory() as tmp:
            model = build_model(get_spec("SAT_T_2s"))
            onnx_file = export_onnx(model, Path(tmp) / "SAT_T_2s.onnx")
            export_onnx(model, int8_file(onnx_file), "int8")
            print_embedding_cost(model, onnx_file, args.repeats)
        return
    rates = {threads: matmul_gflops(threads) for threads in (1, 2)}
    print(
        f"{cpu_name()}; torch {torch.__version__}, {os.cpu_count()} CPUs, load average "
        f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}; float32 matmul "
        f"{rates[1]:.0f} GFLOP/s (512^3) at 1 thread, {rates[2]:.0f} at 2"
    )
    with tempfile.TemporaryDirectory() as tmp:
        models = {}
        onnx_files = {}
        for variant in dict.fromkeys(v for v, _ in CASES):
            models[variant] = build_model(get_spec(variant))
            onnx_files[variant] = export_onnx(models[variant], Path(tmp) / f"{variant}.onnx")
            export_onnx(models[variant], int8_file(onnx_files[variant]), "int8")
        checkpoint = Path(tmp) / get_spec("SAT_T_2s").file  # upstream's name: load_model knows it
        torch.save(models["SAT_T_2s"].state_dict(), checkpoint)
        print(
            "\nPer-chunk latency through Engine.step (front end, model, memory). floor = GFLOPs "
            "of the plain computation (reference) / matmul rate at that thread count; "
            "'before' = reference; CPU = process CPU time (all threads)"
        )
        print(
            f"{'model':<10}{'chunk':>6}{'thr':>4}{'backend':>10}{'median ms':>10}{'p95 ms':>8}"
            f"{'CPU ms':>8}{'vs before':>10}{'floor ms':>9}{'x floor':>8}{'CPU x floor':>12}"
            f"{'x realtime':>11}{'GFLOPs':>8}"
        )
        summary: dict[str, dict[str, str]] = defaultdict(dict)
        for variant, chunk_s in CASES:
            model = models[variant]
            gflops = {
                "reference": chunk_flops(model, chunk_s, fast=False),
                "fast": chunk_flops(model, chunk_s, fast=True),
            }
            gflops["onnx"] = gflops["int8"] = gflops["fast"]
            for threads in (1, 2):
                torch.set_num_threads(threads)
                times, cpu = interleaved(
                    make_engines(model, onnx_files[variant], chunk_s), args.repeats
                )
                floor = gflops["reference"] / rates[threads] * 1000
                before = statistics.median(times["reference"])
                for name in BACKENDS:
                    median = statistics.median(times[name])
                    cpu_ms = statistics.median(cpu[name])
                    print(
                        f"{variant:<10}{chunk_s:>5}s{threads:>4}{name:>10}{median:>10.2f}"
                        f"{np.percentile(times[name], 95):>8.2f}{cpu_ms:>8.2f}"
                        f"{before / median:>9.2f}x{floor:>9.2f}{median / floor:>8.1f}"
                        f"{cpu_ms / floor:>12.1f}{chunk_s * 1000 / median:>11.0f}"
                        f"{gflops[name]:>8.3f}"
                    )
                    if variant == "SAT_T_2s":
                        key = f"{chunk_s:g} s @{threads}"
                        p95 = np.percentile(times[name], 95)
                        summary[name][key] = f"{median:.2f}/{p95:.2f}"
                        summary[name][f"x floor {chunk_s:g} s @{threads}"] = f"{median / floor:.1f}"
                if threads == 1:
                    alone_ms, counted = matmuls_alone(model.spec, chunk_s, args.repeats)
                    ratio = statistics.median(times["onnx"]) / alone_ms
                    print(
                        f"{variant:<10}{chunk_s:>5}s: its matmuls alone (matmuls_alone): "
                        f"{alone_ms:.2f} ms for {counted:.3f} GFLOPs "
                        f"({counted / alone_ms * 1000:.0f} GFLOP/s); onnx takes {ratio:.2f}x that"
                    )
                    if variant == "SAT_T_2s":
                        summary["onnx"][f"x matmuls alone {chunk_s:g} s"] = f"{ratio:.2f}"
            for threads in (1, 2) if variant == "SAT_T_2s" else ():
                torch.set_num_threads(threads)
                engines = {
                    "fast": Engine(model, chunk_s),
                    **{
                        b: Engine(onnx_scorer(onnx_files[variant], b, threads), chunk_s)
                        for b in ONNX_BACKENDS
                    },
                }
                for name, engine in engines.items():
                    warm, cold, idle = alone(engine, args.repeats)
                    print(
                        f"{variant:<10}{chunk_s:>5}s{threads:>4}{name:>10} alone: warm "
                        f"{warm:.2f} ms, cold {cold:.2f} ms, after 20 ms idle {idle:.2f} ms"
                    )
                    key = f"{chunk_s:g} s alone @{threads} warm/cold/idle"
                    summary[name][key] = f"{warm:.2f}/{cold:.2f}/{idle:.2f}"
        profile_chunk(models["SAT_T_2s"], 2.0, rates[1])
        profile_chunk(models["SAT_T_2s"], 0.16, rates[1])
        profile_onnx(onnx_files["SAT_T_2s"], 2.0, rates[1])
        profile_onnx(onnx_files["SAT_T_2s"], 0.16, rates[1])
        for chunk_s in (2.0, 0.16):
            ablate_onnx(onnx_files["SAT_T_2s"], chunk_s, args.repeats)
        print_embedding_cost(models["SAT_T_2s"], onnx_files["SAT_T_2s"], args.repeats)
        counts = [int(c) for c in args.streams.split(",")]
        capacity = streams_sustained(models["SAT_T_2s"], onnx_files["SAT_T_2s"], 2.0, counts)
        print(
            f"\nRSS of a process streaming {args.rss_seconds:.0f} s of SAT_T_2s in 0.1 s blocks; "
            "'released': start-up's code pages given back once loaded, and with its free heap "
            "after the first chunk, as sat-audio run does"
        )
        # the kernel reclaims only pages no other process maps: this one must not hold torch's too
        release_startup_code()
        exports = {"onnx": onnx_files["SAT_T_2s"], "int8": int8_file(onnx_files["SAT_T_2s"])}
        for name in BACKENDS:
            model_arg = str(exports.get(name, checkpoint))
            for release in (False, True) if name != "reference" else (False,):
                line, end, peak = streaming_rss(name, model_arg, 2.0, args.rss_seconds, release)
                print(line)
                key = "RSS MB" if release or name == "reference" else "RSS kept MB"
                summary[name][key] = f"{end:.0f}"
                summary[name]["peak RSS MB"] = f"{peak:.0f}"
            if name != "reference":  # the reference runs no streams
                for key, engine in (("", name), (" one pass", f"{name} in one pass")):
                    found = capacity.get(engine)
                    summary[name][f"streams/2 cores{key}"] = f"{found:.0f}" if found else "not run"
        print(f"\nOffline: {args.rtf_seconds:.0f} s of audio through the engine, SAT_T_2s at 2 s")
        model, onnx_file = models["SAT_T_2s"], onnx_files["SAT_T_2s"]
        for threads in (1, 2):
            torch.set_num_threads(threads)
            makers: dict[str, Callable[[], Engine]] = {
                "reference": lambda: Engine(model, 2.0, fast=False),
                "fast": lambda: Engine(model, 2.0),
                **{
                    b: lambda b=b, n=threads: Engine(onnx_scorer(onnx_file, b, n), 2.0)
                    for b in ONNX_BACKENDS
                },
            }
            rtf = {name: engine_rtf(make, args.rtf_seconds) for name, make in makers.items()}
            print(
                f"{threads} thread(s): "
                + "; ".join(f"{n} RTF {v:.4f} ({1 / v:.0f}x real time)" for n, v in rtf.items())
            )
            for name, value in rtf.items():
                summary[name][f"RTF @{threads}"] = f"{value:.4f}"
        print_summary(summary)


def print_summary(summary: dict[str, dict[str, str]]) -> None:
    """The one table: SAT_T_2s per backend; latencies are median/p95 ms per chunk."""
    columns = list(next(iter(summary.values())))
    for row in summary.values():
        columns.extend(c for c in row if c not in columns)
    print(
        "\nSummary, SAT_T_2s (chunk latency median/p95 ms at @N threads, backends taking turns; "
        "'alone': one backend by itself, warm/cold/idle as in alone(); 'reference' = before)"
    )
    print(f"{'backend':<10}" + "".join(f"{c:>{max(len(c), 11) + 2}}" for c in columns))
    for name, row in summary.items():
        cells = (f"{row.get(c, '-'):>{max(len(c), 11) + 2}}" for c in columns)
        print(f"{name:<10}" + "".join(cells))


if __name__ == "__main__":
    main()
