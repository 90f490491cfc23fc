"""Give memory freed after a load spike back to the operating system.

CPython returns freed objects to its own arenas and the C allocator (glibc's malloc) keeps
freed heap pages for reuse: after a spike of connections (TLS buffers, request objects) a
process stays at its peak size although the memory is free.  ``malloc_trim(0)`` returns
those free pages to the kernel.  On a C library without it this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path

_LIBC = ctypes.util.find_library("c")
_TRIM = getattr(ctypes.CDLL(_LIBC), "malloc_trim", None) if _LIBC else None
_STATUS = Path("/proc/self/status")


def resident_bytes() -> int:
    """This process's resident set size (0 where /proc is not available)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def release_free_memory() -> tuple[int, int]:
    """Trim the C heap (blocking, but ctypes lets go of the GIL: call it in a thread);
    returns the resident size before and after."""
    before = resident_bytes()
    if _TRIM is not None:
        _TRIM(0)
    return before, resident_bytes()
