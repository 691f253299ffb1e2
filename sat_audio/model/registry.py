"""The public model variants, read from models/registry.toml, and where their checkpoints are
kept."""

import difflib
import logging
import os
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

from sat_audio import SAMPLE_RATE
from sat_audio.errors import SatAudioError

log = logging.getLogger(__name__)

MODEL_DIR_ENV = "SAT_AUDIO_MODEL_DIR"


@dataclass(frozen=True)
class ModelSpec:
    """One variant: its architecture and where its public checkpoint lives."""

    name: str
    kind: Literal["stream", "vit"]
    embed_dim: int
    num_heads: int
    pooling: Literal["mean", "token"]
    target_frames: int
    memory_frames: int
    chunk_s: float
    map: float
    file: str
    url: str
    depth: int = 12

    @property
    def streaming(self) -> bool:
        return self.kind == "stream"

    @property
    def memory_samples(self) -> int:
        """Samples of a memory's length: upstream primes the memory with this much silence."""
        return int(self.memory_frames / 100 * SAMPLE_RATE)


def data_dir() -> Path:
    """The folder holding registry.toml and the label list (models/ in a checkout)."""
    return Path(str(resources.files("sat_audio.models_data")))


def model_dir(override: str | Path | None = None) -> Path:
    """Where checkpoints and their exports are kept: the argument, $SAT_AUDIO_MODEL_DIR, or the
    user's cache, ${XDG_CACHE_HOME:-~/.cache}/sat-audio/models, as torch.hub and Hugging Face
    keep theirs. Not the package's folder: a pip install's may be read-only, and goes with an
    upgrade."""
    chosen = override or os.environ.get(MODEL_DIR_ENV)
    if chosen:
        return Path(chosen).expanduser()
    folder = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "sat-audio/models"
    _point_to_old_folder(folder)
    return folder


@cache
def _point_to_old_folder(folder: Path) -> None:
    """Checkpoints downloaded when the package's folder was the default stay there, unused: a
    second folder searched would hide them until an upgrade deleted them. Said once."""
    old = data_dir()
    if any(old.glob("*.pt")) and not any(folder.glob("*.pt")):
        log.warning(
            "checkpoints in %s are no longer looked for there; move them to %s "
            "(mkdir -p %s && mv %s/*.pt %s/), or set %s=%s to keep them where they are",
            old,
            folder,
            folder,
            old,
            folder,
            MODEL_DIR_ENV,
            old,
        )


@cache
def registry() -> dict[str, ModelSpec]:
    with (data_dir() / "registry.toml").open("rb") as fh:
        table = tomllib.load(fh)
    return {name: ModelSpec(name=name, **fields) for name, fields in table.items()}


def get_spec(name: str) -> ModelSpec:
    specs = registry()
    if name in specs:
        return specs[name]
    close = difflib.get_close_matches(name, specs, n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(specs)}"
    raise SatAudioError(f"unknown model {name!r}{hint}")
