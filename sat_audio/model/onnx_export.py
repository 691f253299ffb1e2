"""Write a streaming model as an ONNX graph for the light runtime (model/onnx_runtime.py).

The graph is written node by node from the model's weights, with onnxruntime's fused CPU ops
(Attention, which projects q, k and v itself and appends them to the past; Gelu), so it stays
small: 12 nodes a block. It computes what model/fast.FastPiece computes, after numpy's FFT:

    power (B, T, 257)      the whole chunk's power spectrogram, frames first (numpy's layout)
    piece_start, piece_end (1,) int64: the frames of the piece scored, a multiple of 16 long
    state_0 (B, M, D)      the first block's memory, as FastPiece
    past_i (2, B, heads, M, D / heads) for each later block i: its memory's keys and values, as
        Attention takes them (the runtime holds them batch first, as the fast path does)
        -> scores (B, 527), new_state_0, new_past_1, new_past_2, ..., embedding (B, D)

The embedding is the pooled tokens the head reads (AudioTransformer.forward_embed's): custom
sounds (sat_audio/custom.py) are learned on it. An export without it (before it was added)
still scores; OnnxScorer.score_embed then asks for a new export.

The dB floor comes from the whole chunk, as in the torch model. M is free: the runtime starts
from an empty memory (M = 0) to compute the state after a memory-length of silence, as the torch
scorer does, so the file carries only the variant's name and sizes (metadata).

The graph is written from numpy arrays by upstream's parameter names, with FastPiece's folding
done here in numpy (fold()): from a checkpoint read without torch (checkpoint.read_weights), or
from a torch model's state_dict, which gives the same arrays. Exporting never imports torch.
"""

import json
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sat_audio.errors import SatAudioError
from sat_audio.model.checkpoint import Weights
from sat_audio.model.mel import mel_filterbank
from sat_audio.model.onnx_int8 import quantize_int8
from sat_audio.model.onnx_runtime import FORMAT
from sat_audio.model.registry import ModelSpec
from sat_audio.model.shapes import (
    BN_EPS,
    FREQ_ROWS,
    HEAD_LN_EPS,
    LN_EPS,
    N_CLASSES,
    N_FFT,
    PATCH,
    TOP_DB,
)

if TYPE_CHECKING:
    import onnx

    from sat_audio.model.sat import AudioTransformer

OPSET = 20  # Gelu is one node from opset 20 (onnxruntime >= 1.17)
MS = "com.microsoft"  # onnxruntime's own ops: MultiHeadAttention, Attention
State = Mapping[str, np.ndarray]
"""A model's parameters by upstream's names (sat.py's state_dict), float32."""


def fold(spec: ModelSpec, state: State) -> dict[str, np.ndarray]:
    """What FastPiece precomputes, in numpy with the same float32 operations in the same order.

    bn_scale, bn_shift (64,): the mel BatchNorm as one product and sum; patch_weight (256, D);
    positions (rows, columns, D): every patch position's embeddings with the patch bias;
    memory_positions (M, D): the positions the first block's memory gets again each chunk;
    cls (1, 1, D) with its position, for token pooling; blocks.i.qkv.weight (3D, D) and
    blocks.i.qkv.bias (3D,): each block's q and kv projections as one.
    """
    dim = spec.embed_dim
    scale = state["init_bn.1.weight"] / np.sqrt(state["init_bn.1.running_var"] + BN_EPS)
    time_pos = state["time_pos_embed"][0, :, 0].T  # (columns, D)
    freq_pos = state["freq_pos_embed"][0, :, :, 0].T  # (rows, D)
    memory_columns = spec.memory_frames // PATCH
    folded = {
        "bn_scale": scale,
        "bn_shift": state["init_bn.1.bias"] - state["init_bn.1.running_mean"] * scale,
        "patch_weight": state["patch_embed.proj.weight"].reshape(dim, PATCH * PATCH).T,
        "positions": freq_pos[:, None] + time_pos[None] + state["patch_embed.proj.bias"],
        "memory_positions": (freq_pos[:, None] + time_pos[None, -memory_columns:]).reshape(-1, dim),
    }
    if spec.pooling == "token":
        folded["cls"] = (state["cls_token"][0] + state["token_pos_embed"])[None]
    for i in range(spec.depth):
        attn = f"blocks.{i}.attn"
        for part in ("weight", "bias"):
            both = (state[f"{attn}.to_q.{part}"], state[f"{attn}.to_kv.{part}"])
            folded[f"blocks.{i}.qkv.{part}"] = np.concatenate(both)
    return folded


def state_of(model: "AudioTransformer") -> dict[str, np.ndarray]:
    """A torch model's parameters as a checkpoint's read gives them (numpy, no copies)."""
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


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

    def op(self, op_type: str, *inputs: str, **attrs: Any) -> str:
        """A node of one output; "" stands for an input left out."""
        return self.ops(op_type, *inputs, outputs=1, **attrs)[0]

    def ops(self, op_type: str, *inputs: str, outputs: int, **attrs: Any) -> list[str]:
        domain = MS if op_type in ("MultiHeadAttention", "Attention") else ""
        names = [f"{op_type}_{len(self.nodes)}_{i}" for i in range(outputs)]
        self.nodes.append(
            self.onnx.helper.make_node(op_type, list(inputs), names, domain=domain, **attrs)
        )
        return names

    def layer_norm(self, x: str, state: State, name: str, eps: float = LN_EPS) -> str:
        """The LayerNorm `name` of the state (upstream's name, the initializers' too)."""
        weight = self.const(f"{name}.weight", state[f"{name}.weight"])
        bias = self.const(f"{name}.bias", state[f"{name}.bias"])
        return self.op("LayerNormalization", x, weight, bias, axis=-1, epsilon=eps)

    def linear(self, x: str, weight: np.ndarray, bias: np.ndarray, name: str) -> str:
        """x @ weight.T + bias on token rows (B * N, D): one Gemm."""
        w, b = self.const(f"{name}.weight", weight), self.const(f"{name}.bias", bias)
        return self.op("Gemm", x, w, b, transB=1)


def _tokens(g: _Graph, spec: ModelSpec, folded: State) -> str:
    """Power (B, T, 257) -> the piece's patch tokens with positions, (B, N, D).

    The folded BatchNorm, the patch weight and the positions are fold()'s."""
    mel = g.op("MatMul", "power", g.const("mel_filterbank", mel_filterbank()))  # (B, T, 64)
    to_db = g.const("to_db", 10.0 / math.log(10.0))
    floor = g.const("floor", 1e-10)
    peak = g.op("ReduceMax", mel, g.const("frame_and_mel_axes", [1, 2]), keepdims=1)
    peak = g.op("Mul", g.op("Log", g.op("Max", peak, floor)), to_db)
    piece = g.op("Slice", mel, "piece_start", "piece_end", g.const("frame_axis", [1]))
    db = g.op("Mul", g.op("Log", g.op("Max", piece, floor)), to_db)
    x = g.op("Max", db, g.op("Sub", peak, g.const("top_db", TOP_DB)))
    x = g.op("Mul", x, g.const("bn_scale", folded["bn_scale"]))  # over the mel axis, last
    x = g.op("Add", x, g.const("bn_shift", folded["bn_shift"]))
    # (B, T, 64) as (B, columns, 16 frames, rows, 16 mels) -> (B, rows, columns, 16 mels, 16 frames)
    x = g.op("Reshape", x, g.const("patch_grid", [0, -1, PATCH, FREQ_ROWS, PATCH]))
    x = g.op("Transpose", x, perm=[0, 3, 1, 4, 2])
    x = g.op("Reshape", x, g.const("patches", [0, FREQ_ROWS, -1, PATCH * PATCH]))
    dim = spec.embed_dim
    x = g.op("MatMul", x, g.const("patch_weight", folded["patch_weight"]))  # (B, rows, cols, D)
    # positions of every row and column, the patch bias folded in; the piece takes its columns
    columns = g.op("Shape", x, start=2, end=3)
    start = g.const("zero", [0])
    table = g.const("positions", folded["positions"])
    pos = g.op("Slice", table, start, columns, g.const("column_axis", [1]))
    x = g.op("Reshape", g.op("Add", x, pos), g.const("token_rows", [0, -1, dim]))
    if spec.pooling == "token":
        batch = g.op("Shape", x, start=0, end=1)
        shape = g.op("Concat", batch, g.const("one_by_dim", [1, dim]), axis=0)
        x = g.op("Concat", g.op("Expand", g.const("cls", folded["cls"]), shape), x, axis=1)
    return x


def _block(
    g: _Graph,
    spec: ModelSpec,
    state: State,
    folded: State,
    i: int,
    x: str,
    memory: str,
    shapes: dict[str, str],
) -> tuple[str, list[str]]:
    """One block on token rows (B * N, D) -> (its output, its new state).

    memory: for the first block, its memory followed by the chunk's tokens (B, M + N, D), whose
    keys and values it computes itself; for a later block, its past keys and values, which it
    returns with the chunk's appended and the oldest dropped.
    """
    name = f"blocks.{i}"
    attn = f"{name}.attn"
    heads = spec.num_heads
    normed = g.layer_norm(x, state, f"{name}.norm1")
    if i == 0:  # keys and values of memory and chunk, anew; queries of the chunk only
        q = g.linear(normed, state[f"{attn}.to_q.weight"], state[f"{attn}.to_q.bias"], f"{name}.q")
        kv_weight = g.const(f"{name}.kv.weight_t", state[f"{attn}.to_kv.weight"].T)
        kv = g.op("MatMul", g.layer_norm(memory, state, f"{name}.norm1"), kv_weight)
        kv = g.op("Add", kv, g.const(f"{name}.kv.bias", state[f"{attn}.to_kv.bias"]))
        keys, values = g.ops("Split", kv, axis=-1, num_outputs=2, outputs=2)
        q = g.op("Reshape", q, shapes["tokens"])
        out = g.op("MultiHeadAttention", q, keys, values, num_heads=heads)
        new_state = []
    else:  # Attention writes q, k and v head by head: no Split, no transposes between nodes
        weight = g.const(f"{name}.qkv.weight_t", folded[f"{name}.qkv.weight"].T)
        bias = g.const(f"{name}.qkv.bias", folded[f"{name}.qkv.bias"])
        tokens = g.op("Reshape", normed, shapes["tokens"])  # Attention takes (B, N, D)
        out, present = g.ops(
            "Attention", tokens, weight, bias, "", memory, num_heads=heads, outputs=2
        )
        new_state = [g.op("Slice", present, "memory_start", "end", "past_token_axis")]
    out = g.op("Reshape", out, shapes["rows"])

    def linear(x: str, part: str, short: str) -> str:
        weight, bias = state[f"{name}.{part}.weight"], state[f"{name}.{part}.bias"]
        return g.linear(x, weight, bias, f"{name}.{short}")

    x = g.op("Add", x, linear(out, "attn.proj", "proj"))
    hidden = g.layer_norm(x, state, f"{name}.norm2")
    hidden = g.op("Gelu", linear(hidden, "mlp.fc1", "fc1"))
    x = g.op("Add", x, linear(hidden, "mlp.fc2", "fc2"))
    return x, new_state


def build_graph(spec: ModelSpec, state: State) -> "onnx.ModelProto":
    """The streaming graph of a model's parameters: inputs and outputs as the module docstring
    says."""
    dim, heads = spec.embed_dim, spec.num_heads
    memory = FREQ_ROWS * (spec.memory_frames // PATCH)
    folded = fold(spec, state)
    g = _Graph()
    x3 = _tokens(g, spec, folded)  # (B, N, D)
    g.const("memory_start", [-memory])
    g.const("end", [2**62])
    g.const("token_axis", [1])
    g.const("past_token_axis", [3])
    # upstream: the first block's memory gets its positions added once more, every chunk;
    # a memory shorter than M (empty, at the start) takes the last positions.
    held = g.op("Shape", "state_0", start=1, end=2)
    skipped = g.op("Sub", g.const("memory_length", [memory]), held)
    positions = g.const("memory_positions", folded["memory_positions"])
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
    for i in range(spec.depth):
        past = first if i == 0 else f"past_{i}"
        x, new_state = _block(g, spec, state, folded, i, x, past, shapes)
        new_states.extend(new_state)
    x = g.op("Reshape", g.layer_norm(x, state, "norm"), shapes["tokens"])
    if spec.pooling == "token":
        embedding = g.op("Gather", x, g.const("first_token", 0), axis=1)
    else:
        embedding = g.op("ReduceMean", x, "token_axis", keepdims=0)
    pooled = g.layer_norm(embedding, state, "outputlayer.0", HEAD_LN_EPS)
    head = (state["outputlayer.1.weight"], state["outputlayer.1.bias"])
    scores = g.op("Sigmoid", g.linear(pooled, *head, "outputlayer.1"))
    return _model_proto(g, spec.depth, heads, dim, [scores, *new_states, embedding])


def _model_proto(
    g: _Graph, depth: int, heads: int, dim: int, outputs: list[str]
) -> "onnx.ModelProto":
    onnx = g.onnx
    names = ["scores", *state_names(depth, "new_"), "embedding"]
    rename = dict(zip(outputs, names, strict=True))
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
        value("embedding", f32, ["batch", dim]),
    ]
    graph = onnx.helper.make_graph(
        g.nodes, "sat_audio", inputs, outs, list(g.initializers.values())
    )
    opsets = [onnx.helper.make_opsetid("", OPSET), onnx.helper.make_opsetid(MS, 1)]
    return onnx.helper.make_model(graph, opset_imports=opsets)


def state_names(depth: int, prefix: str = "") -> list[str]:
    """The graph's state inputs in order; outputs have the prefix "new_"."""
    return [prefix + n for n in ("state_0", *(f"past_{i}" for i in range(1, depth)))]


def export_onnx(
    model: "AudioTransformer | Weights", path: Path, precision: str = "float32"
) -> Path:
    """Write a model's streaming graph to path, through a temp file renamed when complete.

    model: a checkpoint read without torch (checkpoint.read_weights), or a torch model, whose
    state_dict gives the same arrays. precision int8 writes it with int8 weights in its blocks
    (model/onnx_int8.py)."""
    try:
        import onnx
    except ImportError as err:
        raise SatAudioError("ONNX export needs onnx: pip install onnx") from err
    weights = model if isinstance(model, Weights) else Weights(model.spec, state_of(model))
    spec = weights.spec
    if not spec.streaming:
        raise SatAudioError(
            f"{spec.name} is a plain ViT; ONNX export is for streaming models (backend torch runs "
            "it: pip install 'sat-audio[torch]')"
        )
    proto = build_graph(spec, weights.state)
    meta = {
        "sat_audio.format": FORMAT,
        "sat_audio.precision": precision,
        "sat_audio.spec": json.dumps(asdict(spec)),
    }
    onnx.helper.set_model_props(proto, meta)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
    except OSError as err:
        raise SatAudioError(f"cannot write the ONNX export {path} ({err.strerror})") from None
    os.close(fd)
    tmp = Path(tmp_name)  # a name of its own: two processes may export the same model at once
    try:
        if precision == "int8":
            quantize_int8(proto, tmp)
        else:
            onnx.save(proto, tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
