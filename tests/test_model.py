"""Model structure: upstream parameter names and shapes for every public variant."""

import pytest
import torch

from sat_audio.model.registry import get_spec, registry
from sat_audio.model.sat import build_model

pytestmark = pytest.mark.slow

# (D, pooling, time columns of time_pos_embed, memory tokens), from the design brief.
VARIANTS = {
    "SAT_T_2s": (192, "mean", 24, 48),
    "SAT_T_1s": (192, "mean", 12, 24),
    "SAT_S_2s": (384, "token", 24, 48),
    "SAT_S_1s": (384, "token", 24, 48),
    "SAT_B_2s": (768, "mean", 24, 48),
    "SAT_B_1s": (768, "mean", 12, 24),
    "audiotransformer_tiny": (192, "mean", 63, 0),
    "audiotransformer_small": (384, "token", 63, 0),
    "audiotransformer_base": (768, "mean", 63, 0),
}


def expected_shapes(variant: str) -> dict[str, tuple[int, ...]]:
    dim, pooling, cols, _ = VARIANTS[variant]
    shapes: dict[str, tuple[int, ...]] = {
        "init_bn.1.weight": (64,),
        "init_bn.1.bias": (64,),
        "init_bn.1.running_mean": (64,),
        "init_bn.1.running_var": (64,),
        "init_bn.1.num_batches_tracked": (),
        "patch_embed.proj.weight": (dim, 1, 16, 16),
        "patch_embed.proj.bias": (dim,),
        "time_pos_embed": (1, dim, 1, cols),
        "freq_pos_embed": (1, dim, 4, 1),
        "norm.weight": (dim,),
        "norm.bias": (dim,),
        "outputlayer.0.weight": (dim,),
        "outputlayer.0.bias": (dim,),
        "outputlayer.1.weight": (527, dim),
        "outputlayer.1.bias": (527,),
    }
    if pooling == "token":
        shapes |= {"cls_token": (1, 1, dim), "token_pos_embed": (1, dim)}
    streaming = variant.startswith("SAT")
    for i in range(12):
        b = f"blocks.{i}."
        shapes |= {
            b + "norm1.weight": (dim,),
            b + "norm1.bias": (dim,),
            b + "norm2.weight": (dim,),
            b + "norm2.bias": (dim,),
            b + "attn.proj.weight": (dim, dim),
            b + "attn.proj.bias": (dim,),
            b + "mlp.fc1.weight": (4 * dim, dim),
            b + "mlp.fc1.bias": (4 * dim,),
            b + "mlp.fc2.weight": (dim, 4 * dim),
            b + "mlp.fc2.bias": (dim,),
        }
        if streaming:
            shapes |= {
                b + "attn.to_q.weight": (dim, dim),
                b + "attn.to_q.bias": (dim,),
                b + "attn.to_kv.weight": (2 * dim, dim),
                b + "attn.to_kv.bias": (2 * dim,),
            }
        else:
            shapes |= {b + "attn.qkv.weight": (3 * dim, dim), b + "attn.qkv.bias": (3 * dim,)}
    return shapes


def test_registry_lists_every_public_variant() -> None:
    assert set(registry()) == set(VARIANTS)
    for spec in registry().values():
        assert spec.url == f"https://zenodo.org/record/7964975/files/{spec.file}?download=1"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_parameter_names_and_shapes_match_upstream(variant: str) -> None:
    model = build_model(get_spec(variant))
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == expected_shapes(variant)


@pytest.mark.parametrize("variant", ["SAT_T_2s", "SAT_T_1s", "SAT_S_2s"])
def test_memory_holds_four_rows_per_memory_column(variant: str) -> None:
    dim, _, _, tokens = VARIANTS[variant]
    memory = build_model(get_spec(variant)).silence_memory(3)
    assert memory is not None
    assert memory.shape == (12, 3, tokens, dim)


def test_vit_has_no_memory() -> None:
    model = build_model(get_spec("audiotransformer_tiny"))
    assert model.silence_memory(2) is None
    scores, memory = model(torch.zeros(2, 32000))
    assert memory is None
    assert scores.shape == (2, 527)
