"""model.precision int8: the streaming graph with its transformer blocks' weights in int8.

onnxruntime's dynamic quantization: int8 weights; each pass's activations are quantized as they
come, one scale per tensor, so no calibration audio is needed, but streams scored in one pass
share a scale (a stream's scores then depend a little on the others'). Only the blocks' products
change (Gemm, MatMul and Attention). The mel filterbank and the patch embedding take inputs that
span decades, which one scale per tensor loses, and the classifier's errors go straight to the
scores: on weights as initialised for training, quantizing the patch embedding moved scores by
0.3, and the classifier 8x more than every block did. 7-bit weights (reduce_range) move them
about twice as far.

How far the scores move is spread over every block and every kind of product, none dominating;
two things reduce it at little cost in speed: one weight scale per output channel, and keeping
the first block in float32 (its keys and values come from the patch embeddings of the memory
and the chunk, whose positions are added twice). The wider variants move more: their tensors
span more values under one activation scale, SAT_S pools one token instead of averaging them,
and a wider head turns the same relative change into a larger one of the scores. So each
variant has its own plan and a bound on the change, measured (benchmarks/bench_int8.py) and
tested (tests/test_int8.py): models/int8.toml. int8 is offered only where the bound is within
what the README promises; elsewhere asking for it is refused with one line.
"""

import contextlib
import json
import logging
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from sat_audio.errors import SatAudioError
from sat_audio.model.registry import data_dir

if TYPE_CHECKING:
    import onnx

FLOAT_WEIGHTS = ("mel_filterbank", "patch_weight", "outputlayer.1.weight")
"""The products left in float32, by their weight's name in model/onnx_export.py."""
ADVICE = "Please consider to run pre-processing"
"""quantize_dynamic's warning on any graph that has not been through its pre-processing (shape
inference and fusion), which the export does itself: the graph is written fused, shapes known."""
PLANS = "int8.toml"
"""Beside registry.toml: each variant's plan and bound."""


@dataclass(frozen=True)
class Int8Plan:
    """How one variant's blocks are quantized, and how far its scores may move from float32."""

    per_channel: bool
    float_blocks: tuple[int, ...]
    max_drift: float


@cache
def _table() -> tuple[float, dict[str, Int8Plan]]:
    with (data_dir() / PLANS).open("rb") as fh:
        table = tomllib.load(fh)
    within = float(table.pop("offered_within"))
    plans = {
        name: Int8Plan(
            per_channel=bool(fields["per_channel"]),
            float_blocks=tuple(fields["float_blocks"]),
            max_drift=float(fields["max_drift"]),
        )
        for name, fields in table.items()
    }
    return within, plans


def int8_plans() -> dict[str, Int8Plan]:
    """Every variant's measured plan, offered or not."""
    return dict(_table()[1])


def offered_int8() -> list[str]:
    """The variants int8 is offered for: their bound is within the promised change."""
    within, plans = _table()
    return [name for name, plan in plans.items() if plan.max_drift <= within]


def int8_plan(variant: str) -> Int8Plan:
    """The plan of a variant int8 is offered for; SatAudioError naming the reason otherwise."""
    within, plans = _table()
    plan = plans.get(variant)
    offered = f"use float32 (int8 is offered for {', '.join(offered_int8())})"
    if plan is None:
        raise SatAudioError(
            f"int8 is not offered for {variant}: its change from float32 is not measured; {offered}"
        )
    if plan.max_drift > within:
        raise SatAudioError(
            f"int8 is not offered for {variant}: its scores move by up to {plan.max_drift} from "
            f"float32 (models/{PLANS}), more than {within}; {offered}"
        )
    return plan


def quantize_int8(proto: "onnx.ModelProto", path: Path, plan: Int8Plan | None = None) -> None:
    """Write proto to path with int8 weights in its blocks; its metadata goes along, saying int8.

    plan: by default the offered plan of the graph's variant (its metadata names it); another
    plan is for measuring one (benchmarks/bench_int8.py, tests/test_int8.py).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    meta = {p.key: p.value for p in proto.metadata_props}
    if plan is None:
        plan = int8_plan(json.loads(meta["sat_audio.spec"])["name"])
    onnx.helper.set_model_props(proto, {**meta, "sat_audio.precision": "int8"})
    floats = {*FLOAT_WEIGHTS}
    floats |= {i.name for b in plan.float_blocks for i in _initializers(proto, f"blocks.{b}.")}
    kept = []
    for i, node in enumerate(proto.graph.node):
        node.name = f"n{i}"  # exclusion goes by node name; the export leaves them unnamed
        if set(node.input) & floats:
            kept.append(node.name)
    # the quantizer replaces a Gemm by a MatMul named after it, and excludes by the new name
    kept += [f"{name}_MatMul" for name in kept]
    with _without(ADVICE):
        quantize_dynamic(
            proto,
            path,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Gemm", "Attention"],
            nodes_to_exclude=kept,
            per_channel=plan.per_channel,
            # the type of tensors its shape inference leaves untyped (outputs of onnxruntime's ops)
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )


def _initializers(proto: "onnx.ModelProto", prefix: str) -> Iterator["onnx.TensorProto"]:
    return (i for i in proto.graph.initializer if i.name.startswith(prefix))


@contextlib.contextmanager
def _without(message: str) -> Iterator[None]:
    """The root logger drops records that start with message (the quantizer logs through it)."""

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(message)

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)
