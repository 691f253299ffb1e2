"""Event rules: per-chunk scores -> clean start/end transitions, one state machine per event.

Each event combines its labels' scores into one, optionally smooths it, gates it on the chunk's
volume, and switches with hysteresis: it starts after the score stays at or above `on_threshold`
for `min_duration_s`, and ends after it stays below `off_threshold` for `hold_s`. A loud event
(kind loud) runs the same machine on the level alone, measured on short frames of the audio as it
is read (FRAME_S), so a burst shorter than a chunk counts and the model's pace does not matter.
Everything is driven by the stream timestamps, never the wall clock, so a file replays
identically.
"""

import statistics
import uuid
from collections import deque
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np

from sat_audio import SAMPLE_RATE
from sat_audio.config import EventConfig
from sat_audio.custom import custom_labels
from sat_audio.engine import ChunkResult, dbfs
from sat_audio.labels import label_index

EPS = 1e-9
"""Slack for comparing sums of chunk times (0.1 + 0.2 != 0.3 in floating point)."""
FRAME_S = 0.1
"""Loud events measure the level on frames this long."""


@dataclass(frozen=True)
class Transition:
    """An event starting or ending; a start and its end share `id`."""

    id: str
    type: str  # "start" | "end"
    event: str
    source: str
    label: str | None  # None for a loud event
    score: float  # a loud event's are levels in dBFS
    peak: float
    start_s: float
    end_s: float | None
    duration_s: float
    reason: str | None = None  # on an end: quiet, disabled, paused or stopped


def combine(values: np.ndarray, how: str) -> float:
    """One score from an event's label scores: max, sum (at most 1) or mean."""
    if how == "max":
        return float(values.max())
    if how == "sum":
        return min(1.0, float(values.sum()))
    if how == "mean":
        return float(values.mean())
    raise ValueError(f"unknown combine {how!r}")


class Smoother:
    """EMA (alpha = 2 / (N + 1)) or median of the last N values.

    Both start as if the stream were preceded by silence (score 0), as the model's memory does,
    so a one-chunk spike at the very start is smoothed like one anywhere else.
    """

    def __init__(self, kind: str | None, chunks: int) -> None:
        self.kind = kind
        self.alpha = 2.0 / (chunks + 1)
        self._ema = 0.0
        self._window: deque[float] = deque([0.0] * chunks, maxlen=chunks)

    def __call__(self, value: float) -> float:
        if self.kind == "ema":
            self._ema += self.alpha * (value - self._ema)
            return self._ema
        if self.kind == "median":
            self._window.append(value)
            return float(statistics.median(self._window))
        return value


def _secs(seconds: float) -> str:
    """Seconds for a sentence: 2, 2.5 (one decimal at most)."""
    return f"{round(seconds, 1):g}"


class Phase(Enum):
    IDLE = "idle"
    PENDING = "pending"  # above on, waiting for min_duration_s
    ACTIVE = "active"  # started; ends after hold_s below off


class EventRule:
    """The state machine of one event on one stream."""

    def __init__(
        self,
        cfg: EventConfig,
        min_level_dbfs: float | None,
        source: str,
        custom: Sequence[str] = (),
    ) -> None:
        """custom: the custom labels whose columns follow AudioSet's, in order."""
        self.cfg = cfg
        self.source = source
        self.gate = cfg.min_level_dbfs if cfg.min_level_dbfs is not None else min_level_dbfs
        self.indices = np.array([label_index(name, custom) for name in cfg.labels])
        self.smoother = Smoother(cfg.smoothing, cfg.smoothing_chunks)
        self.phase = Phase.IDLE
        self.since = 0.0  # PENDING: when the score first crossed on
        self.id = ""
        self.start_s = 0.0
        self.peak = 0.0
        self.above_off_until = 0.0  # ACTIVE: end of the last chunk at or above off
        self.below_since: float | None = None  # ACTIVE: start of the current run below off
        self.cooldown_until = float("-inf")
        self.prev_end: float | None = None
        self.score = 0.0
        self.label: str | None = cfg.labels[0] if cfg.labels else None
        self.enabled = True  # Detector.set_enabled: off, the rule is skipped
        self.gated = False  # the last chunk was below the volume gate

    def update(self, chunk: ChunkResult) -> Transition | None:
        raw = np.asarray(chunk.scores)[self.indices]
        self.label = self.cfg.labels[int(raw.argmax())]
        score = self.smoother(combine(raw, self.cfg.combine))
        return self.advance(score, chunk.start_s, chunk.end_s, chunk.level_dbfs)

    def advance(
        self, score: float, start_s: float, end_s: float, level_dbfs: float
    ) -> Transition | None:
        """The state machine on one chunk's combined, smoothed score (calibration replays a
        stored series through it with other thresholds)."""
        self.score = score
        self.gated = gated = self.gate is not None and level_dbfs < self.gate
        above_on = not gated and score >= self.cfg.on_threshold
        below_off = gated or score < self.cfg.off_threshold
        return self._step(start_s, end_s, above_on, below_off)

    def _step(
        self, start_s: float, end_s: float, above_on: bool, below_off: bool
    ) -> Transition | None:
        """The hysteresis, for one stretch of the stream (a chunk, or a loud event's frame)."""
        gap = self.prev_end is not None and start_s > self.prev_end + EPS
        self.prev_end = end_s

        if self.phase is Phase.ACTIVE:
            if not below_off:
                self.peak = max(self.peak, self.score)
                self.above_off_until = end_s
                self.below_since = None
                return None
            if self.below_since is None:
                self.below_since = start_s
            if end_s - self.below_since + EPS >= self.cfg.hold_s:
                return self._end(self.above_off_until, "quiet")
            return None

        if self.phase is Phase.PENDING and (not above_on or gap):
            self.phase = Phase.IDLE
        if above_on and start_s + EPS >= self.cooldown_until:
            if self.phase is Phase.IDLE:
                self.phase, self.since, self.peak = Phase.PENDING, start_s, self.score
            self.peak = max(self.peak, self.score)
            if end_s - self.since + EPS >= self.cfg.min_duration_s:
                return self._start(end_s)
        return None

    def describe(self, listening: bool = True) -> str:
        """The rule's state after the last chunk, in words: why it has or has not fired."""
        if not listening:
            return "paused"
        if not self.enabled:
            return "switched off"
        now = self.prev_end
        if now is None:
            return "waiting for audio"
        if self.phase is Phase.ACTIVE:
            if self.below_since is None:
                return "on"
            return f"on, holding {_secs(now - self.below_since)} of {_secs(self.cfg.hold_s)} s"
        if self.phase is Phase.PENDING:
            return f"above for {_secs(now - self.since)} of {_secs(self.cfg.min_duration_s)} s"
        if self.gated:
            return "below the volume gate"
        if now + EPS < self.cooldown_until:
            return f"cooldown {_secs(self.cooldown_until - now)} s left"
        on = self.cfg.on_dbfs if self.cfg.kind == "loud" else self.cfg.on_threshold
        if on is not None and self.score >= on:
            return "cooldown just ended"  # this chunk began inside it; the next one counts
        return "below on threshold"

    def _start(self, now: float) -> Transition:
        self.phase = Phase.ACTIVE
        self.id = uuid.uuid4().hex
        self.start_s = self.since
        self.above_off_until = now
        self.below_since = None
        return self._transition("start", None)

    def _end(self, end_s: float, reason: str) -> Transition:
        end_s = max(end_s, self.start_s)
        self.phase = Phase.IDLE
        self.cooldown_until = end_s + self.cfg.cooldown_s
        return self._transition("end", end_s, reason)

    def close(self, at_s: float | None, reason: str = "stopped") -> Transition | None:
        """End an open episode: at the end of its last loud chunk if it was already fading."""
        if self.phase is Phase.PENDING:
            self.phase = Phase.IDLE
        if self.phase is not Phase.ACTIVE:
            return None
        if self.below_since is not None:
            return self._end(self.above_off_until, reason)
        last = self.prev_end if self.prev_end is not None else self.above_off_until
        return self._end(at_s if at_s is not None else last, reason)

    def _transition(self, kind: str, end_s: float | None, reason: str | None = None) -> Transition:
        return Transition(
            id=self.id,
            type=kind,
            event=self.cfg.key,
            source=self.source,
            label=self.label,
            score=self.score,
            peak=self.peak,
            start_s=self.start_s,
            end_s=end_s,
            duration_s=0.0 if end_s is None else end_s - self.start_s,
            reason=reason,
        )


class LoudRule(EventRule):
    """A loud event: the same hysteresis on the level of FRAME_S frames, in dBFS (on at or
    above on_dbfs, off below off_dbfs); no labels, no volume gate, chunks are ignored."""

    def __init__(self, cfg: EventConfig, source: str) -> None:
        super().__init__(cfg, None, source)
        self.score = -120.0

    def update(self, chunk: ChunkResult) -> Transition | None:
        return None

    def close(self, at_s: float | None, reason: str = "stopped") -> Transition | None:
        """At its own last frame: the last chunk's end may lie before or after it."""
        return super().close(None, reason)

    def frame(self, start_s: float, end_s: float, level: float) -> Transition | None:
        """One frame's level."""
        self.score = level
        on, off = self.cfg.on_dbfs, self.cfg.off_dbfs
        assert on is not None and off is not None  # the config sets both for kind loud
        return self._step(start_s, end_s, level >= on, level < off)


class LevelFrames:
    """Cuts a stream's blocks, whatever their size, into FRAME_S frames and gives each frame's
    RMS level (as engine.level_dbfs does a chunk's, of the audio as the engine takes it: samples
    that are not numbers are silence, the rest clipped to full scale), with its place in the
    stream."""

    def __init__(self) -> None:
        self.size = round(FRAME_S * SAMPLE_RATE)
        self.at = 0  # samples of the stream framed so far
        self._sum = 0.0
        self._n = 0

    def feed(self, samples: np.ndarray) -> list[tuple[float, float, float]]:
        """(start_s, end_s, level_dbfs) of every frame this block completes."""
        out = []
        pos = 0
        while pos < samples.size:
            part = samples[pos : pos + self.size - self._n]
            if not np.isfinite(part).all():  # as the engine takes it: silence
                part = np.nan_to_num(part, nan=0.0, posinf=0.0, neginf=0.0)
            part = np.clip(part, -1.0, 1.0)
            self._sum += float(np.einsum("i,i->", part, part))
            self._n += part.size
            pos += part.size
            if self._n == self.size:
                level = dbfs(self._sum / self._n)
                start = self.at / SAMPLE_RATE
                self.at += self._n
                out.append((start, self.at / SAMPLE_RATE, level))
                self._sum, self._n = 0.0, 0
        return out


class Detector:
    """All configured events of one stream: feed it chunks, get start/end transitions."""

    def __init__(
        self,
        events: Sequence[EventConfig],
        min_level_dbfs: float | None = None,
        source: str = "",
        disabled: Collection[str] = (),
    ) -> None:
        self.source = source
        custom = custom_labels(ev.labels for ev in events)  # as the listener loads them
        self._rules = [
            LoudRule(ev, source)
            if ev.kind == "loud"
            else EventRule(ev, min_level_dbfs, source, custom)
            for ev in events
        ]
        for rule in self._rules:
            rule.enabled = rule.cfg.key not in disabled
        self._loud = [rule for rule in self._rules if isinstance(rule, LoudRule)]
        self.frames = LevelFrames() if self._loud else None
        """None when no event is loud: then no frame's level is measured at all."""

    def update(self, chunk: ChunkResult) -> list[Transition]:
        """Transitions caused by this chunk, in the configured order of the events."""
        out = []
        for rule in self._rules:
            if not rule.source:
                rule.source = chunk.stream
            if rule.enabled and (t := rule.update(chunk)) is not None:
                out.append(t)
        return out

    def audio(self, samples: np.ndarray) -> list[Transition]:
        """Transitions of the loud events caused by a block of audio as it is read."""
        if self.frames is None:
            return []
        out = []
        for start_s, end_s, level in self.frames.feed(samples):
            for rule in self._loud:
                if rule.enabled and (t := rule.frame(start_s, end_s, level)) is not None:
                    out.append(t)
        return out

    def set_enabled(self, key: str, on: bool) -> list[Transition]:
        """Switch an event on or off; off ends its open episode at once (reason disabled)."""
        out = []
        for rule in self._rules:
            if rule.cfg.key == key:
                rule.enabled = on
                if not on and (t := rule.close(None, "disabled")) is not None:
                    out.append(t)
        return out

    def close(self, at_s: float | None = None, reason: str = "stopped") -> list[Transition]:
        """End every open event (shutdown, end of file, pause); `at_s` = stream time it stops."""
        return [t for rule in self._rules if (t := rule.close(at_s, reason)) is not None]

    @property
    def rules(self) -> list[EventRule]:
        """The events' state machines, in the configured order (the live view reads them)."""
        return self._rules

    def active(self) -> set[str]:
        """Keys of the events now on."""
        return {rule.cfg.key for rule in self._rules if rule.phase is Phase.ACTIVE}
