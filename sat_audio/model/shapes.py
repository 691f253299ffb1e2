"""Sizes and types shared by the torch model, the engine and the ONNX runtime.

Importable without torch, so a listener on the ONNX backend never loads it.
"""

from typing import Any

N_FFT = 512
HOP = 160
N_MELS = 64
F_MAX = 8000.0
TOP_DB = 120.0
PATCH = 16
FREQ_ROWS = N_MELS // PATCH
N_CLASSES = 527
LN_EPS = 1e-6
"""The blocks' and the last norm's LayerNorm epsilon, upstream's."""
HEAD_LN_EPS = 1e-5
"""The classifier's LayerNorm and the mel BatchNorm keep torch's default epsilon."""
BN_EPS = 1e-5

State = tuple[Any, ...]
"""A batch's streaming state: one torch tensor or numpy array per block, the batch first."""


def frames_for(samples: int) -> int:
    """Mel frames a chunk of `samples` gives with centring."""
    return 1 + samples // HOP


def short_piece_error(frames: int) -> str:
    """The message for a chunk too short for one patch column."""
    return f"a chunk needs at least {PATCH} mel frames ({(PATCH - 1) * HOP} samples), got {frames}"
