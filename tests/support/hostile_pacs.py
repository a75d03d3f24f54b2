"""A hostile PACS: a minimal Query/Retrieve SCP that misbehaves at one scripted point.

It speaks the DICOM upper layer on raw trio sockets through rst's own sans-IO codec
(:mod:`rst.backends.dimse.ul`), and is a correct, if small, archive of two CT instances — it
accepts every proposed context, answers C-ECHO, C-FIND (two pending matches, then success), C-GET
(C-STORE sub-operations on the same association), C-MOVE (C-STORE sub-operations on an
association it opens to the move destination, which is rst's receiver) and C-STORE (STOW) —
except at the one point its :class:`Script` names: a :class:`Phase` of the exchange where it
does an :class:`Action` instead of the right thing (garbage, a PDU out of turn, an impossible
length, an undecodable command set, A-ABORT or silence). The fault happens once, the first time
the phase is reached; afterwards the PACS behaves again, so the gateway's recovery can be
checked against the same peer.

After a fault that does not close the connection itself, the PACS reads (and drops) whatever
comes until rst closes it: a gateway that does not notice the fault, or notices it and keeps the
association open, is seen as a connection that never ends (:meth:`HostilePacs.wait_idle`).

:class:`HostileScu` is the same idea turned round: an association *to* rst's C-STORE receiver
that misbehaves at one point.
"""

from __future__ import annotations

import collections
import enum
import functools
import random
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from io import BytesIO

import numpy as np
import trio
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import dcmwrite, write_dataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from rst.backends.dimse.ul import (
    AssociateAccept,
    AssociateRequest,
    CEchoRequest,
    CommandError,
    CStoreRequest,
    OtherCommand,
    PData,
    Pdu,
    PduReader,
    PresentationContextRQ,
    ReleaseRequest,
    ReleaseResponse,
    UpperLayerError,
    encode_abort,
    encode_associate_ac,
    encode_associate_rq,
    encode_c_echo_rsp,
    encode_c_store_rq,
    encode_c_store_rsp,
    encode_pdata,
    encode_release_rp,
    encode_release_rq,
    negotiate,
    parse_command,
)
from rst.dicom.statuses import (
    CANCEL,
    MOVE_DESTINATION_UNKNOWN,
    PENDING,
    SUBOPERATIONS_FAILED,
    SUCCESS,
)

__all__ = [
    "Action",
    "HostilePacs",
    "HostileScu",
    "Phase",
    "SampleInstance",
    "Script",
    "encode_dataset",
    "sample_instances",
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

HTTP_RESPONSE = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n"
    b"Connection: close\r\n\r\nBad Request"
)
"""What a PACS's HTTP port answers: its DICOM port was configured with the HTTP one."""
HTTP_REQUEST = b"GET / HTTP/1.1\r\nHost: rst\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n"
"""What an HTTP client sends to the receiver's port by mistake."""


class Phase(enum.StrEnum):
    """Where in an exchange the fault happens (the fake's side of it)."""

    ASSOCIATION = "association"
    """The answer to the A-ASSOCIATE-RQ (for :class:`HostileScu`: the request itself)."""
    FIRST_RESPONSE = "first-response"
    """The first DIMSE response: C-ECHO-RSP, the first C-FIND match, the first C-GET/C-MOVE
    pending response (sent before any sub-operation), the first C-STORE-RSP of a STOW."""
    PENDING = "pending"
    """The next pending response: the second C-FIND match, the C-GET/C-MOVE pending response
    after the first sub-operation."""
    STORE_COMMAND = "store-command"
    """The command of a C-STORE sub-operation (:attr:`Script.suboperation`)."""
    STORE_DATA = "store-data"
    """The data set of a C-STORE sub-operation, after its command went out right."""
    FINAL = "final"
    """The final response (for a STOW of two instances: the second C-STORE-RSP)."""
    RELEASE = "release"
    """The answer to A-RELEASE-RQ (for :class:`HostileScu`: the request itself)."""


class Action(enum.StrEnum):
    """What the fake does instead of the right thing."""

    GARBAGE = "garbage"
    """A PDU of the expected type and a consistent length, with random bytes as its body."""
    HTTP = "http"
    """HTTP instead of DICOM (first byte 0x48): a response, then close, from the PACS; a
    request, from :class:`HostileScu`."""
    WRONG_PDU = "wrong-pdu"
    """A well-formed PDU out of turn: an A-ASSOCIATE-AC in the middle of an operation, an
    A-ASSOCIATE-RQ in answer to one."""
    UNKNOWN_PDU = "unknown-pdu"
    """A well-framed PDU of a type PS3.8 does not define (0x0A)."""
    OVERSIZED = "oversized"
    """A PDU whose length field says 2**31 bytes."""
    TRUNCATED = "truncated"
    """A PDU whose header says 1000 bytes; 10 come, then the connection closes."""
    BAD_COMMAND = "bad-command"
    """Random bytes as a command PDV (where a data set is expected: a command PDV at all)."""
    INCOMPLETE_COMMAND = "incomplete-command"
    """A well-formed command set without its Command Field."""
    ABORT = "abort"
    """A-ABORT, then close."""
    SILENCE = "silence"
    """Nothing: read and never answer."""


@dataclass(frozen=True)
class Script:
    phase: Phase
    action: Action
    suboperation: int = 0
    """For the C-STORE sub-operation phases: which one (0 = the first)."""

    @property
    def id(self) -> str:
        return f"{self.phase}-{self.action}"


class _Done(Exception):
    """The fault has been committed (or the peer has gone): end this connection."""


# --- sample data ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleInstance:
    dataset: Dataset
    part10: bytes

    @property
    def sop_class_uid(self) -> str:
        return str(self.dataset.SOPClassUID)

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)

    @property
    def study_uid(self) -> str:
        return str(self.dataset.StudyInstanceUID)

    @property
    def series_uid(self) -> str:
        return str(self.dataset.SeriesInstanceUID)


@functools.cache
def sample_instances(count: int = 2) -> tuple[SampleInstance, ...]:
    """*count* small CT instances (8x8) of one series of one study; deterministic."""

    def uid(*parts: object) -> UID:
        return generate_uid(entropy_srcs=["rst-hostile-pacs", *map(str, parts)])

    instances = []
    for number in range(1, count + 1):
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = uid("instance", number)
        ds.StudyDate = "20240315"
        ds.StudyTime = "101500"
        ds.AccessionNumber = "HOSTILE1"
        ds.Modality = "CT"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "hostile"
        ds.PatientName = "HOSTILE^PACS"
        ds.PatientID = "HOSTILE"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.StudyInstanceUID = uid("study")
        ds.SeriesInstanceUID = uid("series")
        ds.StudyID = "1"
        ds.SeriesNumber = 1
        ds.InstanceNumber = number
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = 8
        ds.Columns = 8
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.PixelData = np.arange(64, dtype="<i2").tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = UID(IMPLEMENTATION_UID)
        ds.file_meta = meta
        buffer = BytesIO()
        dcmwrite(buffer, ds, enforce_file_format=True)
        del ds.file_meta
        instances.append(SampleInstance(ds, buffer.getvalue()))
    return tuple(instances)


def encode_dataset(ds: Dataset, transfer_syntax: str) -> bytes:
    syntax = UID(transfer_syntax)
    fp = DicomBytesIO()
    fp.is_little_endian = syntax.is_little_endian
    fp.is_implicit_VR = syntax.is_implicit_VR
    write_dataset(fp, ds)
    return fp.getvalue()


def _decode_dataset(data: bytes, transfer_syntax: str) -> Dataset:
    syntax = UID(transfer_syntax)
    return read_dataset(BytesIO(data), syntax.is_implicit_VR, syntax.is_little_endian)


def _command_set(**values: object) -> bytes:
    """A DIMSE command set (Implicit VR Little Endian, group length first), by keyword."""
    ds = Dataset()
    for keyword, value in values.items():
        if value is not None:
            setattr(ds, keyword, value)
    body = encode_dataset(ds, ImplicitVRLittleEndian)
    return struct.pack("<HHLL", 0, 0, 4, len(body)) + body


INCOMPLETE_COMMAND = _command_set(MessageIDBeingRespondedTo=1, CommandDataSetType=NO_DATASET)

_ANY_REQUEST = AssociateRequest(
    called_aet="ANY",
    calling_aet="ANY",
    application_context="1.2.840.10008.3.1.1.1",
    contexts=(PresentationContextRQ(1, "1.2.840.10008.1.1", SYNTAXES),),
    max_pdu_length=MAX_PDU,
    implementation_class_uid=IMPLEMENTATION_UID,
    implementation_version=None,
    roles={},
    protocol_version=1,
)
STRAY_ACCEPT = encode_associate_ac(
    _ANY_REQUEST,
    negotiate(_ANY_REQUEST, abstract_syntaxes={"1.2.840.10008.1.1"}, transfer_syntaxes=SYNTAXES),
    max_pdu_length=MAX_PDU,
    implementation_class_uid=IMPLEMENTATION_UID,
    implementation_version=IMPLEMENTATION_VERSION,
)
STRAY_REQUEST = encode_associate_rq(
    called_aet="ANY",
    calling_aet="ANY",
    contexts=_ANY_REQUEST.contexts,
    max_pdu_length=MAX_PDU,
    implementation_class_uid=IMPLEMENTATION_UID,
)


# --- one connection ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Message:
    context_id: int
    command: CStoreRequest | CEchoRequest | OtherCommand
    raw_command: bytes
    dataset: bytes | None


class _Link:
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

    async def message(self) -> _Message | Pdu | None:
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
                        return _Message(context_id, parsed, raw, None)
            else:
                data += chunk
                if is_last:
                    return _Message(context_id, parsed, raw, bytes(data))

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


def _header(pdu_type: int, length: int) -> bytes:
    return struct.pack(">BxL", pdu_type, length)


async def misbehave(
    link: _Link,
    script: Script,
    *,
    requestor: bool,
    context_id: int = 1,
    expected_type: int = T_PDATA,
) -> None:
    """Do ``script.action`` on *link*; then, unless the action closes the connection, read
    until the peer closes it. *requestor*: the fake requested this association."""
    action = script.action
    noise = random.Random(script.id).randbytes(64)
    closes = False
    match action:
        case Action.GARBAGE:
            await link.send(_header(expected_type, len(noise)) + noise)
        case Action.HTTP:
            await link.send(HTTP_REQUEST if requestor else HTTP_RESPONSE)
            closes = not requestor
        case Action.WRONG_PDU:
            at_start = script.phase is Phase.ASSOCIATION
            await link.send(STRAY_ACCEPT if at_start == requestor else STRAY_REQUEST)
        case Action.UNKNOWN_PDU:
            await link.send(_header(0x0A, 4) + bytes(4))
        case Action.OVERSIZED:
            await link.send(_header(expected_type, 1 << 31) + noise)
        case Action.TRUNCATED:
            await link.send(_header(expected_type, 1000) + noise[:10])
            closes = True
        case Action.BAD_COMMAND:
            await link.send(encode_pdata(context_id, True, True, noise[:40]))
        case Action.INCOMPLETE_COMMAND:
            await link.send(encode_pdata(context_id, True, True, INCOMPLETE_COMMAND))
        case Action.ABORT:
            await link.send(encode_abort(0, 0))
            closes = True
        case Action.SILENCE:
            pass
    if not closes:
        await link.drain()


async def _first_of(*waits: Callable[[], Awaitable[object]]) -> None:
    """Run *waits* concurrently until the first returns."""
    async with trio.open_nursery() as nursery:
        for wait in waits:

            async def run(wait: Callable[[], Awaitable[object]] = wait) -> None:
                await wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(run)


# --- the PACS ---------------------------------------------------------------------------------


@dataclass
class HostilePacs:
    """The fake PACS. Start it with ``port = await nursery.start(pacs.serve)``."""

    aet: str
    script: Script | None = None
    instances: tuple[SampleInstance, ...] = field(default_factory=sample_instances)
    destinations: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Move destinations it knows: AE title -> (host, port)."""
    empty_pendings: int = 0
    """Pending C-FIND responses without an identifier sent before the matches (a PACS that
    reports progress so; PS3.4 C.4.1.1.4 wants an identifier in each)."""
    collide_on_release: bool = False
    """Answer rst's A-RELEASE-RQ with one of its own (a release collision, PS3.8 Sta10), then
    wait for rst's A-RELEASE-RP before sending its own (AR-10, AR-4)."""

    def __post_init__(self) -> None:
        self.struck: Phase | None = None
        """Set when the scripted fault has been committed."""
        self.events: list[str] = []
        self.open_connections = 0
        self._idle = trio.Event()
        self._idle.set()
        self._stores = 0

    # -- bookkeeping ---------------------------------------------------------------------------

    def _strike(self, phase: Phase, suboperation: int = 0) -> Script | None:
        script = self.script
        if script is None or self.struck is not None or script.phase is not phase:
            return None
        if phase in (Phase.STORE_COMMAND, Phase.STORE_DATA) and suboperation != script.suboperation:
            return None
        self.struck = phase
        self.events.append(f"fault: {script.id}")
        return script

    async def wait_idle(self) -> None:
        """Until no connection to or from this PACS is open (rst closed every association)."""
        while self.open_connections:
            await self._idle.wait()

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = int(listeners[0].socket.getsockname()[1])
        task_status.started(port)
        await trio.serve_listeners(self._connection, listeners)

    def _opened(self) -> None:
        if not self.open_connections:
            self._idle = trio.Event()
        self.open_connections += 1

    def _closed(self) -> None:
        self.open_connections -= 1
        if not self.open_connections:
            self._idle.set()

    async def _connection(self, stream: trio.SocketStream) -> None:
        self._opened()
        try:
            async with stream:
                await self._association(_Link(stream))
        except _Done:
            pass
        except (
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            OSError,
            UpperLayerError,
            CommandError,
        ) as exc:
            self.events.append(f"connection ended: {exc!r}")
        finally:
            self._closed()

    async def _fault(self, link: _Link, script: Script, **kw: int) -> None:
        await misbehave(link, script, requestor=False, **kw)
        raise _Done

    async def _respond(
        self,
        link: _Link,
        phase: Phase,
        context_id: int,
        command: bytes,
        dataset: bytes | None = None,
    ) -> None:
        if (script := self._strike(phase)) is not None:
            await self._fault(link, script, context_id=context_id)
        await link.send_command(context_id, command)
        if dataset is not None:
            await link.send_dataset(context_id, dataset)

    # -- the association -----------------------------------------------------------------------

    async def _association(self, link: _Link) -> None:
        request = await link.pdu()
        if not isinstance(request, AssociateRequest):
            return
        if (script := self._strike(Phase.ASSOCIATION)) is not None:
            await self._fault(link, script, expected_type=T_ASSOCIATE_AC)
        results = negotiate(
            request,
            abstract_syntaxes={cx.abstract_syntax for cx in request.contexts},
            transfer_syntaxes=SYNTAXES,
        )
        abstract = {cx.context_id: cx.abstract_syntax for cx in request.contexts}
        link.contexts = {
            r.context_id: (abstract[r.context_id], r.transfer_syntax)
            for r in results
            if r.result == 0
        }
        link.peer_max = request.max_pdu_length
        await link.send(
            encode_associate_ac(
                request,
                results,
                max_pdu_length=MAX_PDU,
                implementation_class_uid=IMPLEMENTATION_UID,
                implementation_version=IMPLEMENTATION_VERSION,
                roles={uid: (False, True) for uid, (_, scp) in request.roles.items() if scp},
            )
        )
        while True:
            message = await link.message()
            if isinstance(message, ReleaseRequest):
                if (script := self._strike(Phase.RELEASE)) is not None:
                    await self._fault(link, script)
                if self.collide_on_release:
                    await self._collide(link)
                    return
                await link.send(encode_release_rp())
                return
            if not isinstance(message, _Message):
                return  # closed, aborted, or a PDU out of turn: hang up
            await self._dispatch(link, message, request.calling_aet)

    async def _collide(self, link: _Link) -> None:
        """The acceptor's side of a release collision: its own A-RELEASE-RQ, then the
        requestor's A-RELEASE-RP, then its own A-RELEASE-RP; anything else is noted."""
        await link.send(encode_release_rq())
        answer = await link.pdu()
        if not isinstance(answer, ReleaseResponse):
            self.events.append(f"collision: {type(answer).__name__} instead of A-RELEASE-RP")
            return
        self.events.append("collision: A-RELEASE-RP")
        await link.send(encode_release_rp())
        await link.drain()

    async def _dispatch(self, link: _Link, message: _Message, calling_aet: str) -> None:
        command = message.command
        if isinstance(command, CEchoRequest):
            response = encode_c_echo_rsp(command)
            await self._respond(link, Phase.FIRST_RESPONSE, message.context_id, response)
        elif isinstance(command, CStoreRequest):
            phase = Phase.FIRST_RESPONSE if self._stores == 0 else Phase.FINAL
            self._stores += 1
            response = encode_c_store_rsp(command, SUCCESS)
            await self._respond(link, phase, message.context_id, response)
        elif command.command_field == C_FIND_RQ:
            await self._find(link, message)
        elif command.command_field == C_GET_RQ:
            await self._get(link, message)
        elif command.command_field == C_MOVE_RQ:
            await self._move(link, message, calling_aet)
        # C-CANCEL outside an operation (it crossed the final response): nothing to do

    # -- C-FIND --------------------------------------------------------------------------------

    async def _find(self, link: _Link, message: _Message) -> None:
        context_id, syntax = message.context_id, link.contexts[message.context_id][1]
        query = _decode_dataset(message.dataset or b"", syntax)
        pending = _response(message, C_FIND_RSP, PENDING, dataset=True)
        for _ in range(self.empty_pendings):
            await link.send_command(context_id, _response(message, C_FIND_RSP, PENDING))
        for number, instance in enumerate(self.instances):
            match = encode_dataset(_match(query, instance.dataset), syntax)
            phase = Phase.FIRST_RESPONSE if number == 0 else Phase.PENDING
            await self._respond(link, phase, context_id, pending, match)
        final = _response(message, C_FIND_RSP, SUCCESS)
        await self._respond(link, Phase.FINAL, context_id, final)

    # -- C-GET and C-MOVE ----------------------------------------------------------------------

    def _selected(self, identifier: Dataset) -> list[SampleInstance]:
        def wanted(instance: SampleInstance) -> bool:
            return all(
                keyword not in identifier or str(identifier[keyword].value) == uid
                for keyword, uid in (
                    ("StudyInstanceUID", instance.study_uid),
                    ("SeriesInstanceUID", instance.series_uid),
                    ("SOPInstanceUID", instance.sop_instance_uid),
                )
            )

        return [instance for instance in self.instances if wanted(instance)]

    async def _get(self, link: _Link, message: _Message) -> None:
        context_id, syntax = message.context_id, link.contexts[message.context_id][1]
        selected = self._selected(_decode_dataset(message.dataset or b"", syntax))
        total = len(selected)

        def response(status: int, completed: int) -> bytes:
            return _retrieve_response(message, C_GET_RSP, status, total, completed)

        await self._respond(link, Phase.FIRST_RESPONSE, context_id, response(PENDING, 0))
        for number, instance in enumerate(selected):
            found = link.context_for(instance.sop_class_uid)
            if found is None:
                raise _Done  # rst offered no context for it: not a case these tests make
            store_context, store_syntax = found
            store = encode_c_store_rq(
                message_id=number + 1,
                sop_class_uid=instance.sop_class_uid,
                sop_instance_uid=instance.sop_instance_uid,
            )
            if (script := self._strike(Phase.STORE_COMMAND, number)) is not None:
                await self._fault(link, script, context_id=store_context)
            await link.send_command(store_context, store)
            if (script := self._strike(Phase.STORE_DATA, number)) is not None:
                await self._fault(link, script, context_id=store_context)
            await link.send_dataset(store_context, encode_dataset(instance.dataset, store_syntax))
            answer = await link.message()
            if not isinstance(answer, _Message):
                raise _Done
            if (
                isinstance(answer.command, OtherCommand)
                and answer.command.command_field == C_CANCEL_RQ
            ):
                await link.send_command(context_id, response(CANCEL, number))
                return
            if number + 1 < total:
                await self._respond(link, Phase.PENDING, context_id, response(PENDING, number + 1))
        await self._respond(link, Phase.FINAL, context_id, response(SUCCESS, total))

    async def _move(self, link: _Link, message: _Message, calling_aet: str) -> None:
        context_id, syntax = message.context_id, link.contexts[message.context_id][1]
        selected = self._selected(_decode_dataset(message.dataset or b"", syntax))
        total = len(selected)
        raw = _decode_dataset(message.raw_command, ImplicitVRLittleEndian)
        destination = str(raw.get("MoveDestination", "")).strip()
        address = self.destinations.get(destination)
        if address is None:
            refused = _retrieve_response(message, C_MOVE_RSP, MOVE_DESTINATION_UNKNOWN, 0, 0)
            await self._respond(link, Phase.FIRST_RESPONSE, context_id, refused)
            return

        def response(status: int, completed: int, failed: int = 0) -> bytes:
            return _retrieve_response(message, C_MOVE_RSP, status, total, completed, failed)

        if not selected:  # no sub-operations: no association to the destination either
            await self._respond(link, Phase.FINAL, context_id, response(SUCCESS, 0))
            return
        await self._respond(link, Phase.FIRST_RESPONSE, context_id, response(PENDING, 0))
        completed = 0
        async with await trio.open_tcp_stream(*address) as stream:
            self._opened()
            try:
                sub = _Link(stream)
                if not await self._associate_to(sub, destination, selected):
                    raise _Done
                for number, instance in enumerate(selected):
                    if not await self._store_to(sub, link, instance, number, calling_aet, message):
                        break
                    completed += 1
                    if number + 1 < total:
                        await self._respond(
                            link, Phase.PENDING, context_id, response(PENDING, completed)
                        )
                else:
                    await sub.send(encode_release_rq())
                    with trio.move_on_after(5):
                        while not isinstance(await sub.pdu(), ReleaseResponse | None):
                            pass
            finally:
                self._closed()
        failed = total - completed
        status = SUCCESS if not failed else SUBOPERATIONS_FAILED
        await self._respond(link, Phase.FINAL, context_id, response(status, completed, failed))

    async def _associate_to(self, sub: _Link, called: str, instances: list[SampleInstance]) -> bool:
        """Open the sub-operations' association with the move destination."""
        classes = sorted({instance.sop_class_uid for instance in instances})
        contexts = [
            PresentationContextRQ(1 + 2 * n, uid, SYNTAXES) for n, uid in enumerate(classes)
        ]
        await sub.send(
            encode_associate_rq(
                called_aet=called,
                calling_aet=self.aet,
                contexts=contexts,
                max_pdu_length=MAX_PDU,
                implementation_class_uid=IMPLEMENTATION_UID,
                implementation_version=IMPLEMENTATION_VERSION,
            )
        )
        accept = await sub.pdu()
        if not isinstance(accept, AssociateAccept):
            self.events.append(f"move destination answered {accept!r}")
            return False
        abstract = {cx.context_id: cx.abstract_syntax for cx in contexts}
        sub.contexts = {
            r.context_id: (abstract[r.context_id], r.transfer_syntax)
            for r in accept.contexts
            if r.result == 0
        }
        sub.peer_max = accept.max_pdu_length
        return True

    async def _store_to(
        self,
        sub: _Link,
        main: _Link,
        instance: SampleInstance,
        number: int,
        calling_aet: str,
        message: _Message,
    ) -> bool:
        """One C-STORE sub-operation on the destination association; ``False`` if it failed.

        A fault here goes to the destination (rst's receiver). With silence the whole PACS
        hangs (until rst gives up on the C-MOVE); otherwise the PACS waits for the destination
        to drop the association and reports the sub-operation failed, as a real one would."""
        found = sub.context_for(instance.sop_class_uid)
        if found is None:
            return False
        context_id, syntax = found
        store = encode_c_store_rq(
            message_id=number + 1,
            sop_class_uid=instance.sop_class_uid,
            sop_instance_uid=instance.sop_instance_uid,
            move_originator_aet=calling_aet,
            move_originator_message_id=message.command.message_id,
        )
        script = self._strike(Phase.STORE_COMMAND, number)
        if script is None:
            await sub.send_command(context_id, store)
            script = self._strike(Phase.STORE_DATA, number)
        if script is not None:
            if script.action is Action.SILENCE:
                await main.drain()
                raise _Done

            gave_up = False

            async def fault() -> None:
                await misbehave(sub, script, requestor=True, context_id=context_id)

            async def main_closed() -> None:
                nonlocal gave_up
                await main.drain()
                gave_up = True

            await _first_of(fault, main_closed)
            if gave_up:  # rst ended the C-MOVE before its receiver dropped the association
                raise _Done
            return False
        await sub.send_dataset(context_id, encode_dataset(instance.dataset, syntax))
        answer = await sub.message()
        if not isinstance(answer, _Message) or not isinstance(answer.command, OtherCommand):
            return False
        return answer.command.command_field == C_STORE_RSP and answer.command.status == SUCCESS


def _response(
    message: _Message,
    field: int,
    status: int,
    *,
    dataset: bool = False,
    counts: dict[str, int] | None = None,
) -> bytes:
    """The command set of a response to *message*; *counts*: sub-operations by kind."""
    suboperations = {f"NumberOf{kind}Suboperations": n for kind, n in (counts or {}).items()}
    return _command_set(
        AffectedSOPClassUID=getattr(message.command, "sop_class_uid", None),
        CommandField=field,
        MessageIDBeingRespondedTo=message.command.message_id or 0,
        CommandDataSetType=DATASET_PRESENT if dataset else NO_DATASET,
        Status=status,
        **suboperations,
    )


def _retrieve_response(
    message: _Message, field: int, status: int, total: int, completed: int, failed: int = 0
) -> bytes:
    """A C-GET/C-MOVE response with its sub-operation counts (remaining only if pending)."""
    counts = {"Completed": completed, "Failed": failed, "Warning": 0}
    if status == PENDING:
        counts["Remaining"] = total - completed - failed
    return _response(message, field, status, counts=counts)


def _match(query: Dataset, instance: Dataset) -> Dataset:
    """The C-FIND answer to *query* from *instance*: every requested key, filled if known."""
    match = Dataset()
    for element in query:
        if element.tag in instance:
            match.add(instance[element.tag])
        else:
            match.add(element)
    return match


# --- the association to rst's receiver --------------------------------------------------------


@dataclass
class HostileScu:
    """An association to rst's C-STORE receiver that misbehaves at ``script.phase``:
    :attr:`Phase.ASSOCIATION` (the A-ASSOCIATE-RQ), :attr:`Phase.STORE_COMMAND`,
    :attr:`Phase.STORE_DATA` or :attr:`Phase.RELEASE` (after one C-STORE)."""

    address: tuple[str, int]
    script: Script
    calling_aet: str = "HOSTILE"
    instance: SampleInstance = field(default_factory=lambda: sample_instances()[0])

    def __post_init__(self) -> None:
        self.faulted = trio.Event()
        """Set once the fault is committed (for silence: once the fake has gone quiet)."""
        self.ended = trio.Event()
        """Set once the connection is closed (by rst, or by the action)."""

    async def run(self) -> None:
        try:
            async with await trio.open_tcp_stream(*self.address) as stream:
                await self._run(_Link(stream))
        except (_Done, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            self.ended.set()

    async def _fault(self, link: _Link, **kw: int) -> None:
        self.faulted.set()
        await misbehave(link, self.script, requestor=True, **kw)
        raise _Done

    async def _run(self, link: _Link) -> None:
        phase = self.script.phase
        if phase is Phase.ASSOCIATION:
            await self._fault(link, expected_type=T_ASSOCIATE_RQ)
        instance = self.instance
        await link.send(
            encode_associate_rq(
                called_aet="RST",
                calling_aet=self.calling_aet,
                contexts=[PresentationContextRQ(1, instance.sop_class_uid, SYNTAXES)],
                max_pdu_length=MAX_PDU,
                implementation_class_uid=IMPLEMENTATION_UID,
                implementation_version=IMPLEMENTATION_VERSION,
            )
        )
        accept = await link.pdu()
        if not isinstance(accept, AssociateAccept) or not accept.contexts:
            raise _Done
        syntax = accept.contexts[0].transfer_syntax
        link.peer_max = accept.max_pdu_length
        if phase is Phase.STORE_COMMAND:
            await self._fault(link)
        await link.send_command(
            1,
            encode_c_store_rq(
                message_id=1,
                sop_class_uid=instance.sop_class_uid,
                sop_instance_uid=instance.sop_instance_uid,
            ),
        )
        if phase is Phase.STORE_DATA:
            await self._fault(link)
        await link.send_dataset(1, encode_dataset(instance.dataset, syntax))
        await link.message()  # the C-STORE-RSP (rst refuses an instance nobody asked for)
        if phase is Phase.RELEASE:
            await self._fault(link)
        await link.send(encode_release_rq())
        await link.pdu()
