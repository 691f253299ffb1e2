"""Opt-in audio clips of episodes: a ring buffer per source, recordings, a background writer.

Only a source with an event that has `clip:` keeps a ring, sized for the longest pre-roll a start
can ask for: the event's pre_s, plus how far its start lies behind the audio read when it is
known (min_duration_s, a chunk, one loop turn's audio). A recording copies its pre-roll from the
ring as the episode starts, then takes every block until post_s after the end (or the start), and
goes to a writer thread, so that the audio path never waits on a disk or a broker. Samples are
kept as int16 (half of float32): the clip files are 16-bit anyway.
"""

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sat_audio import SAMPLE_RATE
from sat_audio.config import ClipConfig, ClipsConfig, EventConfig
from sat_audio.publish.protocol import CLIP_NAME, MAX_CLIP_BYTES

log = logging.getLogger(__name__)

MAX_CLIP_S = 120.0
"""A clip holds at most this much audio (pre-roll included): a recording that reaches it is
written then, so an episode that lasts for hours costs no more memory than this."""
RING_MARGIN_S = 1.0
"""Slack on top of what the ring must hold."""
SCALE = 32768.0
"""float32 <-> int16: 16-bit PCM read as float is int / 32768, so this round trip is exact."""
FORMATS = {"flac": ("FLAC", "PCM_16"), "opus": ("OGG", "OPUS")}
"""clips.format -> soundfile's format and subtype."""

Publish = Callable[[str, bytes], str | None]
"""Sends a clip's bytes; None when sent, else why not (one line's worth)."""


def clips_folder(configured: str | None) -> Path:
    """clips.dir, or ${XDG_DATA_HOME:-~/.local/share}/sat-audio/clips."""
    if configured is not None:
        return Path(configured).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "sat-audio" / "clips"


def ring_seconds(events: Sequence[EventConfig], chunk_s: float, turn_s: float) -> float:
    """What a source's ring must hold: the longest pre-roll plus how late an episode's start is
    known after its audio was read: min_duration_s, a chunk to score, one loop turn of audio."""
    return (
        max(e.clip.pre_s + e.min_duration_s for e in events if e.clip is not None)
        + chunk_s
        + turn_s
        + RING_MARGIN_S
    )


def to_int16(samples: np.ndarray) -> np.ndarray:
    """float32 audio as int16; what is not a number becomes silence, as the engine takes it."""
    clean = np.nan_to_num(samples, nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(np.round(clean * SCALE), -SCALE, SCALE - 1).astype(np.int16)


class Ring:
    """The last `capacity` samples of a stream, addressed by their place in the stream."""

    def __init__(self, seconds: float) -> None:
        self.buffer = np.zeros(round(seconds * SAMPLE_RATE), np.int16)
        self.end = 0  # samples of the stream written so far

    @property
    def start(self) -> int:
        """The oldest sample still held."""
        return max(0, self.end - self.buffer.size)

    def write(self, samples: np.ndarray) -> None:
        n = self.buffer.size
        if samples.size > n:
            self.end += samples.size - n  # the part that does not fit counts as written
            samples = samples[-n:]
        at = self.end % n
        first = min(samples.size, n - at)
        self.buffer[at : at + first] = samples[:first]
        self.buffer[: samples.size - first] = samples[first:]
        self.end += samples.size

    def read(self, begin: int) -> np.ndarray:
        """The samples from `begin` (or the oldest held, if later) to the end, in order."""
        begin = max(begin, self.start)
        count = max(0, self.end - begin)
        at = begin % self.buffer.size
        first = min(count, self.buffer.size - at)
        return np.concatenate((self.buffer[at : at + first], self.buffer[: count - first]))


@dataclass
class Recording:
    """One episode's clip in the making."""

    name: str
    episode: str
    begin: int  # stream sample of its first sample
    stop: int | None  # stream sample it ends at: known at the end (or at the start)
    post: int  # post-roll in samples, for an end still to come
    parts: list[np.ndarray] = field(default_factory=list)
    size: int = 0

    @property
    def end(self) -> int:
        return self.begin + self.size

    def add(self, samples: np.ndarray) -> None:
        room = round(MAX_CLIP_S * SAMPLE_RATE) - self.size
        if self.stop is not None:
            room = min(room, self.stop - self.end)
        if room > 0 and samples.size:
            part = samples[:room]
            self.parts.append(part)
            self.size += part.size

    def done(self) -> bool:
        full = self.size >= round(MAX_CLIP_S * SAMPLE_RATE)
        return full or (self.stop is not None and self.end >= self.stop)

    def audio(self) -> np.ndarray:
        """The clip's samples; a stop set after more audio came cuts them there."""
        out = np.concatenate(self.parts) if self.parts else np.zeros(0, np.int16)
        return out if self.stop is None else out[: max(0, self.stop - self.begin)]


class Writer:
    """Writes clips in a thread of its own, prunes the folder, hands each clip to `publish`."""

    def __init__(self, cfg: ClipsConfig, folder: Path, publish: Publish | None) -> None:
        self.cfg = cfg
        self.folder = folder
        self.publish = publish
        self.written = 0
        self._jobs: queue.SimpleQueue[tuple[str, np.ndarray] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="clip-writer", daemon=True)
        self._thread.start()

    def put(self, name: str, audio: np.ndarray) -> None:
        self._jobs.put((name, audio))

    def close(self, timeout: float) -> None:
        """Write what is queued (within timeout seconds), then stop."""
        self._jobs.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            self._write(*job)

    def _write(self, name: str, audio: np.ndarray) -> None:
        import soundfile as sf  # here: libsndfile loads for file sources and clips only

        path = self.folder / name
        tmp = self.folder / f".{name}.part"
        fmt, subtype = FORMATS[self.cfg.format]
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            sf.write(tmp, audio, SAMPLE_RATE, format=fmt, subtype=subtype)
            os.replace(tmp, path)
            data = path.read_bytes() if self.publish is not None else b""
        except (OSError, sf.LibsndfileError, RuntimeError) as err:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            log.error("clip %s not written to %s: %s (the event itself is unaffected)",
                      name, self.folder, _reason(err))  # fmt: skip
            return
        self.written += 1
        log.info("clip %s: %.1f s written to %s", name, audio.size / SAMPLE_RATE, self.folder)
        prune(self.folder, self.cfg.max_count, self.cfg.max_age_days, self.cfg.max_total_mb)
        if self.publish is not None:
            if len(data) > MAX_CLIP_BYTES:
                why: str | None = f"over the protocol's limit of {MAX_CLIP_BYTES} bytes"
            else:
                why = self.publish(name, data)
            if why is not None:
                log.warning("clip %s (%d bytes) not sent to Home Assistant: %s; it stays in %s",
                            name, len(data), why, self.folder)  # fmt: skip


def _reason(err: Exception) -> str:
    return err.strerror if isinstance(err, OSError) and err.strerror else str(err)


def prune(folder: Path, max_count: int, max_age_days: float, max_total_mb: float) -> list[Path]:
    """Delete the oldest clips past the count, the age or the total size; only files named as
    clips are touched. The files deleted."""
    try:
        clips = [(p, p.stat()) for p in folder.iterdir() if CLIP_NAME.match(p.name)]
    except OSError:
        return []
    clips.sort(key=lambda c: (c[1].st_mtime, c[0].name))  # oldest first
    cutoff = time.time() - max_age_days * 86400
    total = sum(st.st_size for _, st in clips)
    gone = []
    for i, (path, st) in enumerate(clips):
        left = len(clips) - i
        if st.st_mtime >= cutoff and left <= max_count and total <= max_total_mb * 1e6:
            break
        try:
            path.unlink()
        except OSError as err:
            log.warning("cannot delete the old clip %s: %s", path, _reason(err))
            continue
        total -= st.st_size
        gone.append(path)
    if gone:
        log.debug("retention deleted %d clip(s) from %s", len(gone), folder)
    return gone


class Clips:
    """Every source's ring and recordings; the listener tells it audio, starts and ends."""

    def __init__(
        self,
        cfg: ClipsConfig,
        folder: Path,
        rings: dict[str, float],
        publish: Publish | None,
    ) -> None:
        """rings: ring seconds per source that has an event with clip: (others have none)."""
        self._rings = {name: Ring(seconds) for name, seconds in rings.items()}
        self._seconds = dict(rings)
        self._recording: dict[str, list[Recording]] = {name: [] for name in rings}
        self.writer = Writer(cfg, folder, publish)
        prune(folder, cfg.max_count, cfg.max_age_days, cfg.max_total_mb)

    def ring_bytes(self, source: str) -> int:
        """Memory the source's ring holds (0 without one)."""
        ring = self._rings.get(source)
        return 0 if ring is None else ring.buffer.nbytes

    def audio(self, source: str, samples: np.ndarray) -> None:
        """A block of the source as it is analysed."""
        ring = self._rings.get(source)
        if ring is None:
            return
        block = to_int16(samples)
        ring.write(block)
        for rec in self._recording[source]:
            rec.add(block)
        self._write_done(source)

    def start(self, source: str, episode: str, name: str, clip: ClipConfig, start_s: float) -> None:
        """An episode of an event with clip: began at start_s (stream seconds)."""
        ring = self._rings[source]
        begin = max(ring.start, round((start_s - clip.pre_s) * SAMPLE_RATE))
        post = round(clip.post_s * SAMPLE_RATE)
        stop = round(start_s * SAMPLE_RATE) + post if clip.post_from == "start" else None
        rec = Recording(name, episode, begin, stop, post)
        rec.add(ring.read(begin))
        self._recording[source].append(rec)
        self._write_done(source)

    def end(self, source: str, episode: str, end_s: float) -> None:
        """The episode ended at end_s: its clip takes post_s more (if it waits for the end)."""
        for rec in self._recording.get(source, []):
            if rec.episode == episode and rec.stop is None:
                rec.stop = round(end_s * SAMPLE_RATE) + rec.post
        self._write_done(source)

    def finish(self, source: str) -> None:
        """No more audio comes (end of file, pause, shutdown): write what each clip has; a
        paused source's stream time starts again, and so does its ring."""
        if source not in self._rings:
            return
        for rec in self._recording[source]:
            self.writer.put(rec.name, rec.audio())
        self._recording[source] = []
        self._rings[source] = Ring(self._seconds[source])

    def _write_done(self, source: str) -> None:
        recs = self._recording[source]
        if any(rec.done() for rec in recs):
            for rec in recs:
                if rec.done():
                    self.writer.put(rec.name, rec.audio())
            self._recording[source] = [rec for rec in recs if not rec.done()]

    def close(self, timeout: float) -> None:
        for source in list(self._rings):
            self.finish(source)
        self.writer.close(timeout)
