"""A bounded channel of byte pieces whose receiver takes them as few, larger chunks.

The one streaming seam between a response's producer and its body: ``open_byte_channel``
returns a send end and a receive end, in the manner of ``trio.open_memory_channel``.

* **Bounded by items and by bytes.** ``send`` waits while *max_items* items wait, or while the
  item would take the bytes waiting past *max_bytes*. An item larger than *max_bytes* still
  passes, alone (once nothing else waits), so no item size deadlocks; at most
  ``max(max_bytes, one item)`` bytes are ever buffered.
* **Coalescing.** Each item is a tuple of pieces (a part head with its instance, say).
  ``receive`` returns the next item's pieces joined with the items already waiting, up to
  *chunk* bytes (more if one item is larger). A single piece is returned without a copy. By
  default it never waits for more to join; with *linger* it waits, while the chunk is not full
  (and the buffer has room for more), up to *linger* seconds after the first byte it would
  return was sent — for a body a client reads only as a whole (a JSON array), whose producer
  sends many small items a few milliseconds apart: one chunk per item would cost far more
  than the wait. Each chunk of a response body costs quart, hypercorn and h11 a
  round of Python, far more than copying a few hundred kilobytes: when the client is the slow
  side, chunks grow and their number falls.
* **Ends like trio's memory channels.** Closing the send end makes ``receive`` raise
  ``trio.EndOfChannel`` once the buffer is drained; closing the receive end makes ``send``
  raise ``trio.BrokenResourceError``; using an end after closing it raises
  ``trio.ClosedResourceError``. One addition: ``fail(error)`` closes the send end so that the
  receiver gets *error* raised, once, after the items sent before it — a producer's failure
  reaches the response in order, after the data it did send.

One task sends and one receives (a producer and a response body); several senders are allowed
but their items interleave as their sends complete.
"""

from __future__ import annotations

from collections import deque
from types import TracebackType

import trio
from trio.lowlevel import ParkingLot

__all__ = ["ByteReceiveChannel", "ByteSendChannel", "open_byte_channel"]


class _State:
    __slots__ = (
        "chunk",
        "failure",
        "first_at",
        "items",
        "linger",
        "max_bytes",
        "max_items",
        "receive_closed",
        "receivers",
        "send_closed",
        "senders",
        "size",
        "wanted",
    )

    def __init__(self, max_items: int, max_bytes: int, chunk: int, linger: float | None) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.chunk = chunk
        self.linger = linger
        self.first_at = 0.0
        """When the oldest waiting item was sent (kept only with *linger*)."""
        self.wanted = 1
        """The bytes waiting that wake a parked receiver (a full buffer does too)."""
        self.items: deque[tuple[tuple[bytes, ...], int]] = deque()
        self.size = 0
        self.send_closed = False
        self.receive_closed = False
        self.failure: BaseException | None = None
        self.senders = ParkingLot()
        self.receivers = ParkingLot()


def open_byte_channel(
    max_items: int, max_bytes: int, *, chunk: int, linger: float | None = None
) -> tuple[ByteSendChannel, ByteReceiveChannel]:
    """A channel holding at most *max_items* items and *max_bytes* bytes (one larger item
    passes alone), received in chunks of up to *chunk* bytes; with *linger*, a chunk that is
    not full waits for more up to *linger* seconds after its first byte was sent."""
    if max_items < 1 or max_bytes < 1 or chunk < 1:
        raise ValueError("max_items, max_bytes and chunk must be positive")
    if linger is not None and linger < 0:
        raise ValueError("linger must not be negative")
    state = _State(max_items, max_bytes, chunk, linger)
    return ByteSendChannel(state), ByteReceiveChannel(state)


class ByteSendChannel:
    """The producer's end: ``await send((head, data))``, then close (or :meth:`fail`)."""

    def __init__(self, state: _State) -> None:
        self._state = state

    @property
    def buffered(self) -> int:
        """Bytes sent that the receiver has not taken yet."""
        return self._state.size

    async def send(self, item: tuple[bytes, ...]) -> None:
        """Queue *item*, waiting while the channel is full (by items or by bytes).

        :raises trio.BrokenResourceError: the receive end is closed.
        :raises trio.ClosedResourceError: this end is closed."""
        await trio.lowlevel.checkpoint_if_cancelled()
        state = self._state
        size = sum(map(len, item))
        while True:
            if state.send_closed:
                raise trio.ClosedResourceError("the send end is closed")
            if state.receive_closed:
                raise trio.BrokenResourceError("the receive end is closed")
            if not state.items or (
                len(state.items) < state.max_items and state.size + size <= state.max_bytes
            ):
                break
            if state.receivers:  # a lingering receiver takes what waits now
                state.receivers.unpark_all()
            await state.senders.park()
        if not state.items and state.linger is not None:
            state.first_at = trio.current_time()
        state.items.append((item, size))
        state.size += size
        if state.receivers and (state.size >= state.wanted or len(state.items) >= state.max_items):
            state.receivers.unpark_all()
        await trio.lowlevel.cancel_shielded_checkpoint()

    def fail(self, error: BaseException) -> None:
        """Close this end; the receiver gets *error* after the items already sent."""
        if not self._state.send_closed:
            self._state.failure = error
        self.close()

    def close(self) -> None:
        state = self._state
        state.send_closed = True
        state.senders.unpark_all()
        state.receivers.unpark_all()

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> ByteSendChannel:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class ByteReceiveChannel:
    """The response body's end: each ``receive`` is one HTTP chunk."""

    def __init__(self, state: _State) -> None:
        self._state = state

    async def wait_ready(self) -> bool:
        """Wait until :meth:`receive` would not block: ``True`` if data waits, ``False`` if the
        channel has ended; the producer's failure is raised if it comes next."""
        state = self._state
        while not state.items:
            if state.receive_closed:
                raise trio.ClosedResourceError("the receive end is closed")
            if state.send_closed:
                self._raise_failure()
                return False
            await state.receivers.park()
        await trio.lowlevel.checkpoint()
        return True

    async def receive(self) -> bytes:
        """The next item's bytes, joined with the items already waiting up to the chunk size.

        :raises trio.EndOfChannel: the send end is closed and everything has been taken.
        :raises trio.ClosedResourceError: this end is closed.
        Raises the error the producer passed to :meth:`ByteSendChannel.fail`, once, in its
        place among the items."""
        await trio.lowlevel.checkpoint_if_cancelled()
        state = self._state
        while not state.items:
            if state.receive_closed:
                raise trio.ClosedResourceError("the receive end is closed")
            if state.send_closed:
                self._raise_failure()
                raise trio.EndOfChannel
            await state.receivers.park()
        if state.linger is not None:
            await self._linger()
        items = state.items
        first, size = items.popleft()
        if not items or size >= state.chunk:
            chunk = first[0] if len(first) == 1 else b"".join(first)
        else:
            pieces = list(first)
            while items and size < state.chunk:
                more, more_size = items.popleft()
                pieces += more
                size += more_size
            chunk = b"".join(pieces)
        state.size -= size
        if state.senders:
            state.senders.unpark_all()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return chunk

    async def _linger(self) -> None:
        """Wait until a chunk's worth waits (or the buffer is full — a sender waits for room —
        or the send end closed), at most *linger* seconds after the oldest waiting item came."""
        state = self._state
        full = min(state.chunk, state.max_bytes)
        if state.size >= full or len(state.items) >= state.max_items or state.send_closed:
            return
        assert state.linger is not None
        with trio.move_on_at(state.first_at + state.linger):
            state.wanted = full
            try:
                while (
                    state.size < full
                    and len(state.items) < state.max_items
                    and not (state.senders or state.send_closed or state.receive_closed)
                ):
                    await state.receivers.park()
            finally:
                state.wanted = 1
        if state.receive_closed:
            raise trio.ClosedResourceError("the receive end is closed")

    def _raise_failure(self) -> None:
        state = self._state
        error, state.failure = state.failure, None
        if error is not None:
            try:
                raise error
            finally:
                del error  # this frame is in its traceback: no cycle through it

    def close(self) -> None:
        """Stop receiving: the sender's next ``send`` raises ``trio.BrokenResourceError``;
        what waits is dropped."""
        state = self._state
        state.receive_closed = True
        state.items.clear()
        state.size = 0
        state.failure = None
        state.senders.unpark_all()
        state.receivers.unpark_all()

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    def __aiter__(self) -> ByteReceiveChannel:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> ByteReceiveChannel:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
