"""Responses whose body is produced by a task in the request's nursery.

The producer sends items into a small bounded channel; the response body reads from it, so the
producer runs only as fast as the client reads (backpressure). Bytes go through
:func:`start_body` and its :mod:`.byte_channel` (bounded by items and bytes, coalescing what
waits into larger HTTP chunks); small objects (QIDO-RS rows) through :func:`start_stream`, whose
consumer encodes them and may join the rows already waiting into one chunk the same way. The
first items are awaited before the response is returned: an error that happens before any data
(association rejected, nothing found) still becomes a proper status with a JSON body. An error
after the first byte can only break off the stream: the client sees an incomplete response,
never a complete-looking one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, NoReturn, TypeVar, cast

import trio

from rst.errors import RstError
from rst.groups import single
from rst.http.byte_channel import ByteReceiveChannel, ByteSendChannel, open_byte_channel
from rst.http.request_scope import StreamBrokenOff

__all__ = [
    "BYTES_AHEAD",
    "CHUNK",
    "ITEMS_AHEAD",
    "Body",
    "Stream",
    "StreamBrokenOff",
    "start_body",
    "start_stream",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
S = TypeVar("S")

ITEMS_AHEAD = 16
"""Items (part heads, instances, fragments, JSON objects) a producer may be ahead of the
client..."""
BYTES_AHEAD = 2 << 20
"""...and their bytes (one larger item passes alone)."""
CHUNK = 1 << 20
"""Bytes of waiting items joined into one HTTP chunk (see :mod:`.byte_channel`)."""


@dataclass(frozen=True)
class _Failure:
    error: BaseException


class Stream(Generic[T]):
    """The consumer side of an object stream (QIDO-RS rows, single bulk data values):
    prefetched items first, then the rest as the producer sends them. :meth:`receive_nowait`
    takes an item that is already waiting, so that a consumer can join what waits into one
    HTTP chunk without waiting for more.

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
        received: object = self._failure
        if received is None:
            try:
                received = await self._channel.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                self._channel.close()
                raise StopAsyncIteration from None
        if not isinstance(received, _Failure):
            return cast(T, received)
        self._failure = None
        self._channel.close()
        try:
            raise _broken_off(received.error)
        finally:
            del received  # this frame is in the error's traceback: no cycle through it

    def receive_nowait(self) -> T:
        """The next item if it is already here. Raises :class:`trio.WouldBlock` if none waits
        — also when the producer's failure waits: the next ``__anext__`` raises it, after the
        consumer has sent what it took — and :class:`trio.EndOfChannel` once the producer has
        finished and everything was taken."""
        if self._pending:
            return self._pending.pop()
        if self._failure is not None:
            raise trio.WouldBlock
        try:
            received = self._channel.receive_nowait()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            self._channel.close()
            raise trio.EndOfChannel from None
        if isinstance(received, _Failure):
            self._failure = received
            raise trio.WouldBlock
        return cast(T, received)


class Body:
    """A response body read from a :func:`~rst.http.byte_channel.open_byte_channel`: each
    chunk is what the channel gives (the items waiting, joined up to :data:`CHUNK`); *tail*
    gives the bytes that end the body once the producer has finished (a multipart close
    delimiter). A producer's failure breaks the body off after the data sent before it.

    A plain iterator class rather than an async generator, so that a response abandoned midway
    (client gone) leaves nothing for the garbage collector to finalize."""

    def __init__(self, channel: ByteReceiveChannel, tail: Callable[[], bytes] | None) -> None:
        self._channel = channel
        self._tail = tail

    def __aiter__(self) -> Body:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._channel.receive()
        except trio.EndOfChannel:
            self._channel.close()
            tail, self._tail = self._tail, None
            if tail is None:
                raise StopAsyncIteration from None
            return tail()
        except trio.ClosedResourceError:
            raise StopAsyncIteration from None
        except (Exception, BaseExceptionGroup) as error:  # the producer's, as it failed
            self._channel.close()
            raise _broken_off(error) from error


def _broken_off(error: BaseException) -> StreamBrokenOff:
    message = getattr(error, "message", str(error))
    log.error("response broken off: %s", message)
    broken = StreamBrokenOff(message)
    broken.__cause__ = error
    return broken


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


def _raise_before_data(error: BaseException) -> NoReturn:
    """Raise a producer's error before the first byte: an rst error as itself (its status),
    anything else as a 500 whose cause the log has."""
    try:
        if isinstance(error, RstError):
            raise error
        raise RstError("internal error in rst; the log has the details") from error
    finally:
        del error  # this frame is in the error's traceback: no cycle through it


async def _run_producer(
    produce: Callable[[S], Awaitable[None]],
    send: S,
    fail: Callable[[BaseException], Awaitable[None]],
) -> None:
    """Run ``produce(send)``; report its failure through *fail* (see :func:`_failure_of`)."""
    try:
        await produce(send)
    except trio.Cancelled:
        raise
    except (Exception, BaseExceptionGroup) as exc:
        error = _failure_of(exc)
        if error is None:
            raise
        try:
            await fail(error)
        finally:
            del error  # this frame is in its traceback: no cycle through it


async def start_stream(
    nursery: trio.Nursery,
    produce: Callable[[trio.MemorySendChannel[T]], Awaitable[None]],
    *,
    prefetch: int = 1,
    buffer: int = 1,
) -> Stream[T]:
    """Start ``produce(channel)`` in *nursery* (the request's); wait for its first *prefetch*
    items. For streams of objects (rows), bounded by count; bytes go through :func:`start_body`.

    Raises the producer's error if it fails before yielding *prefetch* items.
    """
    send, receive = trio.open_memory_channel[object](buffer)

    async def fail(error: BaseException) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await send.send(_Failure(error))

    async def run() -> None:
        async with send:
            await _run_producer(produce, cast(trio.MemorySendChannel[T], send), fail)

    nursery.start_soon(run)
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
                _raise_before_data(item.error)
            finally:
                del item  # this frame is in the error's traceback: no cycle through it
        prefetched.append(cast(T, item))
    return Stream(prefetched, receive, done)


async def start_body(
    nursery: trio.Nursery,
    produce: Callable[[ByteSendChannel], Awaitable[None]],
    *,
    items: int = ITEMS_AHEAD,
    ahead: int = BYTES_AHEAD,
    chunk: int = CHUNK,
    linger: float | None = None,
    tail: Callable[[], bytes] | None = None,
) -> Body:
    """Start ``produce(channel)`` in *nursery* (the request's), sending tuples of byte pieces
    into a channel of at most *items* items and *ahead* bytes, read as chunks of up to *chunk*
    bytes — with *linger*, a chunk not yet full waits for more up to *linger* seconds after
    its first byte was sent (see :mod:`.byte_channel`); wait until its first item.

    Raises the producer's error if it fails before sending anything.
    """
    send, receive = open_byte_channel(items, ahead, chunk=chunk, linger=linger)

    async def fail(error: BaseException) -> None:
        send.fail(error)

    async def run() -> None:
        async with send:
            await _run_producer(produce, send, fail)

    nursery.start_soon(run)
    try:
        await receive.wait_ready()
    except (Exception, BaseExceptionGroup) as error:
        receive.close()
        try:
            _raise_before_data(error)
        finally:
            del error
    return Body(receive, tail)
