"""The live view's state and its HTTP server (standard library only, in daemon threads).

The listener calls View.chunk() once per scored chunk. With nobody connected that appends one
small tuple to a bounded per-source history and keeps a reference to the chunk's scores; only
while a browser is connected does it build a frame (top 10, the rules' states in words, health)
and push it to each client's queue, which that client's handler thread writes as a server-sent
event. Clients whose queue fills (a stalled browser) are dropped rather than slowing the listener.

View.audio() keeps the last web.teach_seconds of each source in memory (never on disk), so that
a sound that just happened can be taught from the page: api/teach runs `sat-audio teach` on it in
a child process, so that the listener's own model and audio path are not touched.
"""

import ipaddress
import itertools
import json
import logging
import math
import queue
import subprocess
import sys
import tempfile
import threading
import urllib.parse
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from sat_audio import SAMPLE_RATE
from sat_audio.calibrate import Series, calibrate_series, format_table, yaml_snippet
from sat_audio.clips import Ring, to_int16
from sat_audio.config import EventConfig, WebConfig
from sat_audio.engine import ChunkResult
from sat_audio.errors import SatAudioError
from sat_audio.labels import custom_name
from sat_audio.rules import EPS, EventRule, combine

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
FILES = {
    "": ("index.html", "text/html; charset=utf-8"),
    "index.html": ("index.html", "text/html; charset=utf-8"),
    "app.js": ("app.js", "text/javascript; charset=utf-8"),
    "app.css": ("app.css", "text/css; charset=utf-8"),
    "uPlot.iife.min.js": ("uPlot.iife.min.js", "text/javascript; charset=utf-8"),
    "uPlot.min.css": ("uPlot.min.css", "text/css; charset=utf-8"),
}
"""What the server answers, by path: nothing else of the package is reachable."""
TEXT = "text/plain; charset=utf-8"
TOP_K = 10
MAX_EPISODES = 50
CALIBRATE_CHUNKS = 50_000
"""Chunks per source kept for calibrating from the page: a day of 2 s chunks, 14 h of 1 s."""
CLIENT_QUEUE = 256
"""Frames a browser may lag behind before it is dropped (minutes of chunks)."""
KEEPALIVE_S = 15.0
"""A comment line this often keeps proxies from closing an idle stream."""
MAX_BODY = 4096
"""A POST's body at most (api/teach's JSON is a few dozen bytes)."""
TEACH_TIMEOUT_S = 900.0
"""A safety net for a teaching child that hangs; teaching takes seconds to minutes."""
SAME_SITE = ("same-origin", "none")
"""Sec-Fetch-Site values of a request from the page itself (or typed, or not a browser's)."""


@dataclass
class _Client:
    queue: "queue.Queue[bytes | None]"
    dropped: bool = False


class _Series:
    """The last CALIBRATE_CHUNKS chunks of a source for calibration: stream times, level and
    each sound event's combined score before smoothing, in fixed arrays (written in place)."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = list(keys)
        self.times = np.zeros((CALIBRATE_CHUNKS, 2))
        self.values = np.zeros((CALIBRATE_CHUNKS, 1 + len(keys)), np.float32)
        self.count = 0

    def append(self, start_s: float, end_s: float, level: float, scores: list[float]) -> None:
        i = self.count % CALIBRATE_CHUNKS
        self.times[i] = start_s, end_s
        self.values[i] = level, *scores
        self.count += 1

    def segments(self) -> list[Series]:
        """Oldest first, split where stream time starts again (a resume after a pause)."""
        n = min(self.count, CALIBRATE_CHUNKS)
        oldest = self.count % CALIBRATE_CHUNKS if n == CALIBRATE_CHUNKS else 0
        order = (np.arange(n) + oldest) % CALIBRATE_CHUNKS
        times, values = self.times[order], self.values[order].astype(np.float64)
        cuts = [0, *(np.flatnonzero(times[1:, 0] < times[:-1, 1] - EPS) + 1), n]
        return [
            Series(
                start_s=times[a:b, 0],
                end_s=times[a:b, 1],
                level_dbfs=values[a:b, 0],
                scores={key: values[a:b, 1 + i] for i, key in enumerate(self.keys)},
            )
            for a, b in itertools.pairwise(cuts)
            if b > a
        ]


@dataclass
class _Source:
    history: deque[tuple[float, float, tuple[float, ...]]]
    """(wall time, level dBFS, each event's combined score) per chunk, oldest first."""
    series: _Series
    last: tuple[float, np.ndarray] | None = None  # the latest chunk's level and scores


def _round(x: float, digits: int = 3) -> float | None:
    """JSON has no NaN or infinity: those become null."""
    return round(x, digits) if math.isfinite(x) else None


class View:
    """What the page shows, kept by the listener; serve() exposes it over HTTP."""

    def __init__(
        self,
        cfg: WebConfig,
        *,
        listener: dict[str, Any],
        sources: Sequence[str],
        events: Sequence[EventConfig],
        labels: Sequence[str],
        chunk_s: float,
        teach_config: str | None = None,
    ) -> None:
        """teach_config: the listener's effective configuration as YAML, which the teaching
        child reads, so that it uses the same model and model.dir (None: no teaching)."""
        self.cfg = cfg
        self.allow = {ipaddress.ip_address(a) for a in cfg.allow}
        self._listener = listener
        self._events = list(events)
        self._labels = list(labels)
        self.chunk_s = chunk_s
        size = max(1, math.ceil(cfg.history_minutes * 60 / chunk_s))
        self._sound = [ev for ev in events if ev.kind == "sound"]
        keys = [ev.key for ev in self._sound]
        self._sources = {name: _Source(deque(maxlen=size), _Series(keys)) for name in sources}
        self._gate = listener.get("min_level_dbfs")
        self._episodes: deque[dict[str, Any]] = deque(maxlen=MAX_EPISODES)
        self._clients: list[_Client] = []
        self._lock = threading.Lock()
        self._health: dict[str, Any] | None = None
        self._states: dict[str, dict[str, str]] = {}
        self.listening = True
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._teach_config = teach_config
        keep = cfg.teach_seconds if teach_config is not None else 0.0
        self._rings = {name: Ring(keep) for name in sources} if keep else {}
        self._ring_lock = threading.Lock()
        self._teaching = threading.Lock()  # one teaching child at a time

    # -- from the listener's thread ---------------------------------------------------------

    @property
    def watched(self) -> bool:
        """Somebody is connected: worth building frames for."""
        return bool(self._clients)

    def chunk(
        self,
        wall: float,
        chunk: ChunkResult,
        rules: Sequence[EventRule],
        health: Callable[[], dict[str, Any]],
    ) -> None:
        """One scored chunk of a source (wall: when its end was heard), after its rules ran."""
        source, level, scores = chunk.stream, chunk.level_dbfs, chunk.scores
        st = self._sources[source]
        raw = [
            combine(np.asarray(scores)[r.indices], r.cfg.combine)
            for r in rules
            if r.cfg.kind == "sound"
        ]
        with self._lock:
            st.history.append((wall, level, tuple(r.score for r in rules)))
            st.last = (level, scores)
            st.series.append(chunk.start_s, chunk.end_s, level, raw)
        if not self._clients:
            return
        self._health = health()
        states = {r.cfg.key: r.describe(self.listening) for r in rules}
        self._states[source] = states
        self._send(
            {
                "type": "chunk",
                "source": source,
                "t": round(wall, 3),
                "level": _round(level, 1),
                "top": self._top(scores),
                "scores": {r.cfg.key: _round(r.score) for r in rules},
                "states": states,
                "health": self._health,
            }
        )

    def audio(self, source: str, samples: np.ndarray) -> None:
        """A block of a source's audio as heard (float32); the ring keeps the last seconds."""
        ring = self._rings.get(source)
        if ring is None:
            return
        data = to_int16(samples)
        with self._ring_lock:
            ring.write(data)

    def transition(
        self,
        source: str,
        event: str,
        episode: str,
        label: str | None,
        peak: float,
        start: float,
        end: float | None,
    ) -> None:
        """An episode of an event started (end None) or ended; times are wall-clock seconds."""
        with self._lock:
            found = next((ep for ep in self._episodes if ep["id"] == episode), None)
            if found is None:
                found = {"id": episode, "source": source, "event": event, "label": label}
                self._episodes.append(found)
            found |= {"peak": _round(peak), "start_t": round(start, 3)}
            found["end_t"] = None if end is None else round(end, 3)
            message = {"type": "episode", **found}
        if self._clients:
            self._send(message)

    def set_listening(self, on: bool, rules: dict[str, Sequence[EventRule]]) -> None:
        """The privacy switch changed: the rules' words say so at once. Turned off, the audio
        kept for teaching is forgotten too."""
        self.listening = on
        if not on:
            with self._ring_lock:
                for ring in self._rings.values():
                    ring.buffer[:] = 0
                    ring.end = 0
        if not self._clients:
            return
        for source, source_rules in rules.items():
            states = {r.cfg.key: r.describe(on) for r in source_rules}
            self._states[source] = states
            self._send({"type": "states", "source": source, "states": states, "listening": on})

    # -- for the HTTP threads ---------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything the page draws on load: then the event stream keeps it current."""
        with self._lock:
            sources = {name: (list(st.history), st.last) for name, st in self._sources.items()}
            episodes = list(self._episodes)
        out = []
        for name, (history, last) in sources.items():
            out.append(
                {
                    "name": name,
                    "t": [round(h[0], 3) for h in history],
                    "level": [_round(h[1], 1) for h in history],
                    "scores": {
                        ev.key: [_round(h[2][i]) for h in history]
                        for i, ev in enumerate(self._events)
                    },
                    "current": None if last is None else _round(last[0], 1),
                    "top": [] if last is None else self._top(last[1]),
                    "states": self._states.get(name, {}),
                }
            )
        return {
            **self._listener,
            "chunk_s": self.chunk_s,
            "history_s": self.cfg.history_minutes * 60,
            "teach_s": self.cfg.teach_seconds if self._rings else 0,
            "listening": self.listening,
            "events": [
                {
                    "key": ev.key,
                    "name": ev.name,
                    "kind": ev.kind,
                    "labels": list(ev.labels),
                    # a loud event's score is the level of its last frame, in dBFS
                    "on": ev.on_dbfs if ev.kind == "loud" else ev.on_threshold,
                    "off": ev.off_dbfs if ev.kind == "loud" else ev.off_threshold,
                }
                for ev in self._events
            ],
            "sources": out,
            "episodes": episodes,
            "health": self._health,
        }

    def calibrate(self, per_day: float) -> dict[str, Any]:
        """Thresholds from the audio heard so far (sound events; loud ones need `sat-audio
        calibrate`, which keeps every frame's level): the table and YAML of the command."""
        with self._lock:
            segments = [seg for st in self._sources.values() for seg in st.series.segments()]
        reports = calibrate_series(segments, self._sound, self._gate, per_day=per_day)
        return {
            "audio_s": reports[0].audio_s if reports else 0.0,
            "table": format_table(reports, per_day),
            "yaml": yaml_snippet(reports),
        }

    def last(self, source: str, seconds: float) -> np.ndarray:
        """The last `seconds` of a source's audio (less if less was heard), int16."""
        ring = self._rings[source]
        with self._ring_lock:
            return ring.read(ring.end - round(seconds * SAMPLE_RATE))

    def ring_bytes(self, source: str) -> int:
        """Memory a source's ring holds (0 without one)."""
        ring = self._rings.get(source)
        return 0 if ring is None else ring.buffer.nbytes

    def teach(self, source: Any, name: Any, seconds: Any) -> tuple[HTTPStatus, str]:
        """Teach custom:NAME from the last `seconds` of a source: the status and one line (the
        child's result, or what is wrong). A second request while one runs is refused."""
        if not self._rings:
            return HTTPStatus.CONFLICT, "teaching from the page is off (web.teach_seconds: 0)"
        if source not in self._rings:
            return HTTPStatus.BAD_REQUEST, f"source: expected one of {', '.join(self._rings)}"
        try:
            name = custom_name(name if isinstance(name, str) else "")
        except SatAudioError as err:
            return HTTPStatus.BAD_REQUEST, str(err)
        limit = self.cfg.teach_seconds
        if not (isinstance(seconds, int | float) and not isinstance(seconds, bool)) or not (
            0 < seconds <= limit
        ):
            return HTTPStatus.BAD_REQUEST, f"seconds: expected a number above 0, at most {limit:g}"
        if not self._teaching.acquire(blocking=False):
            return HTTPStatus.CONFLICT, "another sound is being taught: try again when it is done"
        try:
            audio = self.last(source, seconds)
            if audio.size == 0:
                return HTTPStatus.CONFLICT, f"nothing heard from source {source} yet"
            return self._run_teach(name, f"{source}-last-{seconds:g}s.flac", audio)
        finally:
            self._teaching.release()

    def _run_teach(self, name: str, clip_name: str, audio: np.ndarray) -> tuple[HTTPStatus, str]:
        """`python -m sat_audio teach NAME CLIP -c CONFIG` on temporary files, deleted after."""
        import soundfile as sf  # here: libsndfile loads for file sources, clips and teaching

        assert self._teach_config is not None
        with tempfile.TemporaryDirectory(prefix="sat-audio-teach-") as tmp:
            config, clip = Path(tmp) / "config.yaml", Path(tmp) / clip_name
            config.write_text(self._teach_config, encoding="utf-8")
            sf.write(clip, audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
            command = [
                sys.executable,
                "-m",
                "sat_audio",
                "teach",
                name,
                str(clip),
                "-c",
                str(config),
            ]
            log.info("live view: teaching custom:%s from %s", name, clip_name)
            try:
                done = subprocess.run(
                    command,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    timeout=TEACH_TIMEOUT_S,
                )
            except subprocess.TimeoutExpired:
                return (
                    HTTPStatus.GATEWAY_TIMEOUT,
                    f"teaching took over {TEACH_TIMEOUT_S:g} s: stopped",
                )
        if done.returncode == 0:
            return HTTPStatus.OK, "; ".join(done.stdout.strip().splitlines())
        lines = done.stderr.strip().splitlines() or ["(no message)"]
        log.info("live view: teaching custom:%s failed: %s", name, lines[-1])
        return (
            HTTPStatus.UNPROCESSABLE_ENTITY,
            f"teach failed (exit {done.returncode}): {lines[-1]}",
        )

    def subscribe(self) -> _Client:
        client = _Client(queue.Queue(CLIENT_QUEUE))
        with self._lock:
            self._clients = [*self._clients, client]
        return client

    def unsubscribe(self, client: _Client) -> None:
        with self._lock:
            self._clients = [c for c in self._clients if c is not client]

    def allowed(self, address: str) -> bool:
        if not self.allow:
            return True
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return ip in self.allow

    # -- internals ----------------------------------------------------------------------------

    def _top(self, scores: np.ndarray) -> list[list[Any]]:
        k = min(TOP_K, scores.size)
        idx = np.argpartition(scores, -k)[-k:]
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        return [[self._labels[i], _round(float(scores[i]))] for i in idx]

    def _send(self, message: dict[str, Any]) -> None:
        data = f"data: {json.dumps(message, separators=(',', ':'))}\n\n".encode()
        for client in self._clients:
            try:
                client.queue.put_nowait(data)
            except queue.Full:
                client.dropped = True
                self.unsubscribe(client)
                log.info("live view: dropped a browser that stopped reading")

    # -- the server ---------------------------------------------------------------------------

    def start(self) -> None:
        """Listen on host:port in a daemon thread; a port in use is one clear error."""
        handler = type("Handler", (_Handler,), {"view": self})
        try:
            self._server = ThreadingHTTPServer((self.cfg.host, self.cfg.port), handler)
        except OSError as err:
            raise SatAudioError(
                f"web: cannot listen on {self.cfg.host}:{self.cfg.port}: {err.strerror or err}"
            ) from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="web", daemon=True)
        self._thread.start()
        host, port = self._server.server_address[:2]
        log.info(
            "live view on http://%s:%d/%s",
            host,
            port,
            f" (answering only {', '.join(self.cfg.allow)})" if self.cfg.allow else "",
        )

    @property
    def port(self) -> int:
        """The port bound (port 0 in the config picks a free one)."""
        assert self._server is not None
        return int(self._server.server_address[1])

    def stop(self) -> None:
        if self._server is None:
            return
        for client in self._clients:
            try:
                client.queue.put_nowait(None)
            except queue.Full:
                client.dropped = True
        self._server.shutdown()
        self._server.server_close()
        self._server = None


class _Handler(BaseHTTPRequestHandler):
    """GET: the page's files, api/state (JSON), api/calibrate, api/events (server-sent events).
    POST: api/teach only, from the page itself (JSON, not cross-site)."""

    view: View
    server_version = "sat-audio"

    def do_GET(self) -> None:
        if not self.view.allowed(self.client_address[0]):
            self._reply(HTTPStatus.FORBIDDEN, b"forbidden\n", TEXT)
            return
        path = self.path.split("?", 1)[0].lstrip("/")
        if path == "api/state":
            body = json.dumps(self.view.snapshot(), separators=(",", ":")).encode()
            self._reply(HTTPStatus.OK, body, "application/json")
        elif path == "api/calibrate":
            self._calibrate()
        elif path == "api/events":
            self._events()
        elif path in FILES:
            name, kind = FILES[path]
            self._reply(HTTPStatus.OK, (STATIC / name).read_bytes(), kind)
        else:
            self._reply(HTTPStatus.NOT_FOUND, b"not found\n", TEXT)

    def do_POST(self) -> None:
        if not self.view.allowed(self.client_address[0]):
            self._reply(HTTPStatus.FORBIDDEN, b"forbidden\n", TEXT)
            return
        if self.path.split("?", 1)[0].lstrip("/") != "api/teach":
            self._reply(HTTPStatus.NOT_FOUND, b"not found\n", TEXT)
            return
        if self._cross_site():
            self._reply(HTTPStatus.FORBIDDEN, b"cross-site requests are refused\n", TEXT)
            return
        if self.headers.get_content_type() != "application/json":
            self._reply(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                b"expected Content-Type: application/json\n",
                TEXT,
            )
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._reply(
                HTTPStatus.BAD_REQUEST,
                f"expected a body of at most {MAX_BODY} bytes\n".encode(),
                TEXT,
            )
            return
        try:
            body = json.loads(self.rfile.read(length))
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            self._reply(HTTPStatus.BAD_REQUEST, b"expected a JSON object\n", TEXT)
            return
        status, line = self.view.teach(body.get("source"), body.get("name"), body.get("seconds"))
        self._reply(status, f"{line}\n".encode(), TEXT)

    def _cross_site(self) -> bool:
        """A request another site's page made: a browser says so in Sec-Fetch-Site, or (an older
        one) in an Origin that is not this host. Behind a proxy (the Supervisor's ingress) the
        Host differs from the page's, but Sec-Fetch-Site still says same-origin."""
        site = self.headers.get("Sec-Fetch-Site")
        if site is not None:
            return site not in SAME_SITE
        origin = self.headers.get("Origin")
        if origin is None:
            return False
        here = {self.headers.get("Host"), self.headers.get("X-Forwarded-Host")} - {None}
        return urllib.parse.urlsplit(origin).netloc not in here

    def _calibrate(self) -> None:
        query = urllib.parse.parse_qs(self.path.partition("?")[2])
        try:
            per_day = float(query.get("per_day", ["1"])[0])
            if not 0 < per_day < math.inf:
                raise ValueError
        except ValueError:
            self._reply(HTTPStatus.BAD_REQUEST, b"per_day: expected a number above 0\n", TEXT)
            return
        try:
            report = self.view.calibrate(per_day)
        except SatAudioError as err:
            self._reply(HTTPStatus.CONFLICT, f"{err}\n".encode(), TEXT)
            return
        self._reply(HTTPStatus.OK, json.dumps(report).encode(), "application/json")

    def _reply(self, status: HTTPStatus, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self' data:")
        self.end_headers()
        self.wfile.write(body)

    def _events(self) -> None:
        """Server-sent events until the browser goes or the listener stops. No Content-Length:
        a proxy (the Supervisor's ingress) streams such a response as it comes."""
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Accel-Buffering", "no")
        self.end_headers()
        client = self.view.subscribe()
        try:
            self.wfile.write(b"retry: 2000\n\n")
            self.wfile.flush()
            while not client.dropped:
                try:
                    data = client.queue.get(timeout=KEEPALIVE_S)
                except queue.Empty:
                    data = b": keepalive\n\n"
                if data is None:
                    break
                self.wfile.write(data)
                self.wfile.flush()
        except OSError:
            pass  # the browser went away
        finally:
            self.view.unsubscribe(client)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("live view: %s %s", self.address_string(), format % args)
