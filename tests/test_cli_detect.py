"""`sat-audio detect`: a real file through the real model and rules, with a checkpoint whose
weights make chosen labels fire only while the audio is loud."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from sat_audio.cli import main
from sat_audio.labels import find
from sat_audio.model.registry import get_spec
from sat_audio.model.sat import AudioTransformer, build_model
from tests.checkpoints import save_upstream, upstream_name, without_torch
from tests.waiting import PATIENCE_S

RATE = 16000
LOUD = [(3.0, 7.0), (9.0, 10.0)]  # seconds of noise in 12 s of digital silence


def loud_fires(labels: list[str]) -> AudioTransformer:
    """SAT_T_2s whose labels score ~1 on a chunk of loud audio and ~0 on silence.

    BatchNorm centres every mel band on -60 dB; patch feature 0 is the patch's mean (feature 1
    its negative); positional embeddings are zero and every block adds nothing (attention and
    MLP outputs zeroed), so each token is [m, -m, 0, ...]. LayerNorm turns that into
    [+-s, -+s, 0, ...] with s = sqrt(D / 2), the sign of m: the head's weight on feature 0 makes
    the labels' logits +-s * (fraction of loud patches - 1/2) / |...|, i.e. ~+9.8 when most
    patches are above -60 dB and ~-9.8 when they are silent (-100 dB).
    """
    model = build_model(get_spec("SAT_T_2s"))
    with torch.no_grad():
        bn = model.init_bn[1]
        bn.running_mean.fill_(-60.0)
        bn.running_var.fill_(1.0)
        bn.weight.fill_(1.0)
        bn.bias.zero_()
        conv = model.patch_embed.proj
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[0].fill_(1.0 / 256)
        conv.weight[1].fill_(-1.0 / 256)
        model.time_pos_embed.zero_()
        model.freq_pos_embed.zero_()
        for block in model.blocks:
            for layer in (block.attn.proj, block.mlp.fc2):
                layer.weight.zero_()
                layer.bias.zero_()
        for norm in (model.norm, model.outputlayer[0]):
            norm.weight.fill_(1.0)
            norm.bias.zero_()
        head = model.outputlayer[1]
        head.weight.zero_()
        head.bias.fill_(-12.0)
        for name in labels:
            head.bias[find(name).index] = 0.0
            head.weight[find(name).index, 0] = 1.0
    return model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("loud")
    return save_upstream(loud_fires(["Doorbell", "Knock"]), folder / upstream_name("SAT_T_2s"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wave = np.zeros(12 * RATE, np.float32)
    rng = np.random.default_rng(7)
    for start, end in LOUD:
        a, b = int(start * RATE), int(end * RATE)
        wave[a:b] = 0.3 * rng.standard_normal(b - a).astype(np.float32)
    path = tmp_path_factory.mktemp("clip") / "clip.wav"
    sf.write(path, wave, RATE, subtype="FLOAT")
    return path


@pytest.fixture
def config(tmp_path: Path, checkpoint: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        f"""
model: {{name: "{checkpoint}", chunk_seconds: 0.5}}
detection:
  events:
    doorbell:   {{labels: [doorbell], on_threshold: 0.5, off_threshold: 0.3, hold_s: 1.0}}
    knocking:   {{labels: [/m/07r4wb8], on_threshold: 0.5, off_threshold: 0.3, hold_s: 0.5,
                  min_duration_s: 2.0}}
    glass:      {{labels: [Glass, Shatter], on_threshold: 0.5, off_threshold: 0.3}}
"""
    )
    return path


def test_model_fires_only_on_loud_chunks(checkpoint: Path, clip: Path):
    from sat_audio.audio import read_audio
    from sat_audio.engine import Engine
    from sat_audio.model.checkpoint import load_model

    engine = Engine(load_model(str(checkpoint)), 0.5)
    engine.feed("default", read_audio(clip))
    doorbell, glass = find("Doorbell").index, find("Glass").index
    for chunk in engine.flush("default"):
        loud = any(a <= chunk.start_s < b for a, b in LOUD)
        assert chunk.scores[doorbell] == pytest.approx(1.0 if loud else 0.0, abs=1e-3)
        assert chunk.scores[glass] < 1e-4


def test_detect_json_prints_expected_starts_and_ends(config: Path, clip: Path, capsys):
    assert main(["detect", str(clip), "-c", str(config), "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    got = [(d["type"], d["event"], d["label"], d["start_s"], d["end_s"]) for d in lines]
    assert got == [
        ("start", "doorbell", "Doorbell", 3.0, None),
        # knocking needs 2 s above on: it starts once 3.0-5.0 is heard, dated 3.0
        ("start", "knocking", "Knock", 3.0, None),
        # both end when the last loud chunk ended (7.0); knocking's shorter hold (0.5 s of
        # silence, not 1 s) lets it say so first
        ("end", "knocking", "Knock", 3.0, 7.0),
        ("end", "doorbell", "Doorbell", 3.0, 7.0),
        ("start", "doorbell", "Doorbell", 9.0, None),
        # the 1 s burst is too short for knocking's min_duration_s; doorbell ends at 10.0
        ("end", "doorbell", "Doorbell", 9.0, 10.0),
    ]
    first, end = lines[0], lines[3]
    assert first["id"] == end["id"] and first["file"] == str(clip) and first["source"] == "clip.wav"
    assert first["score"] > 0.99 and end["peak"] > 0.99 and end["score"] < 0.01
    assert end["duration_s"] == 4.0


def test_detect_prints_loud_events_by_level(tmp_path: Path, checkpoint: Path, clip: Path, capsys):
    """A loud event needs no label: the noise (-10.5 dBFS) is on, the silence off."""
    path = tmp_path / "loud.yaml"
    path.write_text(
        f"""
model: {{name: "{checkpoint}", chunk_seconds: 0.5}}
detection: {{events: {{bang: {{kind: loud, on_dbfs: -20, hold_s: 0}}}}}}
"""
    )
    assert main(["detect", str(clip), "-c", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in lines] == [
        ["3.00s", "start", "bang"],
        ["7.00s", "end", "bang"],
        ["9.00s", "start", "bang"],
        ["10.00s", "end", "bang"],
    ]
    assert all("(level)" in line and "dBFS" in line for line in lines)


def test_detect_on_onnx_without_torch(tmp_path: Path, checkpoint: Path, clip: Path):
    """backend: onnx where torch cannot be imported: the graph is exported beside the checkpoint
    and the events are torch's; backend: torch there is one line naming the extra."""
    model = Path(shutil.copy(checkpoint, tmp_path / checkpoint.name))
    config = tmp_path / "onnx.yaml"
    config.write_text(
        f'model: {{name: "{model}", chunk_seconds: 0.5, backend: onnx}}\n'
        "detection: {events: {doorbell: {labels: [Doorbell], on_threshold: 0.5, hold_s: 1.0}}}\n"
    )
    command = [sys.executable, "-m", "sat_audio", "detect", str(clip), "-c", str(config), "--json"]
    env = without_torch(tmp_path / "site")
    run = subprocess.run(command, capture_output=True, text=True, timeout=PATIENCE_S, env=env)
    assert run.returncode == 0, run.stderr
    assert model.with_suffix(".onnx").is_file()
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    got = [(d["type"], d["start_s"], d["end_s"]) for d in lines]
    assert got == [
        ("start", 3.0, None),
        ("end", 3.0, 7.0),
        ("start", 9.0, None),
        ("end", 9.0, 10.0),
    ]
    config.write_text(config.read_text().replace("backend: onnx", "backend: torch"))
    run = subprocess.run(command, capture_output=True, text=True, timeout=PATIENCE_S, env=env)
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr == (
        "sat-audio: error: backend torch needs torch, which is not installed: "
        "pip install 'sat-audio[torch]' (or use backend onnx)\n"
    )


def test_detect_text_and_event_open_at_the_end_of_the_file(tmp_path, checkpoint, capsys):
    wave = np.zeros(4 * RATE, np.float32)
    wave[2 * RATE :] = 0.3 * np.random.default_rng(1).standard_normal(2 * RATE)
    clip = tmp_path / "ends_loud.wav"
    sf.write(clip, wave, RATE, subtype="FLOAT")
    config = tmp_path / "c.yaml"
    config.write_text(
        f'model: {{name: "{checkpoint}", chunk_seconds: 0.5}}\n'
        "detection: {events: {doorbell: {labels: [Doorbell], on_threshold: 0.5}}}\n"
    )
    assert main(["detect", str(clip), "-c", str(config)]) == 0
    start, end = capsys.readouterr().out.splitlines()
    assert start.split()[:4] == ["2.00s", "start", "doorbell", "Doorbell"]
    # still loud when the file ends: close() ends it at the end of the file
    assert end.split()[:4] == ["4.00s", "end", "doorbell", "Doorbell"]
    assert end.endswith("lasted 2.00s")


def test_detect_bad_config_is_one_line_exit_2(tmp_path: Path, clip: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("detection: {events: {doorbell: {labels: [Dorbell], on_threshold: 0.5}}}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "sat_audio", "detect", str(clip), "-c", str(bad)],
        capture_output=True,
        text=True,
        timeout=PATIENCE_S,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (
        f"sat-audio: error: {bad}: detection.events.doorbell.labels[0]: unknown AudioSet label "
        "'Dorbell'; did you mean 'Doorbell', 'Bell', 'Cowbell'?\n"
    )


def test_detect_missing_file(config: Path, tmp_path: Path, capsys):
    assert main(["detect", str(tmp_path / "none.wav"), "-c", str(config)]) == 2
    assert capsys.readouterr().err == f"sat-audio: error: {tmp_path / 'none.wav'}: no such file\n"


def test_detect_with_the_shipped_config_and_model_override(tmp_path, checkpoint, capsys):
    """The shipped config.yaml as is (2 s chunks, its thresholds, holds and gate), model from -m."""
    wave = np.zeros(16 * RATE, np.float32)
    wave[4 * RATE : 8 * RATE] = 0.3 * np.random.default_rng(2).standard_normal(4 * RATE)
    clip = tmp_path / "visitor.wav"
    sf.write(clip, wave, RATE, subtype="FLOAT")
    shipped = Path(__file__).resolve().parent.parent / "config.yaml"
    assert main(["detect", str(clip), "-c", str(shipped), "-m", str(checkpoint), "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    got = [(d["type"], d["event"], d["label"], d["start_s"], d["end_s"]) for d in lines]
    assert got == [
        ("start", "doorbell", "Doorbell", 4.0, None),
        ("start", "knocking", "Knock", 4.0, None),
        ("end", "doorbell", "Doorbell", 4.0, 8.0),  # hold_s 2: decided by the chunk 8-10 s
        ("end", "knocking", "Knock", 4.0, 8.0),  # hold_s 3: decided by the chunk 10-12 s
    ]


def test_detect_without_events_says_so(tmp_path: Path, clip: Path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("listener: {id: quiet}\n")
    assert main(["detect", str(clip), "-c", str(config)]) == 2
    assert capsys.readouterr().err == (
        "sat-audio: error: the configuration has no events under detection.events to detect\n"
    )


def test_detect_a_renamed_checkpoint_with_model_variant_or_variant_flag(
    tmp_path: Path, checkpoint: Path, clip: Path, capsys
):
    """The configuration's model.variant is its checkpoint's; -m's needs --variant."""
    renamed = Path(shutil.copy(checkpoint, tmp_path / "doorbell.pt"))
    config = tmp_path / "c.yaml"
    config.write_text(
        f'model: {{name: "{renamed}", chunk_seconds: 0.5, backend: torch, variant: SAT_T_2s}}\n'
        "detection: {events: {doorbell: {labels: [Doorbell], on_threshold: 0.5, hold_s: 1.0}}}\n"
    )
    want = [("start", 3.0, None), ("end", 3.0, 7.0), ("start", 9.0, None), ("end", 9.0, 10.0)]
    for extra in ([], ["-m", str(renamed), "--variant", "SAT_T_2s"]):
        assert main(["detect", str(clip), "-c", str(config), "--json", *extra]) == 0
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [(d["type"], d["start_s"], d["end_s"]) for d in lines] == want
    assert main(["detect", str(clip), "-c", str(config), "-m", str(renamed)]) == 2
    assert capsys.readouterr().err.startswith(
        "sat-audio: error: cannot tell the architecture of doorbell.pt from its file name; "
        "set model.variant"
    )
