"""Work off the trio thread: the one place where rst hands blocking calls (pydicom decoding and
encoding, file and database I/O) to a worker thread.

:func:`run_sync` never abandons a thread on cancellation: the caller's cancellation waits for
the call to return, so a thread never outlives the task that started it (callers keep the calls
short).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio

__all__ = ["run_sync"]

R = TypeVar("R")


async def run_sync(fn: Callable[[], R]) -> R:
    """Run the blocking *fn* in a worker thread and return its result.

    Cancellation waits for *fn* to return: callers must make *fn* short or wake it themselves.
    """
    return await trio.to_thread.run_sync(fn, abandon_on_cancel=False)
