"""The public model variants, read from models/registry.toml."""

import difflib
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

from sat_audio import SAMPLE_RATE
from sat_audio.errors import SatAudioError


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
