"""An audio file (wav, flac, ogg: anything libsndfile reads) as a stream, paced or not, looped."""

import time
from pathlib import Path

import soundfile as sf
import soxr

from sat_audio import SAMPLE_RATE
from sat_audio.audio import to_mono
from sat_audio.config import SourceConfig
from sat_audio.errors import SatAudioError
from sat_audio.sources.base import Source


class FileSource(Source):
    """Reads a file block by block; realtime paces it like a live input, loop restarts it."""

    kind = "file"

    def __init__(self, cfg: SourceConfig) -> None:
        super().__init__(cfg)
        if not cfg.path:
            raise SatAudioError(f"source {cfg.name}: a file source needs a path")
        self.path = Path(cfg.path).expanduser()
        # Paced audio behaves like a microphone; unpaced reading waits for the consumer.
        self.live = cfg.realtime
        self.rate = 0

    def _prepare(self) -> None:
        if not self.path.is_file():
            raise SatAudioError(f"source {self.name}: {self.path}: no such file")
        try:
            info = sf.info(str(self.path))
        except (sf.LibsndfileError, RuntimeError) as err:
            raise SatAudioError(
                f"source {self.name}: {self.path}: not readable audio ({err})"
            ) from None
        if info.frames == 0:
            raise SatAudioError(f"source {self.name}: {self.path}: contains no audio")
        if self.cfg.channel is not None and not 0 <= self.cfg.channel < info.channels:
            raise SatAudioError(
                f"source {self.name}: channel {self.cfg.channel} does not exist; "
                f"{self.path} has {info.channels}"
            )
        self.rate = info.samplerate

    def _run(self) -> None:
        resampler = (
            soxr.ResampleStream(self.rate, SAMPLE_RATE, 1, dtype="float32")
            if self.rate != SAMPLE_RATE
            else None
        )
        frames_per_read = max(1, round(self.cfg.block_seconds * self.rate))
        started = time.monotonic()
        played = 0  # file frames emitted, for real-time pacing
        with sf.SoundFile(str(self.path)) as f:
            while not self._stop.is_set():
                try:
                    data = f.read(frames_per_read, dtype="float32", always_2d=True)
                except (sf.LibsndfileError, RuntimeError) as err:
                    raise SatAudioError(f"{self.path}: cannot be decoded ({err})") from None
                at_end = data.shape[0] < frames_per_read
                if at_end and self.cfg.loop:
                    f.seek(0)
                    at_end = False
                mono = to_mono(data, self.cfg.channel)
                last = at_end and not self.cfg.loop
                if resampler is not None:
                    mono = resampler.resample_chunk(mono, last=last)
                self._emit(mono)
                played += data.shape[0]
                if last:
                    self._finish()
                    return
                if self.cfg.realtime:
                    wait = started + played / self.rate - time.monotonic()
                    if wait > 0 and self._stop.wait(wait):
                        return
