"""sat_audio/memory.py: read-only file pages go back to the system, and nothing is lost."""

import subprocess
import sys
from pathlib import Path

import numpy as np

CHILD = """
import mmap, re, sys
import numpy as np
from sat_audio.memory import release_free_heap, release_startup_code

def rss_mb():
    return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024

with open(sys.argv[1], "rb") as f:
    pages = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)  # like a library: read-only, shared
total = int(np.frombuffer(pages, np.uint8).sum(dtype=np.uint64))  # touches every page
before = rss_mb()
advised = release_startup_code()
after = rss_mb()
again = int(np.frombuffer(pages, np.uint8).sum(dtype=np.uint64))  # faults back in, same bytes
release_free_heap()
smaps = open("/proc/self/smaps").read()
flags = re.search(re.escape(sys.argv[1]) + r"\\n(?:.*\\n)*?VmFlags:(.*)", smaps).group(1).split()
print(advised, before, after, total == again, "rr" in flags)  # rr: random reads, no read-around
"""


def test_read_only_file_pages_are_released_and_read_back_intact(tmp_path: Path) -> None:
    """A 48 MB file only this child maps (pytest's own libraries are shared, so the kernel would
    keep them): its pages leave the RSS, reading it again gives the same bytes, and the mapping
    is marked for random reads, so what faults back in brings no read-around with it."""
    data = tmp_path / "library.bin"
    data.write_bytes(np.random.default_rng(0).integers(0, 256, 48 << 20, dtype=np.uint8).tobytes())
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(data)], capture_output=True, text=True, check=True
    )
    advised, before, after, same, random_reads = out.stdout.split()
    assert int(advised) > 0
    assert float(before) - float(after) > 40  # MB
    assert same == "True"
    assert random_reads == "True"


HEAP_CHILD = """
import re
from sat_audio.memory import release_free_heap

def rss_mb():
    return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024

blocks = [bytearray(100_000) for _ in range(400)]  # 40 MB of heap, under malloc's mmap threshold
last = blocks.pop()  # stays: the freed blocks are not at the heap's top, which glibc trims itself
del blocks
before = rss_mb()
release_free_heap()
print(before - rss_mb(), len(last))
"""


def test_free_heap_goes_back_to_the_system() -> None:
    """40 MB freed in the middle of the heap stay resident until release_free_heap."""
    out = subprocess.run(
        [sys.executable, "-c", HEAP_CHILD], capture_output=True, text=True, check=True
    )
    released_mb, kept = out.stdout.split()
    assert float(released_mb) > 30
    assert kept == "100000"


HUGE_CHILD = """
import mmap, re
import numpy as np
from sat_audio.memory import weights_on_huge_pages

def kb(key, file="status"):
    return int(re.search(key + r":\\s+(\\d+) kB", open("/proc/self/" + file).read()).group(1))

def private_memory(mb):  # as malloc maps it (numpy's own arrays ask for huge pages themselves)
    area = mmap.mmap(-1, mb << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(area, np.float32)

weights = private_memory(32)
weights[:] = np.random.default_rng(0).random(weights.size, dtype=np.float32)  # every page
total = float(weights.sum(dtype=np.float64))
holes = private_memory(32)
holes[:: 2048] = 1.0  # every other page
before = kb("VmRSS")
moved = weights_on_huge_pages()
print(moved >> 20, kb("AnonHugePages", "smaps_rollup") >> 10, kb("VmRSS") - before,
      float(weights.sum(dtype=np.float64)) == total, float(holes.sum()) == 4096)
"""


def test_resident_weights_move_to_huge_pages_and_half_empty_memory_does_not_grow() -> None:
    """A fully written 32 MB array goes onto 2 MB pages with its values intact; an array with
    every other page untouched stays as it is, so the RSS does not grow. This machine's kernel
    (6.1 or later, transparent huge pages not 'never') is what CI runs on: a refusal fails here."""
    out = subprocess.run(
        [sys.executable, "-c", HUGE_CHILD], capture_output=True, text=True, check=True
    )
    moved_mb, huge_mb, grown_kb, weights_intact, holes_intact = out.stdout.split()
    assert int(moved_mb) >= 30, "the kernel refused MADV_COLLAPSE"
    assert int(huge_mb) >= 30
    assert int(grown_kb) < 1024  # the 16 MB of holes were not filled
    assert weights_intact == "True"
    assert holes_intact == "True"
