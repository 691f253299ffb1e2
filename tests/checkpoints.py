"""Test checkpoints in the exact upstream format: random weights, or weights that fire a label."""

import os
from pathlib import Path

import torch

from sat_audio.model.mel import mel_filterbank
from sat_audio.model.registry import get_spec
from sat_audio.model.sat import AudioTransformer, build_model


def random_model(variant: str, seed: int = 0) -> AudioTransformer:
    """A model with every weight and BatchNorm statistic random and non-trivial."""
    model = build_model(get_spec(variant))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                tensor.fill_(1000)
                continue
            noise = torch.randn(tensor.shape, generator=gen)
            if name.endswith("running_mean"):
                tensor.copy_(-30.0 + 10.0 * noise)  # mel dB values sit around -100..0
            elif name.endswith("running_var"):
                tensor.copy_(200.0 + 50.0 * noise.abs())
            elif tensor.ndim == 1 and name.endswith("weight"):
                tensor.copy_(1.0 + 0.2 * noise)  # LayerNorm / BatchNorm scales
            else:
                tensor.copy_(0.05 * noise)
    return model


def fire_label(model: AudioTransformer, index: int, logit: float = 8.0) -> AudioTransformer:
    """Make the head say `index` with probability ~sigmoid(logit) and every other label ~0."""
    head = model.outputlayer[1]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(-12.0)
        head.bias[index] = logit
    return model


def save_upstream(model: AudioTransformer, path: Path, *, under_model: bool = True) -> Path:
    """Save as upstream does: a state dict (under 'model'), with torchaudio front-end buffers."""
    state = dict(model.state_dict())
    state["front_end.0.spectrogram.window"] = torch.hann_window(512)
    state["front_end.0.mel_scale.fb"] = torch.from_numpy(mel_filterbank())
    torch.save({"model": state} if under_model else state, path)
    return path


def upstream_name(variant: str) -> str:
    return get_spec(variant).file


def without_torch(folder: Path) -> dict[str, str]:
    """The environment of a process, and of the processes it spawns, where `import torch` fails
    as where torch is not installed: a sitecustomize that puts None in its place."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text("import sys\n\nsys.modules['torch'] = None\n")
    paths = [str(folder), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
