"""Find, download and load checkpoints in upstream's format, with errors that say what to do."""

import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
from tqdm import tqdm

from sat_audio.errors import SatAudioError
from sat_audio.memory import release_free_heap
from sat_audio.model.registry import ModelSpec, data_dir, get_spec, registry
from sat_audio.model.sat import AudioTransformer, build_model

MODEL_DIR_ENV = "SAT_AUDIO_MODEL_DIR"
IGNORED_PREFIXES = ("front_end.",)
"""Upstream saves torchaudio's window and filterbank; we compute our own."""
OPTIONAL_SUFFIXES = ("num_batches_tracked",)
"""BatchNorm's step counter is not used at inference; older dumps may lack it."""


def model_dir(override: str | Path | None = None) -> Path:
    """Where checkpoints are cached: the argument, $SAT_AUDIO_MODEL_DIR, or models/."""
    chosen = override or os.environ.get(MODEL_DIR_ENV)
    return Path(chosen).expanduser() if chosen else data_dir()


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


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file: a bare state dict or one under 'model'."""
    if not path.is_file():
        raise SatAudioError(f"checkpoint {path} does not exist")
    try:
        dump = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad file
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SatAudioError(
            f"checkpoint {path} is not a readable torch checkpoint ({first_line[:200]})"
        ) from None
    if isinstance(dump, Mapping) and "model" in dump:
        dump = dump["model"]
    if not isinstance(dump, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in dump.items()
    ):
        raise SatAudioError(f"checkpoint {path} holds no state dict of tensors")
    return {k: v for k, v in dump.items() if not k.startswith(IGNORED_PREFIXES)}


def _listing(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def load_weights(model: AudioTransformer, state: dict[str, torch.Tensor], origin: str) -> None:
    """Load exactly: any missing, unexpected or mis-shaped parameter is an error naming it.

    The checkpoint's tensors become the model's (assign), so the weights are never copied and the
    model may be built on the meta device.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith(OPTIONAL_SUFFIXES)]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} (model {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    name = model.spec.name
    if missing:
        raise SatAudioError(f"{origin} is not a {name} checkpoint: missing {_listing(missing)}")
    if unexpected:
        raise SatAudioError(
            f"{origin} is not a {name} checkpoint: unexpected {_listing(unexpected)}"
        )
    if wrong:
        raise SatAudioError(f"{origin} does not fit {name}: shape of {_listing(wrong, 3)}")
    absent = {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in expected.items() if k not in state}
    typed = {k: v.to(expected[k].dtype) for k, v in state.items()}
    model.load_state_dict(absent | typed, assign=True)


def spec_for_file(path: Path) -> ModelSpec | None:
    """The registry variant whose upstream file name this is, if any."""
    return next((s for s in registry().values() if s.file == path.name), None)


def load_model(
    source: str,
    *,
    variant: str | None = None,
    directory: str | Path | None = None,
    allow_download: bool = True,
    progress: bool = True,
) -> AudioTransformer:
    """A ready model from a registry name, a local checkpoint path or an http(s) URL.

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
    spec = get_spec(variant) if variant else spec_for_file(path)
    if spec is None:
        raise SatAudioError(
            f"cannot tell the architecture of {path.name}; name the variant "
            f"(one of {', '.join(registry())})"
        )
    with torch.device("meta"):  # no random weights to allocate, then overwrite
        model = build_model(spec)
    load_weights(model, read_state_dict(path), str(path))
    release_free_heap()  # loading's buffers go back to the system
    return model
