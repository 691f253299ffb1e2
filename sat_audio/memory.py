"""Give memory back to the system once the listener has started.

Loading frees large buffers (a checkpoint's state dict, a parsed ONNX file) in many pieces, which
glibc keeps mapped; and importing torch or onnxruntime runs initialisers across most of their
code, which stays resident although a running listener never executes it again. Together that is
tens of MB of a small home server's memory.
"""

import ctypes
import ctypes.util
import sys

MADV_PAGEOUT = 21
"""madvise advice (Linux 5.4+): reclaim these pages now; an older kernel answers EINVAL."""


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


def release_free_heap() -> None:
    """malloc_trim(0) where the C library is glibc; nothing elsewhere (musl has none)."""
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim(0)


def release_startup_code() -> int:
    """Ask the kernel to reclaim this process's pages of read-only files: library code and data.

    Called once everything has started, it drops what only start-up touched. Pages the listener
    still runs fault back in once, from the page cache or the disk; pages another process maps
    are left where they are. Returns how many mappings were advised (0 where unsupported).
    """
    libc = _libc()
    if libc is None:
        return 0
    madvise = libc.madvise
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    madvise.restype = ctypes.c_int
    advised = 0
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            # address range, permissions, offset, device, inode, path: a file never written to
            if len(fields) < 6 or not fields[5].startswith("/") or "w" in fields[1]:
                continue
            start, end = (int(address, 16) for address in fields[0].split("-"))
            advised += madvise(start, end - start, MADV_PAGEOUT) == 0
    return advised
