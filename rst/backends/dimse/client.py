"""Associations rst requests, on trio.

An association is a socket and a :class:`~rst.backends.dimse.ul.PduReader`, owned by the task
that opened it (no thread, no polling). :func:`open_association` is an async context manager: the
association exists for the ``async with`` block, is released when it ends, and is aborted if
the release is not confirmed within ``cancel_timeout`` or if the association is left broken
(a peer that sent garbage, an operation that could not be cancelled).
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

import trio
from pydicom import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import UID

from rst.backends.dimse.tls import connect, receive_into
from rst.backends.dimse.ul import (
    MAX_COMMAND_SET,
    Abort,
    AssociateAccept,
    AssociateReject,
    CEchoRequest,
    CommandError,
    CStoreRequest,
    OtherCommand,
    PData,
    PduReader,
    Pdv,
    PresentationContextRQ,
    ReleaseRequest,
    ReleaseResponse,
    UpperLayerError,
    encode_abort,
    encode_associate_rq,
    encode_pdata,
    encode_release_rp,
    encode_release_rq,
    parse_command,
)
from rst.backends.dimse.ul.pdu import AbortReason
from rst.config import AeConfig
from rst.dicom.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION
from rst.errors import (
    AssociationBroken,
    AssociationRejected,
    BackendTimeout,
    PacsUnreachable,
    PeerProtocolError,
    RstError,
)

__all__ = [
    "BROKEN",
    "Connection",
    "PeerAborted",
    "broken_association",
    "encode_identifier",
    "open_association",
]

log = logging.getLogger(__name__)

Command = CStoreRequest | CEchoRequest | OtherCommand
UNLIMITED_CHUNK = 1 << 20

_REJECT_REASONS = {
    (1, 1): "no reason given",
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title not recognised",
    (1, 7): "called AE title not recognised",
    (2, 1): "no reason given",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded",
}


class PeerAborted(Exception):
    """The PACS aborted the association (A-ABORT) or closed the connection."""


BROKEN = (PeerAborted, UpperLayerError, CommandError, trio.BrokenResourceError, OSError)
"""What a read or write on an association raises when the association can no longer be used."""


def broken_association(error: BaseException, pacs: str, during: str) -> RstError:
    """The error a client sees for a :data:`BROKEN` association: 502 either way, saying whether
    the PACS broke the protocol or went away."""
    if isinstance(error, (UpperLayerError, CommandError)):
        return PeerProtocolError(
            f"the PACS {pacs} broke the DICOM protocol during {during}: {error}"
        )
    return AssociationBroken(
        f"the association with the PACS {pacs} broke off during {during}: {error}"
    )


@dataclass
class Connection:
    """An established association: send DIMSE messages, receive them one PDV at a time."""

    stream: trio.abc.Stream  # TCP, or TLS over it (.tls)
    reader: PduReader
    accept: AssociateAccept
    requested: dict[int, str]  # context id -> abstract syntax
    broken: bool = False
    send_timeout: float = math.inf

    def __post_init__(self) -> None:
        self.accepted = {
            result.context_id: (self.requested[result.context_id], result.transfer_syntax)
            for result in self.accept.contexts
            if result.result == 0 and result.context_id in self.requested
        }
        self._pdvs: collections.deque[Pdv] = collections.deque()
        peer_max = self.accept.max_pdu_length
        self._chunk = peer_max - 6 if peer_max > 6 else UNLIMITED_CHUNK

    def context_for(self, abstract_syntax: str) -> tuple[int, str]:
        """An accepted presentation context for *abstract_syntax*: (id, transfer syntax)."""
        for context_id, (abstract, syntax) in self.accepted.items():
            if abstract == abstract_syntax:
                return context_id, syntax
        raise AssociationRejected(
            f"the PACS did not accept the presentation context for {abstract_syntax}"
        )

    def transfer_syntax(self, context_id: int) -> str:
        found = self.accepted.get(context_id)
        if found is None:
            raise UpperLayerError(
                f"message on presentation context {context_id}, which was not accepted",
                reason=AbortReason.INVALID_PARAMETER,
            )
        return found[1]

    async def send(
        self, context_id: int, command: bytes, dataset: bytes | memoryview | None = None
    ) -> None:
        """Send one DIMSE message: the command set, then the data set, in PDUs the PACS takes.

        A PACS that takes none of a PDU for ``send_timeout`` seconds has stopped reading: the
        association is marked broken and :class:`~rst.errors.BackendTimeout` raised."""
        await self._send_pdu(encode_pdata(context_id, True, True, command))
        if dataset is not None:
            chunk = self._chunk
            view = memoryview(dataset)
            for start in range(0, max(len(view), 1), chunk):
                last = start + chunk >= len(view)
                await self._send_pdu(
                    encode_pdata(context_id, False, last, view[start : start + chunk])
                )

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
        """The next command set (reassembled from its PDVs) and its presentation context."""
        command = bytearray()
        while True:
            pdv = await self._next_pdv()
            if not pdv.is_command:
                raise UpperLayerError(
                    "a data set fragment where a command was expected",
                    reason=AbortReason.UNEXPECTED_PDU,
                )
            if len(command) + len(pdv.data) > MAX_COMMAND_SET:
                raise CommandError(f"a command set longer than {MAX_COMMAND_SET} bytes")
            command += pdv.data
            if pdv.is_last:
                self.transfer_syntax(pdv.context_id)
                return pdv.context_id, parse_command(bytes(command))

    async def receive_dataset(self, into: bytearray) -> None:
        """Append the fragments of the data set that follows a command to *into*."""
        while True:
            pdv = await self.dataset_fragment()
            into += pdv.data
            if pdv.is_last:
                return

    async def dataset_fragment(self) -> Pdv:
        """The next fragment of the data set that follows a command. Its data is a view into
        the read buffer, valid until the next call."""
        pdv = await self._next_pdv()
        if pdv.is_command:
            raise UpperLayerError(
                "a command where a data set fragment was expected",
                reason=AbortReason.UNEXPECTED_PDU,
            )
        return pdv

    async def _next_pdv(self) -> Pdv:
        # PDV data are views into the reader's buffer: they stay valid until the next read,
        # which happens only once every PDV of the current PDU has been consumed.
        while not self._pdvs:
            pdu = self.reader.next_pdu()
            if pdu is None:
                count = await receive_into(self.stream, self.reader.writable())
                if count == 0:
                    raise PeerAborted("the PACS closed the connection")
                self.reader.advance(count)
            elif isinstance(pdu, PData):
                self._pdvs.extend(pdu.pdvs)
            elif isinstance(pdu, Abort):
                raise PeerAborted(
                    f"the PACS aborted the association (source {pdu.source}, reason {pdu.reason})"
                )
            elif isinstance(pdu, ReleaseRequest):
                await self.stream.send_all(encode_release_rp())
                raise PeerAborted("the PACS released the association in the middle of an operation")
            else:
                raise UpperLayerError(
                    f"unexpected {type(pdu).__name__}", reason=AbortReason.UNEXPECTED_PDU
                )
        return self._pdvs.popleft()

    async def release(self) -> bool:
        """A-RELEASE; ``True`` once the PACS confirmed it (callers bound the wait)."""
        await self.stream.send_all(encode_release_rq())
        while True:
            try:
                pdu = self.reader.next_pdu()
            except UpperLayerError as exc:
                log.info("the PACS answered the release with bytes that are not DICOM: %s", exc)
                return False
            if pdu is None:
                count = await receive_into(self.stream, self.reader.writable())
                if count == 0:
                    return False
                self.reader.advance(count)
            elif isinstance(pdu, ReleaseResponse):
                return True
            elif isinstance(pdu, ReleaseRequest):
                # a release collision: the requestor answers first, then awaits the
                # PACS's A-RELEASE-RP (PS3.8 Table 9-10: AR-8, AR-9, Sta11)
                try:
                    await self.stream.send_all(encode_release_rp())
                except (trio.BrokenResourceError, OSError):
                    return False
            elif not isinstance(pdu, PData):
                return False  # an abort, or a PDU out of turn: the release will not come
            # late P-DATA (e.g. responses after a C-CANCEL) are dropped

    async def abort(self) -> None:
        with trio.move_on_after(1):
            with suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await self.stream.send_all(encode_abort(0, 0))


@asynccontextmanager
async def open_association(
    config: AeConfig,
    *,
    calling_aet: str,
    contexts: Sequence[PresentationContextRQ],
    roles: Mapping[str, tuple[bool, bool]] | None = None,
    max_pdu: int,
) -> AsyncIterator[Connection]:
    """Connect to the PACS and associate; release (or abort) when the block ends."""
    where = config.aet  # a client learns the AE title; the PACS's address goes to the log only
    try:
        with trio.fail_after(config.connect_timeout):
            tcp = await trio.open_tcp_stream(config.host, config.port)
    except (OSError, trio.TooSlowError) as exc:
        reason = str(exc) or f"no connection within {config.connect_timeout} s"
        log.warning(
            "cannot connect to the PACS %s at %s:%s: %s", where, config.host, config.port, reason
        )
        raise PacsUnreachable(
            f"cannot connect to the PACS {where} (the log has its address and why)"
        ) from None
    stream = await connect(tcp, config)  # DICOM TLS when the PACS has tls = true
    async with stream:
        reader = PduReader(max_pdu_length=max_pdu or UNLIMITED_CHUNK)
        request = encode_associate_rq(
            called_aet=config.called_aet,
            calling_aet=calling_aet,
            contexts=contexts,
            max_pdu_length=max_pdu or UNLIMITED_CHUNK,  # what the reader takes
            implementation_class_uid=IMPLEMENTATION_CLASS_UID,
            implementation_version=IMPLEMENTATION_VERSION,
            roles=dict(roles or {}),
        )
        try:
            with trio.fail_after(config.connect_timeout):
                await stream.send_all(request)
                answer = await _read_pdu(stream, reader)
        except trio.TooSlowError:
            raise BackendTimeout(
                f"the PACS {where} did not answer the association request"
            ) from None
        except (trio.BrokenResourceError, OSError, PeerAborted) as exc:
            raise AssociationRejected(f"the PACS {where} closed the connection: {exc}") from None
        except UpperLayerError as exc:
            raise PeerProtocolError(
                f"the PACS {where} did not answer the association request in DICOM ({exc}); "
                "is this its DICOM port?"
            ) from None
        if isinstance(answer, AssociateReject):
            reason = _REJECT_REASONS.get((answer.source, answer.reason), f"reason {answer.reason}")
            kind = "permanently" if answer.result == 1 else "transiently"
            raise AssociationRejected(
                f"the PACS {where} {kind} rejected the association: {reason} "
                f"(rst called it as {calling_aet!r}, called AE title {config.called_aet!r})"
            )
        if not isinstance(answer, AssociateAccept):
            raise AssociationRejected(
                f"the PACS {where} answered the association request with {type(answer).__name__}"
            )
        connection = Connection(
            stream,
            reader,
            answer,
            {c.context_id: c.abstract_syntax for c in contexts},
            send_timeout=config.store_timeout,
        )
        if not connection.accepted:
            await connection.abort()
            raise AssociationRejected(
                f"the PACS {where} accepted none of the presentation contexts"
            )
        try:
            yield connection
        finally:
            with trio.CancelScope(shield=True):
                released = False
                if not connection.broken:
                    with trio.move_on_after(config.cancel_timeout):
                        released = await connection.release()
                if not released:
                    log.info("aborting the association with %s", config.aet)
                    await connection.abort()


async def _read_pdu(stream: trio.abc.Stream, reader: PduReader) -> object:
    while True:
        pdu = reader.next_pdu()
        if pdu is not None:
            return pdu
        count = await receive_into(stream, reader.writable())
        if count == 0:
            raise PeerAborted("connection closed")
        reader.advance(count)


def encode_identifier(identifier: Dataset, transfer_syntax: str) -> bytes:
    """A query/retrieve identifier encoded in the presentation context's transfer syntax."""
    syntax = UID(transfer_syntax)
    fp = DicomBytesIO()
    fp.is_little_endian = syntax.is_little_endian
    fp.is_implicit_VR = syntax.is_implicit_VR
    write_dataset(fp, identifier)
    return fp.getvalue()
