"""Calibration: where each event's thresholds should sit in a room, learnt from its ordinary life.

A recording of the room holds none of the target sounds, so every start the rules give on it is a
false alarm. The model runs over it once (the same engine as `detect` and the listener) and each
event's combined score is kept per chunk; the listener's own state machine (rules.EventRule) is
then replayed over that series with the current thresholds and with every threshold on a grid,
which costs far less than the model. The lowest on_threshold that keeps the false alarms at or
below the target rate, at it and at every grid step above it, is suggested.
"""

import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from sat_audio import SAMPLE_RATE
from sat_audio.config import Config, EventConfig
from sat_audio.custom import custom_labels, with_custom_sounds
from sat_audio.engine import ChunkResult, Engine, load_scorer
from sat_audio.errors import SatAudioError
from sat_audio.rules import EventRule, Smoother, combine

DAY_S = 86400.0
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9), ("max", 100.0))
KEEP_OFF = ("ratio", "distance")
LOWEST = 0.05
"""The lowest on_threshold suggested by default: an event the room never scores would otherwise
get the grid's bottom, which a recording of hours cannot vouch for."""
BLOCK_S = 60.0
"""Seconds of a recording read, resampled and fed at a time: hours of audio never sit in memory."""


def scored(event: EventConfig) -> bool:
    """Whether calibration can replay this event: events scored by the model's labels."""
    return getattr(event, "kind", "sound") == "sound"


@dataclass(frozen=True)
class Series:
    """One continuous stream of chunks (a file, one run of a source), replayed with fresh rules.

    scores holds, per event key, the event's combined label score per chunk before smoothing:
    what EventRule.update computes from the 527 scores, so the series stays small.
    """

    start_s: np.ndarray
    end_s: np.ndarray
    level_dbfs: np.ndarray
    scores: Mapping[str, np.ndarray]

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
        self._start: list[float] = []
        self._end: list[float] = []
        self._level: list[float] = []
        self._scores: dict[str, list[float]] = {ev.key: [] for ev, _ in self._events}

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
            start_s=np.array(self._start, np.float64),
            end_s=np.array(self._end, np.float64),
            level_dbfs=np.array(self._level, np.float32),
            scores={key: np.array(values, np.float32) for key, values in self._scores.items()},
        )


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
    audio_s: float
    percentiles: dict[str, float]
    """Of the score the thresholds see (combined, smoothed), over every chunk."""
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
    """How off_threshold follows a new on_threshold, in words, and the rule itself."""
    if keep_off == "ratio":
        ratio = event.off_threshold / event.on_threshold
        return f"ratio {ratio:.4g}", lambda on: round(on * ratio, 6)
    if keep_off == "distance":
        gap = event.on_threshold - event.off_threshold
        return f"distance {gap:.4g}", lambda on: round(on - gap, 6)
    raise SatAudioError(f"keep_off must be one of {', '.join(KEEP_OFF)}, got {keep_off!r}")


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
        gate = EventRule(event, min_level_dbfs, "", custom).gate
        self.open = [None if gate is None else seg.level_dbfs >= gate for seg in segments]

    def tuned(self, on: float, off: float) -> EventConfig:
        return dataclasses.replace(self.event, on_threshold=on, off_threshold=off)

    def count(self, on: float, off: float) -> int:
        return count_starts(
            self.tuned(on, off), self.segments, self.scores, self.min_level_dbfs, self.custom
        )

    def bound(self, on: float) -> int:
        """Runs of chunks at or above on (and above the gate): each start needs one of its own,
        as an end between two starts needs a chunk below off, so below on."""
        runs = 0
        for scores, open_ in zip(self.scores, self.open, strict=True):
            above = scores >= on if open_ is None else (scores >= on) & open_
            runs += int(above[0]) + int(np.count_nonzero(above[1:] & ~above[:-1]))
        return runs


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
    """Per scored event: score percentiles, false starts with the current settings, and the
    lowest on_threshold on the grid (step apart, from lowest) giving at most per_day starts a
    day, there and at every step above.

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
    for event in filter(scored, events):
        replay = _SoundReplay(event, segments, min_level_dbfs, custom)
        starts = replay.count(event.on_threshold, event.off_threshold)
        rule, off_for = _off_for(event, keep_off)
        suggested, lower = _search(candidates, off_for, replay.bound, replay.count, allowed)
        judged = replay.tuned(*suggested) if suggested else event
        values = np.concatenate(replay.scores)
        reports.append(
            EventReport(
                key=event.key,
                audio_s=audio_s,
                percentiles={
                    name: float(v)
                    for (name, _), v in zip(
                        PERCENTILES,
                        np.percentile(values, [q for _, q in PERCENTILES]),
                        strict=True,
                    )
                },
                on_threshold=event.on_threshold,
                off_threshold=event.off_threshold,
                starts=starts,
                per_day=starts * DAY_S / audio_s,
                keep_off=rule,
                suggested_on=suggested[0] if suggested else None,
                suggested_off=suggested[1] if suggested else None,
                suggested_starts=replay.count(*suggested) if suggested else None,
                lower_on=lower[0] if lower else None,
                lower_starts=lower[1] if lower else None,
                positives=tuple(
                    _positive(name, clip, judged, min_level_dbfs, custom)
                    for name, clip in (positives or {}).items()
                ),
            )
        )
    return reports


def _search(
    candidates: Sequence[float],
    off_for: Callable[[float], float],
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
        if off <= 0:
            break  # lower thresholds cannot keep this distance: no valid configuration
        if bound(on) > allowed and (n := count(on, off)) > allowed:
            return suggested, (on, n)
        suggested = (on, off)
    return suggested, None


def _positive(
    name: str,
    clip: Series,
    event: EventConfig,
    min_level_dbfs: float | None,
    custom: Sequence[str],
) -> Positive:
    smoothed = _smoothed(event, [clip])
    peak = float(smoothed[0].max()) if smoothed[0].size else 0.0
    return Positive(
        name=name,
        peak=peak,
        margin=peak - event.on_threshold,
        fires=count_starts(event, [clip], smoothed, min_level_dbfs, custom) > 0,
    )


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
    if not any(map(scored, every)):
        raise SatAudioError(
            "no event of the configuration is scored by labels; loud events are not calibrated"
        )
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
    """The human report: one row per event, then the positive clips."""
    if not reports:
        return "no events scored by labels to calibrate"
    hours = reports[0].audio_s / 3600
    mode = reports[0].keep_off.split()[0]
    names = [name for name, _ in PERCENTILES]
    width = max(5, *(len(r.key) for r in reports))
    lines = [
        f"{hours:.2f} h of audio. Starts are false alarms: counts per day extrapolate from these "
        f"{hours:.2f} h.",
        f"Suggested: the lowest on_threshold giving at most {per_day:g} start(s) a day, there "
        "and at every step above it;",
        f"its off_threshold keeps the configured {mode} to on_threshold.",
        "",
        f"{'':<{width}} {'score the thresholds see':^29} | {'now':^26} | {'suggested':^19}",
        f"{'event':<{width}} {' '.join(f'{n:>5}' for n in names)} | {'on':>5} {'off':>5} "
        f"{'starts':>6} {'/day':>7} | {'on':>5} {'off':>5} {'/day':>7}",
    ]
    for r in reports:
        values = " ".join(f"{r.percentiles[n]:>5.3f}" for n in names)
        sugg_day = None if r.suggested_starts is None else r.suggested_starts * DAY_S / r.audio_s
        lines.append(
            f"{r.key:<{width}} {values} | {r.on_threshold:>5.3f} {r.off_threshold:>5.3f} "
            f"{r.starts:>6} {r.per_day:>7.1f} | {_num(r.suggested_on):>5} "
            f"{_num(r.suggested_off):>5} {_num(sugg_day, 1):>7}"
        )
    for r in reports:
        if r.suggested_on is None:
            lines.append(
                f"{r.key}: no on_threshold up to 1 gives at most {per_day:g} a day "
                f"({r.lower_starts} starts at {r.lower_on}); raise min_duration_s or cooldown_s"
            )
    clips = [(r, p) for r in reports for p in r.positives]
    if clips:
        lines += ["", f"{'event':<{width}} {'clip':<24} {'peak':>5} {'margin':>7}  fires"]
        for r, p in clips:
            lines.append(
                f"{r.key:<{width}} {p.name:<24} {p.peak:>5.3f} {p.margin:>+7.3f}  "
                f"{'yes' if p.fires else 'NO'}"
            )
    return "\n".join(line.rstrip() for line in lines)


def yaml_snippet(reports: Sequence[EventReport]) -> str:
    """The suggested thresholds under detection.events, to paste into the configuration."""
    events = {
        r.key: {"on_threshold": r.suggested_on, "off_threshold": r.suggested_off}
        for r in reports
        if r.suggested_on is not None
    }
    if not events:
        return "# no thresholds to suggest\n"
    follows = ", ".join(f"{r.key} {r.keep_off}" for r in reports if r.key in events)
    return (
        "# suggested thresholds: paste into the configuration, beside each event's labels\n"
        f"# off_threshold follows on_threshold by {follows}\n"
        + yaml.safe_dump({"detection": {"events": events}}, sort_keys=False)
    )
