"""The torch front end against a NumPy reference written from the same formulas."""

import numpy as np
import pytest
import torch

from sat_audio.model.frontend import LogMel, frames_for


def numpy_logmel(wave: np.ndarray) -> np.ndarray:
    """STFT (periodic Hann 512, hop 160, centred, reflect) -> power -> 64 HTK mels -> dB."""
    n_fft, hop, sr = 512, 160, 16000
    padded = np.pad(wave.astype(np.float64), n_fft // 2, mode="reflect")
    n_frames = 1 + (padded.size - n_fft) // hop
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = np.stack([padded[i * hop : i * hop + n_fft] * window for i in range(n_frames)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # (frames, 257)

    def mel(hz: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + hz / 700.0)

    freqs = np.linspace(0, sr // 2, n_fft // 2 + 1)
    f_pts = 700.0 * (10 ** (np.linspace(mel(0.0), mel(8000.0), 66) / 2595.0) - 1.0)
    fb = np.zeros((freqs.size, 64))
    for m in range(64):
        lo, centre, hi = f_pts[m], f_pts[m + 1], f_pts[m + 2]
        rising = (freqs - lo) / (centre - lo)
        falling = (hi - freqs) / (hi - centre)
        fb[:, m] = np.maximum(0.0, np.minimum(rising, falling))
    db = 10.0 * np.log10(np.maximum(power @ fb, 1e-10)).T  # (64, frames)
    return np.maximum(db, db.max() - 120.0)


@pytest.mark.parametrize("samples", [2560, 16000, 32000, 32123])
@pytest.mark.parametrize("kind", ["noise", "tone", "quiet"])
def test_logmel_matches_numpy_reference(samples: int, kind: str) -> None:
    rng = np.random.default_rng(samples)
    t = np.arange(samples) / 16000
    wave = {
        "noise": 0.3 * rng.standard_normal(samples),
        "tone": 0.5 * np.sin(2 * np.pi * 1000 * t) + 0.2 * np.sin(2 * np.pi * 97 * t),
        "quiet": 1e-4 * rng.standard_normal(samples),
    }[kind].astype(np.float32)
    ours = LogMel()(torch.from_numpy(wave)[None])[0].numpy()
    ref = numpy_logmel(wave)
    assert ours.shape == ref.shape == (64, frames_for(samples))
    # float32 against float64: within 60 dB of the peak the two agree to 2e-3 dB; far below it
    # (a pure tone's spectral leakage) float32 rounding is a larger share of the power.
    near = ref > ref.max() - 60.0
    np.testing.assert_allclose(ours[near], ref[near], atol=2e-3, rtol=0)
    np.testing.assert_allclose(ours, ref, atol=0.2, rtol=0)


def test_logmel_floor_is_per_item_not_per_batch() -> None:
    loud = np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    quiet = np.zeros(16000, np.float32)
    front = LogMel()
    batched = front(torch.from_numpy(np.stack([loud, quiet])))
    single = front(torch.from_numpy(quiet)[None])
    assert torch.equal(batched[1], single[0])
    assert batched[1].max().item() == pytest.approx(-100.0)  # silence: 1e-10 power, no floor
