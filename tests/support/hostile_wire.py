"""The DICOM wire of the hostile peers (:mod:`tests.support.hostile_pacs`,
:mod:`tests.support.hostile_scu`): their constants, data sets and command sets encoded and
decoded, the command sets of responses, and :class:`Link`, one association's socket speaking
the upper layer through rst's own sans-IO codec (:mod:`rst.backends.dimse.ul`).
"""

from __future__ import annotations

import collections
import struct
from dataclasses import dataclass
from io import BytesIO

import trio
from pydicom import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from rst.backends.dimse.ul import (
    CEchoRequest,
    CommandError,
    CStoreRequest,
    OtherCommand,
    PData,
    Pdu,
    PduReader,
    encode_pdata,
    parse_command,
)
from rst.dicom.statuses import PENDING

__all__ = [
    "C_CANCEL_RQ",
    "C_FIND_RQ",
    "C_FIND_RSP",
    "C_GET_RQ",
    "C_GET_RSP",
    "C_MOVE_RQ",
    "C_MOVE_RSP",
    "C_STORE_RSP",
    "DATASET_PRESENT",
    "IMPLEMENTATION_UID",
    "IMPLEMENTATION_VERSION",
    "MAX_PDU",
    "NO_DATASET",
    "SYNTAXES",
    "T_ASSOCIATE_AC",
    "T_ASSOCIATE_RQ",
    "T_PDATA",
    "Link",
    "Message",
    "command_set",
    "decode_dataset",
    "encode_dataset",
    "response_command",
    "retrieve_response",
]

MAX_PDU = 65536
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.10.1379.1"
IMPLEMENTATION_VERSION = "HOSTILE_PACS"
SYNTAXES = (str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian))

C_GET_RSP = 0x8010
C_FIND_RQ = 0x0020
C_FIND_RSP = 0x8020
C_GET_RQ = 0x0010
C_MOVE_RQ = 0x0021
C_MOVE_RSP = 0x8021
C_CANCEL_RQ = 0x0FFF
C_STORE_RSP = 0x8001
DATASET_PRESENT = 0x0001
NO_DATASET = 0x0101

T_ASSOCIATE_RQ = 0x01
T_ASSOCIATE_AC = 0x02
T_PDATA = 0x04


def encode_dataset(ds: Dataset, transfer_syntax: str) -> bytes:
    syntax = UID(transfer_syntax)
    fp = DicomBytesIO()
    fp.is_little_endian = syntax.is_little_endian
    fp.is_implicit_VR = syntax.is_implicit_VR
    write_dataset(fp, ds)
    return fp.getvalue()


def decode_dataset(data: bytes, transfer_syntax: str) -> Dataset:
    syntax = UID(transfer_syntax)
    return read_dataset(BytesIO(data), syntax.is_implicit_VR, syntax.is_little_endian)


def command_set(**values: object) -> bytes:
    """A DIMSE command set (Implicit VR Little Endian, group length first), by keyword."""
    ds = Dataset()
    for keyword, value in values.items():
        if value is not None:
            setattr(ds, keyword, value)
    body = encode_dataset(ds, ImplicitVRLittleEndian)
    return struct.pack("<HHLL", 0, 0, 4, len(body)) + body


@dataclass(frozen=True)
class Message:
    context_id: int
    command: CStoreRequest | CEchoRequest | OtherCommand
    raw_command: bytes
    dataset: bytes | None


class Link:
    """One association's socket: PDUs and DIMSE messages in, bytes out."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.reader = PduReader(max_pdu_length=MAX_PDU, buffer_size=256 * 1024)
        self.peer_max = MAX_PDU
        self.contexts: dict[int, tuple[str, str]] = {}  # id -> (abstract syntax, transfer)
        self._pdvs: collections.deque[tuple[int, bool, bool, bytes]] = collections.deque()

    def context_for(self, abstract_syntax: str) -> tuple[int, str] | None:
        for context_id, (abstract, syntax) in self.contexts.items():
            if abstract == abstract_syntax:
                return context_id, syntax
        return None

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send_command(self, context_id: int, command: bytes) -> None:
        await self.send(encode_pdata(context_id, True, True, command))

    async def send_dataset(self, context_id: int, data: bytes) -> None:
        step = max(self.peer_max - 6, 1) if self.peer_max else len(data) or 1
        for start in range(0, max(len(data), 1), step):
            last = start + step >= len(data)
            await self.send(encode_pdata(context_id, False, last, data[start : start + step]))

    async def pdu(self) -> Pdu | None:
        """The next PDU, or ``None`` once the peer has closed the connection."""
        while True:
            pdu = self.reader.next_pdu()
            if pdu is not None:
                return pdu
            try:
                count = await self.stream.socket.recv_into(self.reader.writable())
            except OSError:
                return None
            if count == 0:
                return None
            self.reader.advance(count)

    async def message(self) -> Message | Pdu | None:
        """The next DIMSE message; or the next PDU if it is not P-DATA; ``None`` at the end."""
        command = bytearray()
        parsed: CStoreRequest | CEchoRequest | OtherCommand | None = None
        raw = b""
        data = bytearray()
        while True:
            while not self._pdvs:
                pdu = await self.pdu()
                if not isinstance(pdu, PData):
                    return pdu
                self._pdvs.extend(
                    (p.context_id, p.is_command, p.is_last, bytes(p.data)) for p in pdu.pdvs
                )
            context_id, is_command, is_last, chunk = self._pdvs.popleft()
            if parsed is None:
                if not is_command:
                    raise CommandError("a data set fragment where a command was expected")
                command += chunk
                if is_last:
                    raw = bytes(command)
                    parsed = parse_command(raw)
                    if not _has_dataset(parsed):
                        return Message(context_id, parsed, raw, None)
            else:
                data += chunk
                if is_last:
                    return Message(context_id, parsed, raw, bytes(data))

    async def drain(self) -> None:
        """Read and drop everything until the peer closes the connection."""
        while True:
            try:
                data = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return
            if not data:
                return


def _has_dataset(command: CStoreRequest | CEchoRequest | OtherCommand) -> bool:
    if isinstance(command, CStoreRequest):
        return True
    if isinstance(command, CEchoRequest):
        return False
    return command.has_dataset


def response_command(
    message: Message,
    field: int,
    status: int,
    *,
    dataset: bool = False,
    counts: dict[str, int] | None = None,
) -> bytes:
    """The command set of a response to *message*; *counts*: sub-operations by kind."""
    suboperations = {f"NumberOf{kind}Suboperations": n for kind, n in (counts or {}).items()}
    return command_set(
        AffectedSOPClassUID=getattr(message.command, "sop_class_uid", None),
        CommandField=field,
        MessageIDBeingRespondedTo=message.command.message_id or 0,
        CommandDataSetType=DATASET_PRESENT if dataset else NO_DATASET,
        Status=status,
        **suboperations,
    )


def retrieve_response(
    message: Message, field: int, status: int, total: int, completed: int, failed: int = 0
) -> bytes:
    """A C-GET/C-MOVE response with its sub-operation counts (remaining only if pending)."""
    counts = {"Completed": completed, "Failed": failed, "Warning": 0}
    if status == PENDING:
        counts["Remaining"] = total - completed - failed
    return response_command(message, field, status, counts=counts)
