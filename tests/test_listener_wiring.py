"""The listener's wiring in-process: source health in info, its rate limit, the switch.

A scripted source and a recording publisher stand in for the ends (the real ones are tested end
to end in test_listener.py); the model, engine and rules are the real ones.
"""

import logging
import os
import re
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from sat_audio import listener as listener_mod
from sat_audio.config import SourceConfig, parse_config
from sat_audio.labels import find
from sat_audio.listener import Listener
from sat_audio.publish.base import ListeningCallback, Publisher
from sat_audio.publish.protocol import Payload
from sat_audio.sources.base import Source, State
from tests.checkpoints import fire_label, random_model, save_upstream, upstream_name
from tests.waiting import wait_until

pytestmark = pytest.mark.slow


class ScriptedSource(Source):
    """Loud 0.1 s blocks in real time; its health follows `script` (seconds -> state)."""

    kind = "mic"
    script: ClassVar[dict[float, State]] = {}

    def _run(self) -> None:
        t = np.arange(1600) / 16000
        block = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        started = time.monotonic()
        pending = sorted(self.script.items())
        while not self._stop.wait(0.1):
            self._emit(block)
            while pending and time.monotonic() - started >= pending[0][0]:
                _, state = pending.pop(0)
                self._set_state(state, None if state == "ok" else "device unplugged")


class Recorder(Publisher):
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.on_listening: ListeningCallback = lambda on: None

    def start(self, on_listening: ListeningCallback) -> None:
        self.on_listening = on_listening

    def info(self, payload: Payload) -> None:
        self.calls.append(("info", payload))

    def listening(self, on: bool) -> None:
        self.calls.append(("listening", on))

    def state(self, key: str, on: bool) -> None:
        self.calls.append(("state", (key, on)))

    def transition(self, key: str, payload: Payload) -> None:
        self.calls.append(("transition", payload))

    def scores(self, payload: Payload) -> None:
        self.calls.append(("scores", payload))

    def level(self, source: str, level_dbfs: float) -> None:
        self.calls.append(("level", level_dbfs))

    def close(self, timeout: float) -> bool:
        self.calls.append(("close", timeout))
        return True

    def of(self, kind: str) -> list:
        return [v for k, v in list(self.calls) if k == kind]


class QueuedSource(Source):
    """Finite audio queued before the listener's first read: "done" ends at once, "two" has
    two 0.5 s chunks waiting and then stays open."""

    kind = "mic"

    def _prepare(self) -> None:
        if self.name == "done":
            self._finish()
        else:
            self._emit(np.full(16000, 0.1, np.float32))

    def _run(self) -> None:
        self._stop.wait()


@pytest.fixture(scope="module")
def bark_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = fire_label(random_model("SAT_T_2s", seed=3), find("Bark").index)
    return save_upstream(model, tmp_path_factory.mktemp("bark") / upstream_name("SAT_T_2s"))


def _start(
    monkeypatch: pytest.MonkeyPatch, checkpoint: Path, script: dict[float, State]
) -> tuple[Listener, Recorder, threading.Event, threading.Thread]:
    ScriptedSource.script = script
    monkeypatch.setattr(listener_mod, "open_source", lambda cfg: ScriptedSource(cfg))
    monkeypatch.setattr(listener_mod, "INFO_MIN_INTERVAL_S", 0.5)
    config = parse_config(
        {
            "listener": {"id": "wiring"},
            "model": {"name": str(checkpoint), "chunk_seconds": 0.5},
            "sources": [{"name": "mic", "kind": "mic"}],
            "detection": {
                "events": {"dog": {"labels": ["Bark"], "on_threshold": 0.5, "off_threshold": 0.3}}
            },
        }
    )
    assert config.sources == (SourceConfig(name="mic", kind="mic"),)
    rec = Recorder()
    lst = Listener(config, publisher=rec)
    stop = threading.Event()
    thread = threading.Thread(target=lst.run, args=(stop,))
    thread.start()
    return lst, rec, stop, thread


def _wait(check) -> None:
    wait_until(check, "the listener's turn")


def test_source_health_changes_republish_info_at_a_limited_rate(
    monkeypatch: pytest.MonkeyPatch, bark_checkpoint: Path
) -> None:
    lst, rec, stop, thread = _start(monkeypatch, bark_checkpoint, {1.0: "reconnecting", 2.5: "ok"})
    try:
        _wait(lambda: any(i["sources"][0]["reconnects"] == 1 for i in rec.of("info")))
        time.sleep(1.5)  # chunks keep counting, but a chunk count alone is no news
    finally:
        stop.set()
        thread.join(30)
    states = [i["sources"][0]["state"] for i in rec.of("info")]
    assert states == ["ok", "reconnecting", "ok"]
    last = rec.of("info")[-1]["sources"][0]
    assert last == {
        "name": "mic", "kind": "mic", "state": "ok", "overflows": 0, "dropped_s": 0.0,
        "reconnects": 1, "error": None,
    }  # fmt: skip
    # Shutdown: the open event ends, its state goes OFF, the publisher closes last.
    assert rec.of("transition")[-1]["type"] == "end"
    assert rec.of("state")[-1] == ("dog", False)
    assert rec.calls[-1][0] == "close"
    assert lst.chunks > 0


def test_switch_off_ends_events_and_stops_analysis(
    monkeypatch: pytest.MonkeyPatch, bark_checkpoint: Path
) -> None:
    lst, rec, stop, thread = _start(monkeypatch, bark_checkpoint, {})
    try:
        _wait(lambda: rec.of("transition"))
        rec.on_listening(False)
        _wait(lambda: ("listening", False) in rec.calls)
        chunks = lst.chunks
        n = len(rec.calls)
        time.sleep(1.5)
        assert lst.chunks == chunks  # nothing analysed while paused
        assert rec.calls[n:] == []
        rec.on_listening(True)
        _wait(lambda: len(rec.of("transition")) == 3)
    finally:
        stop.set()
        thread.join(30)
    kinds = [t["type"] for t in rec.of("transition")]
    assert kinds == ["start", "end", "start", "end"]
    assert [i["listening"] for i in rec.of("info")][-2:] == [False, True]


def test_start_up_memory_goes_back_when_started_and_after_the_first_chunk(
    monkeypatch: pytest.MonkeyPatch, bark_checkpoint: Path
) -> None:
    """Code pages go back once started, and again after the first chunk with the free heap
    start-up left; later chunks keep theirs."""
    released: list[tuple[str, int]] = []
    lst: Listener | None = None

    def recorder(what: str) -> Callable[[], None]:
        def record() -> None:
            assert lst is not None
            released.append((what, lst.chunks))

        return record

    monkeypatch.setattr(listener_mod, "release_free_heap", recorder("heap"))
    monkeypatch.setattr(listener_mod, "release_startup_code", recorder("code"))
    lst, _, stop, thread = _start(monkeypatch, bark_checkpoint, {})
    try:
        _wait(lambda: lst.chunks >= 4)
    finally:
        stop.set()
        thread.join(30)
    assert released == [("code", 0), ("heap", 1), ("code", 1)]


def test_every_chunk_scored_is_timed_once_also_when_another_source_ends(
    monkeypatch: pytest.MonkeyPatch, bark_checkpoint: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The ending source's flush scores the other stream's queued chunks: those are timed too
    (bench_listener.py --chunk-times counts on it)."""
    monkeypatch.setattr(listener_mod, "open_source", QueuedSource)
    caplog.set_level(logging.DEBUG, logger=listener_mod.__name__)
    config = parse_config(
        {
            "listener": {"id": "wiring"},
            "model": {"name": str(bark_checkpoint), "chunk_seconds": 0.5},
            "sources": [{"name": "two", "kind": "mic"}, {"name": "done", "kind": "mic"}],
        }
    )
    lst = Listener(config, publisher=Recorder())
    stop = threading.Event()
    thread = threading.Thread(target=lst.run, args=(stop,))
    thread.start()
    try:
        _wait(lambda: lst.chunks >= 2)
        time.sleep(0.3)  # a few more turns: nothing else arrives
    finally:
        stop.set()
        thread.join(30)
    assert "source done finished" in caplog.text
    timed = re.findall(r"scored (\d+) chunk\(s\) in ([0-9.]+) ms", caplog.text)
    assert lst.chunks == 2
    assert sum(int(n) for n, _ in timed) == lst.chunks
    assert all(float(ms) > 0 for _, ms in timed)


class SlowScorer:
    """The real scorer, made to take twice a 0.5 s chunk per pass: a machine that cannot keep
    up, whatever its speed (the sleep is a lower bound)."""

    def __init__(self, scorer: object) -> None:
        self._scorer = scorer
        self.spec = scorer.spec  # type: ignore[attr-defined]

    def check_chunk(self, samples: int) -> None:
        self._scorer.check_chunk(samples)  # type: ignore[attr-defined]

    def initial_state(self, batch: int):
        return self._scorer.initial_state(batch)  # type: ignore[attr-defined]

    def inference(self):
        return self._scorer.inference()  # type: ignore[attr-defined]

    def score(self, chunks: np.ndarray, state):
        time.sleep(1.0)
        return self._scorer.score(chunks, state)  # type: ignore[attr-defined]


def test_a_listener_that_cannot_keep_up_says_so_counts_drops_and_marks_the_source_lagging(
    monkeypatch: pytest.MonkeyPatch, bark_checkpoint: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 38 item 2: a warning at start-up, every drop counted and logged, state lagging."""
    real_load = listener_mod.load_scorer
    monkeypatch.setattr(listener_mod, "load_scorer", lambda cfg: SlowScorer(real_load(cfg)))
    monkeypatch.setattr(listener_mod, "open_source", lambda cfg: ScriptedSource(cfg))
    monkeypatch.setattr(listener_mod, "INFO_MIN_INTERVAL_S", 0.5)
    ScriptedSource.script = {}
    caplog.set_level(logging.INFO)
    config = parse_config(
        {
            "listener": {"id": "wiring"},
            "model": {"name": str(bark_checkpoint), "chunk_seconds": 0.5},
            "sources": [{"name": "mic", "kind": "mic", "queue_seconds": 1.0}],
        }
    )
    rec = Recorder()
    lst = Listener(config, publisher=rec)
    stop = threading.Event()
    thread = threading.Thread(target=lst.run, args=(stop,))
    thread.start()
    try:
        wait_until(
            lambda: any(i["sources"][0]["state"] == "lagging" for i in rec.of("info")),
            "an info that says the source is lagging",
        )
    finally:
        stop.set()
        thread.join(60)
    lagging = next(i for i in rec.of("info") if i["sources"][0]["state"] == "lagging")
    assert lagging["sources"][0]["overflows"] >= 1
    assert lagging["sources"][0]["dropped_s"] > 0
    assert "cannot run in real time on this machine" in caplog.text
    assert "source mic: the listener fell behind and its queue is full" in caplog.text


def test_times_follow_the_audio_across_a_stall_of_stdin(
    monkeypatch: pytest.MonkeyPatch, bark_checkpoint: Path
) -> None:
    """Issue 38 item 3: after a pipe went quiet, the next episode starts when its audio came,
    not where stream time (fewer seconds than went by) puts it; the stall shows in the state."""
    from sat_audio.sources import stdin as stdin_mod
    from sat_audio.sources.stdin import StdinSource

    monkeypatch.setattr(stdin_mod, "STALL_S", 1.0)
    monkeypatch.setattr(listener_mod, "INFO_MIN_INTERVAL_S", 0.2)
    read_fd, write_fd = os.pipe()
    reader = os.fdopen(read_fd, "rb")
    monkeypatch.setattr(listener_mod, "open_source", lambda cfg: StdinSource(cfg, reader))
    config = parse_config(
        {
            "listener": {"id": "wiring"},
            "model": {"name": str(bark_checkpoint), "chunk_seconds": 0.5},
            "sources": [{"name": "pipe", "kind": "stdin", "format": "f32le"}],
            "detection": {
                "min_level_dbfs": -40,
                "events": {
                    "dog": {
                        "labels": ["Bark"], "on_threshold": 0.5, "off_threshold": 0.3, "hold_s": 0
                    }
                },
            },
        }
    )  # fmt: skip
    rec = Recorder()
    lst = Listener(config, publisher=rec)
    stop = threading.Event()
    thread = threading.Thread(target=lst.run, args=(stop,))
    thread.start()
    t = np.arange(16000) / 16000
    loud = (0.3 * np.sin(2 * np.pi * 440 * t)).astype("<f4")
    try:
        os.write(write_fd, np.zeros(16000, "<f4").tobytes())  # 1 s of silence: no episode
        _wait(lambda: lst.chunks >= 2)
        time.sleep(3.0)  # the pipe stalls; stream time stands still meanwhile
        wait_until(
            lambda: any(i["sources"][0]["state"] == "reconnecting" for i in rec.of("info")),
            "an info that says the pipe stalled",
        )
        sent = time.time()
        os.write(write_fd, loud.tobytes())
        _wait(lambda: rec.of("transition"))
        seen = time.time()
        _wait(lambda: rec.of("info")[-1]["sources"][0]["state"] == "ok")
    finally:
        stop.set()
        thread.join(60)
        os.close(write_fd)
        reader.close()
    start = datetime.fromisoformat(rec.of("transition")[0]["start"]).timestamp()
    # the loud audio's first chunk begins where it arrived: between two chunks before the test
    # wrote it and the moment the test saw the episode
    assert sent - 2 * 0.5 <= start <= seen, (start - sent, seen - sent)
