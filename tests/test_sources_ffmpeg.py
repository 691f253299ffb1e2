"""ffmpeg sources against real ffmpeg: files, and a live HTTP stream that ends and comes back."""

import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sat_audio.config import SourceConfig
from sat_audio.errors import SatAudioError
from sat_audio.sources import ffmpeg as ffmpeg_source
from sat_audio.sources import open_source
from sat_audio.sources.base import Source
from tests.pulse import peak_hz
from tests.waiting import PATIENCE_S, returns, wait_until

pytestmark = pytest.mark.timeout(2 * PATIENCE_S)

if shutil.which("ffmpeg") is None:  # fail loudly: scripts/test installs it
    raise RuntimeError("ffmpeg is not installed (scripts/test installs it)")


def _tone_file(path: Path, seconds: float = 3.0, rate: int = 44100) -> Path:
    """Stereo: 500 Hz on the left, 1500 Hz on the right."""
    t = np.arange(int(seconds * rate)) / rate
    left, right = 0.4 * np.sin(2 * np.pi * 500 * t), 0.4 * np.sin(2 * np.pi * 1500 * t)
    sf.write(path, np.stack([left, right], axis=1).astype(np.float32), rate)
    return path


def _read_all(source: Source) -> np.ndarray:
    blocks: list[np.ndarray] = []

    def read() -> None:
        if (block := source.read(0.2)) is not None:
            blocks.append(block)

    wait_until(
        lambda: source.finished, lambda: f"the source to finish: {source.status()}", between=read
    )
    return np.concatenate(blocks)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_file_url_decodes_to_16k_mono_and_finishes(tmp_path: Path):
    path = _tone_file(tmp_path / "tone.wav")
    source = open_source(SourceConfig(name="cam", kind="ffmpeg", url=str(path), channel=1))
    source.start()
    try:
        audio = _read_all(source)
    finally:
        source.stop()
    assert audio.dtype == np.float32
    assert abs(audio.size - 48000) <= 160
    assert abs(peak_hz(audio) - 1500) <= 2  # channel 1 picked, not downmixed
    assert source.status().state == "ok"
    assert source.status().dropped_s == 0


def test_file_url_downmixes_and_loops(tmp_path: Path):
    path = _tone_file(tmp_path / "tone.flac", seconds=1.0)
    source = open_source(SourceConfig(name="cam", kind="ffmpeg", url=f"file:{path}", loop=True))
    source.start()
    blocks, got = [], 0
    try:
        while got < 3 * 16000:
            block = source.read(5.0)
            assert block is not None, source.status()
            blocks.append(block)
            got += block.size
        assert not source.finished
    finally:
        source.stop()
    audio = np.concatenate(blocks)
    spectrum = np.abs(np.fft.rfft(audio[:16000]))
    assert spectrum[500] > 0.2 * spectrum.max() and spectrum[1500] > 0.2 * spectrum.max()


def test_missing_file_and_missing_ffmpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    missing = open_source(SourceConfig(name="cam", kind="ffmpeg", url=str(tmp_path / "x.wav")))
    with pytest.raises(SatAudioError, match=r"x\.wav: no such file"):
        missing.start()
    with pytest.raises(SatAudioError, match="needs a url"):
        open_source(SourceConfig(name="cam", kind="ffmpeg"))
    monkeypatch.setenv("PATH", str(tmp_path))
    stream = open_source(SourceConfig(name="cam", kind="ffmpeg", url="http://127.0.0.1:9/a"))
    with pytest.raises(SatAudioError, match="ffmpeg is not installed"):
        stream.start()


class StreamServer:
    """A local ffmpeg serving a live 1 kHz tone as WAV over HTTP (listen mode, one client)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/live.wav"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-re"]
        cmd += ["-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=44100", "-ac", "2"]
        cmd += ["-f", "wav", "-listen", "1", self.url]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def server() -> Iterator[StreamServer]:
    srv = StreamServer(_free_port())
    yield srv
    srv.stop()


def _wait(source: Source, what: str, test: Callable[[], bool]) -> None:
    """Read (and drop) blocks until test() holds."""
    wait_until(test, lambda: f"{what}: {source.status()}", between=lambda: source.read(0.1))


def _collect(source: Source, samples: int) -> np.ndarray:
    """The next `samples` samples the source delivers."""
    blocks: list[np.ndarray] = []

    def read() -> None:
        if (block := source.read(0.1)) is not None:
            blocks.append(block)

    wait_until(
        lambda: sum(b.size for b in blocks) >= samples,
        lambda: f"{samples} samples: {source.status()}",
        between=read,
    )
    return np.concatenate(blocks)[:samples]


def test_live_stream_ends_and_comes_back(server: StreamServer):
    source = open_source(SourceConfig(name="cam", kind="ffmpeg", url=server.url))
    source.start()  # the server is not up yet: ffmpeg fails, the source retries
    try:
        _wait(source, "the refused connection", lambda: source.status().error is not None)
        assert source.status().state == "reconnecting"
        assert "Connection refused" in source.status().error
        server.start()
        _wait(source, "the stream", lambda: source.status().state == "ok")
        assert abs(peak_hz(_collect(source, 16000)) - 1000) <= 2
        reconnects = source.status().reconnects

        server.stop()  # the stream ends
        _wait(source, "reconnecting", lambda: source.status().state == "reconnecting")
        time.sleep(1.0)
        server.start()  # and comes back on the same port
        _wait(source, "the stream again", lambda: source.status().state == "ok")
        assert abs(peak_hz(_collect(source, 16000)) - 1000) <= 2
        assert source.status().reconnects == reconnects + 1
        assert not source.finished
    finally:
        source.stop()


def test_stop_never_hangs_on_a_silent_server():
    """A server that accepts and never answers: ffmpeg blocks; stop() still returns."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        source = open_source(
            SourceConfig(name="cam", kind="ffmpeg", url=f"http://127.0.0.1:{port}/x")
        )
        source.start()
        conn, _ = listener.accept()  # ffmpeg connected and waits for a response forever
        try:
            time.sleep(0.5)
            proc = source._proc
            assert proc is not None and proc.poll() is None
            returns(source.stop, "stop() while ffmpeg waits on a silent server")
            assert proc.poll() is not None
        finally:
            conn.close()


def test_undecodable_file_fails_with_ffmpegs_message(tmp_path: Path):
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"\x00not audio at all\x00" * 64)
    source = open_source(SourceConfig(name="cam", kind="ffmpeg", url=str(junk)))
    source.start()
    try:

        def read_nothing() -> None:
            assert source.read(0.2) is None

        wait_until(
            lambda: source.finished,
            lambda: f"the source to fail: {source.status()}",
            between=read_nothing,
        )
    finally:
        source.stop()
    status = source.status()
    assert status.state == "failed"
    assert status.error and "junk.mp3" in status.error


class StallingServer:
    """An HTTP server whose WAV stream sends one second of a tone, then nothing, and stays open
    (a camera that hangs): ffmpeg waits forever, and only the source's stall check ends it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/live.wav"
        self.open: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        t = np.arange(16000) / 16000
        pcm = (0.3 * 32767 * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes()
        wav = (
            b"RIFF\xff\xff\xff\xffWAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
            + b"data\xff\xff\xff\xff"
        )
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.open.append(conn)
            conn.recv(4096)
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: audio/wav\r\n\r\n" + wav + pcm)

    def close(self) -> None:
        self.sock.close()
        for conn in self.open:
            conn.close()


def test_a_stalled_stream_says_how_long_no_audio_came(monkeypatch: pytest.MonkeyPatch):
    """The reason reported is the stall, not what ffmpeg says when it is then stopped."""
    monkeypatch.setattr(ffmpeg_source, "STALL_S", 1.0)
    server = StallingServer()
    source = open_source(SourceConfig(name="cam", kind="ffmpeg", url=server.url))
    source.start()
    try:
        _wait(source, "the first audio", lambda: source.status().state == "ok")
        _wait(source, "the stall", lambda: source.status().state == "reconnecting")
        assert source.status().error == "no audio for 1 s"
    finally:
        source.stop()
        server.close()
