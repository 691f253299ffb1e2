"""Export a streaming model's fast path to ONNX, for the light runtime (model/onnx_runtime.py).

The graph scores one piece of a chunk with the memory as explicit inputs and outputs:
    power (B, 257, 16 k), whole (B, 257, T), state_0 .. state_{depth-1}
        -> scores (B, 527), new_state_0 ..
power is the piece's power spectrogram, whole the chunk's (the dB floor comes from the whole
chunk); the runtime computes both with numpy's FFT, the graph does the rest of the front end.
The file also carries what the runtime needs without torch: the variant's name and sizes and
the state after a memory-length of silence (metadata, an .npz in base64).
"""

import base64
import io
import json
import logging
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sat_audio.errors import SatAudioError
from sat_audio.model.fast import FastPiece
from sat_audio.model.onnx_runtime import FORMAT
from sat_audio.model.sat import AudioTransformer
from sat_audio.model.shapes import N_FFT, PATCH

OPSET = 20  # Gelu is one node from opset 20 (onnxruntime >= 1.17)


class OnnxStep(nn.Module):
    """What the graph computes: the front end after the FFT, then model/fast.FastPiece."""

    def __init__(self, model: AudioTransformer) -> None:
        super().__init__()
        self.front_end = model.front_end
        self.piece = FastPiece(model)

    def forward(
        self, power: torch.Tensor, whole: torch.Tensor, *state: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        return self.piece(self.front_end.log_mel(power, whole), *state)


def state_names(depth: int, prefix: str = "state") -> list[str]:
    return [f"{prefix}_{i}" for i in range(depth)]


def export_onnx(model: AudioTransformer, path: Path) -> Path:
    """Write the model's streaming graph to path, through a temp file renamed when complete."""
    try:
        import onnx  # the `onnx` extra; only the exporting process needs it
        import onnxscript  # noqa: F401  torch's exporter needs it
    except ImportError as err:
        raise SatAudioError(f"ONNX export needs {err.name}: pip install 'sat-audio[onnx]'") from err
    if not model.spec.streaming:
        raise SatAudioError(
            f"{model.spec.name} is a plain ViT; ONNX export is for streaming models"
        )
    step = OnnxStep(model).eval()
    with torch.inference_mode():
        silence = step.piece.state_from_memory(model.silence_memory(1))
    silence = tuple(s.clone() for s in silence)  # normal tensors: the exporter traces them
    depth = len(silence)
    target = model.spec.target_frames
    whole = torch.rand(2, N_FFT // 2 + 1, target + 9)
    example = tuple(s.expand(2, *s.shape[1:]).contiguous() for s in silence)
    batch = torch.export.Dim("batch", min=1)
    columns = torch.export.Dim("columns", min=1, max=target // PATCH)
    frames = torch.export.Dim("frames", min=PATCH)
    dynamic = (
        {0: batch, 2: PATCH * columns},
        {0: batch, 2: frames},
        tuple({0: batch} for _ in range(depth)),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # it lists every torchvision op it skips
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecation notes of torch.export internals
            program = torch.onnx.export(
                step,
                (whole[..., :target], whole, *example),
                input_names=["power", "whole", *state_names(depth)],
                output_names=["scores", *state_names(depth, "new_state")],
                dynamic_shapes=dynamic,
                opset_version=OPSET,
                dynamo=True,
                optimize=True,
                verbose=False,
            )
    finally:
        exporter_log.setLevel(level)
    assert program is not None
    proto = program.model_proto
    buf = io.BytesIO()
    np.savez(buf, *(s[0].numpy() for s in silence))
    meta = {
        "sat_audio.format": FORMAT,
        "sat_audio.spec": json.dumps(asdict(model.spec)),
        "sat_audio.silence": base64.b64encode(buf.getvalue()).decode("ascii"),
    }
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, tmp)
    tmp.replace(path)
    return path
