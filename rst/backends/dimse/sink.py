"""Where received instances wait for the HTTP response that asked for them.

A sink holds at most ``capacity`` instances in memory. A producer (a C-STORE handler on a
pynetdicom thread) that finds it full waits — that wait is the backpressure that slows the PACS
down to the client's pace. But a PACS only waits so long for a C-STORE response (Orthanc fails
the whole C-MOVE after its ``DicomScuTimeout``, 10 s by default), so after ``stall_timeout``
the producer writes the instance to a spool file instead and answers the PACS. The spool is an
anonymous temporary file (nothing to clean up even after a crash) capped at ``spool_max_bytes``;
memory stays flat whatever the study size. Instances come out in the order they arrived.
"""

from __future__ import annotations

import collections
import logging
import os
import tempfile
import threading
from dataclasses import dataclass

import trio

from rst.bridge import run_sync
from rst.errors import IncompleteRetrieve
from rst.services.protocols import Instance

__all__ = ["Instance", "InstanceSink", "SinkClosed", "SpoolFull", "hand_off"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Spooled:
    offset: int
    length: int
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str


class SinkClosed(Exception):
    """The request that owned the sink has ended; the instance is not wanted any more."""


class SpoolFull(Exception):
    """The request's spool reached ``spool_max_bytes``."""


class InstanceSink:
    """A bounded, spilling FIFO of instances between DIMSE threads and one HTTP response.

    Producer side: :meth:`offer` (in trio) then, if it returned ``False``, :meth:`spool` (on the
    producer's own thread, it does file I/O) and :meth:`put_spooled` (in trio).
    Consumer side: :meth:`receive`. The owner calls :meth:`close` when the request ends.
    """

    def __init__(
        self,
        *,
        capacity: int,
        stall_timeout: float,
        spool_dir: str | None = None,
        spool_max_bytes: int = 2 * 1024**3,
    ) -> None:
        self._capacity = capacity
        self.stall_timeout = stall_timeout
        self._spool_dir = spool_dir
        self._spool_max = spool_max_bytes
        self._queue: collections.deque[Instance | _Spooled] = collections.deque()
        self._in_memory = 0
        self._spooled_queued = 0
        self._changed = trio.Event()
        self._closed = False
        self._finished = False
        self._error: BaseException | None = None
        self._spool_lock = threading.Lock()
        self._spool_fd: int | None = None
        self._spool_end = 0
        self.delivered = 0
        """Instances accepted so far (in memory or spooled)."""
        self.spooled = 0
        self.seen: set[str] = set()
        """SOP Instance UIDs accepted so far (for UID-based correlation)."""

    # -- producer side -------------------------------------------------------------------------

    async def offer(self, instance: Instance) -> bool:
        """Queue *instance* in memory, waiting up to ``stall_timeout`` for room.

        Returns ``False`` if there was no room in time: the caller must spool it.
        Raises :class:`SinkClosed` if the consumer has gone.
        """
        if self._spooled_queued:
            # Spooling has begun and the client has not caught up: later instances go to the
            # spool at once (they may not overtake the spooled ones), the PACS is not held.
            self._check_open()
            return False
        with trio.move_on_after(self.stall_timeout):
            while True:
                self._check_open()
                # Spooled entries ahead of this one keep it out of memory: order is preserved.
                if self._in_memory < self._capacity and not self._spooled_queued:
                    self._queue.append(instance)
                    self._in_memory += 1
                    self._accepted(instance.sop_instance_uid)
                    return True
                await self._wait_change()
        self._check_open()
        return False

    def spool(self, instance: Instance) -> _Spooled:
        """Write *instance* to the spool file (blocking: call from the producer's thread)."""
        with self._spool_lock:
            if self._closed:
                raise SinkClosed
            if self._spool_end + len(instance.data) > self._spool_max:
                raise SpoolFull(
                    f"spool limit of {self._spool_max} bytes reached; the HTTP client reads "
                    "too slowly for this study"
                )
            if self._spool_fd is None:
                # Only the descriptor is kept (pread/pwrite are safe across threads).
                handle = tempfile.TemporaryFile(dir=self._spool_dir, prefix="rst-spool-")  # noqa: SIM115
                self._spool_fd = os.dup(handle.fileno())
                handle.close()
            offset = self._spool_end
            os.pwrite(self._spool_fd, instance.data, offset)
            self._spool_end += len(instance.data)
        return _Spooled(
            offset,
            len(instance.data),
            instance.sop_class_uid,
            instance.sop_instance_uid,
            instance.transfer_syntax,
        )

    async def put_spooled(self, entry: _Spooled) -> None:
        self._check_open()
        self._queue.append(entry)
        self._spooled_queued += 1
        self.spooled += 1
        self._accepted(entry.sop_instance_uid)

    async def put(self, instance: Instance) -> None:
        """Queue *instance* from trio: in memory if there is room in time, else spooled (the
        file I/O on a worker thread). Raises :class:`SinkClosed` or :class:`SpoolFull`."""
        if not await self.offer(instance):
            entry = await run_sync(lambda: self.spool(instance))
            await self.put_spooled(entry)

    # -- consumer side -------------------------------------------------------------------------

    def finish(self, error: BaseException | None = None) -> None:
        """No more instances will come: after the queued ones, :meth:`receive` returns ``None``
        (or raises *error*)."""
        if not self._finished:
            self._finished = True
            self._error = error
            self._signal()

    async def receive(self) -> Instance | None:
        """The next instance, or ``None`` once finished and drained."""
        while not self._queue:
            if self._finished:
                if self._error is not None:
                    raise self._error
                return None
            self._check_open()
            await self._wait_change()
        entry = self._queue.popleft()
        self._signal()
        if isinstance(entry, Instance):
            self._in_memory -= 1
            return entry
        self._spooled_queued -= 1
        data = await run_sync(lambda: self._read_spooled(entry))
        return Instance(data, entry.sop_class_uid, entry.sop_instance_uid, entry.transfer_syntax)

    def close(self) -> None:
        """End the sink: producers get :class:`SinkClosed`, the spool file is removed."""
        self._closed = True
        self._signal()
        with self._spool_lock:
            if self._spool_fd is not None:
                os.close(self._spool_fd)
                self._spool_fd = None
        self._queue.clear()

    # -- internals -----------------------------------------------------------------------------

    def _read_spooled(self, entry: _Spooled) -> bytes:
        with self._spool_lock:
            if self._spool_fd is None:
                raise IncompleteRetrieve("the retrieve ended while a spooled instance was read")
            return os.pread(self._spool_fd, entry.length, entry.offset)

    def _accepted(self, sop_instance_uid: str) -> None:
        self.delivered += 1
        self.seen.add(sop_instance_uid)
        self._signal()

    def _check_open(self) -> None:
        if self._closed:
            raise SinkClosed

    def _signal(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _wait_change(self) -> None:
        await self._changed.wait()


STATUS_SUCCESS = 0x0000
STATUS_REFUSED = 0x0124  # "not authorised": nobody (any more) waits for this instance
STATUS_OUT_OF_RESOURCES = 0xA700


async def hand_off(sink: InstanceSink, instance: Instance) -> int:
    """Hand *instance* to *sink*; the C-STORE status to answer the PACS with.

    Returns only once the instance is queued (in memory or spooled): the PACS hears "success"
    only for what the request will get."""
    try:
        await sink.put(instance)
    except SinkClosed:
        return STATUS_REFUSED
    except SpoolFull as exc:
        log.warning("refusing %s: %s", instance.sop_instance_uid, exc)
        return STATUS_OUT_OF_RESOURCES
    return STATUS_SUCCESS
