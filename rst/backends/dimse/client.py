"""Associations rst requests, on trio: a thin I/O shell over the sans-IO association.

An association is a stream and an :class:`~rst.backends.dimse.ul.association.Association`
(which holds the state table, the read buffer, the contexts and the message reassembly), owned
by the task that opened it (no thread, no polling); it reads through
:func:`~rst.backends.dimse.wire.receive_event`, the read loop it shares with the receiver.
:func:`open_association` is an async context manager: the association exists for the
``async with`` block, is released when it ends, and is aborted if the release is not confirmed
within ``cancel_timeout`` or if the association is left broken (a peer that sent garbage, an
operation that could not be cancelled).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio
from pydicom import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import UID

from rst.backends.dimse import wire
from rst.backends.dimse.journal import OUTGOING, AssociationJournal
from rst.backends.dimse.tls import connect
from rst.backends.dimse.ul import (
    AssociateAccept,
    CommandError,
    OtherCommand,
    PresentationContextRQ,
    UpperLayerError,
)
from rst.backends.dimse.ul.association import (
    UNLIMITED_CHUNK,
    Aborted,
    AcceptedContext,
    Association,
    AssociationAccepted,
    AssociationError,
    AssociationEvent,
    AssociationRejected,
    Command,
    CommandReceived,
    ConnectionLost,
    DataFragment,
    PeerAborted,
    ProtocolViolation,
    ReleaseConfirmed,
    ReleaseRequested,
    Role,
)
from rst.backends.dimse.ul.pdu import AbortReason
from rst.backends.dimse.ul.states import Event
from rst.config import AeConfig
from rst.dicom.statuses import is_pending
from rst.dicom.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION
from rst.errors import (
    AssociationBroken,
    BackendTimeout,
    PacsUnreachable,
    PeerProtocolError,
    RstError,
)
from rst.errors import AssociationRejected as Rejected

__all__ = [
    "BROKEN",
    "Connection",
    "PeerAborted",
    "broken_association",
    "encode_identifier",
    "open_association",
]

log = logging.getLogger(__name__)

BROKEN = (
    AssociationError,
    UpperLayerError,
    CommandError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    OSError,
)
"""What a read or write on an association raises when the association can no longer be used."""


def broken_association(error: BaseException, pacs: str, during: str) -> RstError:
    """The error a client sees for a :data:`BROKEN` association: 502 either way, saying whether
    the PACS broke the protocol or went away."""
    if isinstance(error, (ProtocolViolation, UpperLayerError, CommandError)):
        return PeerProtocolError(
            f"the PACS {pacs} broke the DICOM protocol during {during}: {error}"
        )
    return AssociationBroken(
        f"the association with the PACS {pacs} broke off during {during}: {error}"
    )


@dataclass
class Connection:
    """An established association: send DIMSE messages, receive them one PDV at a time."""

    stream: trio.abc.Stream
    association: Association
    broken: bool = False
    send_timeout: float = math.inf
    journal: AssociationJournal = field(default_factory=lambda: AssociationJournal(OUTGOING, "?"))
    """What the association did, for its log line (:mod:`.journal`)."""

    @property
    def accept(self) -> AssociateAccept:
        assert self.association.accept is not None
        return self.association.accept

    @property
    def accepted(self) -> dict[int, AcceptedContext]:
        """Accepted contexts by id: (abstract syntax, transfer syntax)."""
        return self.association.accepted

    def context_for(self, abstract_syntax: str) -> tuple[int, str]:
        """An accepted presentation context for *abstract_syntax*: (id, transfer syntax)."""
        for context_id, (abstract, syntax) in self.accepted.items():
            if abstract == abstract_syntax:
                return context_id, syntax
        raise Rejected(f"the PACS did not accept the presentation context for {abstract_syntax}")

    def transfer_syntax(self, context_id: int) -> str:
        """The transfer syntax of an accepted context (the association refuses messages on
        any other)."""
        return self.accepted[context_id].transfer_syntax

    async def send(
        self, context_id: int, command: bytes, dataset: bytes | memoryview | None = None
    ) -> None:
        """Send one DIMSE message: the command set, then the data set, in PDUs the PACS takes.

        A PACS that takes none of a PDU for ``send_timeout`` seconds has stopped reading: the
        association is marked broken and :class:`~rst.errors.BackendTimeout` raised."""
        await self._send_pdu(self.association.send_command(context_id, command))
        if dataset is not None:
            for pdu in self.association.send_dataset(context_id, dataset):
                await self._send_pdu(pdu)

    async def _send_pdu(self, pdu: bytes) -> None:
        with trio.move_on_after(self.send_timeout) as stalled:
            await self.stream.send_all(pdu)
        if stalled.cancelled_caught:
            self.broken = True
            raise BackendTimeout(
                f"the PACS {self.accept.called_aet.strip()} stopped reading: it took nothing "
                f"for {self.send_timeout:g} s (store_timeout)"
            )

    async def receive_command(self) -> tuple[int, Command]:
        """The next command set and its presentation context."""
        event = await self._next()
        if not isinstance(event, CommandReceived):
            raise UpperLayerError(
                "a data set fragment where a command was expected",
                reason=AbortReason.UNEXPECTED_PDU,
            )
        if isinstance(event.command, OtherCommand):
            code = event.command.status
            if code is not None and not is_pending(code):
                self.journal.status = code  # a final response: what the log line shows
        return event.context_id, event.command

    async def receive_dataset(self, into: bytearray) -> None:
        """Append the fragments of the data set that follows a command to *into*."""
        while True:
            fragment = await self.dataset_fragment()
            into += fragment.data
            if fragment.last:
                return

    async def dataset_fragment(self) -> DataFragment:
        """The next fragment of the data set that follows a command. Its data is a view into
        the read buffer, valid until the next call."""
        event = await self._next()
        if not isinstance(event, DataFragment):
            raise UpperLayerError(
                "a command where a data set fragment was expected",
                reason=AbortReason.UNEXPECTED_PDU,
            )
        return event

    async def _next(self) -> CommandReceived | DataFragment:
        """The next DIMSE event; the end of the association, in the middle of an operation,
        as an :class:`~rst.backends.dimse.ul.association.AssociationError`."""
        event = await wire.receive_event(self.stream, self.association)
        if isinstance(event, (CommandReceived, DataFragment)):
            return event
        if isinstance(event, ReleaseRequested):
            await wire.send_quietly(self.stream, self.association.send_release_rp())
            raise PeerAborted("the PACS released the association in the middle of an operation")
        if isinstance(event, Aborted):
            self.journal.ended("aborted", event.description, by="peer")
            raise PeerAborted(f"the PACS aborted the association: {event.description}")
        self.journal.ended("aborted", "the PACS closed the connection", by="peer")
        raise ConnectionLost("the PACS closed the connection")

    async def release(self) -> bool:
        """A-RELEASE; ``True`` once the PACS confirmed it (callers bound the wait). Late
        P-DATA (e.g. responses after a C-CANCEL) are dropped; a release collision is answered
        (PS3.8 §9.2.2: the requestor's A-RELEASE-RP goes first)."""
        association = self.association
        if not association.allows(Event.RELEASE_REQUEST):
            return False
        await self.stream.send_all(association.send_release_rq())
        while True:
            try:
                event = await wire.receive_event(self.stream, association)
            except ProtocolViolation as exc:
                log.info("the PACS answered the release with bytes that are not DICOM: %s", exc)
                return False
            if isinstance(event, ReleaseConfirmed):
                return True
            if isinstance(event, ReleaseRequested):  # collision: Sta9 → Sta11
                await self.stream.send_all(association.send_release_rp())
            elif not isinstance(event, (CommandReceived, DataFragment)):
                return False  # an abort, or the connection closed: the release will not come

    async def abort(self) -> None:
        await wire.abort(self.stream, self.association)


async def _connect(config: AeConfig) -> trio.SocketStream:
    """The TCP connection to the PACS: the one place a client connection is made."""
    try:
        with trio.fail_after(config.connect_timeout):
            return await trio.open_tcp_stream(config.host, config.port)
    except (OSError, trio.TooSlowError) as exc:
        reason = str(exc) or f"no connection within {config.connect_timeout} s"
        log.warning(
            "cannot connect to the PACS %s at %s:%s: %s",
            config.aet,
            config.host,
            config.port,
            reason,
        )
        raise PacsUnreachable(
            f"cannot connect to the PACS {config.aet} (the log has its address and why)"
        ) from None


@asynccontextmanager
async def open_association(
    config: AeConfig,
    *,
    calling_aet: str,
    contexts: Sequence[PresentationContextRQ],
    roles: Mapping[str, tuple[bool, bool]] | None = None,
    max_pdu: int,
    journal: AssociationJournal | None = None,
) -> AsyncIterator[Connection]:
    """Connect to the PACS and associate; release (or abort) when the block ends. *journal*
    records how it went (the caller writes it, :mod:`.peer`)."""
    where = config.aet  # a client learns the AE title; the PACS's address goes to the log only
    if journal is None:
        journal = AssociationJournal(OUTGOING, f"{config.host}:{config.port}", peer_aet=where)
    journal.started = time.monotonic()
    stream = await connect(await _connect(config), config)  # DICOM TLS if the PACS has tls
    async with stream:
        association = Association(Role.REQUESTOR, max_pdu_length=max_pdu or UNLIMITED_CHUNK)
        request = association.send_associate_rq(
            called_aet=config.called_aet,
            calling_aet=calling_aet,
            contexts=contexts,
            implementation_class_uid=IMPLEMENTATION_CLASS_UID,
            implementation_version=IMPLEMENTATION_VERSION,
            roles=roles,
        )
        try:
            with trio.fail_after(config.connect_timeout):
                await stream.send_all(request)
                answer = await wire.receive_event(stream, association)
        except trio.TooSlowError:
            raise BackendTimeout(
                f"the PACS {where} did not answer the association request"
            ) from None
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise Rejected(f"the PACS {where} closed the connection: {exc}") from None
        except ProtocolViolation as exc:
            raise PeerProtocolError(
                f"the PACS {where} did not answer the association request in DICOM ({exc}); "
                "is this its DICOM port?"
            ) from None
        connection = _established(answer, stream, association, config, calling_aet)
        connection.journal = journal
        if not connection.accepted:
            await connection.abort()
            raise Rejected(f"the PACS {where} accepted none of the presentation contexts")
        try:
            yield connection
        finally:
            with trio.CancelScope(shield=True):
                released = False
                if not connection.broken:
                    with trio.move_on_after(config.cancel_timeout):
                        released = await connection.release()
                if released:
                    journal.ended("released")
                else:
                    log.info("aborting the association with %s", config.aet)
                    why = "broken" if connection.broken else "the release was not confirmed"
                    journal.ended("aborted", why, by="rst")
                    await connection.abort()


def _established(
    answer: AssociationEvent,
    stream: trio.abc.Stream,
    association: Association,
    config: AeConfig,
    calling_aet: str,
) -> Connection:
    """The connection, if *answer* accepted the association; else why not, as an error."""
    where = config.aet
    if isinstance(answer, AssociationRejected):
        raise Rejected(
            f"the PACS {where} rejected the association {answer.description} "
            f"(rst called it as {calling_aet!r}, called AE title {config.called_aet!r})"
        )
    if isinstance(answer, Aborted):
        raise Rejected(f"the PACS {where} aborted the association request: {answer.description}")
    if not isinstance(answer, AssociationAccepted):
        raise Rejected(f"the PACS {where} closed the connection")
    return Connection(stream, association, send_timeout=config.store_timeout)


def encode_identifier(identifier: Dataset, transfer_syntax: str) -> bytes:
    """A query/retrieve identifier encoded in the presentation context's transfer syntax."""
    syntax = UID(transfer_syntax)
    fp = DicomBytesIO()
    fp.is_little_endian = syntax.is_little_endian
    fp.is_implicit_VR = syntax.is_implicit_VR
    write_dataset(fp, identifier)
    return fp.getvalue()
