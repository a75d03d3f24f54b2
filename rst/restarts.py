"""When the supervisor starts a worker again after it died: the back-off of one worker slot.

rst's workers are crash-only: a worker that dies (a bug, the OOM killer, a stray ``kill``) is
replaced in its slot and the gateway goes on. The first crash is answered at once — most are
one-off, and until the slot is filled again the C-STOREs of its C-MOVEs find nobody. A worker
that dies again soon after starting is meeting the same cause, and starting it in a tight loop
would take the cores the other workers need, so each further crash in a row doubles the wait,
from :data:`RESTART_BACKOFF_FIRST` up to :data:`RESTART_BACKOFF_MAX`. A worker that stayed up
:data:`STABLE_AFTER` seconds has recovered: its next crash counts as a first one again.

:data:`CRASH_LOOP_CRASHES` crashes within :data:`CRASH_LOOP_WINDOW` seconds make a crash loop,
which the supervisor logs as an error until the slot recovers. It never gives up on a slot: only
a signal stops the gateway, and a slot whose cause has gone (memory freed, a PACS fixed) comes
back by itself.

No I/O and no clock: times are arguments (seconds on one monotonic clock), so the schedule is
tested without processes.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

__all__ = [
    "CRASH_LOOP_CRASHES",
    "CRASH_LOOP_WINDOW",
    "RESTART_BACKOFF_FIRST",
    "RESTART_BACKOFF_MAX",
    "STABLE_AFTER",
    "Restart",
    "RestartSchedule",
    "backoff",
]

RESTART_BACKOFF_FIRST = 0.5
"""Seconds before the second start in a row; each further crash doubles it."""
RESTART_BACKOFF_MAX = 30.0
"""The longest wait between a crash and the next start."""
STABLE_AFTER = 60.0
"""A worker up this many seconds has recovered: its crash is a first one again."""
CRASH_LOOP_CRASHES = 5
CRASH_LOOP_WINDOW = 60.0
"""This many crashes of one slot within this many seconds: a crash loop, logged as an error."""


@dataclass(frozen=True)
class Restart:
    """What to do after a crash."""

    delay: float
    """Seconds to wait before starting the slot's next worker."""
    crashes: int
    """Crashes in a row, this one included (1: the worker had been up long enough)."""
    looping: bool
    """The slot is in a crash loop: worth an error in the log, not just a warning."""


class RestartSchedule:
    """The crash history of one worker slot, and when to start its next worker."""

    def __init__(self) -> None:
        self._crashes = 0  # in a row
        self._recent: deque[float] = deque(maxlen=CRASH_LOOP_CRASHES)  # when they happened
        self._looping = False

    def crashed(self, started: float, now: float) -> Restart:
        """The worker started at *started* died at *now*: when to start the next one."""
        if now - started >= STABLE_AFTER:
            self._crashes = 0
            self._recent.clear()
            self._looping = False
        self._crashes += 1
        self._recent.append(now)
        if len(self._recent) == CRASH_LOOP_CRASHES and now - self._recent[0] <= CRASH_LOOP_WINDOW:
            self._looping = True  # until a worker stays up: the cause is still there
        return Restart(backoff(self._crashes), self._crashes, self._looping)


def backoff(crashes: int) -> float:
    """Seconds to wait after *crashes* crashes in a row: 0, 0.5, 1, 2, 4, … up to 30."""
    if crashes <= 1:
        return 0.0
    doublings = min(crashes - 2, 64)  # far past the cap, and no overflow after many crashes
    return min(math.ldexp(RESTART_BACKOFF_FIRST, doublings), RESTART_BACKOFF_MAX)
