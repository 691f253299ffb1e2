"""Event rules: per-chunk scores -> clean start/end transitions, one state machine per event.

Each event combines its labels' scores into one, optionally smooths it, gates it on the chunk's
volume, and switches with hysteresis: it starts after the score stays at or above `on_threshold`
for `min_duration_s`, and ends after it stays below `off_threshold` for `hold_s`. Everything is
driven by the chunks' stream timestamps, never the wall clock, so a file replays identically.
"""

import statistics
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np

from sat_audio.config import EventConfig
from sat_audio.custom import custom_labels
from sat_audio.engine import ChunkResult
from sat_audio.labels import label_index

EPS = 1e-9
"""Slack for comparing sums of chunk times (0.1 + 0.2 != 0.3 in floating point)."""


@dataclass(frozen=True)
class Transition:
    """An event starting or ending; a start and its end share `id`."""

    id: str
    type: str  # "start" | "end"
    event: str
    source: str
    label: str
    score: float
    peak: float
    start_s: float
    end_s: float | None
    duration_s: float


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
        self.label = cfg.labels[0]
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
                return self._end(self.above_off_until)
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
        if self.score >= self.cfg.on_threshold:
            return "cooldown just ended"  # this chunk began inside it; the next one counts
        return "below on threshold"

    def _start(self, now: float) -> Transition:
        self.phase = Phase.ACTIVE
        self.id = uuid.uuid4().hex
        self.start_s = self.since
        self.above_off_until = now
        self.below_since = None
        return self._transition("start", None)

    def _end(self, end_s: float) -> Transition:
        end_s = max(end_s, self.start_s)
        self.phase = Phase.IDLE
        self.cooldown_until = end_s + self.cfg.cooldown_s
        return self._transition("end", end_s)

    def close(self, at_s: float | None) -> Transition | None:
        """End an open episode: at the end of its last loud chunk if it was already fading."""
        if self.phase is Phase.PENDING:
            self.phase = Phase.IDLE
        if self.phase is not Phase.ACTIVE:
            return None
        if self.below_since is not None:
            return self._end(self.above_off_until)
        last = self.prev_end if self.prev_end is not None else self.above_off_until
        return self._end(at_s if at_s is not None else last)

    def _transition(self, kind: str, end_s: float | None) -> Transition:
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
        )


class Detector:
    """All configured events of one stream: feed it chunks, get start/end transitions."""

    def __init__(
        self,
        events: Sequence[EventConfig],
        min_level_dbfs: float | None = None,
        source: str = "",
    ) -> None:
        self.source = source
        custom = custom_labels(ev.labels for ev in events)  # as the listener loads them
        self._rules = [EventRule(ev, min_level_dbfs, source, custom) for ev in events]

    def update(self, chunk: ChunkResult) -> list[Transition]:
        """Transitions caused by this chunk, in the configured order of the events."""
        out = []
        for rule in self._rules:
            if not rule.source:
                rule.source = chunk.stream
            if (t := rule.update(chunk)) is not None:
                out.append(t)
        return out

    def close(self, at_s: float | None = None) -> list[Transition]:
        """End every open event (shutdown, end of file); `at_s` = stream time it stops."""
        return [t for rule in self._rules if (t := rule.close(at_s)) is not None]

    @property
    def rules(self) -> list[EventRule]:
        """The events' state machines, in the configured order (the live view reads them)."""
        return self._rules

    def active(self) -> set[str]:
        """Keys of the events now on."""
        return {rule.cfg.key for rule in self._rules if rule.phase is Phase.ACTIVE}
