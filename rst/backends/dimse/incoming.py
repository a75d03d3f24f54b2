"""One C-STORE's data set on its way from the wire to a request's sink.

Both places where instances arrive — the receiver (C-MOVE sub-operations) and a C-GET
association — feed the P-DATA fragments of a data set to an :class:`IncomingInstance`, then ask
it for the C-STORE status to answer.

A small instance is reassembled behind its Part 10 file meta and handed over whole. Once more
than ``stream_after`` bytes of a data set have arrived and more are to come (a large
multi-frame instance, say), it is handed over at once with what has arrived so far, and the
following fragments stream into its body as they arrive: the client gets the first bytes while
the PACS still sends the rest, and no buffer ever holds the instance whole. Backpressure and
spooling apply fragment by fragment; the PACS hears "success" only once the last fragment is
queued, "refused" if the request has gone.

An instance routed by its UIDs (a PACS that leaves out the Move Originator fields) cannot be
handed over before its Study and Series Instance UIDs have arrived. They normally lie in the
first few KB; if they do not, rst looks again each time the part held has doubled, up to
``unrouted_max`` bytes (:data:`MAX_UNROUTED`): beyond that the instance is answered 0xA700 (out
of resources) and its data dropped as it arrives. Nothing a peer sends, routable or not, makes
rst hold more than that for an instance nobody has claimed.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from io import BytesIO

from pydicom.filereader import read_dataset
from pydicom.uid import UID

from rst.backends.dimse.sink import Fragments, InstanceSink, SinkClosed, SpoolFull, hand_off
from rst.backends.dimse.ul import CStoreRequest
from rst.dicom.part10 import part10_header
from rst.dicom.statuses import NOT_AUTHORIZED, OUT_OF_RESOURCES, SUCCESS
from rst.dicom.uids import IMPLEMENTATION_CLASS_UID
from rst.errors import IncompleteRetrieve
from rst.services.protocols import Instance

__all__ = ["MAX_UNROUTED", "STREAM_AFTER", "IncomingInstance", "UidsNotYetArrived"]

log = logging.getLogger(__name__)

STREAM_AFTER = 1 << 20
"""Bytes of a data set after which it is handed over while still arriving."""
MAX_UNROUTED = 4 << 20
"""Most bytes of a data set held while its Study/Series UIDs cannot be read yet (for routing by
UID); past it the instance is refused with 0xA700 and the rest of it dropped."""
UID_SCAN_BYTES = 64 * 1024
_DEFER_VALUES = 1024  # values larger than this are skipped, not copied, when reading the UIDs


class UidsNotYetArrived(Exception):
    """The part of the data set that has arrived does not reach its Study/Series UIDs."""


class IncomingInstance:
    """The data set following one C-STORE-RQ, fed fragment by fragment.

    *locate* names the sink that wants the instance (``None``: nobody) and is called once, when
    the instance is first handed over; it may read :meth:`study_series` from what has arrived.

    *borrow*: the fragments :meth:`add` gets are views the caller keeps valid until it calls
    :meth:`copy_out` (:meth:`Association.keep_fragments
    <rst.backends.dimse.ul.association.Association.keep_fragments>`): they are held as they
    are and copied once, when the instance is joined, instead of once each and again then.
    """

    def __init__(
        self,
        request: CStoreRequest,
        transfer_syntax: str,
        *,
        source_aet: str | None,
        locate: Callable[[IncomingInstance], InstanceSink | None],
        stream_after: int = STREAM_AFTER,
        unrouted_max: int = MAX_UNROUTED,
        borrow: bool = False,
    ) -> None:
        self.request = request
        self._borrow = borrow
        self.transfer_syntax = transfer_syntax
        self._locate = locate
        header = part10_header(
            sop_class_uid=request.sop_class_uid,
            sop_instance_uid=request.sop_instance_uid,
            transfer_syntax=transfer_syntax,
            implementation_uid=IMPLEMENTATION_CLASS_UID,
            source_aet=source_aet,
        )
        # The fragments so far, joined once at the end (appending to a bytearray would copy
        # the instance again each time it grows).
        self._parts: list[bytes | memoryview] = [header]
        self._size = len(header)
        self._stream_at = len(header) + stream_after
        self._unrouted_at = len(header) + max(unrouted_max, stream_after)
        self._body: Fragments | None = None
        self._status: int | None = None  # decided before the end: the rest is dropped
        self._complete = False
        self.unsolicited = False
        """Nobody wanted the instance (the caller logs it)."""

    async def add(self, fragment: memoryview | bytes, *, last: bool = False) -> None:
        """One more fragment of the data set (copied: the caller may reuse its buffer — unless
        it lends it, see *borrow*); then, after the *last*, :meth:`finish`."""
        if self._status is not None:
            return
        if self._body is not None:
            try:
                await self._body.put(bytes(fragment))
            except SinkClosed:
                self._status = NOT_AUTHORIZED
            except SpoolFull as exc:
                log.warning("refusing %s: %s", self.request.sop_instance_uid, exc)
                self._body.finish(IncompleteRetrieve(f"instance {self._uid} was cut short: {exc}"))
                self._status = OUT_OF_RESOURCES
            return
        # The last fragment is joined before the caller reads again: no copy of it needed.
        self._parts.append(fragment if last or self._borrow else bytes(fragment))
        self._size += len(fragment)
        self._complete = last
        if self._size > self._stream_at and not last:
            await self._start_streaming()

    def hold(self, fragment: memoryview | bytes) -> bool:
        """Take a fragment that is not the last without awaiting anything, if nothing is to be
        awaited for it (the usual case: not streaming, and the instance stays below
        ``stream_after``); ``False``: :meth:`add` it instead. Spares a coroutine per PDU."""
        size = self._size + len(fragment)
        if self._body is not None or self._status is not None or size > self._stream_at:
            return False
        self._parts.append(fragment if self._borrow else bytes(fragment))
        self._size = size
        return True

    async def finish(self) -> int:
        """The last fragment has been added: hand the instance over (if not yet done); the
        C-STORE status to answer."""
        if self._status is not None:
            return self._status
        if self._body is not None:
            self._body.finish()
            return SUCCESS
        sink = self._sink()
        if sink is None:
            return NOT_AUTHORIZED
        return await hand_off(sink, self._instance())

    def copy_out(self) -> None:
        """The borrowed fragments held are about to be overwritten: copy them (*borrow*)."""
        self._parts = [bytes(p) if isinstance(p, memoryview) else p for p in self._parts]

    def abandon(self, reason: str) -> None:
        """The data set will not be completed (the association broke off, the task was
        cancelled): a consumer reading the handed-over part gets an error, not a short file."""
        if self._body is not None and self._status is None:
            self._body.finish(IncompleteRetrieve(f"instance {self._uid} was cut short: {reason}"))
        self._status = NOT_AUTHORIZED

    def received_dataset(self) -> bytes:
        """The part of the data set that has arrived (before it was handed over)."""
        return b"".join(self._parts[1:])

    @property
    def held(self) -> int:
        """Bytes of the instance held in memory here (not yet handed over)."""
        return sum(len(part) for part in self._parts)

    def study_series(self) -> tuple[str, str]:
        """Study and Series Instance UID of the data set, from the part that has arrived.

        Raises :class:`UidsNotYetArrived` if they cannot be read from an incomplete data set
        (e.g. a large private element comes first): *locate* should let it propagate, and it is
        called again once twice as much has arrived, up to ``unrouted_max`` bytes."""
        syntax = UID(self.transfer_syntax)
        # Joined once and kept joined: looking again later copies only what arrived since.
        dataset = self.received_dataset()
        self._parts[1:] = [dataset]
        # The UIDs sit early in the data set: parse a head of it, the whole only if that fails
        # (a BytesIO of bytes shares them; large values before the UIDs are skipped, not read).
        for view in (dataset[:UID_SCAN_BYTES], dataset):
            try:
                ds = read_dataset(
                    BytesIO(view),
                    syntax.is_implicit_VR,
                    syntax.is_little_endian,
                    stop_when=lambda tag, vr, length: tag > 0x0020000E,
                    defer_size=_DEFER_VALUES,
                )
                return str(ds["StudyInstanceUID"].value), str(ds["SeriesInstanceUID"].value)
            except (KeyError, EOFError, OSError, ValueError):
                if len(view) == len(dataset):
                    if not self._complete:
                        raise UidsNotYetArrived(self._uid) from None
                    raise
        raise AssertionError("unreachable")

    # -- internals -----------------------------------------------------------------------------

    @property
    def _uid(self) -> str:
        return self.request.sop_instance_uid

    def _sink(self) -> InstanceSink | None:
        sink = self._locate(self)
        self._locate = lambda _: sink  # decided once
        if sink is None:
            self.unsolicited = True
        return sink

    def _instance(self, rest: Fragments | None = None) -> Instance:
        data = b"".join(self._parts)
        self._parts = []
        return Instance(
            data,
            self.request.sop_class_uid,
            self._uid,
            self.transfer_syntax,
            rest=rest,
        )

    async def _start_streaming(self) -> None:
        self._stream_at = sys.maxsize  # tried once, whatever the outcome (but the one below)
        try:
            sink = self._sink()
        except UidsNotYetArrived:
            if self._size > self._unrouted_at:
                log.warning(
                    "refusing %s: its Study/Series UIDs are not within its first %d bytes",
                    self._uid,
                    self._unrouted_at - len(self._parts[0]),
                )
                self._status = OUT_OF_RESOURCES
                self._parts = []
            else:  # look again once twice as much has arrived; located at the end at the latest
                self._stream_at = min(2 * self._size, self._unrouted_at)
            return
        if sink is None:
            self._status = NOT_AUTHORIZED
            self._parts = []
            return
        try:
            body = sink.open_body(self._uid)
            head = self._instance(body)
            accepted = await sink.offer(head)
        except SinkClosed:
            self._status = NOT_AUTHORIZED
            return
        if not accepted:
            # The client is behind and the sink is spilling: keep reassembling; the whole
            # instance goes to the spool at the end.
            body.close()
            self._parts = [head.data]
            return
        self._body = body
