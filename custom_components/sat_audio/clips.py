"""Clip files in Home Assistant's media folder: written whole, pruned by the listener's retention.

Everything here blocks on the disk and runs in an executor; callers turn OSError into one log line.
"""

from __future__ import annotations

from dataclasses import dataclass
import logging
import os
from pathlib import Path
import time

from homeassistant.core import HomeAssistant

from .const import DOMAIN
from .protocol import CLIP_NAME_RE, Clip, ClipSettings

_LOGGER = logging.getLogger(__name__)

# The listener's defaults (docs/protocol.md), for clips that arrive before an info that says.
DEFAULT_RETENTION = ClipSettings(
    format="flac", publish=True, max_count=100, max_age_days=30, max_total_mb=200
)
MEGABYTE = 1_000_000  # as the listener counts it


@dataclass(frozen=True, slots=True)
class MediaFolder:
    """A listener's clip folder: on disk, and as the media browser and its HTTP view name it."""

    media_dir: str  # the key of hass.config.media_dirs, "local" unless the user has none
    path: Path
    relative: str  # sat_audio/<listener id>

    def media_content_id(self, name: str) -> str:
        """Return the media-source id the media browser and media players take."""
        return f"media-source://media_source/{self.media_dir}/{self.relative}/{name}"

    def url(self, name: str) -> str:
        """Return the authenticated URL path Home Assistant serves the file at."""
        return f"/media/{self.media_dir}/{self.relative}/{name}"


def media_folder(hass: HomeAssistant, listener_id: str) -> MediaFolder | None:
    """Return the listener's clip folder: under the "local" media dir, else the first one."""
    dirs = hass.config.media_dirs
    if not dirs:
        return None
    key = "local" if "local" in dirs else next(iter(dirs))
    relative = f"{DOMAIN}/{listener_id}"
    return MediaFolder(key, Path(dirs[key]) / relative, relative)


def write_clip(folder: Path, clip: Clip, retention: ClipSettings) -> bool:
    """Write a clip under its name, then prune the folder; False if it was there already.

    The bytes go to a hidden part file first and are renamed into place, so the media browser
    never lists half a clip, and a disk that fills up leaves nothing behind.
    """
    path = folder / clip.name
    if path.is_file() and path.stat().st_size == len(clip.data):
        return False  # a QoS 1 redelivery of a clip already saved
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / f".{clip.name}.part"
    try:
        with part.open("wb") as file:
            file.write(clip.data)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    prune(folder, retention, keep=clip.name)
    return True


def prune(folder: Path, retention: ClipSettings, keep: str, now: float | None = None) -> list[str]:
    """Delete the clips past the count, the age or the total size; return their names.

    Newest first (by arrival), a clip is kept while it is within all three limits. `keep`, the
    clip just written, always stays: an alert is about to point at it. Files that are not clips
    (by name) are the user's and stay.
    """
    now = time.time() if now is None else now
    clips = []
    for entry in os.scandir(folder):
        if CLIP_NAME_RE.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            stat = entry.stat(follow_symlinks=False)
            clips.append((stat.st_mtime, entry.name, stat.st_size))
    clips.sort(reverse=True)
    oldest = now - retention.max_age_days * 86400
    budget = retention.max_total_mb * MEGABYTE
    count = 0
    total = 0
    removed = []
    for mtime, name, size in clips:
        count += 1
        total += size
        within = count <= retention.max_count and mtime >= oldest and total <= budget
        if within or name == keep:
            continue
        try:
            (folder / name).unlink()
        except OSError as err:
            _LOGGER.debug("Could not prune clip %s: %s", folder / name, err)
            continue
        removed.append(name)
    return removed
