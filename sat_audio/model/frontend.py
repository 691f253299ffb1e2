"""Log-mel front end, the same formulas as upstream's torchaudio MelSpectrogram + AmplitudeToDB.

Written in plain torch because torchaudio is not installable beside our torch build; the mel
filterbank is model/mel.py's, which the ONNX graph takes too.
"""

import torch
from torch import nn

from sat_audio.model.mel import mel_filterbank
from sat_audio.model.shapes import HOP, N_FFT, N_MELS, TOP_DB, frames_for

__all__ = ["HOP", "N_FFT", "N_MELS", "LogMel", "frames_for"]


class LogMel(nn.Module):
    """Waveform (B, S) -> log-mel (B, 64, 1 + S // 160) in dB, floored per item at max - 120 dB.

    Each chunk is centred and reflect-padded on its own, as upstream runs it chunk by chunk.
    The floor is taken per batch item (upstream's torchaudio takes it over the whole batch, which
    only ever holds one stream there), so batched streams score exactly like single ones.
    """

    window: torch.Tensor  # buffers, typed for mypy
    fbank: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)
        self.register_buffer("fbank", torch.from_numpy(mel_filterbank()), persistent=False)

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
