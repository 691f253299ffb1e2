"""The fast streaming path scores like the plain reference forward (fast=False), within 1e-5."""

import numpy as np
import pytest
import torch

from sat_audio.engine import Engine
from sat_audio.errors import SatAudioError
from sat_audio.model.fast import FastPiece, TorchScorer
from tests.checkpoints import random_model

pytestmark = pytest.mark.slow

TOLERANCE = 1e-5


def audio(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    envelope = 0.02 + 0.6 * (np.sin(np.arange(n) / 6000.0 * (1 + seed)) > 0)
    return (envelope * rng.standard_normal(n)).astype(np.float32)


def stream_both(model: torch.nn.Module, chunk_s: float, seconds: float) -> np.ndarray:
    """Max |fast - reference| over two batched streams fed out of step, flushed at the end."""
    engines = [Engine(model, chunk_s, ["a", "b"], fast=fast) for fast in (True, False)]
    waves = {"a": audio(seconds, 1), "b": audio(seconds * 0.7, 2)}
    results: list[list[np.ndarray]] = [[], []]
    rng = np.random.default_rng(0)
    pos = dict.fromkeys(waves, 0)
    while any(pos[s] < waves[s].size for s in waves):
        for name, wave in waves.items():
            n = int(rng.integers(1000, 12000))
            for engine in engines:
                engine.feed(name, wave[pos[name] : pos[name] + n])
            pos[name] += n
        for out, engine in zip(results, engines, strict=True):
            out.extend(r.scores for r in engine.drain())
    for out, engine in zip(results, engines, strict=True):
        for name in waves:
            out.extend(r.scores for r in engine.flush(name))
    fast, ref = (np.stack(out) for out in results)
    assert fast.shape == ref.shape and len(ref) >= 4
    return np.abs(fast - ref).max()


@pytest.mark.parametrize(
    ("variant", "chunk_s"),
    [
        ("SAT_T_2s", 2.0),
        ("SAT_T_2s", 0.16),
        ("SAT_T_2s", 0.5),
        ("SAT_T_2s", 4.5),  # two target pieces and a dropped short one per chunk
        ("SAT_T_1s", 1.0),
        ("SAT_S_2s", 2.0),  # cls-token pooling
        ("SAT_S_1s", 0.32),
    ],
)
def test_fast_path_scores_like_the_reference(variant: str, chunk_s: float) -> None:
    diff = stream_both(random_model(variant, seed=3), chunk_s, seconds=max(8.0, 5 * chunk_s))
    assert diff < TOLERANCE


def test_fast_path_differs_when_a_weight_does() -> None:
    """The comparison can fail: a fast path built on another weight scores differently."""
    model = random_model("SAT_T_2s", seed=3)
    other = random_model("SAT_T_2s", seed=3)
    with torch.no_grad():
        other.blocks[5].attn.to_kv.weight[0, 0] += 0.5
    fast = Engine(other, 2.0)
    ref = Engine(model, 2.0, fast=False)
    wave = audio(8.0, 4)
    for engine in (fast, ref):
        engine.feed("default", wave)
    diffs = [
        np.abs(a.scores - b.scores).max() for a, b in zip(fast.drain(), ref.drain(), strict=True)
    ]
    assert max(diffs) > TOLERANCE


def test_state_is_the_reference_memory_with_cached_keys_and_values() -> None:
    """After a stream, the fast state equals the reference memory run through state_from_memory:
    the first block's memory as is, the later blocks' keys and values of theirs."""
    model = random_model("SAT_T_2s", seed=5)
    fast, ref = Engine(model, 0.5, fast=True), Engine(model, 0.5, fast=False)
    for engine in (fast, ref):
        engine.feed("default", audio(6.0, 6))
        engine.drain()
    expected = FastPiece(model).state_from_memory(torch.stack(ref._state))
    assert len(fast._state) == len(expected) == 12
    for got, want in zip(fast._state, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("variant", ["SAT_T_2s", "SAT_S_1s"])
def test_silence_state_is_the_reference_silence_memory(variant: str) -> None:
    """The fast path primes its state itself, from no memory, as silence_memory does."""
    model = random_model(variant, seed=4)
    expected = FastPiece(model).state_from_memory(model.silence_memory(2))
    got = TorchScorer(model).initial_state(2)
    assert len(got) == len(expected) == 12
    for part, want in zip(got, expected, strict=True):
        torch.testing.assert_close(part, want, atol=1e-5, rtol=0)


def test_fused_qkv_is_the_storage_of_to_q_and_to_kv() -> None:
    """No second copy of the q/kv weights: the model's parameters become views of the fused one,
    with their values unchanged."""
    model = random_model("SAT_T_2s", seed=6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    piece = FastPiece(model)
    for block, fast in zip(model.blocks, piece.blocks, strict=True):
        for name in ("weight", "bias"):
            q, kv = getattr(block.attn.to_q, name), getattr(block.attn.to_kv, name)
            fused = getattr(fast, f"qkv_{name[0]}")
            assert q.data_ptr() == fused.data_ptr()
            assert kv.data_ptr() == fused[q.shape[0] :].data_ptr()
            assert isinstance(q, torch.nn.Parameter) and isinstance(kv, torch.nn.Parameter)
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_reset_returns_the_fast_state_to_silence() -> None:
    model = random_model("SAT_T_2s", seed=7)
    engine = Engine(model, 2.0, ["a", "b"])
    engine.feed("a", audio(4.0, 8))
    engine.feed("b", audio(4.0, 9))
    engine.drain()
    engine.reset("a")
    silence = TorchScorer(model).initial_state(1)
    for part, quiet in zip(engine._state, silence, strict=True):
        assert torch.equal(part[0], quiet[0])
        assert not torch.equal(part[1], quiet[0])


def test_plain_vit_runs_the_reference_path() -> None:
    scorer = TorchScorer(random_model("audiotransformer_tiny", seed=1))
    assert not scorer.fast and scorer.initial_state(2) == ()
    with pytest.raises(SatAudioError, match="plain ViT"):
        FastPiece(random_model("audiotransformer_tiny", seed=1))
