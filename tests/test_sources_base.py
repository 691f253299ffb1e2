"""The bounded drop-oldest queue, block sizes and backoff shared by every source."""

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from sat_audio.config import SourceConfig
from sat_audio.errors import SatAudioError
from sat_audio.sources import open_source
from sat_audio.sources.base import Backoff, BlockQueue
from sat_audio.sources.stdin import StdinSource
from tests.waiting import wait_until


def test_queue_drops_the_oldest_and_counts():
    q = BlockQueue(capacity=10)
    for value in range(4):
        q.put(np.full(4, value, np.float32))
    assert q.dropped == 8  # blocks 0 and 1 made room for 2 and 3
    assert q.get(0)[0] == 2
    assert q.get(0)[0] == 3
    assert q.get(0) is None
    assert q.get(0.05) is None


def test_queue_put_wait_blocks_until_room_or_stop():
    q = BlockQueue(capacity=4)
    stop = threading.Event()
    q.put(np.zeros(4, np.float32))
    done = []
    waiter = threading.Thread(target=lambda: done.append(q.put_wait(np.ones(4, np.float32), stop)))
    waiter.start()
    time.sleep(0.2)
    assert not done  # still waiting: nothing dropped
    assert q.get(0)[0] == 0
    waiter.join(2)
    assert done == [True] and q.get(0)[0] == 1 and q.dropped == 0
    q.put(np.zeros(4, np.float32))
    stop.set()
    assert q.put_wait(np.ones(4, np.float32), stop) is False


def test_lagging_consumer_of_a_live_pipe_loses_the_oldest_audio():
    """A live source (a pipe) with a 1 s queue gets 3 s unread: 2 s dropped, the newest kept."""
    read_fd, write_fd = os.pipe()
    cfg = SourceConfig(name="in", kind="stdin", format="f32le", queue_seconds=1.0)
    with os.fdopen(read_fd, "rb") as reader:
        source = StdinSource(cfg, reader)
        source.start()
        ramp = np.arange(48000, dtype="<f4") / 48000  # every sample distinct
        os.write(write_fd, ramp.tobytes())
        os.close(write_fd)
        wait_until(lambda: source._ended, "the end of the input")
        blocks = []
        while (block := source.read(0)) is not None:
            blocks.append(block)
        source.stop()
    kept = np.concatenate(blocks)
    assert source.live
    assert source.status().dropped_s == pytest.approx(2.0)
    np.testing.assert_array_equal(kept, ramp[-16000:])
    assert source.finished


def test_backoff_doubles_up_to_the_cap_and_resets():
    b = Backoff(first=0.5, cap=3.0)
    assert [b.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    b.reset()
    assert b.next() == 0.5


def test_config_checks():
    with pytest.raises(SatAudioError, match="unknown kind 'radio'"):
        open_source(SourceConfig(name="x", kind="radio"))
    with pytest.raises(SatAudioError, match="block_seconds must be positive"):
        open_source(SourceConfig(name="x", kind="stdin", block_seconds=0))
    with pytest.raises(SatAudioError, match="queue_seconds must be >= block_seconds"):
        open_source(SourceConfig(name="x", kind="stdin", queue_seconds=0.01))


@pytest.mark.parametrize("kind", ["mic", "ffmpeg", "stdin"])
def test_a_listener_without_a_file_source_never_loads_soundfile(kind: str) -> None:
    """The promise of sources.KINDS: libsndfile and its bindings load for file sources only."""
    code = (
        "import importlib, sys; import sat_audio.listener, sat_audio.publish.mqtt; "
        "from sat_audio.sources import KINDS; "
        f"importlib.import_module(KINDS[{kind!r}][0]); print('soundfile' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
