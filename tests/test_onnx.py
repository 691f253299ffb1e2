"""The light runtime: `sat-audio models export-onnx` without torch, the same graph as from a
torch model, onnxruntime scores within 1e-4 of torch, int8 weights within 0.02 of float32, and a
listener on model.backend onnx that never imports torch, and exports the graph when it is
missing."""

import json
import os
import resource
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from sat_audio.config import ConfigError, parse_config
from sat_audio.engine import MAX_BATCH, Engine
from sat_audio.errors import SatAudioError
from sat_audio.labels import find
from sat_audio.memory import release_free_heap
from sat_audio.model.checkpoint import load_model, read_weights
from sat_audio.model.fast import FastPiece
from sat_audio.model.frontend import LogMel
from sat_audio.model.onnx_export import export_onnx
from sat_audio.model.onnx_runtime import (
    FFT_ROWS,
    FORMAT,
    WINDOW,
    OnnxScorer,
    onnx_path,
    power_spectrum,
)
from sat_audio.model.shapes import HOP, N_FFT, PATCH
from tests.checkpoints import (
    fire_label,
    random_model,
    save_upstream,
    upstream_name,
    without_torch,
)
from tests.test_listener import file_source, make_wav, write_config
from tests.waiting import PATIENCE_S

pytestmark = pytest.mark.slow

TOLERANCE = 1e-4
INT8_TOLERANCE = 0.02
"""model.precision int8 against float32: random_exported's model moves by up to 0.011."""


def export_by_cli(checkpoint: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """`sat-audio models export-onnx` where torch cannot be imported."""
    command = [sys.executable, "-m", "sat_audio", "models", "export-onnx", *flags, str(checkpoint)]
    env = without_torch(checkpoint.parent / "without_torch")
    return subprocess.run(command, capture_output=True, text=True, check=True, env=env)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint, its .onnx made by the CLI) of a SAT_T_2s whose head always says "Bark"."""
    model = fire_label(random_model("SAT_T_2s", seed=2), find("Bark").index, logit=3.0)
    folder = tmp_path_factory.mktemp("onnx")
    checkpoint = save_upstream(model, folder / upstream_name("SAT_T_2s"))
    onnx_file = Path(export_by_cli(checkpoint).stdout.strip().splitlines()[-1])
    assert onnx_file == checkpoint.with_suffix(".onnx") and onnx_file.stat().st_size > 1e6
    return checkpoint, onnx_file


@pytest.fixture(scope="module")
def random_exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint, .onnx) of a SAT_T_2s with every weight random: its scores move. Exported from
    the file as read without torch."""
    folder = tmp_path_factory.mktemp("onnx_random")
    checkpoint = save_upstream(random_model("SAT_T_2s", seed=4), folder / upstream_name("SAT_T_2s"))
    return checkpoint, export_onnx(read_weights(str(checkpoint)), checkpoint.with_suffix(".onnx"))


def test_export_a_renamed_checkpoint_with_variant(
    tmp_path: Path, exported: tuple[Path, Path]
) -> None:
    """export-onnx takes --variant as the listener takes model.variant: the same graph."""
    checkpoint, onnx_file = exported
    renamed = tmp_path / "bark.pt"
    renamed.write_bytes(checkpoint.read_bytes())
    with pytest.raises(subprocess.CalledProcessError) as err:
        export_by_cli(renamed)
    assert "cannot tell the architecture of bark.pt" in err.value.stderr
    assert "set model.variant (or --variant)" in err.value.stderr
    export_by_cli(renamed, "--variant", "SAT_T_2s")
    assert renamed.with_suffix(".onnx").read_bytes() == onnx_file.read_bytes()


@pytest.mark.parametrize("variant", ["SAT_T_2s", "SAT_S_1s"])
def test_the_export_from_a_file_is_the_torch_models(tmp_path: Path, variant: str) -> None:
    """The file read without torch, the torch model loaded from it and the model in memory it
    was saved from give one graph, byte for byte (SAT_S: token pooling, its cls token)."""
    model = random_model(variant, seed=5)
    checkpoint = save_upstream(model, tmp_path / upstream_name(variant))
    sources = {
        "file": read_weights(str(checkpoint)),
        "loaded": load_model(str(checkpoint)),
        "saved": model,
    }
    files = {name: export_onnx(src, tmp_path / f"{name}.onnx") for name, src in sources.items()}
    graphs = {name: path.read_bytes() for name, path in files.items()}
    assert graphs["file"] == graphs["loaded"] == graphs["saved"]
    assert len(graphs["file"]) > 1e6


def audio(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    envelope = 0.01 + 0.5 * (np.sin(np.arange(n) / 7000.0 * (1 + seed)) > 0)
    return (envelope * rng.standard_normal(n)).astype(np.float32)


@pytest.mark.parametrize(
    ("chunk_s", "max_batch"),
    [(2.0, MAX_BATCH), (0.16, MAX_BATCH), (0.5, MAX_BATCH), (4.5, MAX_BATCH), (2.0, 1)],
)
def test_onnx_scores_like_torch_over_a_stream(
    random_exported: tuple[Path, Path], chunk_s: float, max_batch: int
) -> None:
    """max_batch 1: each stream a pass of its own, its pasts written back into the batch's."""
    checkpoint, onnx_file = random_exported
    torch_engine = Engine(load_model(str(checkpoint)), chunk_s, ["a", "b"], fast=False)
    onnx_engine = Engine(OnnxScorer(onnx_file), chunk_s, ["a", "b"], max_batch=max_batch)
    waves = {"a": audio(max(10.0, 6 * chunk_s), 1), "b": audio(max(7.0, 4 * chunk_s), 2)}
    results: list[list[np.ndarray]] = [[], []]
    for out, engine in zip(results, (torch_engine, onnx_engine), strict=True):
        for step in range(0, waves["a"].size, 7000):  # the streams arrive in blocks, out of step
            for name, wave in waves.items():
                engine.feed(name, wave[step : step + 7000])
            out.extend(r.scores for r in engine.drain())
        for name in waves:
            out.extend(r.scores for r in engine.flush(name))
    ref, got = (np.stack(out) for out in results)
    assert ref.shape == got.shape and len(ref) >= 10
    assert np.abs(got - ref).max() < TOLERANCE
    assert np.abs(ref - ref.mean(axis=0)).max() > 100 * TOLERANCE  # the scores do move


@pytest.fixture(scope="module")
def int8_exported(random_exported: tuple[Path, Path]) -> Path:
    """random_exported's checkpoint with int8 weights, made by the CLI beside its float32 one."""
    checkpoint, _ = random_exported
    out = export_by_cli(checkpoint, "--precision", "int8")
    path = Path(out.stdout.strip().splitlines()[-1])
    assert path == checkpoint.with_suffix(".int8.onnx")
    assert "pre-processing" not in out.stderr  # the quantizer's advice is not the user's to take
    return path


@pytest.mark.parametrize("chunk_s", [2.0, 0.16])
def test_int8_scores_near_float32_over_a_stream(
    random_exported: tuple[Path, Path], int8_exported: Path, chunk_s: float
) -> None:
    """Two streams in one pass, as a listener runs them: the int8 graph quantizes each pass's
    activations with one scale, so a stream's scores also depend on the other's, within the
    bound. The bound is tight enough to fail a result one chunk late."""
    waves = {"a": audio(12.0, 1), "b": 1e-2 * audio(12.0, 2)}
    results = []
    for scorer in (OnnxScorer(random_exported[1]), OnnxScorer(int8_exported, precision="int8")):
        engine = Engine(scorer, chunk_s, list(waves))
        for name, wave in waves.items():
            engine.feed(name, wave)
        got = engine.drain()
        results.append(np.stack([[r.scores for r in got if r.stream == n] for n in waves]))
    f32, q8 = results  # (stream, chunk, class)
    assert f32.shape[1] >= 6
    deviation = np.abs(q8 - f32).max()
    assert 1e-5 < deviation < INT8_TOLERANCE, deviation  # int8 indeed, and close
    assert np.abs(q8[:, 1:] - f32[:, :-1]).max() > INT8_TOLERANCE  # one chunk late: caught


def test_int8_keeps_the_front_end_and_the_classifier_in_float32(
    random_exported: tuple[Path, Path], int8_exported: Path
) -> None:
    """The blocks' products run on int8 weights; the mel filterbank, the patch embedding and the
    classifier stay float32. onnxruntime turns every Gemm into a MatMul (of the weight transposed)
    before it quantizes, under a new name: the export must exclude the classifier's by that."""
    import onnx

    graph = onnx.load(int8_exported).graph
    ops = [node.op_type for node in graph.node]
    assert ops.count("MatMulInteger") == 2 + 3 * 12  # the first block's q and kv; proj, MLP
    assert ops.count("QAttention") == 11
    floats = {node.input[1] for node in graph.node if node.op_type in ("MatMul", "Gemm")}
    assert floats == {"mel_filterbank", "patch_weight", "outputlayer.1.weight_Transposed"}
    assert int8_exported.stat().st_size < 0.35 * random_exported[1].stat().st_size


def test_a_file_of_the_other_precision_is_one_clear_error(
    tmp_path: Path, random_exported: tuple[Path, Path], int8_exported: Path
) -> None:
    export = "`sat-audio models export-onnx --precision int8`"
    with pytest.raises(
        SatAudioError,
        match=f"holds float32 weights, model.precision is int8; make the int8 export with {export}",
    ):
        OnnxScorer(random_exported[1], precision="int8")
    with pytest.raises(SatAudioError, match=r"holds int8 weights, model\.precision is float32"):
        OnnxScorer(int8_exported)
    with pytest.raises(SatAudioError, match=f"not found; make it with {export}"):
        OnnxScorer(tmp_path / "missing.int8.onnx", precision="int8")


def test_reset_returns_an_onnx_stream_to_silence(random_exported: tuple[Path, Path]) -> None:
    """The engine writes silence into the pasts it holds, which are views of the graph's
    outputs with the batch axis swapped to the front: a reset stream scores as a fresh one."""
    scorer = OnnxScorer(random_exported[1])
    engine = Engine(scorer, 2.0, ["a", "b"])
    engine.feed("a", audio(4.0, 8))
    engine.feed("b", audio(4.0, 9))
    engine.drain()
    engine.reset("a")
    wave = audio(4.0, 10)
    engine.feed("a", wave)
    fresh = Engine(scorer, 2.0)
    fresh.feed("default", wave)
    got, want = ([r.scores for r in e.drain()] for e in (engine, fresh))
    assert len(got) == len(want) == 2
    np.testing.assert_allclose(np.stack(got), np.stack(want), rtol=0, atol=1e-6)
    engine.feed("b", wave)  # b kept its memory: the same audio scores otherwise
    assert np.abs(engine.drain()[0].scores - want[0]).max() > 100 * TOLERANCE


def test_numpy_spectrum_gives_torch_log_mel() -> None:
    wave = np.stack([audio(2.0, 3), audio(2.0, 4) * 1e-3])
    front_end = LogMel()
    want = front_end(torch.from_numpy(wave))
    power = power_spectrum(wave)
    assert power.shape == (2, 201, 257)  # frames first, as the graph takes it
    got = front_end.log_mel(torch.from_numpy(power).transpose(1, 2))
    assert (got - want).abs().max() < 1e-3  # dB, on a range of 120 dB


def test_the_spectrum_is_computed_in_float32_by_blocks_of_frames() -> None:
    """numpy runs a float32 rfft in double precision unless given a float32 norm factor, and a
    whole chunk's frames at once take its windowed frames and spectrum (1 MB in float32 for 2 s,
    2.6 MB in double) besides the result; by blocks, one block's at a time."""
    wave = audio(2.0, 6)[None]
    windowed_bytes = 201 * 512 * 4
    power_spectrum(wave)  # numpy's FFT plan cache, outside the count
    tracemalloc.start()
    try:
        power = power_spectrum(wave)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert power.dtype == np.float32
    assert peak < 1.5 * windowed_bytes, f"{peak / 1e6:.2f} MB"


def test_the_spectrum_by_blocks_is_the_whole_chunks_bit_for_bit() -> None:
    """201 frames: six blocks and a short one, for each of two streams."""
    wave = np.stack([audio(2.0, 3), audio(2.0, 4)])
    half = N_FFT // 2
    padded = np.pad(wave, ((0, 0), (half, half)), mode="reflect")
    frames = np.stack([padded[:, i : i + N_FFT] for i in range(0, wave.shape[1] + 1, HOP)], 1)
    spec = np.fft.rfft(frames * WINDOW, axis=-1, norm="forward")
    want = np.square(spec.real) + np.square(spec.imag)
    assert want.shape == (2, 201, 257) and 201 % FFT_ROWS
    np.testing.assert_array_equal(power_spectrum(wave), want)


def test_a_run_after_the_heap_release_faults_few_pages_in(
    random_exported: tuple[Path, Path],
) -> None:
    """A chunk's tensors stay in onnxruntime's arena, out of the heap glibc gives back (at its
    top by itself, all of it on malloc_trim): on plain malloc, a 2 s chunk faults 800 pages in."""
    scorer = OnnxScorer(random_exported[1])
    for seconds in (2.0, 0.16):
        power = power_spectrum(audio(seconds, 3)[None])
        end = power.shape[1] // PATCH * PATCH  # one piece: both chunks are at most the target
        feed = scorer.graph_inputs(power, 0, end, scorer.initial_state(1))
        for _ in range(2):  # the arena grows to the run's size
            scorer.session.run(None, feed)
        release_free_heap()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        scorer.session.run(None, feed)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        assert faults < 50, f"{seconds} s chunk: {faults} pages"


def test_a_silent_piece_is_floored_from_its_whole_chunk(random_exported: tuple[Path, Path]) -> None:
    """A 4 s chunk runs as two 192-frame pieces; the second is digital silence, whose dB floor
    must come from the loud first half (alone, it would sit 120 dB below its own -100 dB)."""
    checkpoint, onnx_file = random_exported
    chunk = np.concatenate([audio(2.0, 5), np.zeros(32000, np.float32)])
    scores = []
    for scorer in (load_model(str(checkpoint)), OnnxScorer(onnx_file)):
        engine = Engine(scorer, 4.0, fast=False)
        engine.feed("default", chunk)
        scores.append(engine.drain()[0].scores)
    assert np.abs(scores[1] - scores[0]).max() < TOLERANCE


def test_the_runtime_primes_the_memory_through_the_graph(
    random_exported: tuple[Path, Path],
) -> None:
    """The file stores no state: the runtime runs a memory-length of silence from an empty memory
    through the graph, which must give the torch model's silence memory as keys and values."""
    import onnx

    checkpoint, onnx_file = random_exported
    keys = {entry.key for entry in onnx.load(onnx_file).metadata_props}
    assert keys == {"sat_audio.format", "sat_audio.precision", "sat_audio.spec"}
    model = load_model(str(checkpoint))
    with torch.inference_mode():
        first, *kv = FastPiece(model).state_from_memory(model.silence_memory(1))
    want = [first.numpy(), *(part.numpy() for part in kv)]  # pasts as the fast path holds them
    got = OnnxScorer(onnx_file).initial_state(2)
    assert [g.shape for g in got] == [(2, *w.shape[1:]) for w in want]
    for g, w in zip(got, want, strict=True):
        assert np.abs(g - w).max() < 1e-5 * np.abs(w).max()


def test_the_graph_uses_onnxruntimes_fused_attention(random_exported: tuple[Path, Path]) -> None:
    """The export's point: a small graph, one attention node a block (format 2 had 332 nodes).

    Later blocks project q, k and v inside Attention; the first block's keys and values come from
    its memory as well as the chunk, so it projects them itself for MultiHeadAttention."""
    import onnx

    ops = [node.op_type for node in onnx.load(random_exported[1]).graph.node]
    assert (ops.count("MultiHeadAttention"), ops.count("Attention")) == (1, 11)
    assert ops.count("Gemm") == 4 + 3 * 11 + 1  # q, projection, MLP twice; then no q; the head
    assert len(ops) < 190


def test_bad_onnx_files_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SatAudioError, match="not found; make it with `sat-audio models"):
        OnnxScorer(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(SatAudioError, match="is not a SAT Audio ONNX model of this version"):
        OnnxScorer(junk)
    with pytest.raises(SatAudioError, match="ONNX export is for streaming models"):
        export_onnx(random_model("audiotransformer_tiny"), tmp_path / "vit.onnx")
    (tmp_path / "a_file").write_text("")
    with pytest.raises(SatAudioError, match=r"cannot write the ONNX export .*a_file/x\.onnx"):
        export_onnx(random_model("SAT_T_1s"), tmp_path / "a_file" / "x.onnx")


def test_an_export_of_another_format_asks_for_a_new_one(
    tmp_path: Path, random_exported: tuple[Path, Path]
) -> None:
    import onnx

    proto = onnx.load(random_exported[1])
    for entry in proto.metadata_props:
        if entry.key == "sat_audio.format":
            entry.value = "0"
    onnx.save(proto, tmp_path / "old.onnx")
    with pytest.raises(SatAudioError, match=rf"format 0, this version reads {FORMAT}.*re-export"):
        OnnxScorer(tmp_path / "old.onnx")


def test_onnx_path_sits_beside_the_checkpoint(tmp_path: Path) -> None:
    assert onnx_path("SAT_T_2s", tmp_path) == tmp_path / "SAT_T_stream2s_mAP_43_34.onnx"
    int8 = tmp_path / "SAT_T_stream2s_mAP_43_34.int8.onnx"
    assert onnx_path("SAT_T_2s", tmp_path, "int8") == int8
    assert onnx_path(str(tmp_path / "x.pt")) == tmp_path / "x.onnx"
    assert onnx_path(str(tmp_path / "x.pt"), precision="int8") == tmp_path / "x.int8.onnx"
    assert onnx_path(str(tmp_path / "mine.onnx"), precision="int8") == tmp_path / "mine.onnx"
    url = "https://example.com/files/x.pt?download=1"  # beside the checkpoint it downloads
    assert onnx_path(url, tmp_path, "int8") == tmp_path / "x.int8.onnx"
    with pytest.raises(SatAudioError, match="does not end in a file name"):
        onnx_path("https://example.com/")


def test_config_accepts_onnx_and_names_a_bad_backend() -> None:
    assert parse_config({"model": {"backend": "onnx"}}).model.backend == "onnx"
    with pytest.raises(ConfigError, match="backend"):
        parse_config({"model": {"backend": "tflite"}})


def test_config_takes_int8_on_onnx_only() -> None:
    model = parse_config({"model": {"backend": "onnx", "precision": "int8"}}).model
    assert (model.precision, model.runtime) == ("int8", "onnx int8")
    assert parse_config({}).model.precision == "float32"
    assert parse_config({"model": {"precision": "int8"}}).model.runtime == "onnx int8"  # default
    with pytest.raises(ConfigError, match=r"^model.precision: int8 needs backend: onnx"):
        parse_config({"model": {"backend": "torch", "precision": "int8"}})


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_listener_on_onnx_detects_events_without_importing_torch_or_reporting_usage(
    tmp_path: Path, exported: tuple[Path, Path], precision: str
) -> None:
    """onnxruntime's own usage reports (a device id and an event queue in the cache) stay off."""
    checkpoint, _ = exported
    if precision == "int8":
        export_by_cli(checkpoint, "--precision", "int8")
    home = tmp_path / "home"
    home.mkdir()
    env = {
        k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME")
    }
    wav = make_wav(tmp_path / "a.wav", "__XX__X_")
    config = write_config(tmp_path, checkpoint, [file_source(wav, realtime=False, name="a")])
    data = yaml.safe_load(config.read_text())
    data["model"] |= {"backend": "onnx", "precision": precision}
    config.write_text(yaml.safe_dump(data))
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "sat_audio", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=PATIENCE_S,
        env={**env, "HOME": str(home)},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert not list(home.rglob("*"))
    imported = {line.split("|")[-1].strip() for line in run.stderr.splitlines() if "|" in line}
    assert "onnxruntime" in imported
    assert not {name for name in imported if name.split(".")[0] == "torch"}
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    got = sorted((p["type"], p["duration_s"]) for p in lines)
    assert got == [("end", 1.0), ("end", 2.0), ("start", 0.0), ("start", 0.0)]
    runtime = "onnx" if precision == "float32" else "onnx int8"
    assert f"sat_audio.listener: model SAT_T_2s on {runtime}, " in run.stderr


def test_listener_on_onnx_without_torch_exports_the_missing_graph(
    tmp_path: Path, exported: tuple[Path, Path]
) -> None:
    """Where torch cannot be imported (nor in the child that exports), a listener whose model
    has a checkpoint and no graph yet writes the graph beside it, then detects as with one."""
    checkpoint = Path(shutil.copy(exported[0], tmp_path / exported[0].name))
    wav = make_wav(tmp_path / "a.wav", "__XX__X_")
    config = write_config(tmp_path, checkpoint, [file_source(wav, realtime=False, name="a")])
    data = yaml.safe_load(config.read_text())
    data["model"]["backend"] = "onnx"
    config.write_text(yaml.safe_dump(data))
    run = subprocess.run(
        [sys.executable, "-m", "sat_audio", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=PATIENCE_S,
        env=without_torch(tmp_path / "site"),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    onnx_file = checkpoint.with_suffix(".onnx")
    assert f"exporting {checkpoint} for the onnx backend to {onnx_file} (once)" in run.stderr
    assert onnx_file.read_bytes() == exported[1].read_bytes()
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    got = sorted((p["type"], p["duration_s"]) for p in lines)
    assert got == [("end", 1.0), ("end", 2.0), ("start", 0.0), ("start", 0.0)]
