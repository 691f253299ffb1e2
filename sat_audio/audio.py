"""Audio normalised once: whatever comes in leaves as 16 kHz mono float32 in [-1, 1]."""

from pathlib import Path

import numpy as np
import soxr

from sat_audio import SAMPLE_RATE
from sat_audio.errors import SatAudioError


def to_mono(frames: np.ndarray, channel: int | None = None) -> np.ndarray:
    """(n,) or (n, channels) -> (n,) float32: one channel picked, or all averaged."""
    if frames.ndim == 1:
        return frames.astype(np.float32, copy=False)
    if channel is not None:
        if not 0 <= channel < frames.shape[1]:
            raise SatAudioError(f"channel {channel} does not exist; input has {frames.shape[1]}")
        return np.ascontiguousarray(frames[:, channel], dtype=np.float32)
    return frames.mean(axis=1, dtype=np.float32)


def read_audio(path: Path) -> np.ndarray:
    """A whole file (anything libsndfile reads: wav, flac, ogg, ...) as 16 kHz mono float32."""
    import soundfile as sf  # here: the microphone and stdin sources use to_mono without libsndfile

    if not path.is_file():
        raise SatAudioError(f"{path}: no such file")
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise SatAudioError(f"{path}: not a readable audio file ({err})") from None
    if data.shape[0] == 0:
        raise SatAudioError(f"{path}: contains no audio")
    mono = to_mono(data)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    return mono
