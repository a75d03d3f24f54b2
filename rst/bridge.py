"""Every crossing between trio and threads.

pynetdicom is built on threads: blocking calls (``associate``, ``send_c_find`` generators,
``release``) and event handlers that run on its own threads. This module is the only place
that moves work across that border, so the rules live in one place:

* trio → thread: :func:`run_sync` never abandons a thread on cancellation (an abandoned
  association thread would leak the association); cancellation is made to reach the thread
  by the caller's cleanup (C-CANCEL, abort), see :func:`iterate_in_thread`.
* thread → trio: :class:`Portal` carries the trio token captured when the service started, so
  pynetdicom's own threads can hand work back to the event loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

import trio

from rst.groups import collapse

__all__ = ["Portal", "StreamControl", "iterate_in_thread", "run_sync"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


async def run_sync(fn: Callable[[], R], limiter: trio.CapacityLimiter | None = None) -> R:
    """Run the blocking *fn* in a worker thread and return its result.

    Cancellation waits for *fn* to return: callers must make *fn* short or wake it themselves.
    """
    return await trio.to_thread.run_sync(fn, limiter=limiter, abandon_on_cancel=False)


class Portal:
    """Lets threads that trio did not start (pynetdicom's handler threads) call into trio."""

    def __init__(self, token: trio.lowlevel.TrioToken | None = None) -> None:
        self.token = token or trio.lowlevel.current_trio_token()

    def run(self, afn: Callable[..., Awaitable[R]], *args: Any) -> R:
        """Run ``await afn(*args)`` in trio and block this thread until it finishes."""
        return trio.from_thread.run(afn, *args, trio_token=self.token)

    def run_sync(self, fn: Callable[..., R], *args: Any) -> R:
        return trio.from_thread.run_sync(fn, *args, trio_token=self.token)


class StreamControl(Generic[T]):
    """Given to a thread producer: ``emit`` hands one item to trio and blocks while the consumer
    is busy (backpressure). Once the consumer has gone, ``emit`` returns ``False`` at once and
    the producer should finish as quickly as it can (after a C-CANCEL it keeps draining the
    PACS's final responses so that the association can still be released cleanly)."""

    def __init__(self, send: trio.MemorySendChannel[T], token: trio.lowlevel.TrioToken) -> None:
        self._send = send
        self._token = token
        self._gone = threading.Event()

    @property
    def consumer_gone(self) -> bool:
        return self._gone.is_set()

    def emit(self, item: T) -> bool:
        if self._gone.is_set():
            return False
        try:
            # Called from a thread that trio.to_thread started: this runs in the host task,
            # so cancelling that task raises Cancelled here, which means the same as a
            # consumer that has gone.
            trio.from_thread.run(self._send.send, item, trio_token=self._token)
        except (
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            trio.Cancelled,
            trio.RunFinishedError,
        ):
            self._gone.set()
            return False
        return True

    def mark_gone(self) -> None:
        self._gone.set()


@asynccontextmanager
async def iterate_in_thread(
    produce: Callable[[StreamControl[T]], None],
    *,
    interrupt: Callable[[], None],
    force_stop: Callable[[], None],
    grace: float,
    limiter: trio.CapacityLimiter | None = None,
) -> AsyncIterator[trio.MemoryReceiveChannel[T]]:
    """Run the blocking producer ``produce(control)`` in a thread; yield a channel of its items.

    The channel is unbuffered, so the producer advances only as fast as the consumer reads.
    When the body of the ``async with`` ends early — the consumer broke off, raised, or was
    cancelled — the producer is stopped under a shielded scope: ``interrupt()`` asks it to
    end (a C-CANCEL), and if the thread has not returned after *grace* seconds,
    ``force_stop()`` must make it return (abort the association and wake the thread).
    The exit therefore never waits much longer than *grace* for the thread, and never leaks it.
    """
    send, receive = trio.open_memory_channel[T](0)
    control = StreamControl(send, trio.lowlevel.current_trio_token())
    finished = trio.Event()
    failure: list[BaseException] = []

    def worker() -> None:
        try:
            produce(control)
        except BaseException as exc:  # handed to the trio side below
            failure.append(exc)

    async def run_worker() -> None:
        try:
            await run_sync(worker, limiter)
        finally:
            finished.set()
            send.close()

    with collapse():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_worker)
            try:
                yield receive
            finally:
                if not finished.is_set():
                    with trio.CancelScope(shield=True):
                        control.mark_gone()
                        receive.close()
                        try:
                            await run_sync(interrupt)
                        except Exception:  # e.g. the association just went away
                            log.warning("could not interrupt the producer thread", exc_info=True)
                        with trio.move_on_after(grace):
                            await finished.wait()
                        if not finished.is_set():
                            await run_sync(force_stop)
                            await finished.wait()
    if failure:
        # Taken out of the list: the error's traceback holds the worker's frame, and that
        # frame the list (a reference cycle).
        error = failure.pop()
        try:
            raise error
        finally:
            del error
