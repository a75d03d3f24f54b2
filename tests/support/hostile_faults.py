"""The scripted faults of the hostile peers: where in an exchange (:class:`Phase`), what instead
of the right thing (:class:`Action`), and :func:`misbehave`, which does it on a :class:`Link`.
"""

from __future__ import annotations

import enum
import random
import struct
from dataclasses import dataclass

from rst.backends.dimse.ul import (
    AssociateRequest,
    PresentationContextRQ,
    encode_abort,
    encode_associate_ac,
    encode_associate_rq,
    encode_pdata,
    negotiate,
)

from .hostile_wire import (
    IMPLEMENTATION_UID,
    IMPLEMENTATION_VERSION,
    MAX_PDU,
    NO_DATASET,
    SYNTAXES,
    T_PDATA,
    Link,
    command_set,
)

__all__ = [
    "HTTP_REQUEST",
    "HTTP_RESPONSE",
    "Action",
    "Done",
    "Phase",
    "Script",
    "misbehave",
]

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


class Done(Exception):
    """The fault has been committed (or the peer has gone): end this connection."""


INCOMPLETE_COMMAND = command_set(MessageIDBeingRespondedTo=1, CommandDataSetType=NO_DATASET)

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


def _header(pdu_type: int, length: int) -> bytes:
    return struct.pack(">BxL", pdu_type, length)


async def misbehave(
    link: Link,
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
