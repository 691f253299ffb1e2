"""The mel filterbank, in numpy: the torch front end and the ONNX graph take this one.

Upstream's torchaudio computes it in float32, where torch's own linspace and pow round
differently on different CPUs; here it is computed in float64 and rounded once, which stays
within 6e-6 of torch's on this project's machines.
"""

import math

import numpy as np

from sat_audio import SAMPLE_RATE
from sat_audio.model.shapes import F_MAX, N_FFT, N_MELS


def hz_to_mel(hz: float) -> float:
    """HTK mel scale."""
    return 2595.0 * math.log10(1.0 + hz / 700.0)


def mel_filterbank(
    n_freqs: int = N_FFT // 2 + 1, n_mels: int = N_MELS, f_max: float = F_MAX
) -> np.ndarray:
    """Un-normalised triangular filters on the HTK scale, float32 of shape (n_freqs, n_mels)."""
    all_freqs = np.linspace(0, SAMPLE_RATE // 2, n_freqs)
    m_pts = np.linspace(hz_to_mel(0.0), hz_to_mel(f_max), n_mels + 2)
    f_pts = 700.0 * (10 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts[None, :] - all_freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return np.maximum(np.minimum(down, up), 0.0).astype(np.float32)
