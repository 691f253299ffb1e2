"""What every source shares: 16 kHz mono blocks in a bounded queue, health, backoff, shutdown.

A source captures in its own thread (or a PortAudio callback) and never blocks the listener: the
listener reads blocks with a timeout. Live audio cannot wait for a slow consumer, so when the queue
is full the oldest audio is dropped and counted; finite inputs read as fast as possible (a file,
piped PCM from a file) wait for room instead, so nothing is lost.

Every block carries the wall-clock time its last sample arrived, so that the listener can tell
when a stall, a reconnect or a drop left a gap in the audio (and where its stream time lies).
A live source is lagging while the listener reads audio that waited LAG_S or more in its queue,
or lost some to a full queue, and for LAG_HOLD_S after.
"""

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np

from sat_audio import SAMPLE_RATE
from sat_audio.config import SourceConfig
from sat_audio.errors import SatAudioError
from sat_audio.redact import mask_secrets

log = logging.getLogger(__name__)

State = Literal["ok", "reconnecting", "failed"]

JOIN_TIMEOUT_S = 5.0
"""How long stop() waits for a capture thread; capture threads wake at least this often."""
LAG_S = 5.0
"""Audio queued this long (seconds of it) when the listener reads means it has fallen behind."""
LAG_HOLD_S = 10.0
"""A lagging source is reported so until it has been caught up this long: long enough for the
rate-limited info to show it, short enough to clear once the load is gone."""


@dataclass(frozen=True)
class SourceStatus:
    """A source's health as the publisher reports it."""

    state: State
    overflows: int
    dropped_s: float
    reconnects: int
    error: str | None
    lagging: bool = False
    """The listener fell behind this source's audio (lost some, or reads it late)."""


class BlockQueue:
    """A FIFO of float32 blocks bounded by total samples; full means the oldest block goes.

    Each block is queued with the wall-clock time of its last sample (`get_stamped`).
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("queue capacity must be at least one sample")
        self.capacity = capacity
        self._blocks: deque[tuple[np.ndarray, float]] = deque()
        self._samples = 0
        self._dropped = 0
        self._cond = threading.Condition()

    @property
    def dropped(self) -> int:
        """Samples thrown away because the consumer lagged."""
        return self._dropped

    def __len__(self) -> int:
        return len(self._blocks)

    @property
    def samples(self) -> int:
        """Samples waiting to be read."""
        return self._samples

    def put(self, block: np.ndarray, wall: float | None = None) -> int:
        """Append, dropping the oldest blocks (counted) until the new one fits; the number of
        samples dropped. wall: when the block's last sample arrived (default now)."""
        stamp = time.time() if wall is None else wall
        dropped = 0
        with self._cond:
            while self._blocks and self._samples + block.size > self.capacity:
                old, _ = self._blocks.popleft()
                self._samples -= old.size
                dropped += old.size
            self._dropped += dropped
            self._blocks.append((block, stamp))
            self._samples += block.size
            self._cond.notify()
        return dropped

    def put_wait(self, block: np.ndarray, stop: threading.Event, wall: float | None = None) -> bool:
        """Append once there is room (back-pressure); False if stop was set while waiting."""
        stamp = time.time() if wall is None else wall
        with self._cond:
            while self._blocks and self._samples + block.size > self.capacity:
                if stop.is_set():
                    return False
                self._cond.wait(0.1)
            self._blocks.append((block, stamp))
            self._samples += block.size
            self._cond.notify_all()
            return True

    def get(self, timeout: float) -> np.ndarray | None:
        """The oldest block, or None when none arrived within timeout seconds."""
        got = self.get_stamped(timeout)
        return None if got is None else got[0]

    def get_stamped(self, timeout: float) -> tuple[np.ndarray, float, int] | None:
        """The oldest block, the wall-clock time its last sample arrived, and the samples that
        were queued with it (itself included); None when none arrived within timeout seconds."""
        with self._cond:
            if not self._blocks and timeout > 0:
                self._cond.wait_for(lambda: bool(self._blocks), timeout)
            if not self._blocks:
                return None
            queued = self._samples
            block, wall = self._blocks.popleft()
            self._samples -= block.size
            self._cond.notify_all()
            return block, wall, queued


class Backoff:
    """Capped exponential delays between reconnect attempts; reset once audio flows again."""

    def __init__(self, first: float = 0.5, cap: float = 10.0) -> None:
        self.first, self.cap = first, cap
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.cap)
        return delay

    def reset(self) -> None:
        self._next = self.first


class RateLimitedLog:
    """Logs a repeating problem at most once per interval, with the count since the last line."""

    def __init__(self, interval_s: float = 10.0, logger: logging.Logger = log) -> None:
        self.interval_s = interval_s
        self.logger = logger
        self._last = -float("inf")
        self._pending = 0

    def __call__(self, message: str, *args: object) -> None:
        self._pending += 1
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self.logger.warning(message + " (%d since last report)", *args, self._pending)
            self._last, self._pending = now, 0


class Source:
    """Base of every source: subclasses implement _run() (the capture thread) and may
    override _interrupt() to unblock it on stop()."""

    kind = ""

    def __init__(self, cfg: SourceConfig) -> None:
        if cfg.block_seconds <= 0:
            raise SatAudioError(f"source {cfg.name}: block_seconds must be positive")
        if cfg.queue_seconds < cfg.block_seconds:
            raise SatAudioError(f"source {cfg.name}: queue_seconds must be >= block_seconds")
        self.cfg = cfg
        self.name = cfg.name
        self.block_samples = max(1, round(cfg.block_seconds * SAMPLE_RATE))
        self.queue = BlockQueue(max(self.block_samples, round(cfg.queue_seconds * SAMPLE_RATE)))
        self.live = True
        """Live audio drops the oldest when the queue is full; finite input waits for room."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: list[np.ndarray] = []
        self._pending_n = 0
        self._lock = threading.Lock()
        self._state: State = "ok"
        self._error: str | None = None
        self._overflows = 0
        self._reconnects = 0
        self._ended = False
        self._lag_at = -float("inf")  # monotonic time the listener was last seen behind
        self._drop_log = RateLimitedLog()
        self._lag_log = RateLimitedLog()

    # -- the interface the listener uses ----------------------------------------------------

    def start(self) -> None:
        """Start capturing in the background; raises SatAudioError for a bad device/file/URL."""
        self._prepare()
        self._thread = threading.Thread(target=self._guarded_run, name=f"source-{self.name}")
        self._thread.daemon = True
        self._thread.start()

    def read(self, timeout: float) -> np.ndarray | None:
        """The next 16 kHz mono float32 block, or None when nothing arrived within timeout."""
        got = self.read_stamped(timeout)
        return None if got is None else got[0]

    def read_stamped(self, timeout: float) -> tuple[np.ndarray, float] | None:
        """The next block and the wall-clock time its last sample arrived, or None when nothing
        arrived within timeout. Reading live audio that waited LAG_S or more marks the source
        lagging."""
        got = self.queue.get_stamped(timeout)
        if got is None:
            return None
        block, wall, queued = got
        if self.live and queued >= LAG_S * SAMPLE_RATE:
            self._lagged()
            self._lag_log(
                "source %s: lagging, the listener reads its audio %.1f s late",
                self.name,
                queued / SAMPLE_RATE,
            )
        return block, wall

    @property
    def finished(self) -> bool:
        """True once a finite input has ended and every block has been read."""
        return self._ended and len(self.queue) == 0

    def stop(self) -> None:
        """Stop capturing and release the device/process; never hangs."""
        self._stop.set()
        self._interrupt()
        if self._thread is not None:
            self._thread.join(JOIN_TIMEOUT_S)
            if self._thread.is_alive():
                log.warning("source %s: capture thread did not stop in time", self.name)

    def status(self) -> SourceStatus:
        with self._lock:
            return SourceStatus(
                state=self._state,
                overflows=self._overflows,
                dropped_s=self.queue.dropped / SAMPLE_RATE,
                reconnects=self._reconnects,
                error=self._error,
                lagging=time.monotonic() - self._lag_at < LAG_HOLD_S,
            )

    # -- for subclasses ---------------------------------------------------------------------

    def _prepare(self) -> None:
        """Checks that can fail loudly before the thread starts (missing file, device...)."""

    def _run(self) -> None:
        raise NotImplementedError

    def _interrupt(self) -> None:
        """Wake a capture thread blocked on I/O so that it sees the stop flag."""

    def _guarded_run(self) -> None:
        try:
            self._run()
        except SatAudioError as err:
            # The input's fault (a file that stops decoding): the source ends, failed, one line.
            self._set_state("failed", str(err))
            self._ended = True
        except Exception as err:
            # A bug: the same, with its traceback.
            log.exception("source %s failed", self.name)
            self._set_state("failed", f"{type(err).__name__}: {err}")
            self._ended = True

    def _set_state(self, state: State, error: str | None = None) -> None:
        """The source's health; its error is what the retained info shows every subscriber, so
        a camera URL's password in it (ffmpeg repeats the URL) is masked here."""
        error = None if error is None else mask_secrets(error)
        with self._lock:
            changed = state != self._state
            if state == "ok" and self._state == "reconnecting":
                self._reconnects += 1
            self._state, self._error = state, error
        if changed and state == "ok":
            log.info("source %s: audio flows again", self.name)
        elif changed:
            level = logging.ERROR if state == "failed" else logging.WARNING
            log.log(level, "source %s: %s (%s)", self.name, state, error)

    def _count_overflow(self, n: int = 1) -> None:
        with self._lock:
            self._overflows += n

    def _lagged(self) -> None:
        with self._lock:
            self._lag_at = time.monotonic()

    def _emit(self, samples: np.ndarray) -> None:
        """Queue 16 kHz mono samples as blocks of exactly block_samples, each stamped with when
        its last sample arrived: the newest sample arrived now, the earlier ones before it."""
        if samples.size == 0:
            return
        now = time.time()
        self._pending.append(samples.astype(np.float32, copy=False))
        self._pending_n += samples.size
        if self._pending_n < self.block_samples:
            return
        data = np.concatenate(self._pending)
        n_full = data.size // self.block_samples * self.block_samples
        for start in range(0, n_full, self.block_samples):
            end = start + self.block_samples
            self._put(data[start:end].copy(), now - (data.size - end) / SAMPLE_RATE)
        rest = data[n_full:]
        self._pending = [rest] if rest.size else []
        self._pending_n = rest.size

    def _flush(self) -> None:
        """Queue the last partial block (end of a finite input)."""
        if self._pending_n:
            self._put(np.concatenate(self._pending), time.time())
        self._pending, self._pending_n = [], 0

    def _finish(self) -> None:
        """A finite input reached its end."""
        self._flush()
        self._ended = True
        log.info("source %s reached its end", self.name)

    def _put(self, block: np.ndarray, wall: float) -> None:
        """Queue a block; live audio that finds the queue full drops the oldest: each such time
        is an overflow, logged at most every 10 s, and the source is lagging."""
        if not self.live:
            self.queue.put_wait(block, self._stop, wall)
            return
        dropped = self.queue.put(block, wall)
        if dropped:
            self._count_overflow()
            self._lagged()
            self._drop_log(
                "source %s: the listener fell behind and its queue is full: %.1f s of audio "
                "dropped in all",
                self.name,
                self.queue.dropped / SAMPLE_RATE,
            )
