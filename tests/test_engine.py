"""Streaming invariants of the engine: bounded memory, batching, block sizes, reset."""

import copy
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from sat_audio.config import ModelConfig
from sat_audio.engine import MAX_BATCH, Engine, level_dbfs, load_scorer
from sat_audio.errors import SatAudioError
from sat_audio.model.shapes import State
from tests.checkpoints import random_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return random_model("SAT_T_2s", seed=11)


def audio(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    envelope = 0.05 + 0.5 * (np.sin(np.arange(n) / 8000.0 * (1 + seed)) > 0)
    return (envelope * rng.standard_normal(n)).astype(np.float32)


def run_single(model: torch.nn.Module, wave: np.ndarray, chunk_s: float) -> list[np.ndarray]:
    engine = Engine(model, chunk_s)
    engine.feed("default", wave)
    return [r.scores for r in engine.drain()]


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("chunk_s", [2.0, 0.16, 0.5, 3.0])
def test_memory_stays_bounded(model: torch.nn.Module, chunk_s: float, fast: bool) -> None:
    engine = Engine(model, chunk_s, fast=fast)
    shapes = [tuple(part.shape) for part in engine._state]
    engine.feed("default", audio(12, 0))
    assert len(engine.drain()) == int(12 / chunk_s)
    assert [tuple(part.shape) for part in engine._state] == shapes
    # the fast path keeps keys and values (2 x 3 heads x 64) of every block's memory but the first
    if fast:
        assert shapes == [(1, 48, 192)] + [(1, 2, 3, 48, 64)] * 11
    else:
        assert shapes == [(1, 48, 192)] * 12


@pytest.mark.parametrize(
    ("chunk_s", "max_batch"), [(2.0, MAX_BATCH), (0.16, MAX_BATCH), (1.0, MAX_BATCH), (2.0, 3)]
)
def test_batched_streams_equal_single_streams(
    model: torch.nn.Module, chunk_s: float, max_batch: int
) -> None:
    """max_batch 3 of 4 streams: passes of 3 and 1, or of a subset, write their memory back."""
    waves = {f"s{i}": audio(6, seed=i) for i in range(4)}
    engine = Engine(model, chunk_s, list(waves), max_batch=max_batch)
    results = []
    # streams run out of step: fed in different block sizes, scored whenever some are ready
    for i, (name, wave) in enumerate(waves.items()):
        block = 3000 + 1000 * i
        for start in range(0, wave.size, block):
            engine.feed(name, wave[start : start + block])
            if start % (2 * block) == 0:
                results += engine.step()
    results += engine.drain()
    batched: dict[str, list[np.ndarray]] = {name: [] for name in waves}
    for result in results:
        batched[result.stream].append(result.scores)
    for name, wave in waves.items():
        single = run_single(model, wave, chunk_s)
        assert len(batched[name]) == len(single) == int(6 / chunk_s)
        np.testing.assert_allclose(np.stack(batched[name]), np.stack(single), atol=1e-5, rtol=0)


def test_block_size_does_not_matter(model: torch.nn.Module) -> None:
    wave = audio(7, seed=5)
    whole = run_single(model, wave, 2.0)
    engine = Engine(model, 2.0)
    rng = np.random.default_rng(0)
    pos, results = 0, []
    while pos < wave.size:
        size = int(rng.integers(1, 9000))
        engine.feed("default", wave[pos : pos + size])
        results += engine.drain()
        pos += size
    assert [r.index for r in results] == [0, 1, 2]
    assert [(r.start_s, r.end_s) for r in results] == [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0)]
    np.testing.assert_array_equal(np.stack([r.scores for r in results]), np.stack(whole))


def test_memory_carries_the_past(model: torch.nn.Module) -> None:
    """The same chunk scores differently after different pasts: the memory is used."""
    probe = audio(2, seed=9)
    after_a = run_single(model, np.concatenate([audio(4, 1), probe]), 2.0)[-1]
    after_b = run_single(model, np.concatenate([audio(4, 2) * 0.01, probe]), 2.0)[-1]
    assert np.abs(after_a - after_b).max() > 1e-4


def test_reset_equals_fresh_engine(model: torch.nn.Module) -> None:
    engine = Engine(model, 2.0, ["a", "b"])
    engine.feed("a", audio(5, 3))
    engine.feed("b", audio(5, 4))
    engine.drain()
    engine.reset("a")
    assert engine.pending_samples("a") == 0
    assert engine.pending_samples("b") == 16000
    wave = audio(4, 6)
    engine.feed("a", wave)
    again = engine.drain()
    assert [(r.stream, r.index, r.start_s) for r in again] == [("a", 0, 0.0), ("a", 1, 2.0)]
    np.testing.assert_array_equal(
        np.stack([r.scores for r in again]), np.stack(run_single(model, wave, 2.0))
    )


def test_flush_scores_the_tail_like_upstream(model: torch.nn.Module) -> None:
    engine = Engine(model, 2.0)
    engine.feed("default", audio(5.5, 1))
    results = engine.flush("default")
    assert [(r.start_s, r.end_s) for r in results] == [(0, 2), (2, 4), (4, 5.5)]
    engine.feed("default", audio(2.1, 1))  # 0.1 s tail: less than one patch column
    assert len(engine.flush("default")) == 1


def test_level_dbfs() -> None:
    assert level_dbfs(np.zeros(100, np.float32)) == -120.0
    full = np.sign(np.sin(np.arange(16000))).astype(np.float32)
    assert level_dbfs(full) == pytest.approx(0.0, abs=0.01)
    assert level_dbfs(full * 0.1) == pytest.approx(-20.0, abs=0.01)


def test_bad_input(model: torch.nn.Module) -> None:
    with pytest.raises(SatAudioError, match=r"chunk length 0.1 s is too short; use at least 0.16"):
        Engine(model, 0.1)
    with pytest.raises(SatAudioError, match=r"stream names must be unique"):
        Engine(model, 2.0, ["a", "a"])
    engine = Engine(model, 2.0)
    with pytest.raises(SatAudioError, match=r"unknown stream 'x'"):
        engine.feed("x", np.zeros(10, np.float32))
    with pytest.raises(SatAudioError, match=r"expected mono samples \(1-D\), got shape \(10, 2\)"):
        engine.feed("default", np.zeros((10, 2), np.float32))


@pytest.mark.parametrize("chunk_s", [10.23, 10.24, 10.2699])
def test_vit_chunk_its_positions_cannot_hold_is_refused_up_front(chunk_s: float) -> None:
    with pytest.raises(
        SatAudioError,
        match=rf"audiotransformer_tiny cannot score {chunk_s} s chunks \(64 patch columns, at most "
        r"63 fit\); use at most 10.22 s or at least 10.27 s$",
    ):
        Engine(random_model("audiotransformer_tiny"), chunk_s)


@pytest.mark.parametrize("chunk_s", [10.0, 10.22, 10.27, 12.0])
def test_vit_chunks_around_its_target_length_score(chunk_s: float) -> None:
    engine = Engine(random_model("audiotransformer_tiny"), chunk_s)
    engine.feed("default", audio(chunk_s, 0))
    assert [r.scores.shape for r in engine.drain()] == [(527,)]


def test_reset_keeping_memory_continues_the_stream(model: torch.nn.Module) -> None:
    """As upstream inference.py runs several files: new clock, the same memory."""
    first, second = audio(4, 1), audio(4, 2)
    engine = Engine(model, 2.0)
    engine.feed("default", first)
    engine.drain()
    engine.reset(keep_memory=True)
    engine.feed("default", second)
    again = engine.drain()
    assert [(r.index, r.start_s) for r in again] == [(0, 0.0), (1, 2.0)]
    continuous = run_single(model, np.concatenate([first, second]), 2.0)[2:]
    np.testing.assert_array_equal(np.stack([r.scores for r in again]), np.stack(continuous))
    fresh = run_single(model, second, 2.0)
    assert np.abs(np.stack([r.scores for r in again]) - np.stack(fresh)).max() > 1e-4


def test_non_finite_samples_are_silence_and_leave_the_memory_clean(
    model: torch.nn.Module, caplog: pytest.LogCaptureFixture
) -> None:
    """NaN and infinite samples score as silence, a garbage float as full scale, once warned;
    the chunks after them score as if the input had been clean (nothing left in the memory)."""
    wave = audio(6, 4)
    bad = wave.copy()
    bad[20000:20010] = np.nan
    bad[21000], bad[21001] = np.inf, -np.inf
    bad[40000] = np.nan  # in a later block: still one warning for the stream
    bad[22000] = 3e38  # what wrong PCM bytes read as f32le can hold
    clean = wave.copy()
    clean[20000:20010] = clean[21000] = clean[21001] = clean[40000] = 0.0
    clean[22000] = 1.0
    engine = Engine(model, 2.0)
    with caplog.at_level(logging.WARNING, logger="sat_audio.engine"):
        engine.feed("default", bad[:30000])
        engine.feed("default", bad[30000:])
        got = np.stack([r.scores for r in engine.drain()])
    assert np.isnan(bad[20000]) and bad[22000] == np.float32(3e38)  # the caller's array as it was
    np.testing.assert_array_equal(got, np.stack(run_single(model, np.clip(clean, -1, 1), 2.0)))
    assert caplog.text.count("not numbers") == 1
    assert "stream default: 12 samples were not numbers" in caplog.text


def test_non_finite_scores_are_zero(model: torch.nn.Module) -> None:
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.outputlayer[1].bias[5] = float("nan")
    wave = audio(4, 2)
    got = np.stack(run_single(broken, wave, 2.0))
    want = np.stack(run_single(model, wave, 2.0))
    assert (got[:, 5] == 0).all()
    np.testing.assert_array_equal(np.delete(got, 5, axis=1), np.delete(want, 5, axis=1))


def test_a_loaded_model_sets_torchs_threads_only_while_it_scores(
    sat_t_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch's thread count is the process's: loading leaves it, scoring sets it and puts it
    back, so code beside the listener (or a second model) keeps its own."""
    before = torch.get_num_threads()
    wanted = before + 1
    cfg = ModelConfig(str(sat_t_checkpoint), threads=wanted, backend="torch")
    scorer = load_scorer(cfg)
    assert torch.get_num_threads() == before
    seen: list[int] = []
    score = scorer.score

    def counting(chunks: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        seen.append(torch.get_num_threads())
        return score(chunks, state)

    monkeypatch.setattr(scorer, "score", counting)
    engine = Engine(scorer, 2.0)
    engine.feed("default", audio(4, 1))
    assert len(engine.drain()) == 2
    assert seen == [wanted, wanted]
    assert torch.get_num_threads() == before
