"""Audio sources: each turns one input into 16 kHz mono float32 blocks in a bounded queue."""

import importlib

from sat_audio.config import SourceConfig
from sat_audio.errors import SatAudioError
from sat_audio.sources.base import Source, SourceStatus

KINDS: dict[str, tuple[str, str]] = {
    "mic": ("sat_audio.sources.mic", "MicSource"),
    "file": ("sat_audio.sources.file", "FileSource"),
    "ffmpeg": ("sat_audio.sources.ffmpeg", "FfmpegSource"),
    "stdin": ("sat_audio.sources.stdin", "StdinSource"),
}
"""Each kind's module and class; imported when configured, so a listener without a file source
never loads soundfile (a live listener's memory counts)."""

__all__ = ["KINDS", "Source", "SourceStatus", "open_source"]


def open_source(cfg: SourceConfig) -> Source:
    """The source for one configured input, not yet started (start() opens the device)."""
    try:
        module, name = KINDS[cfg.kind]
    except KeyError:
        raise SatAudioError(
            f"source {cfg.name}: unknown kind {cfg.kind!r}; use one of {', '.join(KINDS)}"
        ) from None
    kind: type[Source] = getattr(importlib.import_module(module), name)
    return kind(cfg)
