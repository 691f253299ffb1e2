"""How the listener's memory sits in the system: given back once started, weights on huge pages.

Loading frees large buffers (a checkpoint's state dict, a parsed ONNX file) in many pieces, which
glibc keeps mapped; and importing torch or onnxruntime runs initialisers across most of their
code, which stays resident although a running listener never executes it again. Together that is
tens of MB of a small home server's memory. Scoring's memory is not given back: each chunk
needs it again, and pages given back fault in anew at the next chunk (1000 per 2 s chunk, 2-3 ms,
for no lower peak). The weights, which every chunk reads in full, go on 2 MB pages.
"""

import array
import ctypes
import ctypes.util
import functools
import mmap
import sys
from collections.abc import Callable
from typing import BinaryIO

MADV_RANDOM = 1
"""madvise advice: a page that faults back in comes alone, without the pages around it."""
MADV_PAGEOUT = 21
"""madvise advice (Linux 5.4+): reclaim these pages now; an older kernel answers EINVAL."""
MADV_COLLAPSE = 25
"""madvise advice (Linux 6.1+): back this range with transparent huge pages now."""
HUGE_PAGE = 2 << 20
MOSTLY = 3 / 4
"""The share of a 2 MB stretch resident for weights_on_huge_pages to move it."""


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, looked up once: find_library runs ldconfig, a process of its own."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


def _madvise(libc: ctypes.CDLL) -> Callable[[int, int, int], int]:
    madvise = libc.madvise
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    madvise.restype = ctypes.c_int
    return madvise


def release_free_heap() -> None:
    """malloc_trim(0) where the C library is glibc; nothing elsewhere (musl has none)."""
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim(0)


def release_startup_code() -> int:
    """Ask the kernel to reclaim this process's pages of read-only files: library code and data.

    Called once started, and again after the first chunk, it drops what only start-up touched.
    Pages the listener still runs fault back in, from the page cache or the disk, and without
    read-around (MADV_RANDOM: 1-1.5 MB less of onnxruntime's and Python's code comes back with
    them; Linux 6.18 still reads ahead around a fault in code, but into the page cache, not this
    process); pages another process maps are left where they are. Of onnxruntime's 19 MB resident
    code, what a 2 s chunk runs comes back: 7.6 MB. Returns how many mappings were advised (0
    where unsupported).
    """
    libc = _libc()
    if libc is None:
        return 0
    madvise = _madvise(libc)
    advised = 0
    for start, end, permissions, path in _mappings():
        if path.startswith("/") and "w" not in permissions:  # a file never written to
            madvise(start, end - start, MADV_RANDOM)
            advised += madvise(start, end - start, MADV_PAGEOUT) == 0
    return advised


def weights_on_huge_pages() -> int:
    """Move the anonymous memory a model was just loaded into onto 2 MB pages; returns bytes moved.

    Every chunk reads all the weights (22 MB for SAT-T). On 4 KB pages each chunk misses the TLB
    on thousands of them; on 2 MB pages, on a dozen. The ONNX scorer calls this once loaded (the
    torch path, slower elsewhere, gains nothing measurable at 2 s chunks).

    Only 2 MB stretches at least MOSTLY resident move: what they fill in is at most a quarter of
    them (holes malloc_trim left between weights, which later allocations fill anyway). The
    mappings are not marked for huge pages, so later growth stays on small ones. A kernel before
    6.1 or without transparent huge pages refuses: nothing changes.
    """
    libc = _libc()
    if libc is None:
        return 0
    madvise = _madvise(libc)
    moved = 0
    try:
        with open("/proc/self/pagemap", "rb") as pagemap:
            for start, end, permissions, path in _mappings():
                if permissions != "rw-p" or path not in ("", "[heap]"):
                    continue  # private writable anonymous memory only, the heap among it
                first = -(-start // HUGE_PAGE) * HUGE_PAGE  # 2 MB-aligned stretches inside
                for stretch in range(first, end - HUGE_PAGE + 1, HUGE_PAGE):
                    if _resident(pagemap, stretch) >= MOSTLY and not madvise(
                        stretch, HUGE_PAGE, MADV_COLLAPSE
                    ):
                        moved += HUGE_PAGE
    except OSError:  # a kernel that hides pagemap: the rest stays on small pages
        pass
    return moved


def _mappings() -> list[tuple[int, int, str, str]]:
    """(start, end, permissions, path or "") of this process's mappings, from /proc/self/maps."""
    found = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()  # range, permissions, offset, device, inode, [path]
            start, end = (int(address, 16) for address in fields[0].split("-"))
            found.append((start, end, fields[1], fields[5] if len(fields) > 5 else ""))
    return found


def _resident(pagemap: BinaryIO, address: int) -> float:
    """The share of the 2 MB from address in memory (bit 63 of each page's pagemap entry)."""
    pages = HUGE_PAGE // mmap.PAGESIZE
    pagemap.seek(address // mmap.PAGESIZE * 8)
    return sum(entry >> 63 for entry in array.array("Q", pagemap.read(pages * 8))) / pages
