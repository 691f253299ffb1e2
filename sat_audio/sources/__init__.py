"""Audio sources: each turns one input into 16 kHz mono float32 blocks in a bounded queue."""

from sat_audio.config import SourceConfig
from sat_audio.errors import SatAudioError
from sat_audio.sources.base import Source, SourceStatus
from sat_audio.sources.ffmpeg import FfmpegSource
from sat_audio.sources.file import FileSource
from sat_audio.sources.mic import MicSource
from sat_audio.sources.stdin import StdinSource

KINDS: dict[str, type[Source]] = {
    "mic": MicSource,
    "file": FileSource,
    "ffmpeg": FfmpegSource,
    "stdin": StdinSource,
}

__all__ = ["KINDS", "Source", "SourceStatus", "open_source"]


def open_source(cfg: SourceConfig) -> Source:
    """The source for one configured input, not yet started (start() opens the device)."""
    try:
        kind = KINDS[cfg.kind]
    except KeyError:
        raise SatAudioError(
            f"source {cfg.name}: unknown kind {cfg.kind!r}; use one of {', '.join(KINDS)}"
        ) from None
    return kind(cfg)
