"""`sat-audio tag`, `models` and `labels` as a user runs them: real subprocesses."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sat_audio.audio import read_audio
from sat_audio.engine import Engine
from sat_audio.labels import all_labels, find
from sat_audio.model.checkpoint import load_model
from tests.checkpoints import fire_label, random_model, save_upstream, upstream_name

LINE = re.compile(r"^\[(\d+\.\d+)s\]-\[(\d+\.\d+)s\] Topk-(\d) (.{30}) (\d\.\d{4})$")


def sat_audio(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "sat_audio", *args], capture_output=True, text=True, timeout=120
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_tag_prints_upstream_lines(noise_wav: Path, sat_t_checkpoint: Path) -> None:
    out = sat_audio("tag", str(noise_wav), "-m", str(sat_t_checkpoint), "-k", "3").stdout
    lines = out.splitlines()
    assert lines[0] == f"===== {noise_wav!s:^20} ====="
    rows = [LINE.match(line) for line in lines[1:] if line]
    assert all(rows), [line for line in lines[1:] if line and not LINE.match(line)]
    # 5.5 s in 2 s chunks: two full chunks and upstream's short last one, 3 lines each
    spans = [(m.group(1), m.group(2)) for m in rows if m]
    assert spans == [("0.0", "2.0")] * 3 + [("2.0", "4.0")] * 3 + [("4.0", "6.0")] * 3
    assert [m.group(3) for m in rows if m] == ["1", "2", "3"] * 3
    # the printed labels and scores are the model's own, computed here in-process
    engine = Engine(load_model(str(sat_t_checkpoint)), 2.0)
    engine.feed("default", read_audio(noise_wav))
    names = [lab.name for lab in all_labels()]
    for chunk, block in zip(engine.flush("default"), np.array_split(rows, 3), strict=True):
        top = np.argsort(-chunk.scores)[:3]
        assert [m.group(4).rstrip() for m in block] == [names[i] for i in top]
        assert [float(m.group(5)) for m in block] == [round(float(chunk.scores[i]), 4) for i in top]


def test_tag_with_a_label_that_fires(tmp_path: Path, noise_wav: Path) -> None:
    stream = find("Stream")
    model = fire_label(random_model("SAT_T_1s", seed=2), stream.index)
    ckpt = save_upstream(model, tmp_path / upstream_name("SAT_T_1s"))
    out = sat_audio("tag", str(noise_wav), "-m", str(ckpt), "-k", "1", "-c", "1.0").stdout
    assert "[0.0s]-[1.0s] Topk-1 Stream                         0.9997" in out.splitlines()
    assert out.count("Topk-1 Stream ") == 6


def test_tag_json(noise_wav: Path, sat_t_checkpoint: Path) -> None:
    out = sat_audio("tag", str(noise_wav), "-m", str(sat_t_checkpoint), "--json", "-k", "2")
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["chunk"], r["start"], r["end"]) for r in rows] == [
        (0, 0.0, 2.0),
        (1, 2.0, 4.0),
        (2, 4.0, 6.0),
    ]
    assert all(len(r["top"]) == 2 and r["top"][0]["score"] >= r["top"][1]["score"] for r in rows)


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ("text", ["tag", "{f}"], r"{f}: not a readable audio file \("),
        ("empty", ["tag", "{f}"], r"{f}: contains no audio$"),
        ("none", ["tag", "{f}"], r"{f}: no such file$"),
        ("wav", ["tag", "{f}", "-c", "0.1"], r"chunk length 0.1 s is too short"),
        ("wav", ["tag", "{f}", "-k", "0"], r"--topk must be between 1 and 527, got 0"),
        ("wav", ["tag", "{f}", "-m", "SAT_X"], r"model 'SAT_X' is neither a known name"),
        ("wav", ["tag", "{f}", "--threads", "0"], r"--threads must be at least 1, got 0"),
        ("wav", ["labels", "qqqzzz"], r"no AudioSet label contains 'qqqzzz'"),
        ("wav", ["models", "path", "SAT_T_3s"], r"unknown model 'SAT_T_3s'; did you mean"),
    ],
)
def test_errors_are_one_line_exit_2(
    tmp_path: Path, sat_t_checkpoint: Path, setup: str, args: list[str], message: str
) -> None:
    f = tmp_path / "input.wav"
    if setup == "text":
        f.write_text("hello, not audio\n")
    elif setup == "empty":
        sf.write(f, np.zeros(0, np.float32), 16000)
    elif setup == "wav":
        sf.write(f, np.zeros(16000, np.float32), 16000)
    argv = [a.format(f=f) for a in args]
    if argv[0] == "tag" and "-m" not in argv:
        argv += ["-m", str(sat_t_checkpoint)]
    result = sat_audio(*argv, check=False)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert re.match(r"sat-audio: error: " + message.format(f=re.escape(str(f))), lines[0])


def test_models_and_labels(tmp_path: Path) -> None:
    listing = sat_audio("models", "list", "--model-dir", str(tmp_path)).stdout.splitlines()
    assert listing[1].split()[:4] == ["SAT_T_2s", "stream", "2.0s", "43.34"]
    assert all("not downloaded" in line for line in listing[1:])
    path = sat_audio("models", "path", "SAT_T_1s", "--model-dir", str(tmp_path)).stdout.strip()
    assert path == str(tmp_path / "SAT_T_stream1s_mAP_40_11.pt")
    assert sat_audio("labels", "doorbell").stdout.split() == ["355", "/m/03wwcy", "Doorbell"]
    assert len(sat_audio("labels").stdout.splitlines()) == 527


def test_every_command_has_help() -> None:
    for command in ["tag", "models", "labels"]:
        assert "usage: sat-audio " + command in sat_audio(command, "--help").stdout
