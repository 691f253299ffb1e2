"""File sources: real files through libsndfile, as fast as possible, paced, looped."""

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sat_audio.config import SourceConfig
from sat_audio.errors import SatAudioError
from sat_audio.sources import open_source
from sat_audio.sources.base import Source
from tests.pulse import peak_hz
from tests.waiting import PATIENCE_S, wait_until

pytestmark = pytest.mark.timeout(2 * PATIENCE_S)


def _tone_file(path: Path, seconds: float, rate: int = 44100) -> Path:
    """Stereo: 500 Hz on the left, 1500 Hz on the right."""
    t = np.arange(int(seconds * rate)) / rate
    left, right = 0.4 * np.sin(2 * np.pi * 500 * t), 0.4 * np.sin(2 * np.pi * 1500 * t)
    sf.write(path, np.stack([left, right], axis=1).astype(np.float32), rate)
    return path


def _read_all(source: Source) -> list[np.ndarray]:
    blocks: list[np.ndarray] = []

    def read() -> None:
        if (block := source.read(0.2)) is not None:
            blocks.append(block)

    wait_until(
        lambda: source.finished, lambda: f"the source to finish: {source.status()}", between=read
    )
    return blocks


def _cfg(path: Path, **kw: object) -> SourceConfig:
    return SourceConfig(name="f", kind="file", path=str(path), **kw)  # type: ignore[arg-type]


def test_fast_read_picks_channel_resamples_and_finishes(tmp_path: Path):
    path = _tone_file(tmp_path / "tone.flac", 3.0)
    source = open_source(_cfg(path, realtime=False, channel=1, queue_seconds=0.5))
    source.start()
    try:
        time.sleep(0.5)  # the consumer lags: an unpaced file waits, it drops nothing
        blocks = _read_all(source)
    finally:
        source.stop()
    assert all(b.size == 1600 for b in blocks[:-1]) and 0 < blocks[-1].size <= 1600
    audio = np.concatenate(blocks)
    assert abs(audio.size - 48000) <= 16
    assert abs(peak_hz(audio) - 1500) <= 2
    assert source.status().dropped_s == 0


def test_downmix_of_both_channels(tmp_path: Path):
    path = _tone_file(tmp_path / "tone.wav", 1.0, rate=16000)
    source = open_source(_cfg(path, realtime=False))
    source.start()
    audio = np.concatenate(_read_all(source))
    source.stop()
    assert audio.size == 16000
    spectrum = np.abs(np.fft.rfft(audio))
    assert spectrum[500] == pytest.approx(spectrum[1500], rel=0.05)


def test_realtime_pacing_and_loop(tmp_path: Path):
    path = _tone_file(tmp_path / "tone.ogg", 0.5)
    source = open_source(_cfg(path, realtime=True, loop=True))
    begun = time.monotonic()
    source.start()
    got = 0
    try:
        while got < 24000:  # 1.5 s: three passes over a 0.5 s file
            block = source.read(2.0)
            assert block is not None, source.status()
            got += block.size
        elapsed = time.monotonic() - begun
        assert not source.finished
    finally:
        source.stop()
    assert elapsed >= 1.3  # paced like a live input, not read at once


def test_bad_files_fail_at_start(tmp_path: Path):
    with pytest.raises(SatAudioError, match="no such file"):
        open_source(_cfg(tmp_path / "missing.wav")).start()
    junk = tmp_path / "junk.wav"
    junk.write_text("not audio")
    with pytest.raises(SatAudioError, match="not readable audio"):
        open_source(_cfg(junk)).start()
    stereo = _tone_file(tmp_path / "s.wav", 0.1)
    with pytest.raises(SatAudioError, match="channel 2 does not exist"):
        open_source(_cfg(stereo, channel=2)).start()
    with pytest.raises(SatAudioError, match="needs a path"):
        open_source(SourceConfig(name="f", kind="file"))
