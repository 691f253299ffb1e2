"""Find, download and read checkpoints in upstream's format, with errors that say what to do.

Reading and checking need no torch (model/pt_file.py, model/layout.py): the ONNX export reads
checkpoints where torch is not installed. load_model builds the torch model from what is read.
"""

import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import numpy as np
from tqdm import tqdm

from sat_audio.errors import SatAudioError
from sat_audio.memory import release_free_heap
from sat_audio.model.layout import parameter_layout
from sat_audio.model.pt_file import read_pt
from sat_audio.model.registry import ModelSpec, get_spec, model_dir, registry

if TYPE_CHECKING:
    from sat_audio.model.sat import AudioTransformer

IGNORED_PREFIXES = ("front_end.",)
"""Upstream saves torchaudio's window and filterbank; we compute our own."""
OPTIONAL_SUFFIXES = ("num_batches_tracked",)
"""BatchNorm's step counter is not used at inference; older dumps may lack it."""
TORCH_MISSING = (
    "backend torch needs torch, which is not installed: pip install 'sat-audio[torch]' "
    "(or use backend onnx)"
)
"""torch is an extra: what a command that needs it says where it is absent."""


def cached_path(spec: ModelSpec, directory: str | Path | None = None) -> Path:
    return model_dir(directory) / spec.file


def download(url: str, dest: Path, *, progress: bool = True) -> Path:
    """Fetch url to dest through a temp file in the same folder, renamed only when complete."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(url, timeout=30) as response,
        ):
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress
            ) as bar:
                received = 0
                while block := response.read(1 << 16):
                    out.write(block)
                    received += len(block)
                    bar.update(len(block))
            if total is not None and received != total:
                raise OSError(f"connection closed after {received} of {total} bytes")
        tmp.replace(dest)
    except (urllib.error.URLError, OSError, ValueError) as err:
        tmp.unlink(missing_ok=True)
        reason = getattr(err, "reason", err)
        raise SatAudioError(
            f"cannot download {url} ({reason}); fetch it by hand and save it as {dest}"
        ) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def ensure_checkpoint(
    spec: ModelSpec,
    directory: str | Path | None = None,
    *,
    allow_download: bool = True,
    progress: bool = True,
) -> Path:
    """The cached checkpoint of a registry variant, downloaded first if missing."""
    path = cached_path(spec, directory)
    if path.is_file():
        return path
    if not allow_download:
        raise SatAudioError(
            f"checkpoint for {spec.name} not found at {path}; download {spec.url} and save it "
            f"there, or run `sat-audio models download {spec.name}`"
        )
    return download(spec.url, path, progress=progress)


@dataclass(frozen=True)
class Weights:
    """A checkpoint checked against its variant: every parameter by upstream's name, float32
    (the BatchNorm's step counter int64), as the torch model's state_dict holds them."""

    spec: ModelSpec
    state: dict[str, np.ndarray]


def read_state_dict(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a checkpoint file: a bare state dict or one under 'model'."""
    if not path.is_file():
        raise SatAudioError(f"checkpoint {path} does not exist")
    dump = read_pt(path)
    if isinstance(dump, Mapping) and "model" in dump:
        dump = dump["model"]
    if not isinstance(dump, Mapping) or not all(
        isinstance(k, str) and isinstance(v, np.ndarray) for k, v in dump.items()
    ):
        raise SatAudioError(f"checkpoint {path} holds no state dict of tensors")
    return {k: v for k, v in dump.items() if not k.startswith(IGNORED_PREFIXES)}


def _listing(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def check_state(
    spec: ModelSpec, state: Mapping[str, np.ndarray], origin: str
) -> dict[str, np.ndarray]:
    """The state as the variant's model holds it; any missing, unexpected, mis-shaped or
    mis-typed parameter is an error naming it. Floats of any width become float32."""
    expected = parameter_layout(spec)
    missing = [k for k in expected if k not in state and not k.endswith(OPTIONAL_SUFFIXES)]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {state[k].shape} (model {shape})"
        for k, (shape, _) in expected.items()
        if k in state and state[k].shape != shape
    ]
    mistyped = [
        f"{k} {state[k].dtype} (model {dtype})"
        for k, (_, dtype) in expected.items()
        if k in state and state[k].dtype.kind != dtype.kind
    ]
    name = spec.name
    if missing:
        raise SatAudioError(f"{origin} is not a {name} checkpoint: missing {_listing(missing)}")
    if unexpected:
        raise SatAudioError(
            f"{origin} is not a {name} checkpoint: unexpected {_listing(unexpected)}"
        )
    if wrong:
        raise SatAudioError(f"{origin} does not fit {name}: shape of {_listing(wrong, 3)}")
    if mistyped:
        raise SatAudioError(f"{origin} does not fit {name}: type of {_listing(mistyped, 3)}")
    return {
        k: state[k].astype(dtype, copy=False) if k in state else np.zeros(shape, dtype)
        for k, (shape, dtype) in expected.items()
    }


def spec_for_file(path: Path) -> ModelSpec | None:
    """The registry variant whose upstream file name this is, if any."""
    return next((s for s in registry().values() if s.file == path.name), None)


def locate(
    source: str,
    *,
    variant: str | None = None,
    directory: str | Path | None = None,
    allow_download: bool = True,
    progress: bool = True,
) -> tuple[Path, ModelSpec]:
    """The checkpoint file and variant of a registry name, a local checkpoint path or an
    http(s) URL, downloading a registry's or URL's file if it is not cached.

    A path or URL whose file name is not an upstream one needs `variant` to say its architecture.
    """
    if source in registry():
        spec = get_spec(source)
        path = ensure_checkpoint(spec, directory, allow_download=allow_download, progress=progress)
    elif urlparse(source).scheme in ("http", "https"):
        name = Path(urlparse(source).path).name
        if not name:
            raise SatAudioError(f"model URL {source} does not end in a file name")
        path = model_dir(directory) / name
        if not path.is_file():
            if not allow_download:
                raise SatAudioError(f"checkpoint {path} not found; download {source} there")
            download(source, path, progress=progress)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise SatAudioError(
                f"model {source!r} is neither a known name ({', '.join(registry())}) "
                "nor an existing file"
            )
    found = get_spec(variant) if variant else spec_for_file(path)
    if found is None:
        raise SatAudioError(
            f"cannot tell the architecture of {path.name} from its file name; set model.variant "
            f"(or --variant) to one of {', '.join(registry())}"
        )
    return path, found


def read_weights(
    source: str,
    *,
    variant: str | None = None,
    directory: str | Path | None = None,
    allow_download: bool = True,
    progress: bool = True,
) -> Weights:
    """A model's checked weights, without torch; source as locate() takes it."""
    path, spec = locate(
        source,
        variant=variant,
        directory=directory,
        allow_download=allow_download,
        progress=progress,
    )
    return Weights(spec, check_state(spec, read_state_dict(path), str(path)))


def load_model(
    source: str,
    *,
    variant: str | None = None,
    directory: str | Path | None = None,
    allow_download: bool = True,
    progress: bool = True,
) -> "AudioTransformer":
    """A ready torch model; source as locate() takes it. The model's parameters are the
    arrays read, not copies of them."""
    try:
        import torch
    except ModuleNotFoundError as err:
        if err.name != "torch":
            raise
        raise SatAudioError(TORCH_MISSING) from None

    from sat_audio.model.sat import build_model

    weights = read_weights(
        source,
        variant=variant,
        directory=directory,
        allow_download=allow_download,
        progress=progress,
    )
    with torch.device("meta"):  # no random weights to allocate, then overwrite
        model = build_model(weights.spec)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.state.items()}, assign=True)
    release_free_heap()  # loading's buffers go back to the system
    return model
