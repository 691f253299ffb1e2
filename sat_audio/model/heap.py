"""Give the heap's free pages back to the system after loading a model.

Loading frees large buffers (a checkpoint's state dict, a parsed ONNX file) in many pieces;
glibc keeps them mapped, so a listener would carry tens of MB it never touches again.
"""

import ctypes
import ctypes.util
import sys


def release_free_heap() -> None:
    """malloc_trim(0) where the C library is glibc; nothing elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # musl and others have no malloc_trim
        return
    trim(0)
