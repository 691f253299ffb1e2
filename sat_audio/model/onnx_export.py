"""Write a streaming model as an ONNX graph for the light runtime (model/onnx_runtime.py).

The graph is written node by node from the model's weights, with onnxruntime's fused CPU ops
(Attention, which projects q, k and v itself and appends them to the past; Gelu), so it stays
small: 12 nodes a block. It computes what model/fast.FastPiece computes, after numpy's FFT:

    power (B, T, 257)      the whole chunk's power spectrogram, frames first (numpy's layout)
    piece_start, piece_end (1,) int64: the frames of the piece scored, a multiple of 16 long
    state_0 (B, M, D)      the first block's memory, as FastPiece
    past_i (2, B, heads, M, D / heads) for each later block i: its memory's keys and values, as
        Attention takes them (the runtime holds them batch first, as the fast path does)
        -> scores (B, 527), new_state_0, new_past_1, new_past_2, ...

The dB floor comes from the whole chunk, as in the torch model. M is free: the runtime starts
from an empty memory (M = 0) to compute the state after a memory-length of silence, as the torch
scorer does, so the file carries only the variant's name and sizes (metadata).
"""

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from sat_audio.errors import SatAudioError
from sat_audio.model.fast import FastPiece
from sat_audio.model.frontend import mel_filterbank
from sat_audio.model.onnx_int8 import quantize_int8
from sat_audio.model.onnx_runtime import FORMAT
from sat_audio.model.sat import AudioTransformer, Block
from sat_audio.model.shapes import FREQ_ROWS, N_CLASSES, N_FFT, PATCH, TOP_DB

if TYPE_CHECKING:
    import onnx

OPSET = 20  # Gelu is one node from opset 20 (onnxruntime >= 1.17)
MS = "com.microsoft"  # onnxruntime's own ops: MultiHeadAttention, Attention


def _np(tensor: torch.Tensor) -> np.ndarray:
    """A weight as float32 numpy, detached from the model."""
    return tensor.detach().float().numpy()


class _Graph:
    """Nodes and initializers; op() names each output after its node."""

    def __init__(self) -> None:
        import onnx  # the `onnx` extra: only the exporting process needs it

        self.onnx = onnx
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, onnx.TensorProto] = {}

    def const(self, name: str, value: np.ndarray | float | int | list[int]) -> str:
        """An initializer, made once per name: float32, or int64 for ints."""
        if name not in self.initializers:
            if isinstance(value, np.ndarray):
                array = np.array(value, dtype=np.float32, order="C")
            else:
                array = np.array(value, dtype=np.float32 if isinstance(value, float) else np.int64)
            self.initializers[name] = self.onnx.numpy_helper.from_array(array, name)
        return name

    def op(self, op_type: str, *inputs: str, **attrs: object) -> str:
        """A node of one output; "" stands for an input left out."""
        return self.ops(op_type, *inputs, outputs=1, **attrs)[0]

    def ops(self, op_type: str, *inputs: str, outputs: int, **attrs: object) -> list[str]:
        domain = MS if op_type in ("MultiHeadAttention", "Attention") else ""
        names = [f"{op_type}_{len(self.nodes)}_{i}" for i in range(outputs)]
        self.nodes.append(
            self.onnx.helper.make_node(op_type, list(inputs), names, domain=domain, **attrs)
        )
        return names

    def layer_norm(self, x: str, norm: torch.nn.LayerNorm, name: str) -> str:
        weight = self.const(f"{name}.weight", _np(norm.weight))
        bias = self.const(f"{name}.bias", _np(norm.bias))
        return self.op("LayerNormalization", x, weight, bias, axis=-1, epsilon=norm.eps)

    def linear(self, x: str, weight: torch.Tensor, bias: torch.Tensor, name: str) -> str:
        """x @ weight.T + bias on token rows (B * N, D): one Gemm."""
        w, b = self.const(f"{name}.weight", _np(weight)), self.const(f"{name}.bias", _np(bias))
        return self.op("Gemm", x, w, b, transB=1)


def _tokens(g: _Graph, fast: FastPiece) -> str:
    """Power (B, T, 257) -> the piece's patch tokens with positions, (B, N, D).

    The folded BatchNorm, the patch weight and the positions are the fast path's own tensors."""
    mel = g.op("MatMul", "power", g.const("mel_filterbank", _np(mel_filterbank())))  # (B, T, 64)
    to_db = g.const("to_db", 10.0 / math.log(10.0))
    floor = g.const("floor", 1e-10)
    peak = g.op("ReduceMax", mel, g.const("frame_and_mel_axes", [1, 2]), keepdims=1)
    peak = g.op("Mul", g.op("Log", g.op("Max", peak, floor)), to_db)
    piece = g.op("Slice", mel, "piece_start", "piece_end", g.const("frame_axis", [1]))
    db = g.op("Mul", g.op("Log", g.op("Max", piece, floor)), to_db)
    x = g.op("Max", db, g.op("Sub", peak, g.const("top_db", TOP_DB)))
    x = g.op("Mul", x, g.const("bn_scale", _np(fast.bn_scale[:, 0])))  # over the mel axis, last
    x = g.op("Add", x, g.const("bn_shift", _np(fast.bn_shift[:, 0])))
    # (B, T, 64) as (B, columns, 16 frames, rows, 16 mels) -> (B, rows, columns, 16 mels, 16 frames)
    x = g.op("Reshape", x, g.const("patch_grid", [0, -1, PATCH, FREQ_ROWS, PATCH]))
    x = g.op("Transpose", x, perm=[0, 3, 1, 4, 2])
    x = g.op("Reshape", x, g.const("patches", [0, FREQ_ROWS, -1, PATCH * PATCH]))
    dim = fast.patch_b.shape[0]
    x = g.op("MatMul", x, g.const("patch_weight", _np(fast.patch_w).T))  # (B, rows, columns, D)
    # positions of every row and column, the patch bias folded in; the piece takes its columns
    table = _np(fast.freq_pos[:, None] + fast.time_pos[None] + fast.patch_b)
    columns = g.op("Shape", x, start=2, end=3)
    start = g.const("zero", [0])
    pos = g.op("Slice", g.const("positions", table), start, columns, g.const("column_axis", [1]))
    x = g.op("Reshape", g.op("Add", x, pos), g.const("token_rows", [0, -1, dim]))
    if fast.token_pooling:
        cls = _np(fast.cls)[None]  # (1, 1, D)
        batch = g.op("Shape", x, start=0, end=1)
        shape = g.op("Concat", batch, g.const("one_by_dim", [1, dim]), axis=0)
        x = g.op("Concat", g.op("Expand", g.const("cls", cls), shape), x, axis=1)
    return x


def _block(
    g: _Graph,
    block: Block,
    qkv: tuple[torch.Tensor, torch.Tensor],
    i: int,
    x: str,
    memory: str,
    shapes: dict[str, str],
) -> tuple[str, list[str]]:
    """One block on token rows (B * N, D) -> (its output, its new state).

    qkv: the block's q and kv projections as one weight (3D, D) and bias, the fast path's.

    memory: for the first block, its memory followed by the chunk's tokens (B, M + N, D), whose
    keys and values it computes itself; for a later block, its past keys and values, which it
    returns with the chunk's appended and the oldest dropped.
    """
    name = f"blocks.{i}"
    attn = block.attn
    heads = attn.num_heads
    normed = g.layer_norm(x, block.norm1, f"{name}.norm1")
    if i == 0:  # keys and values of memory and chunk, anew; queries of the chunk only
        q = g.linear(normed, attn.to_q.weight, attn.to_q.bias, f"{name}.q")
        kv_weight = g.const(f"{name}.kv.weight_t", _np(attn.to_kv.weight).T)
        kv = g.op("MatMul", g.layer_norm(memory, block.norm1, f"{name}.norm1"), kv_weight)
        kv = g.op("Add", kv, g.const(f"{name}.kv.bias", _np(attn.to_kv.bias)))
        keys, values = g.ops("Split", kv, axis=-1, num_outputs=2, outputs=2)
        q = g.op("Reshape", q, shapes["tokens"])
        out = g.op("MultiHeadAttention", q, keys, values, num_heads=heads)
        new_state = []
    else:  # Attention writes q, k and v head by head: no Split, no transposes between nodes
        weight = g.const(f"{name}.qkv.weight_t", _np(qkv[0]).T)
        bias = g.const(f"{name}.qkv.bias", _np(qkv[1]))
        tokens = g.op("Reshape", normed, shapes["tokens"])  # Attention takes (B, N, D)
        out, present = g.ops(
            "Attention", tokens, weight, bias, "", memory, num_heads=heads, outputs=2
        )
        new_state = [g.op("Slice", present, "memory_start", "end", "past_token_axis")]
    out = g.op("Reshape", out, shapes["rows"])
    x = g.op("Add", x, g.linear(out, attn.proj.weight, attn.proj.bias, f"{name}.proj"))
    hidden = g.layer_norm(x, block.norm2, f"{name}.norm2")
    hidden = g.op("Gelu", g.linear(hidden, block.mlp.fc1.weight, block.mlp.fc1.bias, f"{name}.fc1"))
    x = g.op("Add", x, g.linear(hidden, block.mlp.fc2.weight, block.mlp.fc2.bias, f"{name}.fc2"))
    return x, new_state


def build_graph(model: AudioTransformer, fast: FastPiece) -> "onnx.ModelProto":
    """The streaming graph of a model: inputs and outputs as the module docstring says."""
    spec = model.spec
    dim, heads, memory = spec.embed_dim, spec.num_heads, model.memory_tokens
    g = _Graph()
    x3 = _tokens(g, fast)  # (B, N, D)
    g.const("memory_start", [-memory])
    g.const("end", [2**62])
    g.const("token_axis", [1])
    g.const("past_token_axis", [3])
    # upstream: the first block's memory gets its positions added once more, every chunk;
    # a memory shorter than M (empty, at the start) takes the last positions.
    held = g.op("Shape", "state_0", start=1, end=2)
    skipped = g.op("Sub", g.const("memory_length", [memory]), held)
    positions = g.const("memory_positions", _np(fast.memory_pos))
    positions = g.op("Slice", positions, skipped, "end", g.const("first_axis", [0]))
    first = g.op("Add", "state_0", positions)
    first = g.op("Concat", first, x3, axis=1)  # (B, M + N, D)
    new_states = [g.op("Slice", first, "memory_start", "end", "token_axis")]
    batch_tokens = g.op("Shape", x3, start=0, end=2)
    shapes = {
        "tokens": g.op("Concat", batch_tokens, g.const("dim", [dim]), axis=0),
        "rows": g.const("rows", [-1, dim]),
    }
    x = g.op("Reshape", x3, "rows")  # token rows: each projection is one Gemm
    for i, (block, fused) in enumerate(zip(model.blocks, fast.blocks, strict=True)):
        past = first if i == 0 else f"past_{i}"
        x, state = _block(g, block, (fused.qkv_w, fused.qkv_b), i, x, past, shapes)
        new_states.extend(state)
    x = g.op("Reshape", g.layer_norm(x, model.norm, "norm"), shapes["tokens"])
    if spec.pooling == "token":
        pooled = g.op("Gather", x, g.const("first_token", 0), axis=1)
    else:
        pooled = g.op("ReduceMean", x, "token_axis", keepdims=0)
    pooled = g.layer_norm(pooled, model.outputlayer[0], "outputlayer.0")
    head = model.outputlayer[1]
    scores = g.op("Sigmoid", g.linear(pooled, head.weight, head.bias, "outputlayer.1"))
    return _model_proto(g, spec.depth, heads, dim, [scores, *new_states])


def _model_proto(
    g: _Graph, depth: int, heads: int, dim: int, outputs: list[str]
) -> "onnx.ModelProto":
    onnx = g.onnx
    rename = dict(zip(outputs, ["scores", *state_names(depth, "new_")], strict=True))
    for node in g.nodes:
        node.output[:] = [rename.get(o, o) for o in node.output]
        node.input[:] = [rename.get(i, i) for i in node.input]
    f32 = onnx.TensorProto.FLOAT
    i64 = onnx.TensorProto.INT64
    shapes = {"state_0": ["batch", "memory", dim]}
    kv = [2, "batch", heads, "memory", dim // heads]
    value = onnx.helper.make_tensor_value_info
    inputs = [
        value("power", f32, ["batch", "frames", N_FFT // 2 + 1]),
        value("piece_start", i64, [1]),
        value("piece_end", i64, [1]),
        *(value(n, f32, shapes.get(n, kv)) for n in state_names(depth)),
    ]
    outs = [
        value("scores", f32, ["batch", N_CLASSES]),
        *(value("new_" + n, f32, shapes.get(n, kv)) for n in state_names(depth)),
    ]
    graph = onnx.helper.make_graph(
        g.nodes, "sat_audio", inputs, outs, list(g.initializers.values())
    )
    opsets = [onnx.helper.make_opsetid("", OPSET), onnx.helper.make_opsetid(MS, 1)]
    return onnx.helper.make_model(graph, opset_imports=opsets)


def state_names(depth: int, prefix: str = "") -> list[str]:
    """The graph's state inputs in order; outputs have the prefix "new_"."""
    return [prefix + n for n in ("state_0", *(f"past_{i}" for i in range(1, depth)))]


def export_onnx(model: AudioTransformer, path: Path, precision: str = "float32") -> Path:
    """Write the model's streaming graph to path, through a temp file renamed when complete.

    precision int8 writes it with int8 weights in its blocks (model/onnx_int8.py)."""
    try:
        import onnx
    except ImportError as err:
        raise SatAudioError("ONNX export needs onnx: pip install 'sat-audio[onnx]'") from err
    if not model.spec.streaming:
        raise SatAudioError(
            f"{model.spec.name} is a plain ViT; ONNX export is for streaming models"
        )
    with torch.no_grad():
        proto = build_graph(model, FastPiece(model))
    meta = {
        "sat_audio.format": FORMAT,
        "sat_audio.precision": precision,
        "sat_audio.spec": json.dumps(asdict(model.spec)),
    }
    onnx.helper.set_model_props(proto, meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    if precision == "int8":
        quantize_int8(proto, tmp)
    else:
        onnx.save(proto, tmp)
    tmp.replace(path)
    return path
