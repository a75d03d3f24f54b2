"""Give the memory the C allocator freed back to the system, now and then.

glibc keeps memory that Python and rst have freed when it lies between blocks still in use, and
after rst frees its first large read buffer (a 4 MiB association buffer) it serves later ones of
that size from its heaps instead of fresh mappings (the "dynamic mmap threshold"). Abandoned
C-GETs showed it: memory in use stayed at 20 MB while resident memory grew by 50 MiB of freed
pages (docs/benchmarks.md, "Leaks"). Fixing the threshold (``MALLOC_MMAP_THRESHOLD_``) keeps
memory low but halves retrieve throughput, every PDV copy becoming a fresh mapping.

:func:`trim_periodically` instead calls glibc's ``malloc_trim(0)`` every
:data:`TRIM_INTERVAL` seconds on a worker thread: it returns every whole free page of every
arena to the kernel (``MADV_DONTNEED``) and costs a walk over the free lists — milliseconds, off
the trio thread, a few times a minute. Elsewhere than glibc (musl, macOS) there is no
``malloc_trim`` and the task returns at once.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable

import trio

from rst.bridge import run_sync

__all__ = ["TRIM_INTERVAL", "load_malloc_trim", "trim_periodically"]

log = logging.getLogger(__name__)

TRIM_INTERVAL = 10.0
"""Seconds between two ``malloc_trim`` calls."""

Trim = Callable[[int], int]


def load_malloc_trim() -> Trim | None:
    """glibc's ``malloc_trim``, or ``None`` where the C library has none."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


async def trim_periodically(
    *,
    interval: float = TRIM_INTERVAL,
    trim: Trim | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Call *trim* (glibc's ``malloc_trim`` by default) with 0 every *interval* seconds, on a
    worker thread, until cancelled. Returns at once when there is nothing to call."""
    trim = trim if trim is not None else load_malloc_trim()
    task_status.started()
    if trim is None:
        log.debug("no malloc_trim in this C library: freed memory is left to the allocator")
        return
    call = trim
    while True:
        await trio.sleep(interval)
        await run_sync(lambda: call(0))
