"""Log-mel front end, the same formulas as upstream's torchaudio MelSpectrogram + AmplitudeToDB.

Written in plain torch because torchaudio is not installable beside our torch build.
"""

import math

import torch
from torch import nn

from sat_audio import SAMPLE_RATE
from sat_audio.model.shapes import F_MAX, HOP, N_FFT, N_MELS, TOP_DB, frames_for

__all__ = ["HOP", "N_FFT", "N_MELS", "LogMel", "frames_for", "hz_to_mel", "mel_filterbank"]


def hz_to_mel(hz: float) -> float:
    """HTK mel scale."""
    return 2595.0 * math.log10(1.0 + hz / 700.0)


def mel_filterbank(
    n_freqs: int = N_FFT // 2 + 1, n_mels: int = N_MELS, f_max: float = F_MAX
) -> torch.Tensor:
    """Un-normalised triangular filters on the HTK scale, shape (n_freqs, n_mels)."""
    all_freqs = torch.linspace(0, SAMPLE_RATE // 2, n_freqs)
    m_pts = torch.linspace(hz_to_mel(0.0), hz_to_mel(f_max), n_mels + 2)
    f_pts = 700.0 * (10 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.clamp(torch.minimum(down, up), min=0.0)


class LogMel(nn.Module):
    """Waveform (B, S) -> log-mel (B, 64, 1 + S // 160) in dB, floored per item at max - 120 dB.

    Each chunk is centred and reflect-padded on its own, as upstream runs it chunk by chunk.
    The floor is taken per batch item (upstream's torchaudio takes it over the whole batch, which
    only ever holds one stream there), so batched streams score exactly like single ones.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)
        self.register_buffer("fbank", mel_filterbank(), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.log_mel(self.power(wave))

    def power(self, wave: torch.Tensor) -> torch.Tensor:
        """Waveform (B, S) -> power spectrogram (B, 257, 1 + S // 160)."""
        spec = torch.stft(
            wave,
            n_fft=N_FFT,
            hop_length=HOP,
            win_length=N_FFT,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        return spec.abs().pow(2.0)

    def log_mel(self, power: torch.Tensor) -> torch.Tensor:
        """Power (B, 257, T) -> dB mel, floored at 120 dB below the chunk's loudest."""
        mel = torch.matmul(power.transpose(-1, -2), self.fbank).transpose(-1, -2)
        db = 10.0 * torch.log10(torch.clamp(mel, min=1e-10))
        return torch.maximum(db, db.amax(dim=(-2, -1), keepdim=True) - TOP_DB)
