"""The listener service: sources -> batched engine -> event rules -> publisher.

One engine scores every source's stream in batched passes; each source has its own Detector.
Stream time is mapped to the wall clock by when its audio arrived: anchored as the source
(re)starts being analysed, and again whenever a live source's audio arrives more than
REANCHOR_S off that mapping (a stall, a reconnect, dropped audio, a drifting device clock).
"""

import logging
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from types import FrameType
from typing import TYPE_CHECKING

from sat_audio import SAMPLE_RATE
from sat_audio.clips import Clips, clips_folder, ring_seconds
from sat_audio.config import Config, to_yaml
from sat_audio.custom import custom_labels, with_custom_sounds
from sat_audio.engine import ChunkResult, Engine, load_scorer
from sat_audio.labels import all_labels
from sat_audio.memory import release_free_heap, release_startup_code
from sat_audio.publish.base import Publisher
from sat_audio.publish.protocol import (
    Payload,
    PublishedEvent,
    Topics,
    active_payload,
    clip_name,
    clips_entry,
    discovery_configs,
    event_key,
    info_payload,
    published_events,
    scores_payload,
    source_entry,
    transition_payload,
)
from sat_audio.publish.stdout import StdoutPublisher
from sat_audio.rules import Detector, Transition
from sat_audio.sources import open_source
from sat_audio.sources.base import Source

if TYPE_CHECKING:
    from sat_audio.config import WebConfig
    from sat_audio.web.view import View

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 0.1
"""How long the loop waits for audio before looking at commands and health again."""
MAX_BLOCKS_PER_TURN = 100
INFO_MIN_INTERVAL_S = 5.0
"""Source health changes re-publish info at most this often."""
SHUTDOWN_FLUSH_S = 5.0
"""How long shutdown waits for the broker to acknowledge what is queued."""
REANCHOR_S = 0.5
"""Live audio that arrives this much earlier or later than its stream time says re-anchors it."""
MAX_ANCHORS = 64
"""Anchors a stream keeps: an open episode's start maps by the one in force when it began."""


@dataclass
class _Stream:
    """One source and its place in the pipeline."""

    source: Source
    detector: Detector
    anchors: list[tuple[float, float]]
    """(stream second, wall-clock time of stream second 0 from there on), oldest first."""
    fed_s: float = 0.0  # stream seconds fed to the engine since it was (re)started
    last_end_s: float = 0.0
    finished: bool = False
    next_live: float = 0.0  # monotonic time the next scores/level may go out

    def wall(self, stream_s: float) -> float:
        """The wall-clock time of a moment of the stream."""
        for start_s, anchor in reversed(self.anchors):
            if stream_s >= start_s:
                return anchor + stream_s
        return self.anchors[0][1] + stream_s

    def restart(self, wall: float) -> None:
        """Stream time starts again at 0, now."""
        self.anchors = [(0.0, wall)]
        self.fed_s = self.last_end_s = 0.0

    def fed(self, samples: int, wall: float) -> None:
        """A block went to the engine; wall is when its last sample arrived. Live audio more
        than REANCHOR_S off the mapping (a gap before it) starts a new anchor at its start."""
        start_s = self.fed_s
        self.fed_s += samples / SAMPLE_RATE
        off = wall - self.wall(self.fed_s)
        if self.source.live and abs(off) > REANCHOR_S:
            log.debug(
                "stream %s: re-anchored %+.2f s at stream time %.2f s",
                self.source.name,
                off,
                start_s,
            )
            self.anchors.append((start_s, wall - self.fed_s))
            del self.anchors[:-MAX_ANCHORS]


def make_publisher(config: Config, topics: Topics, events: list[PublishedEvent]) -> Publisher:
    """MQTT when a broker is configured, else JSON lines on stdout."""
    if config.mqtt is None:
        return StdoutPublisher()
    from sat_audio.publish.mqtt import MqttPublisher

    discovery = (
        discovery_configs(
            topics,
            discovery_prefix=config.mqtt.discovery_prefix,
            name=config.listener.name,
            model=config.model.name,
            events=events,
            sources=[s.name for s in config.sources],
        )
        if config.mqtt.discovery
        else None
    )
    return MqttPublisher(config.mqtt, topics, discovery)


class Listener:
    """Runs the pipeline until stopped or until every (finite) source has ended."""

    def __init__(self, config: Config, publisher: Publisher | None = None) -> None:
        self.config = config
        self.view: View | None = None  # the live view, while it runs
        names = [s.name for s in config.sources]
        self.events: list[PublishedEvent] = published_events(names, config.detection.events)
        self._keys = {
            (src, e.key): event_key(src, e.key, len(names))
            for src in names
            for e in config.detection.events
        }
        self._origin = {key: src_event for src_event, key in self._keys.items()}
        self._disabled = {e.key for e in self.events if not e.enabled}
        """Published keys switched off now: by config, then by Home Assistant's commands."""
        self._enable: queue.SimpleQueue[tuple[str, bool]] = queue.SimpleQueue()
        self._active: list[str] = []
        self._clip_of: dict[str, str] = {}  # episode id -> its clip's name
        self.clips: Clips | None = None
        topics = Topics(
            config.mqtt.topic_prefix if config.mqtt else "sat_audio", config.listener.id
        )
        self.publisher = publisher or make_publisher(config, topics, self.events)
        self.listening = True
        self.chunks = 0
        self.transitions = 0
        self._commands: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self._streams: dict[str, _Stream] = {}
        self._labels = [lab.name for lab in all_labels()]
        self._live_level = config.mqtt is not None and (
            config.publishing.scores or config.mqtt.discovery
        )
        self._started = time.time()
        self._settled = False
        self.chunk_s = config.model.chunk_seconds or 0.0
        self.model_name = config.model.name
        self._info_sig: tuple[bool, list[Payload], int, list[str]] | None = None
        self._info_at = 0.0
        self._switched_at = -INFO_MIN_INTERVAL_S  # when a command last published info at once

    # -- commands from the publisher's thread -------------------------------------------------

    def command_listening(self, on: bool) -> None:
        """The privacy switch; applied by the main loop."""
        self._commands.put(on)

    def command_enabled(self, key: str, on: bool) -> None:
        """An event's switch; applied by the main loop."""
        self._enable.put((key, on))

    # -- main loop ------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> int:
        cfg = self.config
        model = load_scorer(cfg.model)
        chunk_s = cfg.model.chunk_seconds or model.spec.chunk_s
        custom = custom_labels(e.labels for e in cfg.detection.events)
        model = with_custom_sounds(model, custom, chunk_s, cfg.model.dir)
        self._labels.extend(custom)  # their columns follow AudioSet's in the scores
        self.chunk_s = chunk_s
        self.model_name = model.spec.name
        engine = Engine(model, chunk_s, [s.name for s in cfg.sources])
        self._check_realtime(engine)
        sources = [open_source(s) for s in cfg.sources]
        where = (
            f"MQTT {cfg.mqtt.host}:{cfg.mqtt.port} as {cfg.listener.id}"
            if cfg.mqtt
            else "stdout (no broker configured)"
        )
        log.info(
            "model %s on %s, %.2f s chunks; sources %s; events %s; publishing to %s",
            self.model_name,
            cfg.model.runtime,
            chunk_s,
            ", ".join(f"{s.name} ({s.kind})" for s in sources),
            ", ".join(e.key for e in self.events) or "none",
            where,
        )
        self.clips = self._make_clips(chunk_s)
        self.publisher.on_enabled(self.command_enabled)
        self.publisher.start(self.command_listening)
        self.publisher.listening(True)
        for ev in self.events:
            self.publisher.state(ev.key, False)
            self.publisher.enabled(ev.key, ev.key not in self._disabled)
        self.publisher.active(active_payload([]))
        try:
            for src in sources:
                src.start()
                self._streams[src.name] = _Stream(
                    src, self._detector(src.name), [(0.0, time.time())]
                )
            self._publish_info(force=True)
            if cfg.web.enabled:
                self.view = self._start_view(cfg.web)
            # all started: the code only start-up ran (most of torch's or onnxruntime's) can go
            # now, not at the first chunk only (a paused listener, or a camera not yet up, has none)
            release_startup_code()
            code = self._loop(engine, stop)
        finally:
            if self.view is not None:
                self.view.stop()
            self._shutdown()
        return code

    def _start_view(self, web: "WebConfig") -> "View":
        """The live view's server; its module is imported only when it is on."""
        from sat_audio.web.view import View

        view = View(
            web,
            listener={
                "name": self.config.listener.name,
                "id": self.config.listener.id,
                "model": self.model_name,
                "min_level_dbfs": self.config.detection.min_level_dbfs,
            },
            sources=list(self._streams),
            events=self.config.detection.events,
            labels=self._labels,
            chunk_s=self.chunk_s,
            teach_config=to_yaml(self.config),
        )
        view.listening = self.listening
        view.start()
        return view

    def _view_health(self) -> Payload:
        """Source health and counters for the live view (built only while someone watches)."""
        return {
            "sources": self._source_entries(),
            "counters": {
                "chunks": self.chunks,
                "transitions": self.transitions,
                "mqtt_dropped": self.publisher.dropped,
            },
        }

    @staticmethod
    def _check_realtime(engine: Engine) -> None:
        """Say at start-up what one chunk of every source costs here, and warn when that is
        more than a chunk's duration: those sources cannot run in real time on this machine."""
        pass_s = engine.time_pass()
        n = len(engine.streams)
        log.info(
            "scoring a %.2f s chunk of %d source(s) takes %.0f ms here (%.0f%% of real time)",
            engine.chunk_seconds,
            n,
            pass_s * 1000,
            100 * pass_s / engine.chunk_seconds,
        )
        if pass_s >= engine.chunk_seconds:
            log.warning(
                "%d source(s) with %.2f s chunks cannot run in real time on this machine "
                "(%.2f s of scoring per %.2f s of audio): they will lag and drop audio; use "
                "fewer sources, longer chunks, or precision int8",
                n,
                engine.chunk_seconds,
                pass_s,
                engine.chunk_seconds,
            )

    def _detector(self, source: str) -> Detector:
        return Detector(
            self.config.detection.events,
            self.config.detection.min_level_dbfs,
            source=source,
            disabled={ev for src, ev in (self._origin[k] for k in self._disabled) if src == source},
        )

    def _make_clips(self, chunk_s: float) -> Clips | None:
        """Clips, when some event keeps them: a ring for each source that has such an event."""
        cfg = self.config
        clip_events = [e for e in cfg.detection.events if e.clip is not None]
        if not clip_events:
            return None
        rings = {
            s.name: ring_seconds(clip_events, chunk_s, MAX_BLOCKS_PER_TURN * s.block_seconds)
            for s in cfg.sources
        }
        publish = self.publisher.clip if cfg.clips.publish and cfg.mqtt is not None else None
        folder = clips_folder(cfg.clips.dir)
        log.info("keeping clips of %s in %s", ", ".join(e.key for e in clip_events), folder)
        return Clips(cfg.clips, folder, rings, publish)

    def _loop(self, engine: Engine, stop: threading.Event) -> int:
        """Until stopped (exit code 0) or every source has ended: 1 if each of them failed, so
        that a supervisor (the add-on's) starts the listener again."""
        timeout = READ_TIMEOUT_S / max(1, len(self._streams))
        while not stop.is_set():
            self._apply_commands(engine)
            self._apply_enabled()
            for name, st in self._streams.items():
                if st.finished:
                    continue
                got = st.source.read_stamped(timeout)
                n = 0
                while got is not None:
                    if self.listening:
                        engine.feed(name, got[0])
                        st.fed(got[0].size, got[1])
                        if self.clips is not None:
                            self.clips.audio(name, got[0])
                        if self.view is not None:
                            self.view.audio(name, got[0])
                        for t in st.detector.audio(got[0]):
                            self._emit(st, t)
                    n += 1
                    got = st.source.read_stamped(0.0) if n < MAX_BLOCKS_PER_TURN else None
                if n == 0 and st.source.finished:
                    st.finished = True
                    log.info("source %s finished", name)
                    self._process(
                        self._timed(partial(engine.flush, name)) if self.listening else []
                    )
                    self._end_open(st)
                    if self.clips is not None:
                        self.clips.finish(name)
            results = self._timed(engine.drain)
            self._process(results)
            if results and not self._settled:
                # once: the heap start-up freed, and code only the first chunk ran (0.7 MB of
                # PulseAudio's client and Python's on a microphone)
                release_free_heap()
                release_startup_code()
                self._settled = True
            self._publish_info()
            if all(st.finished for st in self._streams.values()):
                if all(st.source.status().state == "failed" for st in self._streams.values()):
                    log.error("every source has failed; exiting with code 1")
                    return 1
                log.info("every source has ended; stopping")
                return 0
        return 0

    @staticmethod
    def _timed(score: Callable[[], list[ChunkResult]]) -> list[ChunkResult]:
        """Score, and log how long it took: the figure benchmarks/bench_listener.py reports.

        Both ways of scoring pass here, since a source's flush also drains the other streams.
        """
        started = time.perf_counter()
        results = score()
        if results:
            log.debug(
                "scored %d chunk(s) in %.2f ms",
                len(results),
                (time.perf_counter() - started) * 1000,
            )
        return results

    def _process(self, results: list[ChunkResult]) -> None:
        now = time.monotonic()
        for chunk in results:
            st = self._streams[chunk.stream]
            st.last_end_s = chunk.end_s
            self.chunks += 1
            for t in st.detector.update(chunk):
                self._emit(st, t)
            if self.view is not None:
                self.view.chunk(st.wall(chunk.end_s), chunk, st.detector.rules, self._view_health)
            if now >= st.next_live:
                st.next_live = now + 1.0 / self.config.publishing.rate_hz
                wall = st.wall(chunk.end_s)
                if self.config.publishing.scores:
                    self.publisher.scores(self._scores(chunk, wall))
                if self._live_level:
                    self.publisher.level(chunk.stream, chunk.level_dbfs)

    def _scores(self, chunk: ChunkResult, wall: float) -> Payload:
        return scores_payload(
            source=chunk.stream,
            wall=wall,
            level_dbfs=chunk.level_dbfs,
            scores=chunk.scores,
            names=self._labels,
            top_k=self.config.publishing.top_k,
        )

    def _emit(self, st: _Stream, t: Transition) -> None:
        key = self._keys[(st.source.name, t.event)]
        clip = self._clip(st, key, t)
        payload = transition_payload(
            transition_id=t.id,
            kind=t.type,
            event=key,
            source=st.source.name,
            label=t.label,
            score=t.score,
            peak=t.peak,
            start_wall=st.wall(t.start_s),
            end_wall=None if t.end_s is None else st.wall(t.end_s),
            duration_s=t.duration_s,
            clip=clip,
            reason=t.reason,
        )
        self.transitions += 1
        if t.label is None:
            log.info("%s %s: level %.1f peak %.1f dBFS", key, t.type, t.score, t.peak)
        else:
            log.info("%s %s: %s score %.2f peak %.2f", key, t.type, t.label, t.score, t.peak)
        self.publisher.transition(key, payload)
        if self.view is not None:
            end = None if t.end_s is None else st.wall(t.end_s)
            self.view.transition(
                st.source.name, t.event, t.id, t.label, t.peak, st.wall(t.start_s), end
            )
        self.publisher.state(key, t.type == "start")
        self._publish_active()

    def _clip(self, st: _Stream, key: str, t: Transition) -> str | None:
        """The clip's name of the episode, when its event keeps clips; the clip starts with it
        and ends post_s after it."""
        if self.clips is None:
            return None
        cfg = next(e for e in self.config.detection.events if e.key == t.event)
        if cfg.clip is None:
            return None
        name = st.source.name
        if t.type == "start":
            clip = clip_name(key, st.wall(t.start_s), t.id, self.config.clips.format)
            self.clips.start(name, t.id, clip, cfg.clip, t.start_s)
            self._clip_of[t.id] = clip
            return clip
        self.clips.end(name, t.id, t.end_s if t.end_s is not None else t.start_s)
        return self._clip_of.pop(t.id, None)

    def _publish_active(self) -> None:
        """The keys of the events on now, when that set changed."""
        on = {
            self._keys[(name, event)]
            for name, st in self._streams.items()
            for event in st.detector.active()
        }
        active = [e.key for e in self.events if e.key in on]
        if active != self._active:
            self._active = active
            self.publisher.active(active_payload(active))

    def _end_open(self, st: _Stream, reason: str = "stopped") -> None:
        """End the stream's open events at the last analysed moment."""
        for t in st.detector.close(st.last_end_s, reason):
            self._emit(st, t)

    def _apply_enabled(self) -> None:
        """Home Assistant's event switches since the last turn, in order. Off ends the event's
        open episode at once; the report and info follow every command."""
        changed = False
        while True:
            try:
                key, on = self._enable.get_nowait()
            except queue.Empty:
                break
            if key not in self._origin:
                log.debug("ignoring the switch of %s: no such event here", key)
                continue
            self.publisher.enabled(key, on)
            if on == (key not in self._disabled):
                continue
            changed = True
            source, event = self._origin[key]
            if on:
                self._disabled.discard(key)
            else:
                self._disabled.add(key)
            log.info("event %s switched %s", key, "on" if on else "off")
            st = self._streams.get(source)
            if st is not None:
                for t in st.detector.set_enabled(event, on):
                    self._emit(st, t)
        if changed:
            self._publish_info(force=True)

    def _apply_commands(self, engine: Engine) -> None:
        """The switch's commands since the last turn: the last one wins, so a flood of them
        costs one change per turn. Info follows at once, or if a command already published it
        within INFO_MIN_INTERVAL_S, at the next turn past that."""
        commands = []
        while True:
            try:
                commands.append(self._commands.get_nowait())
            except queue.Empty:
                break
        if not commands:
            return
        on = commands[-1]
        if on != self.listening:
            if on:
                # Fresh memory, fresh rules, stream time restarting now.
                for name, st in self._streams.items():
                    st.detector = self._detector(name)
                    st.restart(time.time())
                log.info("listening resumed")
            else:
                for name, st in self._streams.items():
                    self._end_open(st, "paused")
                    engine.reset(name)
                    if self.clips is not None:
                        self.clips.finish(name)
                log.info("listening paused: audio is read and discarded, not analysed")
            self.listening = on
            if self.view is not None:
                self.view.set_listening(
                    on, {name: st.detector.rules for name, st in self._streams.items()}
                )
        self.publisher.listening(self.listening)
        now = time.monotonic()
        if now - self._switched_at >= INFO_MIN_INTERVAL_S:
            self._switched_at = now
            self._publish_info(force=True)

    # -- info -------------------------------------------------------------------------------

    def _source_entries(self) -> list[Payload]:
        entries = []
        for st in self._streams.values():
            s = st.source.status()
            entries.append(
                source_entry(
                    st.source.name,
                    st.source.kind,
                    "lagging" if s.state == "ok" and s.lagging else s.state,
                    s.overflows,
                    s.dropped_s,
                    s.reconnects,
                    s.error,
                )
            )
        return entries

    def _clips_entry(self) -> Payload | None:
        c = self.config.clips
        if self.clips is None:
            return None
        return clips_entry(c.format, c.publish, c.max_count, c.max_age_days, c.max_total_mb)

    def _publish_info(self, *, force: bool = False) -> None:
        """Re-publish info when health changed, at most every INFO_MIN_INTERVAL_S."""
        now = time.monotonic()
        if not force and now - self._info_at < INFO_MIN_INTERVAL_S:
            return
        sources = self._source_entries()
        sig = (self.listening, sources, self.publisher.dropped, sorted(self._disabled))
        if not force and sig == self._info_sig:
            return
        self._info_sig, self._info_at = sig, now
        self.publisher.info(
            info_payload(
                listener_id=self.config.listener.id,
                name=self.config.listener.name,
                model=self.model_name,
                chunk_s=self.chunk_s,
                listening=self.listening,
                started=self._started,
                sources=sources,
                events=self.events,
                disabled=self._disabled,
                clips=self._clips_entry(),
                counters={
                    "chunks": self.chunks,
                    "transitions": self.transitions,
                    "mqtt_dropped": self.publisher.dropped,
                    "mqtt_queued": self.publisher.queued,
                },
            )
        )

    # -- shutdown ---------------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Open events end, every state goes OFF, status goes offline, the queue flushes."""
        for st in self._streams.values():
            st.source.stop()
        for st in self._streams.values():
            if not st.finished:
                self._end_open(st)
        if self.clips is not None:
            self.clips.close(SHUTDOWN_FLUSH_S)
        for ev in self.events:
            self.publisher.state(ev.key, False)
        self.publisher.active(active_payload([]))
        if self.publisher.close(SHUTDOWN_FLUSH_S):
            log.info("stopped cleanly")


def serve(config: Config, watch: Callable[[Listener, threading.Event], None] | None = None) -> int:
    """Run the listener in the foreground; SIGINT and SIGTERM stop it cleanly (exit 0).

    `watch` is started with the listener and the stop event (the add-on's health heartbeat).
    """
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("%s received; shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    listener = Listener(config)
    if watch is not None:
        watch(listener, stop)
    return listener.run(stop)
