"""model.precision int8: the streaming graph with its transformer blocks' weights in int8.

onnxruntime's dynamic quantization: int8 weights, one scale per tensor; each pass's activations
are quantized as they come, so no calibration audio is needed, but streams scored in one pass
share a scale (a stream's scores then depend a little on the others'). Only the blocks'
products change (Gemm, MatMul and Attention). The mel filterbank and the patch embedding take
inputs that span decades, which one scale per tensor loses, and the classifier's errors go
straight to the scores: on weights as initialised for training, quantizing the patch embedding
moved scores by 0.3, and the classifier 8x more than every block did. One scale per channel, or
7-bit weights (reduce_range), moved them 2x more. benchmarks/bench_int8.py measures the time
and the change from float32.
"""

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

FLOAT_WEIGHTS = ("mel_filterbank", "patch_weight", "outputlayer.1.weight")
"""The products left in float32, by their weight's name in model/onnx_export.py."""
ADVICE = "Please consider to run pre-processing"
"""quantize_dynamic's warning on any graph that has not been through its pre-processing (shape
inference and fusion), which the export does itself: the graph is written fused, shapes known."""


def quantize_int8(proto: "onnx.ModelProto", path: Path) -> None:
    """Write proto to path with int8 weights in its blocks; its metadata goes along."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    kept = []
    for i, node in enumerate(proto.graph.node):
        node.name = f"n{i}"  # exclusion goes by node name; the export leaves them unnamed
        if set(node.input) & set(FLOAT_WEIGHTS):
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
            # the type of tensors its shape inference leaves untyped (outputs of onnxruntime's ops)
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )


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
