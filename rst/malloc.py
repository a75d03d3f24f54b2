"""glibc's malloc, told to give large blocks back.

rst allocates many large, short-lived blocks: each association's 4 MiB read buffer, each
instance's bytes (hundreds of KiB), each PDV's copy (up to a PDU). glibc serves a block of at
least ``M_MMAP_THRESHOLD`` (128 KiB at start) with its own ``mmap`` and unmaps it when freed —
but the first time such a block is freed it raises the threshold to that block's size (the
*dynamic* threshold, up to 32 MiB). From then on the 4 MiB buffers and the instances come from
the heaps, where a freed block in the middle stays resident: resident memory grows by tens of
MiB with nothing in use (measured with WADO-RS retrieves by C-GET abandoned one after another:
+57 MiB after 1,000, malloc holding 101 MB free for 20 MB in use; with the threshold fixed at
128 KiB, +0.8 MiB, 1.7 MB free).

Setting the threshold fixes it (and turns the dynamic adjustment off):
:func:`fix_mmap_threshold` keeps glibc's own start value for good, before rst runs.
``MALLOC_MMAP_THRESHOLD_`` (or ``glibc.malloc.mmap_threshold`` in ``GLIBC_TUNABLES``) in the
environment wins: then rst leaves it alone. Other C libraries (musl) are left alone too.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

__all__ = ["MMAP_THRESHOLD", "fix_mmap_threshold"]

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 128 * 1024
"""glibc's initial ``M_MMAP_THRESHOLD``: kept, instead of letting freed blocks raise it."""
_M_MMAP_THRESHOLD = -3  # <malloc.h>


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at *threshold* bytes; whether it was set (not on another C
    library, nor when the environment sets malloc's tunables)."""
    if not sys.platform.startswith("linux") or _set_by_environment():
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 — glibc only (musl has no mallopt of this kind)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(_M_MMAP_THRESHOLD, threshold))
    log.debug("glibc malloc: mmap threshold fixed at %d bytes: %s", threshold, done)
    return done


def _set_by_environment() -> bool:
    """Whether the environment sets the threshold (glibc read it at start-up)."""
    return "MALLOC_MMAP_THRESHOLD_" in os.environ or "glibc.malloc.mmap_threshold" in (
        os.environ.get("GLIBC_TUNABLES", "")
    )
