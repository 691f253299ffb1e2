"""Calibration: where each event's thresholds should sit in a room, learnt from its ordinary life.

A recording of the room holds none of the target sounds, so every start the rules give on it is a
false alarm. The model runs over it once (the same engine as `detect` and the listener) and each
event's combined score is kept per chunk; the listener's own state machine (rules.EventRule) is
then replayed over that series with the current thresholds and with every threshold on a grid,
which costs far less than the model. The lowest on_threshold that keeps the false alarms at or
below the target rate, at it and at every grid step above it, is suggested. Loud events get the
same on the levels of their frames, replayed through rules.LoudRule.
"""

import dataclasses
import math
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from sat_audio import SAMPLE_RATE
from sat_audio.config import Config, EventConfig
from sat_audio.custom import custom_labels, with_custom_sounds
from sat_audio.engine import ChunkResult, Engine, load_scorer
from sat_audio.errors import SatAudioError
from sat_audio.rules import FRAME_S, EventRule, LevelFrames, LoudRule, Smoother, combine

DAY_S = 86400.0
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9), ("max", 100.0))
KEEP_OFF = ("ratio", "distance")
LOWEST = 0.05
"""The lowest on_threshold suggested by default: an event the room never scores would otherwise
get the grid's bottom, which a recording of hours cannot vouch for."""
DB_GRID = [float(db) for db in range(-120, 1)]
"""Candidate on_dbfs for loud events: every dB of the schema's range."""
BLOCK_S = 60.0
"""Seconds of a recording read, resampled and fed at a time: hours of audio never sit in memory."""


def scored(event: EventConfig) -> bool:
    """Whether an event is scored by the model's labels (else it is loud: levels alone)."""
    return event.kind == "sound"


@dataclass(frozen=True)
class Series:
    """One continuous stream of chunks (a file, one run of a source), replayed with fresh rules.

    scores holds, per sound event's key, its combined label score per chunk before smoothing:
    what EventRule.update computes from the 527 scores, so the series stays small. frames holds
    the level in dBFS of each FRAME_S frame from the stream's start (rules.LevelFrames), which
    loud events need.
    """

    start_s: np.ndarray
    end_s: np.ndarray
    level_dbfs: np.ndarray
    scores: Mapping[str, np.ndarray]
    frames: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def seconds(self) -> float:
        """Audio analysed: the chunks' lengths, so gaps between chunks do not count."""
        return float(np.sum(self.end_s - self.start_s))

    @classmethod
    def from_chunks(cls, chunks: Iterable[ChunkResult], events: Sequence[EventConfig]) -> "Series":
        builder = SeriesBuilder(events)
        for chunk in chunks:
            builder.add(chunk)
        return builder.build()


class SeriesBuilder:
    """Collects a stream's chunks into a Series, keeping only what the events' rules need."""

    def __init__(self, events: Sequence[EventConfig]) -> None:
        """events: all the configuration's, so custom labels' columns are where the engine's
        scorer puts them (custom.with_custom_sounds)."""
        custom = custom_labels(ev.labels for ev in events)
        self._events = [
            (ev, EventRule(ev, None, "", custom).indices) for ev in events if scored(ev)
        ]
        # arrays of doubles: hours of a live stream's chunks and frames stay compact
        self._start = array("d")
        self._end = array("d")
        self._level = array("d")
        self._scores = {ev.key: array("d") for ev, _ in self._events}
        loud = any(ev.kind == "loud" for ev in events)
        self._framer = LevelFrames() if loud else None
        self._frames = array("d")

    def audio(self, samples: np.ndarray) -> None:
        """The stream's audio as it is read, for loud events' frame levels (else ignored)."""
        if self._framer is not None:
            self._frames.extend(level for _, _, level in self._framer.feed(samples))

    def add(self, chunk: ChunkResult) -> None:
        self._start.append(chunk.start_s)
        self._end.append(chunk.end_s)
        self._level.append(chunk.level_dbfs)
        scores = np.asarray(chunk.scores)
        for ev, indices in self._events:
            self._scores[ev.key].append(combine(scores[indices], ev.combine))

    def __len__(self) -> int:
        return len(self._start)

    def build(self) -> Series:
        return Series(
            start_s=_copy(self._start),
            end_s=_copy(self._end),
            level_dbfs=_copy(self._level),
            scores={key: _copy(values) for key, values in self._scores.items()},
            frames=_copy(self._frames),
        )


def _copy(values: array) -> np.ndarray:
    return np.frombuffer(values, np.float64).copy()


@dataclass(frozen=True)
class Positive:
    """A clip of the target sound: its peak score and whether the rules would start on it."""

    name: str
    peak: float
    margin: float
    """peak minus the threshold judged (the suggested on_threshold, else the current one)."""
    fires: bool


@dataclass(frozen=True)
class EventReport:
    """One event's calibration; starts count false alarms, per_day extrapolates them."""

    key: str
    kind: str
    """sound: thresholds are scores (on_threshold, off_threshold); loud: levels in dBFS
    (on_dbfs, off_dbfs)."""
    audio_s: float
    percentiles: dict[str, float]
    """Of what the thresholds see: a sound event's combined, smoothed score over every chunk; a
    loud event's level over every frame."""
    on_threshold: float
    off_threshold: float
    starts: int
    per_day: float
    keep_off: str
    """How off_threshold follows a new on_threshold: "ratio 0.75" or "distance 0.1"."""
    suggested_on: float | None
    suggested_off: float | None
    suggested_starts: int | None
    lower_on: float | None
    """The grid step below the suggestion, which gives more starts than allowed (None at the
    grid's bottom)."""
    lower_starts: int | None
    positives: tuple[Positive, ...] = ()


def _smoothed(event: EventConfig, series: Sequence[Series]) -> list[np.ndarray]:
    """Each segment's combined score through the event's smoothing, as its rule smooths it."""
    out = []
    for seg in series:
        smooth = Smoother(event.smoothing, event.smoothing_chunks)
        out.append(np.array([smooth(v) for v in seg.scores[event.key].tolist()], np.float64))
    return out


def count_starts(
    event: EventConfig,
    series: Sequence[Series],
    smoothed: Sequence[np.ndarray],
    min_level_dbfs: float | None,
    custom: Sequence[str] = (),
) -> int:
    """Starts the listener's state machine gives over the series, fresh rules per segment;
    custom: the custom labels loaded (custom.custom_labels of every event)."""
    starts = 0
    for seg, scores in zip(series, smoothed, strict=True):
        advance = EventRule(event, min_level_dbfs, "calibrate", custom).advance
        for score, start, end, level in zip(
            scores.tolist(),
            seg.start_s.tolist(),
            seg.end_s.tolist(),
            seg.level_dbfs.tolist(),
            strict=True,
        ):
            t = advance(score, start, end, level)
            if t is not None and t.type == "start":
                starts += 1
    return starts


def grid(step: float, lowest: float = LOWEST) -> list[float]:
    """Candidate on_thresholds: the multiples of step from lowest up to 1."""
    if not 0 < step <= 0.5:
        raise SatAudioError(f"the threshold step must be above 0 and at most 0.5, got {step:g}")
    if not 0 < lowest <= 1:
        raise SatAudioError(f"the lowest threshold must be above 0 and at most 1, got {lowest:g}")
    every = (round(k * step, 6) for k in range(1, int(1 / step + 1e-9) + 1))
    return [on for on in every if on >= lowest - 1e-9]


def _off_for(event: EventConfig, keep_off: str) -> tuple[str, Callable[[float], float]]:
    """How off follows a new on, in words, and the rule itself: a loud event keeps its distance
    in dB; a sound event its ratio or distance, as asked."""
    if event.kind == "loud":
        assert event.on_dbfs is not None and event.off_dbfs is not None
        db = event.on_dbfs - event.off_dbfs
        return f"distance {db:g} dB", lambda on: round(on - db, 6)
    if keep_off == "ratio":
        ratio = event.off_threshold / event.on_threshold
        return f"ratio {ratio:.4g}", lambda on: round(on * ratio, 6)
    if keep_off == "distance":
        gap = event.on_threshold - event.off_threshold
        return f"distance {gap:.4g}", lambda on: round(on - gap, 6)
    raise SatAudioError(f"keep_off must be one of {', '.join(KEEP_OFF)}, got {keep_off!r}")


def _runs(above: np.ndarray) -> int:
    """Stretches of True: each start needs one of its own (above on), since the end between two
    starts needs something below off, so below on."""
    return int(above[:1].sum()) + int(np.count_nonzero(above[1:] & ~above[:-1]))


class _SoundReplay:
    """A sound event over a series: its score as the thresholds see it (combined, smoothed) and
    the listener's EventRule replayed with any thresholds."""

    def __init__(
        self,
        event: EventConfig,
        segments: Sequence[Series],
        min_level_dbfs: float | None,
        custom: Sequence[str],
    ) -> None:
        self.event = event
        self.segments = segments
        self.min_level_dbfs = min_level_dbfs
        self.custom = custom
        self.scores = _smoothed(event, segments)
        self.values = np.concatenate(self.scores)
        self.current = (event.on_threshold, event.off_threshold)
        gate = EventRule(event, min_level_dbfs, "", custom).gate
        self.open = [None if gate is None else seg.level_dbfs >= gate for seg in segments]

    def tuned(self, on: float, off: float) -> EventConfig:
        return dataclasses.replace(self.event, on_threshold=on, off_threshold=off)

    @staticmethod
    def valid_off(off: float) -> bool:
        return off > 0

    def on(self, segments: Sequence[Series], on: float, off: float) -> "_SoundReplay":
        """The same event with these thresholds, over other segments (a positive clip)."""
        return _SoundReplay(self.tuned(on, off), segments, self.min_level_dbfs, self.custom)

    def count(self, on: float, off: float) -> int:
        return count_starts(
            self.tuned(on, off), self.segments, self.scores, self.min_level_dbfs, self.custom
        )

    def bound(self, on: float) -> int:
        """At least the starts at on: stretches of chunks at or above on, and above the gate."""
        return sum(
            _runs(scores >= on if open_ is None else (scores >= on) & open_)
            for scores, open_ in zip(self.scores, self.open, strict=True)
        )


class _LoudReplay:
    """A loud event over a series: its frames' levels and the listener's LoudRule replayed with
    any on_dbfs and off_dbfs."""

    def __init__(self, event: EventConfig, segments: Sequence[Series]) -> None:
        self.event = event
        self.levels = [seg.frames for seg in segments]
        self.values = np.concatenate(self.levels)
        if not self.values.size:
            raise SatAudioError(
                f"{event.key}: a loud event needs the stream's frame levels (SeriesBuilder.audio)"
            )
        assert event.on_dbfs is not None and event.off_dbfs is not None
        self.current = (event.on_dbfs, event.off_dbfs)
        size = round(FRAME_S * SAMPLE_RATE)  # rules.LevelFrames' frames, and their times
        self.times = [(np.arange(lv.size + 1) * size / SAMPLE_RATE).tolist() for lv in self.levels]

    def tuned(self, on: float, off: float) -> EventConfig:
        return dataclasses.replace(self.event, on_dbfs=on, off_dbfs=off)

    @staticmethod
    def valid_off(off: float) -> bool:
        return off >= DB_GRID[0]

    def on(self, segments: Sequence[Series], on: float, off: float) -> "_LoudReplay":
        return _LoudReplay(self.tuned(on, off), segments)

    def count(self, on: float, off: float) -> int:
        starts = 0
        for levels, times in zip(self.levels, self.times, strict=True):
            frame = LoudRule(self.tuned(on, off), "calibrate").frame
            for i, level in enumerate(levels.tolist()):
                t = frame(times[i], times[i + 1], level)
                if t is not None and t.type == "start":
                    starts += 1
        return starts

    def bound(self, on: float) -> int:
        return sum(_runs(levels >= on) for levels in self.levels)


def calibrate_series(
    series: Series | Sequence[Series],
    events: Sequence[EventConfig],
    min_level_dbfs: float | None = None,
    *,
    per_day: float = 1.0,
    step: float = 0.01,
    lowest: float = LOWEST,
    keep_off: str = "ratio",
    positives: Mapping[str, Series] | None = None,
) -> list[EventReport]:
    """Per event: percentiles of what its thresholds see, its false starts with the current
    settings, and the lowest threshold on the grid giving at most per_day starts a day, there
    and at every step above: on_threshold step apart from lowest up to 1 for a sound event,
    on_dbfs 1 dB apart up to 0 dBFS for a loud one.

    Counts per day extrapolate from the series' length; a series shorter than a day allows
    floor(per_day * days) starts, so none under a day at the default rate.
    """
    segments = [s for s in ([series] if isinstance(series, Series) else series) if len(s.start_s)]
    if not segments:
        raise SatAudioError("no audio to calibrate on: the recording gave no chunks")
    audio_s = sum(seg.seconds for seg in segments)
    allowed = math.floor(per_day * audio_s / DAY_S + 1e-9)
    candidates = grid(step, lowest)
    custom = custom_labels(e.labels for e in events)
    reports = []
    for event in events:
        replay: _SoundReplay | _LoudReplay
        if scored(event):
            replay = _SoundReplay(event, segments, min_level_dbfs, custom)
        else:
            replay = _LoudReplay(event, segments)
        starts = replay.count(*replay.current)
        rule, off_for = _off_for(event, keep_off)
        suggested, lower = _search(
            candidates if scored(event) else DB_GRID,
            off_for,
            replay.valid_off,
            replay.bound,
            replay.count,
            allowed,
        )
        judged = suggested or replay.current
        reports.append(
            EventReport(
                key=event.key,
                kind=event.kind,
                audio_s=audio_s,
                percentiles={
                    name: float(v)
                    for (name, _), v in zip(
                        PERCENTILES,
                        np.percentile(replay.values, [q for _, q in PERCENTILES]),
                        strict=True,
                    )
                },
                on_threshold=replay.current[0],
                off_threshold=replay.current[1],
                starts=starts,
                per_day=starts * DAY_S / audio_s,
                keep_off=rule,
                suggested_on=suggested[0] if suggested else None,
                suggested_off=suggested[1] if suggested else None,
                suggested_starts=replay.count(*suggested) if suggested else None,
                lower_on=lower[0] if lower else None,
                lower_starts=lower[1] if lower else None,
                positives=tuple(
                    _positive(name, replay.on([clip], *judged), judged[0])
                    for name, clip in (positives or {}).items()
                ),
            )
        )
    return reports


def _search(
    candidates: Sequence[float],
    off_for: Callable[[float], float],
    valid: Callable[[float], bool],
    bound: Callable[[float], int],
    count: Callable[[float, float], int],
    allowed: int,
) -> tuple[tuple[float, float] | None, tuple[float, int] | None]:
    """From the top of the grid down, while each threshold gives at most `allowed` starts: the
    last such (on, off), and the first that gives more (on, starts). Counts need not fall as
    thresholds rise (a higher off ends episodes sooner), so every step is checked: by the rules'
    replay, unless its stretches above on are too few to give more than allowed."""
    suggested: tuple[float, float] | None = None
    for on in reversed(candidates):
        off = off_for(on)
        if not valid(off):
            break  # lower thresholds cannot keep this distance: no valid configuration
        if bound(on) > allowed and (n := count(on, off)) > allowed:
            return suggested, (on, n)
        suggested = (on, off)
    return suggested, None


def _positive(name: str, clip: "_SoundReplay | _LoudReplay", on: float) -> Positive:
    """A clip replayed with the thresholds judged: its peak, margin over on, and whether it
    starts the event."""
    peak = float(clip.values.max()) if clip.values.size else 0.0
    return Positive(name=name, peak=peak, margin=peak - on, fires=clip.count(*clip.current) > 0)


def read_blocks(path: Path, seconds: float = BLOCK_S) -> Iterator[np.ndarray]:
    """A recording as 16 kHz mono float32 blocks, resampled on the way as detect resamples."""
    import soundfile as sf
    import soxr

    from sat_audio.audio import to_mono

    if not path.is_file():
        raise SatAudioError(f"{path}: no such file")
    try:
        audio = sf.SoundFile(path)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise SatAudioError(f"{path}: not a readable audio file ({err})") from None
    with audio:
        rate = audio.samplerate
        stream = (
            None
            if rate == SAMPLE_RATE
            else soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        )
        frames = 0
        for block in audio.blocks(
            blocksize=max(1, int(seconds * rate)), dtype="float32", always_2d=True
        ):
            frames += block.shape[0]
            mono = to_mono(block)
            yield mono if stream is None else stream.resample_chunk(mono)
        if frames == 0:
            raise SatAudioError(f"{path}: contains no audio")
        if stream is not None:
            yield stream.resample_chunk(np.zeros(0, np.float32), last=True)


def score_recording(
    engine: Engine,
    path: Path,
    events: Sequence[EventConfig],
    progress: Callable[[float], object] | None = None,
) -> Series:
    """Run the model over one recording from a fresh memory, as detect and a new source do;
    progress is told the seconds of audio read."""
    engine.reset()
    builder = SeriesBuilder(events)
    for block in read_blocks(path):
        builder.audio(block)
        engine.feed("default", block)
        for chunk in engine.drain():
            builder.add(chunk)
        if progress is not None:
            progress(block.size / SAMPLE_RATE)
    for chunk in engine.flush("default"):
        builder.add(chunk)
    if not len(builder):
        raise SatAudioError(f"{path}: too short to score (a chunk needs at least 0.16 s)")
    return builder.build()


def _check_audio(path: Path) -> float:
    """A readable audio file's length in seconds, else one line saying what is wrong; checked
    before the model loads, so a typo in the last name fails at once."""
    import soundfile as sf

    if not path.is_file():
        raise SatAudioError(f"{path}: no such file")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise SatAudioError(f"{path}: not a readable audio file ({err})") from None
    if info.frames == 0:
        raise SatAudioError(f"{path}: contains no audio")
    return float(info.frames / info.samplerate)


def calibrate_files(
    config: Config,
    recordings: Sequence[Path],
    positives: Sequence[Path] = (),
    *,
    per_day: float = 1.0,
    step: float = 0.01,
    lowest: float = LOWEST,
    keep_off: str = "ratio",
    progress: bool = False,
) -> list[EventReport]:
    """The configured model over each recording (each its own stream), then calibrate_series;
    positive clips are scored the same way, one stream each."""
    every = config.detection.events
    if not every:
        raise SatAudioError("the configuration has no events under detection.events to calibrate")
    if per_day <= 0:
        raise SatAudioError(f"the false alarms a day must be above 0, got {per_day:g}")
    grid(step, lowest)  # a bad grid fails before the model runs
    seconds = sum(_check_audio(path) for path in recordings)
    for path in positives:
        _check_audio(path)
    scorer = load_scorer(config.model)
    chunk_s = config.model.chunk_seconds or scorer.spec.chunk_s
    custom = custom_labels(e.labels for e in every)
    engine = Engine(with_custom_sounds(scorer, custom, chunk_s, config.model.dir), chunk_s)
    from tqdm import tqdm

    with tqdm(
        total=round(seconds),
        unit="s",
        desc="audio",
        leave=False,
        disable=None if progress and seconds > 600 else True,
    ) as bar:
        series = [score_recording(engine, path, every, bar.update) for path in recordings]
    names = [path.name for path in positives]
    clips = {
        name if names.count(name) == 1 else str(path): score_recording(engine, path, every)
        for name, path in zip(names, positives, strict=True)
    }
    return calibrate_series(
        series,
        every,
        config.detection.min_level_dbfs,
        per_day=per_day,
        step=step,
        lowest=lowest,
        keep_off=keep_off,
        positives=clips,
    )


def as_json(reports: Sequence[EventReport], per_day: float) -> str:
    """One JSON document: the audio analysed, the target rate and each event's report."""
    import json

    return json.dumps(
        {
            "audio_s": reports[0].audio_s if reports else 0.0,
            "per_day_target": per_day,
            "events": [dataclasses.asdict(r) for r in reports],
        },
        allow_nan=False,
    )


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(reports: Sequence[EventReport], per_day: float) -> str:
    """The human report: a row per event (sound events, then loud ones), then positive clips."""
    if not reports:
        return "no events to calibrate"
    hours = reports[0].audio_s / 3600
    sound = [r for r in reports if r.kind == "sound"]
    loud = [r for r in reports if r.kind == "loud"]
    width = max(5, *(len(r.key) for r in reports))
    lines = [
        f"{hours:.2f} h of audio. Starts are false alarms: counts per day extrapolate from these "
        f"{hours:.2f} h.",
        f"Suggested: the lowest threshold giving at most {per_day:g} start(s) a day, there and "
        "at every step above it.",
    ]
    if sound:
        mode = sound[0].keep_off.split()[0]
        lines.append(f"off_threshold keeps the configured {mode} to on_threshold.")
    if loud:
        lines.append("off_dbfs keeps its configured distance below on_dbfs.")
    if sound:
        lines += ["", *_rows(sound, width, "sound events: scores", 5, 3)]
    if loud:
        lines += ["", *_rows(loud, width, f"loud events: dBFS of {FRAME_S:g} s frames", 6, 1)]
    for r in reports:
        if r.suggested_on is None:
            top = "1" if r.kind == "sound" else "0 dBFS"
            lines.append(
                f"{r.key}: no threshold up to {top} gives at most {per_day:g} a day "
                f"({r.lower_starts} starts at {r.lower_on:g}); raise min_duration_s or "
                "cooldown_s"
            )
    clips = [(r, p) for r in reports for p in r.positives]
    if clips:
        lines += ["", f"{'event':<{width}} {'clip':<24} {'peak':>6} {'margin':>7}  fires"]
        for r, p in clips:
            digits = 3 if r.kind == "sound" else 1
            lines.append(
                f"{r.key:<{width}} {p.name:<24} {p.peak:>6.{digits}f} {p.margin:>+7.{digits}f}  "
                f"{'yes' if p.fires else 'NO'}"
            )
    return "\n".join(line.rstrip() for line in lines)


def _rows(reports: Sequence[EventReport], width: int, what: str, w: int, d: int) -> list[str]:
    """A table of events of one kind: w characters a number, d decimals."""
    names = [name for name, _ in PERCENTILES]
    lines = [
        f"{'':<{width}} {what:^{5 * w + 4}} | {'now':^{2 * w + 16}} | {'suggested':^{2 * w + 9}}",
        f"{'event':<{width}} {' '.join(f'{n:>{w}}' for n in names[:4])} {names[4]:>{w}} | "
        f"{'on':>{w}} {'off':>{w}} {'starts':>6} {'/day':>7} | {'on':>{w}} {'off':>{w}} "
        f"{'/day':>7}",
    ]
    for r in reports:
        values = " ".join(f"{r.percentiles[n]:>{w}.{d}f}" for n in names)
        sugg_day = None if r.suggested_starts is None else r.suggested_starts * DAY_S / r.audio_s
        lines.append(
            f"{r.key:<{width}} {values} | {r.on_threshold:>{w}.{d}f} {r.off_threshold:>{w}.{d}f} "
            f"{r.starts:>6} {r.per_day:>7.1f} | {_num(r.suggested_on, d):>{w}} "
            f"{_num(r.suggested_off, d):>{w}} {_num(sugg_day, 1):>7}"
        )
    return lines


def yaml_snippet(reports: Sequence[EventReport]) -> str:
    """The suggested thresholds under detection.events, to paste into the configuration."""
    keys = {"sound": ("on_threshold", "off_threshold"), "loud": ("on_dbfs", "off_dbfs")}
    events = {
        r.key: dict(zip(keys[r.kind], (r.suggested_on, r.suggested_off), strict=True))
        for r in reports
        if r.suggested_on is not None
    }
    if not events:
        return "# no thresholds to suggest\n"
    follows = ", ".join(f"{r.key} {r.keep_off}" for r in reports if r.key in events)
    return (
        "# suggested thresholds: paste into the configuration, beside each event's settings\n"
        f"# off follows on by {follows}\n"
        + yaml.safe_dump({"detection": {"events": events}}, sort_keys=False)
    )
