"""`sat-audio tag`, `models` and `labels` as a user runs them: real subprocesses."""

import fcntl
import functools
import http.server
import json
import os
import pty
import re
import shutil
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sat_audio.audio import read_audio
from sat_audio.engine import Engine
from sat_audio.labels import all_labels, find
from sat_audio.model.checkpoint import load_model
from tests.checkpoints import (
    fire_label,
    random_model,
    save_upstream,
    upstream_name,
    without_torch,
)
from tests.waiting import PATIENCE_S

pytestmark = pytest.mark.slow

LINE = re.compile(r"^\[(\d+\.\d+)s\]-\[(\d+\.\d+)s\] Topk-(\d) (.{30}) (\d\.\d{4})$")


def sat_audio(
    *args: str, check: bool = True, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "sat_audio", *args],
        capture_output=True,
        text=True,
        timeout=PATIENCE_S,
        env=env,
        cwd=cwd,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_tag_prints_upstream_lines(noise_wav: Path, sat_t_checkpoint: Path) -> None:
    args = ("tag", str(noise_wav), "-m", str(sat_t_checkpoint), "-k", "3", "--backend", "torch")
    out = sat_audio(*args).stdout
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


def all_scores(result: subprocess.CompletedProcess[str]) -> np.ndarray:
    """(chunk, label index) from `tag --json -k 527`'s lines."""
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    scores = np.zeros((len(rows), 527))
    for i, row in enumerate(rows):
        for top in row["top"]:
            scores[i, top["index"]] = top["score"]
    return scores


def test_tag_on_onnx_without_torch_scores_as_torch(
    tmp_path: Path, noise_wav: Path, sat_t_checkpoint: Path
) -> None:
    """Where torch cannot be imported, tag exports the graph beside the checkpoint and scores
    every label as the torch backend does (where torch is), within the backends' 1e-4."""
    checkpoint = Path(shutil.copy(sat_t_checkpoint, tmp_path / sat_t_checkpoint.name))
    args = ("tag", str(noise_wav), "-m", str(checkpoint), "--json", "-k", "527")
    onnx = sat_audio(*args, "--backend", "onnx", env=without_torch(tmp_path / "site"))
    assert checkpoint.with_suffix(".onnx").is_file()
    reference = sat_audio(*args, "--backend", "torch")
    got, want = all_scores(onnx), all_scores(reference)
    assert got.shape == want.shape == (3, 527)
    assert np.abs(got - want).max() < 1e-4
    assert np.abs(want - want.mean(axis=0)).max() > 1e-2  # chunks differ: a real comparison


def test_tag_on_onnx_exports_again_when_the_checkpoint_is_replaced(
    tmp_path: Path, noise_wav: Path
) -> None:
    """The export beside a checkpoint stands for it until the checkpoint is newer."""
    checkpoint = save_upstream(random_model("SAT_T_1s", seed=4), tmp_path / "mine.pt")
    args = ("tag", str(noise_wav), "-m", str(checkpoint), "--variant", "SAT_T_1s", "-k", "1")
    before = sat_audio(*args, "--backend", "onnx").stdout
    assert "Stream" not in before
    save_upstream(fire_label(random_model("SAT_T_1s"), find("Stream").index), checkpoint)
    after = sat_audio(*args, "--backend", "onnx").stdout
    assert after.count("Topk-1 Stream ") == 6


def test_tag_backend_comes_from_the_configuration_file_else_onnx(
    tmp_path: Path, noise_wav: Path, sat_t_checkpoint: Path
) -> None:
    """Without torch: no configuration file, tag runs on onnx; a configuration of backend torch,
    or a model only torch runs, is one line naming the extra."""
    checkpoint = Path(shutil.copy(sat_t_checkpoint, tmp_path / sat_t_checkpoint.name))
    env = without_torch(tmp_path / "site")
    env.pop("SAT_AUDIO_CONFIG", None)
    args = ("tag", str(noise_wav), "-m", str(checkpoint), "-k", "1")
    assert sat_audio(*args, env=env, cwd=tmp_path).stdout.count("Topk-1") == 3
    (tmp_path / "config.yaml").write_text("model: {backend: torch}\n")
    refused = sat_audio(*args, check=False, env=env, cwd=tmp_path)
    extra = "pip install 'sat-audio[torch]'"
    assert (refused.returncode, refused.stdout) == (2, "")
    assert refused.stderr == (
        f"sat-audio: error: backend torch needs torch, which is not installed: {extra} "
        "(or use backend onnx)\n"
    )
    vit = save_upstream(random_model("audiotransformer_tiny"), tmp_path / "vit.pt")
    args = ("tag", str(noise_wav), "-m", str(vit), "--variant", "audiotransformer_tiny")
    refused = sat_audio(*args, "--backend", "onnx", check=False, env=env, cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr == (
        "sat-audio: error: audiotransformer_tiny is a plain ViT; ONNX export is for streaming "
        f"models (backend torch runs it: {extra})\n"
    )


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
        ("wav", ["tag", "{f}", "-c", "-1"], r"argument -c/--chunk-length: must be positive"),
        ("wav", ["tag"], r"the following arguments are required: FILE \(see `sat-audio tag"),
        ("wav", ["models", "fetch"], r"argument ACTION: invalid choice: 'fetch'"),
        ("wav", [], r"the following arguments are required: COMMAND"),
        (
            "wav",
            ["tag", "{f}", "-m", "{ckpt}", "--variant", "audiotransformer_tiny"],
            r"{ckpt} is not a audiotransformer_tiny checkpoint: missing blocks\.0\.attn\.qkv",
        ),
        (
            "corrupt",
            ["tag", "{f}", "-m", "{f}", "--variant", "SAT_T_2s"],
            r"checkpoint {f} is not a readable torch checkpoint \(",
        ),
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
    elif setup == "corrupt":
        f.write_bytes(b"PK\x03\x04 half a zip file")
    argv = [a.format(f=f, ckpt=sat_t_checkpoint) for a in args]
    if argv[:1] == ["tag"] and "-m" not in argv and len(argv) > 1:
        argv += ["-m", str(sat_t_checkpoint)]
    result = sat_audio(*argv, check=False)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    expected = message.format(f=re.escape(str(f)), ckpt=re.escape(str(sat_t_checkpoint)))
    assert re.match(r"sat-audio: error: " + expected, lines[0]), lines[0]


def test_models_and_labels(tmp_path: Path) -> None:
    listing = sat_audio("models", "list", "--model-dir", str(tmp_path)).stdout.splitlines()
    assert listing[1].split()[:4] == ["SAT_T_2s", "stream", "2.0s", "43.34"]
    assert all("not downloaded" in line for line in listing[1:])
    path = sat_audio("models", "path", "SAT_T_1s", "--model-dir", str(tmp_path)).stdout.strip()
    assert path == str(tmp_path / "SAT_T_stream1s_mAP_40_11.pt")
    flag_first = sat_audio("models", "path", "--model-dir", str(tmp_path), "SAT_T_1s")
    assert flag_first.stdout.strip() == path
    assert sat_audio("labels", "doorbell").stdout.split() == ["355", "/m/03wwcy", "Doorbell"]
    assert len(sat_audio("labels").stdout.splitlines()) == 527


def test_every_command_has_help() -> None:
    for command in ["tag", "models", "labels"]:
        assert "usage: sat-audio " + command in sat_audio(command, "--help").stdout


def test_the_cli_runs_without_docstrings() -> None:
    """python -OO (PYTHONOPTIMIZE=2, as container images often set) drops every docstring."""
    outs = []
    for args in (["--help"], ["labels", "doorbell"]):
        result = subprocess.run(
            [sys.executable, "-OO", "-m", "sat_audio", *args],
            capture_output=True,
            text=True,
            timeout=PATIENCE_S,
        )
        assert result.returncode == 0, result.stderr
        outs.append(result.stdout)
    assert "Run the listener" in outs[0]
    assert outs[1].split() == ["355", "/m/03wwcy", "Doorbell"]


def test_tag_carries_the_memory_from_file_to_file_like_upstream(
    tmp_path: Path, sat_t_checkpoint: Path
) -> None:
    """upstream inference.py primes the memory once and streams its files one after another."""
    rng = np.random.default_rng(8)
    waves = [(0.2 * rng.standard_normal(n)).astype(np.float32) for n in (64000, 48000)]
    paths = [tmp_path / "a.wav", tmp_path / "b.wav"]
    for path, wave in zip(paths, waves, strict=True):
        sf.write(path, wave, 16000, subtype="FLOAT")
    out = sat_audio("tag", *map(str, paths), "-m", str(sat_t_checkpoint), "--json", "-k", "1")
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(Path(r["file"]).name, r["chunk"]) for r in rows] == [
        ("a.wav", 0),
        ("a.wav", 1),
        ("b.wav", 0),
        ("b.wav", 1),
    ]
    engine = Engine(load_model(str(sat_t_checkpoint)), 2.0)
    engine.feed("default", np.concatenate(waves))
    expected = [float(r.scores.max()) for r in engine.flush("default")]
    assert [r["top"][0]["score"] for r in rows] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    ("fmt", "subtype", "rate", "channels"),
    [("FLAC", "PCM_16", 8000, 1), ("OGG", "VORBIS", 48000, 2), ("WAV", "FLOAT", 22050, 3)],
)
def test_reads_any_rate_and_channel_count(
    tmp_path: Path, fmt: str, subtype: str, rate: int, channels: int
) -> None:
    t = np.arange(int(2.5 * rate)) / rate
    tone = 0.5 * np.sin(2 * np.pi * 1000 * t)
    frames = np.stack([tone] + [0.0 * tone] * (channels - 1), axis=1)
    path = tmp_path / f"tone.{fmt.lower()}"
    sf.write(path, frames.astype(np.float32), rate, format=fmt, subtype=subtype)
    wave = read_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(wave.size - 40000) <= 1
    spectrum = np.abs(np.fft.rfft(wave[4000:36000]))
    assert np.argmax(spectrum) * 16000 / 32000 == pytest.approx(1000, abs=1)
    # downmixed: the one loud channel averaged with the silent ones
    assert np.sqrt(np.mean(wave[4000:36000] ** 2)) == pytest.approx(
        0.5 / np.sqrt(2) / channels, rel=0.05
    )


def test_tag_shows_a_progress_bar_on_long_files(tmp_path: Path, sat_t_checkpoint: Path) -> None:
    """tqdm draws on a terminal only; a pty stands in for one."""
    path = tmp_path / "long.wav"
    sf.write(path, np.zeros(16000 * 20, np.float32), 16000)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a real width
    cmd = [sys.executable, "-m", "sat_audio", "tag", str(path), "-m", str(sat_t_checkpoint)]
    with subprocess.Popen([*cmd, "-c", "0.5"], stdout=subprocess.DEVNULL, stderr=slave) as proc:
        os.close(slave)
        drawn = b""
        while True:
            try:
                block = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not block:
                break
            drawn += block
    os.close(master)
    assert proc.returncode == 0
    assert b"long.wav:" in drawn and b"/40 [" in drawn, drawn[-300:]


def test_tag_loads_a_model_by_url_with_a_progress_bar(
    tmp_path: Path, noise_wav: Path, sat_t_checkpoint: Path
) -> None:
    served = tmp_path / "served"
    served.mkdir()
    (served / sat_t_checkpoint.name).write_bytes(sat_t_checkpoint.read_bytes())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{sat_t_checkpoint.name}"
        cache = tmp_path / "cache"
        result = sat_audio("tag", str(noise_wav), "-m", url, "--model-dir", str(cache))
    finally:
        server.shutdown()
        server.server_close()
    assert sat_t_checkpoint.name in result.stderr and "100%" in result.stderr, result.stderr
    onnx = Path(sat_t_checkpoint.name).with_suffix(".onnx").name  # its export, on that backend
    assert {p.name for p in cache.iterdir()} - {onnx} == {sat_t_checkpoint.name}
    local = sat_audio("tag", str(noise_wav), "-m", str(sat_t_checkpoint)).stdout
    assert result.stdout == local


@pytest.mark.parametrize(
    "command", [["tag", "{wav}", "-m", "SAT_T_1s"], ["models", "download", "SAT_T_1s"]]
)
def test_offline_error_says_what_to_fetch_from_where_to_where(
    tmp_path: Path, noise_wav: Path, command: list[str]
) -> None:
    """No network (a proxy that refuses): one line naming the file, its URL and the folder."""
    folder = tmp_path / "models"
    env = os.environ | {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    env |= {"no_proxy": "", "NO_PROXY": ""}
    argv = [a.format(wav=noise_wav) for a in command] + ["--model-dir", str(folder)]
    result = subprocess.run(
        [sys.executable, "-m", "sat_audio", *argv],
        capture_output=True,
        text=True,
        timeout=PATIENCE_S,
        env=env,
    )
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    url = "https://zenodo.org/record/7964975/files/SAT_T_stream1s_mAP_40_11.pt?download=1"
    assert lines[0].startswith(f"sat-audio: error: cannot download {url} (")
    assert lines[0].endswith(f"save it as {folder / 'SAT_T_stream1s_mAP_40_11.pt'}")
    assert not folder.exists() or list(folder.iterdir()) == []
