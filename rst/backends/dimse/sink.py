"""Where received instances wait for the HTTP response that asked for them.

A sink holds at most ``capacity`` instances in memory. A producer (the receiver's task for a
C-MOVE association, or the C-GET association's task) that finds it full
waits — that wait is the backpressure that slows the PACS down to the client's pace. But a PACS
only waits so long for a C-STORE response (Orthanc fails the whole C-MOVE after its
``DicomScuTimeout``, 10 s by default), so after ``stall_timeout`` the producer writes the
instance to a spool file instead and answers the PACS. The spool is an anonymous temporary file
(nothing to clean up even after a crash) capped at ``spool_max_bytes``; memory stays flat
whatever the study size. Instances come out in the order they arrived.

A large instance need not be held whole: its producer may hand it over while it is still
arriving (:meth:`InstanceSink.open_body`), its later fragments following through a
:class:`Fragments` queue — the same bounded, spilling FIFO, sharing the request's spool.
"""

from __future__ import annotations

import collections
import logging
import os
import tempfile
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Generic, TypeVar

import trio

from rst.bridge import run_sync
from rst.dicom.statuses import NOT_AUTHORIZED, OUT_OF_RESOURCES, SUCCESS
from rst.errors import BackendTimeout, IncompleteRetrieve
from rst.groups import copy_of
from rst.services.protocols import Instance

if TYPE_CHECKING:
    from prometheus_client import Gauge

__all__ = ["Fragments", "Instance", "InstanceSink", "SinkClosed", "SpoolFull", "hand_off"]

log = logging.getLogger(__name__)

T = TypeVar("T")

BODY_CAPACITY = 8
"""Fragments of a streamed instance held in memory (each at most one PDU, ≤ 1 MiB)."""


class SinkClosed(Exception):
    """The request that owned the sink has ended; the instance is not wanted any more."""


class SpoolFull(Exception):
    """The request's spool reached ``spool_max_bytes``."""


class _Spool:
    """The anonymous file one request's overflow goes to (created on first use), capped.

    Written from trio's worker threads: only the descriptor is kept, and ``pread``/``pwrite``
    are safe across threads. *held* (``rst_spool_bytes``) grows with each write — only
    overflow reaches here, never the in-memory path — and loses the file's bytes when it is
    closed."""

    def __init__(self, directory: str | None, max_bytes: int, held: Gauge | None = None) -> None:
        self._directory = directory
        self._max = max_bytes
        self._held = held
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._end = 0
        self._closed = False

    def write(self, data: bytes) -> int:
        """Append *data*; its offset. Blocking."""
        with self._lock:
            if self._closed:
                raise SinkClosed
            if self._end + len(data) > self._max:
                raise SpoolFull(
                    f"spool limit of {self._max} bytes reached; the HTTP client reads "
                    "too slowly for this study"
                )
            if self._fd is None:
                handle = tempfile.TemporaryFile(dir=self._directory, prefix="rst-spool-")  # noqa: SIM115
                self._fd = os.dup(handle.fileno())
                handle.close()
            offset = self._end
            os.pwrite(self._fd, data, offset)
            self._end += len(data)
            if self._held is not None:
                self._held.inc(len(data))
        return offset

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._end

    def read(self, offset: int, length: int) -> bytes:
        with self._lock:
            if self._fd is None:
                raise IncompleteRetrieve("the retrieve ended while a spooled instance was read")
            return os.pread(self._fd, length, offset)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
                if self._held is not None:
                    self._held.dec(self._end)  # once: the descriptor is gone now
            self._closed = True


@dataclass(frozen=True, slots=True)
class _Spooled(Generic[T]):
    offset: int
    length: int
    item: T  # the item without its payload


class _SpillingFifo(ABC, Generic[T]):
    """A FIFO of items with a byte payload: at most ``capacity`` in memory, then spilled.

    Producer side: :meth:`offer` (in trio) then, if it returned ``False``, :meth:`spool` (on a
    thread, it does file I/O) and :meth:`put_spooled` (in trio) — or :meth:`put`, which does
    all three. Consumer side: :meth:`receive`. The owner calls :meth:`close` when it is done.
    """

    def __init__(self, *, capacity: int, stall_timeout: float, spool: _Spool) -> None:
        self._capacity = capacity
        self.stall_timeout = stall_timeout
        self._spool = spool
        self._queue: collections.deque[T | _Spooled[T]] = collections.deque()
        self._in_memory = 0
        self._spooled_queued = 0
        self._changed = trio.Event()
        self._closed = False
        self._finished = False
        self._error: BaseException | None = None
        self.spooled = 0

    # -- what an item is (each subclass says) ------------------------------------------------

    @abstractmethod
    def _payload(self, item: T) -> bytes:
        """The bytes of *item* that go to the spool."""

    @abstractmethod
    def _strip(self, item: T) -> T:
        """*item* without its payload, kept in the queue while the payload is spooled."""

    @abstractmethod
    def _restore(self, item: T, payload: bytes) -> T:
        """The stripped *item* with its *payload* read back from the spool."""

    def _accepted(self, item: T) -> None:
        self._signal()

    # -- producer side -------------------------------------------------------------------------

    async def offer(self, item: T) -> bool:
        """Queue *item* in memory, waiting up to ``stall_timeout`` for room.

        Returns ``False`` if there was no room in time: the caller must spool it.
        Raises :class:`SinkClosed` if the consumer has gone.
        """
        if self._spooled_queued:
            # Spooling has begun and the client has not caught up: later items go to the
            # spool at once (they may not overtake the spooled ones), the PACS is not held.
            self._check_open()
            return False
        if self._take(item):  # room at once (the usual case): no timer to set up
            return True
        with trio.move_on_after(self.stall_timeout):
            while True:
                await self._wait_change()
                if self._take(item):
                    return True
        self._check_open()
        return False

    def _take(self, item: T) -> bool:
        """Queue *item* in memory if there is room; raises :class:`SinkClosed` once closed."""
        self._check_open()
        # Spooled entries ahead of this one keep it out of memory: order is preserved.
        if self._in_memory < self._capacity and not self._spooled_queued:
            self._queue.append(item)
            self._in_memory += 1
            self._accepted(item)
            return True
        return False

    def spool(self, item: T) -> _Spooled[T]:
        """Write *item* to the spool file (blocking: call from the producer's thread)."""
        if self._closed:
            raise SinkClosed
        payload = self._payload(item)
        offset = self._spool.write(payload)
        return _Spooled(offset, len(payload), self._strip(item))

    async def put_spooled(self, entry: _Spooled[T]) -> None:
        self._check_open()
        self._queue.append(entry)
        self._spooled_queued += 1
        self.spooled += 1
        self._accepted(entry.item)

    async def put(self, item: T) -> None:
        """Queue *item* from trio: in memory if there is room in time, else spooled (the file
        I/O on a worker thread). Raises :class:`SinkClosed` or :class:`SpoolFull`."""
        if not await self.offer(item):
            entry = await run_sync(lambda: self.spool(item))
            await self.put_spooled(entry)

    @property
    def finished(self) -> bool:
        """Whether the producer has said no more items will come."""
        return self._finished

    def finish(self, error: BaseException | None = None) -> None:
        """No more items will come: after the queued ones, :meth:`receive` returns ``None``
        (or raises *error*)."""
        if not self._finished:
            self._finished = True
            self._error = error
            self._signal()

    # -- consumer side -------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether an item is queued: :meth:`receive` returns it without waiting for one."""
        return bool(self._queue)

    async def receive(self) -> T | None:
        """The next item, or ``None`` once finished and drained."""
        while not self._queue:
            self._check_open()  # closed: what was queued is lost, never a clean end
            if self._finished:
                if (error := self._error) is not None:
                    # What a later call raises: this one's traceback will hold this frame.
                    self._error = copy_of(error)
                    try:
                        raise error
                    finally:
                        del error
                return None
            await self._wait_change()
        entry = self._queue.popleft()
        self._signal()
        if not isinstance(entry, _Spooled):
            self._in_memory -= 1
            return entry
        self._spooled_queued -= 1
        payload = await run_sync(lambda: self._spool.read(entry.offset, entry.length))
        return self._restore(entry.item, payload)

    def close(self) -> None:
        """Producers get :class:`SinkClosed` from now on; queued items are dropped."""
        self._closed = True
        self._signal()
        self._queue.clear()

    # -- internals -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise SinkClosed

    def _signal(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _wait_change(self) -> None:
        await self._changed.wait()


class Fragments(_SpillingFifo[bytes]):
    """The rest of an instance that was handed over while still arriving: its fragments, in
    order. Iterating ends at the last one, or raises if the transfer broke off (the producer
    calls :meth:`finish` with an error) or stalled for ``idle_timeout``."""

    def __init__(
        self,
        *,
        sop_instance_uid: str,
        capacity: int,
        stall_timeout: float,
        idle_timeout: float,
        spool: _Spool,
    ) -> None:
        super().__init__(capacity=capacity, stall_timeout=stall_timeout, spool=spool)
        self.sop_instance_uid = sop_instance_uid
        self.idle_timeout = idle_timeout

    def _payload(self, item: bytes) -> bytes:
        return item

    def _restore(self, item: bytes, payload: bytes) -> bytes:
        return payload

    def _strip(self, item: bytes) -> bytes:
        return b""

    def __aiter__(self) -> Fragments:
        return self

    async def __anext__(self) -> bytes:
        try:
            with trio.fail_after(self.idle_timeout):
                chunk = await self.receive()
        except trio.TooSlowError:
            raise BackendTimeout(
                f"the PACS sent nothing for {self.idle_timeout:g} s in the middle of instance "
                f"{self.sop_instance_uid}"
            ) from None
        except SinkClosed:
            raise IncompleteRetrieve("the retrieve ended in the middle of an instance") from None
        if chunk is None:
            raise StopAsyncIteration
        return chunk


class InstanceSink(_SpillingFifo[Instance]):
    """A bounded, spilling FIFO of instances between the DIMSE side and one HTTP response."""

    def __init__(
        self,
        *,
        capacity: int,
        stall_timeout: float,
        spool_dir: str | None = None,
        spool_max_bytes: int = 2 * 1024**3,
        idle_timeout: float = 60.0,
        spool_held: Gauge | None = None,
    ) -> None:
        super().__init__(
            capacity=capacity,
            stall_timeout=stall_timeout,
            spool=_Spool(spool_dir, spool_max_bytes, spool_held),
        )
        self.idle_timeout = idle_timeout
        self._bodies: list[Fragments] = []
        self.delivered = 0
        """Instances accepted so far (in memory or spooled)."""
        self.seen: set[str] = set()
        """SOP Instance UIDs accepted so far (for UID-based correlation)."""

    def _payload(self, item: Instance) -> bytes:
        if item.rest is not None:
            raise ValueError("an instance that is still arriving cannot be spooled")
        return item.data

    def _restore(self, item: Instance, payload: bytes) -> Instance:
        return replace(item, data=payload)

    def _strip(self, item: Instance) -> Instance:
        return replace(item, data=b"")

    def _accepted(self, item: Instance) -> None:
        self.delivered += 1
        self.seen.add(item.sop_instance_uid)
        super()._accepted(item)

    @property
    def spooled_bytes(self) -> int:
        """Bytes this retrieve wrote to its spool file (instances and fragments)."""
        return self._spool.size

    def open_body(self, sop_instance_uid: str) -> Fragments:
        """A queue for the rest of an instance to be handed over before it has fully arrived
        (``Instance(..., rest=body)``, with :meth:`offer`). Closed with the sink."""
        self._check_open()
        body = Fragments(
            sop_instance_uid=sop_instance_uid,
            capacity=BODY_CAPACITY,
            stall_timeout=self.stall_timeout,
            idle_timeout=self.idle_timeout,
            spool=self._spool,
        )
        self._bodies = [b for b in self._bodies if not b.finished]
        self._bodies.append(body)
        return body

    def close(self) -> None:
        """End the sink: producers get :class:`SinkClosed`, the spool file is removed."""
        super().close()
        for body in self._bodies:
            body.close()
        self._bodies.clear()
        self._spool.close()


async def hand_off(sink: InstanceSink, instance: Instance) -> int:
    """Hand *instance* to *sink*; the C-STORE status to answer the PACS with.

    Returns only once the instance is queued (in memory or spooled): the PACS hears "success"
    only for what the request will get."""
    try:
        await sink.put(instance)
    except SinkClosed:
        return NOT_AUTHORIZED
    except SpoolFull as exc:
        log.warning("refusing %s: %s", instance.sop_instance_uid, exc)
        return OUT_OF_RESOURCES
    return SUCCESS
