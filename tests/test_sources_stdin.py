"""stdin sources fed through real pipes from real processes."""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sat_audio.config import SourceConfig
from sat_audio.errors import SatAudioError
from sat_audio.sources import open_source
from sat_audio.sources.base import Source
from sat_audio.sources.stdin import StdinSource
from tests.pulse import ROOT, peak_hz
from tests.waiting import PATIENCE_S, deadline, returns

pytestmark = pytest.mark.timeout(2 * PATIENCE_S)


def _read_all(source: Source) -> np.ndarray:
    blocks = []
    end = deadline()
    while not source.finished:
        assert time.monotonic() < end, source.status()
        block = source.read(0.2)
        if block is not None:
            blocks.append(block)
    return np.concatenate(blocks)


def _ffmpeg_pcm(fmt: str, rate: int, channels: int, seconds: float) -> subprocess.Popen[bytes]:
    """ffmpeg writing raw PCM to a pipe: 700 Hz on the left, 2100 Hz on the right."""
    graph = (
        f"sine=frequency=700:sample_rate={rate}[a];sine=frequency=2100:sample_rate={rate}[b];"
        "[a][b]amerge=inputs=2"
    )
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-f", "lavfi"]
    cmd += ["-i", graph, "-t", str(seconds), "-ac", str(channels), "-f", fmt, "-"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE)


@pytest.mark.parametrize(("fmt", "channel", "expect_hz"), [("s16le", 0, 700), ("f32le", 1, 2100)])
def test_pcm_from_a_pipe(fmt: str, channel: int, expect_hz: int):
    proc = _ffmpeg_pcm(fmt, 44100, 2, 2.0)
    cfg = SourceConfig(name="in", kind="stdin", format=fmt, rate=44100, channels=2, channel=channel)
    source = StdinSource(cfg, proc.stdout)
    source.start()
    try:
        audio = _read_all(source)
    finally:
        source.stop()
        proc.wait(10)
    assert abs(audio.size - 32000) <= 16
    assert abs(peak_hz(audio) - expect_hz) <= 2
    assert 0.05 < np.abs(audio).max() <= 1.0  # s16 scaled to [-1, 1]


def test_downmix_at_16k_without_resampling():
    proc = _ffmpeg_pcm("s16le", 16000, 2, 1.0)
    cfg = SourceConfig(name="in", kind="stdin", format="s16le", rate=16000, channels=2)
    source = StdinSource(cfg, proc.stdout)
    source.start()
    audio = _read_all(source)
    source.stop()
    proc.wait(10)
    assert audio.size == 16000
    spectrum = np.abs(np.fft.rfft(audio))
    assert spectrum[700] == pytest.approx(spectrum[2100], rel=0.05)


CHILD = """
import json, sys
import numpy as np
from sat_audio.config import SourceConfig
from sat_audio.sources import open_source
src = open_source(SourceConfig(name="in", kind="stdin", format="f32le", rate=48000, channels=1))
src.start()
blocks = []
while not src.finished:
    b = src.read(0.5)
    if b is not None:
        blocks.append(b)
audio = np.concatenate(blocks)
print(json.dumps({"samples": int(audio.size), "live": src.live, "first": float(audio[800])}))
"""


def test_real_standard_input_of_a_child_process():
    """The child's fd 0 is a pipe this test writes to, in pieces that split frames."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=False,
    )
    assert child.stdin is not None
    t = np.arange(48000) / 48000
    pcm = (0.5 * np.sin(2 * np.pi * 440 * t)).astype("<f4").tobytes()
    for start in range(0, len(pcm), 4099):  # not a multiple of the frame size
        child.stdin.write(pcm[start : start + 4099])
        child.stdin.flush()
    child.stdin.close()
    assert child.stdout is not None
    report = json.loads(child.stdout.read())
    assert child.wait(30) == 0
    assert abs(report["samples"] - 16000) <= 16
    assert report["live"] is True
    assert report["first"] == pytest.approx(0.5 * np.sin(2 * np.pi * 440 * 0.05), abs=0.02)


def test_file_redirected_to_stdin_loses_nothing(tmp_path: Path):
    raw = tmp_path / "in.raw"
    raw.write_bytes(np.zeros(16000 * 4, dtype="<i2").tobytes())  # 4 s at 16 kHz
    cfg = SourceConfig(name="in", kind="stdin", queue_seconds=0.5)
    with raw.open("rb") as f:
        source = StdinSource(cfg, f)
        source.start()
        time.sleep(0.5)  # the consumer lags; a regular file waits instead of dropping
        audio = _read_all(source)
        source.stop()
    assert not source.live
    assert audio.size == 64000
    assert source.status().dropped_s == 0


def test_stop_returns_while_the_pipe_is_idle():
    writer = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(3600)"], stdout=subprocess.PIPE
    )
    source = StdinSource(SourceConfig(name="in", kind="stdin"), writer.stdout)
    source.start()
    try:
        assert source.read(0.3) is None
        returns(source.stop, "stop() while the writer sends nothing")
        assert not source.finished
    finally:
        writer.kill()
        writer.wait()


def test_bad_pcm_settings():
    with pytest.raises(SatAudioError, match="format must be one of s16le, f32le"):
        open_source(SourceConfig(name="in", kind="stdin", format="u8"))
    with pytest.raises(SatAudioError, match="channel 2 does not exist"):
        open_source(SourceConfig(name="in", kind="stdin", channels=2, channel=2))
    with pytest.raises(SatAudioError, match="rate and channels must be positive"):
        open_source(SourceConfig(name="in", kind="stdin", rate=0))
