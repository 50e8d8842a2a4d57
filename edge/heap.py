"""Hand freed heap memory back to the operating system, so the agent's RSS follows its live data.

The agent allocates and frees many mid-sized numpy arrays (frames, windows, each batch's
order features); glibc keeps freed memory in its heaps for reuse, so after a burst the RSS
stays up although the data is gone: with 1,000 sensors of the default model, 24 MB of the
RSS was such free memory (3.5 MB at 100 sensors; docs/edge_footprint.md). :func:`trim` calls
glibc's ``malloc_trim(0)`` (about 1 ms when little is free, ~20 ms for 100 MB); the agent
runs it with each heartbeat. Where the C library is not glibc (musl, macOS) it does nothing.

>>> trim() in (True, False)
True
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable
from functools import cache

log = logging.getLogger(__name__)


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        fn: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: its allocator returns memory its own way
        log.debug("no glibc malloc_trim: heap trimming off")
        return None
    return fn


def trim() -> bool:
    """Release free heap memory to the OS (glibc ``malloc_trim(0)``); True if any was released."""
    fn = _malloc_trim()
    return bool(fn(0)) if fn is not None else False
