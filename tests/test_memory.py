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
print(advised, before, after, total == again)
"""


def test_read_only_file_pages_are_released_and_read_back_intact(tmp_path: Path) -> None:
    """A 48 MB file only this child maps (pytest's own libraries are shared, so the kernel would
    keep them): its pages leave the RSS, and reading it again gives the same bytes."""
    data = tmp_path / "library.bin"
    data.write_bytes(np.random.default_rng(0).integers(0, 256, 48 << 20, dtype=np.uint8).tobytes())
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(data)], capture_output=True, text=True, check=True
    )
    advised, before, after, same = out.stdout.split()
    assert int(advised) > 0
    assert float(before) - float(after) > 40  # MB
    assert same == "True"
