"""Responses whose body is produced by a task in the request's nursery.

The producer sends items into a small bounded channel; the response body reads from it, so the
producer runs only as fast as the client reads (backpressure). The first items are read before
the response is returned: an error that happens before any data (association rejected, nothing
found) still becomes a proper status with a JSON body. An error after the first byte can only
break off the stream: the client sees an incomplete response, never a complete-looking one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

import trio

from rst.errors import RstError
from rst.groups import single
from rst.http.request_scope import StreamBrokenOff, request_nursery

__all__ = ["ByteBudget", "Coalesced", "Stream", "StreamBrokenOff", "start_stream"]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class _Failure:
    error: BaseException


class Stream(Generic[T]):
    """The consumer side: prefetched items first, then the rest as the producer sends them.

    A plain iterator class rather than an async generator, so that a response abandoned midway
    (client gone) leaves nothing for the garbage collector to finalize."""

    def __init__(
        self, prefetched: list[T], channel: trio.MemoryReceiveChannel[object], done: bool
    ) -> None:
        self.prefetched = prefetched
        self._pending = list(reversed(prefetched))
        self._channel = channel
        self._failure: _Failure | None = None
        if done:
            channel.close()

    def __aiter__(self) -> Stream[T]:
        return self

    async def __anext__(self) -> T:
        if self._pending:
            return self._pending.pop()
        if self._failure is None:
            try:
                received = await self._channel.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                self._channel.close()
                raise StopAsyncIteration from None
            if not isinstance(received, _Failure):
                return cast(T, received)
            self._failure = received
        self._channel.close()
        message = getattr(self._failure.error, "message", str(self._failure.error))
        log.error("response broken off: %s", message)
        raise StreamBrokenOff(message) from self._failure.error

    def ready(self) -> T | None:
        """The next item if the producer has already sent it, else ``None`` (also at the end,
        or before an error, which the next :meth:`__anext__` raises)."""
        if self._pending:
            return self._pending.pop()
        if self._failure is not None:
            return None
        try:
            received = self._channel.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            return None
        if isinstance(received, _Failure):
            self._failure = received
            return None
        return cast(T, received)


class ByteBudget:
    """Bytes a producer has sent that the response body has not taken yet, bounded.

    The request channel bounds the number of items; this bounds their size, so that a producer
    of large items (a decompressed multi-frame instance of hundreds of MB) does not run several
    of them ahead of the client. An item larger than the whole budget still passes, alone."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.pending = 0
        self._taken = trio.Event()

    async def send(
        self, channel: trio.MemorySendChannel[tuple[bytes, ...]], item: tuple[bytes, ...]
    ) -> None:
        """Send *item* into *channel* once the bytes waiting leave room for it."""
        size = sum(map(len, item))
        while self.pending and self.pending + size > self.limit:
            await self._taken.wait()
        self.pending += size
        await channel.send(item)

    def taken(self, size: int) -> None:
        """The response has taken *size* bytes out of the channel."""
        self.pending -= size
        self._taken.set()
        self._taken = trio.Event()


class Coalesced:
    """A stream of byte pieces sent as few, larger HTTP chunks.

    Each chunk of a response body costs quart, hypercorn and h11 a round of Python (an ASGI
    message, an h11 event, a ``send``): far more than copying a few hundred kilobytes. So each
    item — a tuple of pieces, e.g. a part head and its instance — becomes one chunk, and when the
    client reads slower than the producer sends (the producer is ahead by the channel's buffer)
    the items waiting join it, up to *budget* bytes (more if one item is larger). Nothing waits
    to be joined: an item alone is sent at once, and a single piece is sent without a copy.
    *tail* gives the bytes that end the body (called once the producer has finished)."""

    def __init__(
        self,
        stream: Stream[tuple[bytes, ...]],
        *,
        budget: int,
        tail: Callable[[], bytes] | None = None,
        sent: ByteBudget | None = None,
    ) -> None:
        """*sent*: the producer's :class:`ByteBudget`, told what this takes."""
        self._stream = stream
        self._budget = budget
        self._tail = tail
        self._sent = sent

    def __aiter__(self) -> Coalesced:
        return self

    async def __anext__(self) -> bytes:
        try:
            pieces = list(await self._stream.__anext__())
        except StopAsyncIteration:
            tail, self._tail = self._tail, None
            if tail is None:
                raise
            return tail()
        size = sum(map(len, pieces))
        while size < self._budget and (more := self._stream.ready()) is not None:
            pieces += more
            size += sum(map(len, more))
        if self._sent is not None:
            self._sent.taken(size)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def _failure_of(exc: BaseException) -> BaseException | None:
    """What a failed producer reports to its response: the rst error it raised, or — for
    anything else, a bug or a library failing on a peer's data — the exception itself, logged
    here with its traceback. Either way it stays in this request (an error response before the
    first byte, a broken-off stream after it). ``None`` for a group of cancellations alone,
    which the caller re-raises (raising it here would keep it in this frame, which its
    traceback holds: a reference cycle)."""
    if isinstance(exc, BaseExceptionGroup):
        _, rest = exc.split(trio.Cancelled)
        if rest is None:
            return None
        leaf = single(rest)
        exc = leaf if leaf is not None else rest
    if not isinstance(exc, RstError):
        log.error("unexpected error while producing a response", exc_info=exc)
    return exc


async def start_stream(
    produce: Callable[[trio.MemorySendChannel[T]], Awaitable[None]],
    *,
    prefetch: int = 1,
    buffer: int = 1,
) -> Stream[T]:
    """Start ``produce(channel)`` in the request's nursery; wait for its first *prefetch* items.

    Raises the producer's error if it fails before yielding *prefetch* items.
    """
    send, receive = trio.open_memory_channel[object](buffer)

    async def run() -> None:
        async with send:
            try:
                await produce(cast(trio.MemorySendChannel[T], send))
            except trio.Cancelled:
                raise
            except (Exception, BaseExceptionGroup) as exc:
                error = _failure_of(exc)
                if error is None:
                    raise
                try:
                    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        await send.send(_Failure(error))
                finally:
                    del error  # this frame is in its traceback: no cycle through it

    request_nursery().start_soon(run)
    prefetched: list[T] = []
    done = False
    while len(prefetched) < prefetch:
        try:
            item = await receive.receive()
        except trio.EndOfChannel:
            done = True
            break
        if isinstance(item, _Failure):
            receive.close()
            try:
                if isinstance(item.error, RstError):
                    raise item.error
                raise RstError("internal error in rst; the log has the details") from item.error
            finally:
                del item  # this frame is in the error's traceback: no cycle through it
        prefetched.append(cast(T, item))
    return Stream(prefetched, receive, done)
