"""A variant's parameters (names, shapes, dtypes) as sat.py's state_dict has them, without torch.

So a checkpoint can be checked against its variant where torch is absent (model/checkpoint.py);
tests/test_checkpoint.py holds the two to each other for every registered variant.
"""

import numpy as np

from sat_audio.model.registry import ModelSpec
from sat_audio.model.shapes import FREQ_ROWS, N_CLASSES, N_MELS, PATCH

Layout = dict[str, tuple[tuple[int, ...], np.dtype]]
COUNTERS = ("num_batches_tracked",)
"""Parameters that count (int64); every other one is float32."""


def _linear(name: str, out_features: int, in_features: int) -> dict[str, tuple[int, ...]]:
    return {f"{name}.weight": (out_features, in_features), f"{name}.bias": (out_features,)}


def _norm(name: str, dim: int) -> dict[str, tuple[int, ...]]:
    return {f"{name}.weight": (dim,), f"{name}.bias": (dim,)}


def parameter_layout(spec: ModelSpec) -> Layout:
    """Every parameter and buffer sat.AudioTransformer saves, in its state_dict's order."""
    d = spec.embed_dim
    shapes: dict[str, tuple[int, ...]] = {}
    if spec.pooling == "token":
        shapes |= {"cls_token": (1, 1, d), "token_pos_embed": (1, d)}
    time_columns = (spec.target_frames + spec.memory_frames) // PATCH
    shapes |= {"time_pos_embed": (1, d, 1, time_columns), "freq_pos_embed": (1, d, FREQ_ROWS, 1)}
    for name in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"init_bn.1.{name}"] = (N_MELS,)
    shapes["init_bn.1.num_batches_tracked"] = ()
    shapes |= {"patch_embed.proj.weight": (d, 1, PATCH, PATCH), "patch_embed.proj.bias": (d,)}
    for i in range(spec.depth):
        block = f"blocks.{i}"
        shapes |= _norm(f"{block}.norm1", d)
        if spec.streaming:
            shapes |= _linear(f"{block}.attn.to_q", d, d) | _linear(f"{block}.attn.to_kv", 2 * d, d)
        else:
            shapes |= _linear(f"{block}.attn.qkv", 3 * d, d)
        shapes |= _linear(f"{block}.attn.proj", d, d) | _norm(f"{block}.norm2", d)
        shapes |= _linear(f"{block}.mlp.fc1", 4 * d, d) | _linear(f"{block}.mlp.fc2", d, 4 * d)
    shapes |= _norm("norm", d) | _norm("outputlayer.0", d) | _linear("outputlayer.1", N_CLASSES, d)
    return {
        name: (shape, np.dtype(np.int64 if name.endswith(COUNTERS) else np.float32))
        for name, shape in shapes.items()
    }
