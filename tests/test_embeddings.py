"""Embeddings (what custom sounds learn on) come from every backend's scoring pass, agree across
backends, and are what the head reads: head(embedding) gives the chunk's scores."""

from pathlib import Path

import numpy as np
import pytest
import torch

from sat_audio.errors import SatAudioError
from sat_audio.model.checkpoint import read_weights
from sat_audio.model.fast import TorchScorer
from sat_audio.model.onnx_export import export_onnx
from sat_audio.model.onnx_runtime import OnnxScorer
from tests.checkpoints import random_model, save_upstream, upstream_name
from tests.test_onnx import audio

pytestmark = pytest.mark.slow


def _stream(scorer: TorchScorer | OnnxScorer, chunk_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Scores and embeddings of one stream, chunk after chunk, from silence."""
    wave = audio(4 * chunk_s, 3)
    size = int(chunk_s * 16000)
    state = scorer.initial_state(1)
    scores, embeddings = [], []
    with scorer.inference():
        for start in range(0, wave.size - size + 1, size):
            s, e, state = scorer.score_embed(wave[None, start : start + size], state)
            scores.append(np.asarray(s)[0])
            embeddings.append(np.asarray(e)[0])
    return np.stack(scores), np.stack(embeddings)


@pytest.mark.parametrize(("variant", "chunk_s"), [("SAT_T_2s", 2.0), ("SAT_T_2s", 4.5)])
def test_the_embedding_is_what_the_head_reads_on_every_backend(
    tmp_path: Path, variant: str, chunk_s: float
) -> None:
    """4.5 s: two pieces a chunk, whose embeddings are averaged as their scores are."""
    model = random_model(variant, seed=5)
    checkpoint = save_upstream(model, tmp_path / upstream_name(variant))
    onnx_file = export_onnx(read_weights(str(checkpoint)), checkpoint.with_suffix(".onnx"))
    int8_file = export_onnx(
        read_weights(str(checkpoint)), checkpoint.with_suffix(".int8.onnx"), "int8"
    )
    ref_scores, ref = _stream(TorchScorer(model, fast=False), chunk_s)
    assert len(ref) >= 4
    assert ref.shape == (ref_scores.shape[0], model.spec.embed_dim)
    if chunk_s == 2.0:  # one piece: the head of the embedding is the chunk's scores
        with torch.inference_mode():
            head = torch.sigmoid(model.outputlayer(torch.from_numpy(ref))).numpy()
        np.testing.assert_allclose(head, ref_scores, atol=1e-6)
    assert np.abs(ref - ref.mean(axis=0)).max() > 0.05  # the embeddings do move
    for scorer, tolerance in (
        (TorchScorer(random_model(variant, seed=5)), 1e-4),
        (OnnxScorer(onnx_file), 1e-4),
        (OnnxScorer(int8_file, precision="int8"), 0.05),
    ):
        scores, got = _stream(scorer, chunk_s)
        assert np.abs(scores - ref_scores).max() < tolerance
        scale = np.abs(ref).max()
        assert np.abs(got - ref).max() < tolerance * scale, type(scorer)


def test_a_plain_vit_gives_embeddings_too() -> None:
    model = random_model("audiotransformer_tiny", seed=1)
    scorer = TorchScorer(model)
    wave = audio(3.0, 1)[None]
    scores, embedding, state = scorer.score_embed(wave, ())
    assert embedding.shape == (1, 192) and state == ()
    np.testing.assert_array_equal(scores, scorer.score(wave, ())[0])


def test_an_export_without_the_embedding_scores_but_asks_to_be_redone(tmp_path: Path) -> None:
    """An export made before embeddings were added still scores, and says what to do for
    custom sounds."""
    import onnx

    model = random_model("SAT_T_1s", seed=2)
    path = tmp_path / "old.onnx"
    export_onnx(model, path)
    old = onnx.load(path)
    assert old.graph.output[-1].name == "embedding"
    del old.graph.output[-1]
    onnx.save(old, path)
    scorer = OnnxScorer(path)
    chunk = audio(1.0, 2)[None]
    scores, _ = scorer.score(chunk, scorer.initial_state(1))
    assert scores.shape == (1, 527)
    with pytest.raises(SatAudioError, match=r"no embedding output .* re-export it with `sat-aud"):
        scorer.score_embed(chunk, scorer.initial_state(1))
