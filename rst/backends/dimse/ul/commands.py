"""DIMSE command sets (PS3.7 §6.3, §9.3, Annex E): parsing and encoding, hand-coded.

A command set is always Implicit VR Little Endian and holds group 0000 only: a run of
(group, element, 4-byte length, value) with the Command Group Length (0000,0000) first.
C-STORE-RQ and C-ECHO-RQ (what the receiver serves) are decoded into their own classes; anything
else — notably the C-FIND/C-GET/C-MOVE/C-STORE responses the trio client reads, with status and
sub-operation counts — comes back as :class:`OtherCommand`. The client's requests (C-STORE,
C-ECHO, C-FIND, C-GET, C-MOVE, C-CANCEL) are encoded here too.

Interpretation: semantic values the receiver does not act on (Priority, unknown group-0000
elements such as retired ones) are length-checked but not range-checked; structure (order,
lengths, group, required fields, UID syntax) is checked strictly.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from rst.backends.dimse.ul.pdu import AbortReason, AbortSource

__all__ = [
    "C_ECHO_RQ",
    "C_ECHO_RSP",
    "C_STORE_RQ",
    "C_STORE_RSP",
    "MAX_COMMAND_SET",
    "NO_DATASET",
    "CEchoRequest",
    "CStoreRequest",
    "CommandError",
    "OtherCommand",
    "encode_c_echo_rq",
    "encode_c_echo_rsp",
    "encode_c_store_rq",
    "encode_c_store_rsp",
    "parse_command",
]

MAX_COMMAND_SET = 64 * 1024
"""Largest DIMSE command set taken, by the receiver and the client alike. A C-STORE-RQ is about
250 bytes (PS3.7 §9.3.1); a command that grows past this is aborted rather than reassembled for
ever."""
C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
C_ECHO_RQ = 0x0030
C_ECHO_RSP = 0x8030
NO_DATASET = 0x0101  # CommandDataSetType: "no data set present"; any other value: present
DATASET_PRESENT = 0x0001
VERIFICATION = "1.2.840.10008.1.1"
C_GET_RQ = 0x0010
C_GET_RSP = 0x8010
C_FIND_RQ = 0x0020
C_FIND_RSP = 0x8020
C_MOVE_RQ = 0x0021
C_MOVE_RSP = 0x8021
C_CANCEL_RQ = 0x0FFF

# Element numbers in group 0000 (PS3.7 Annex E).
_GROUP_LENGTH = 0x0000
_AFFECTED_SOP_CLASS = 0x0002
_COMMAND_FIELD = 0x0100
_MESSAGE_ID = 0x0110
_RESPONDED_TO = 0x0120
_PRIORITY = 0x0700
_DATASET_TYPE = 0x0800
_STATUS = 0x0900
_AFFECTED_SOP_INSTANCE = 0x1000
_MOVE_DESTINATION = 0x0600
_ERROR_COMMENT = 0x0902
_REMAINING = 0x1020
_COMPLETED = 0x1021
_FAILED = 0x1022
_WARNING = 0x1023
_MOVE_ORIGINATOR_AET = 0x1030
_MOVE_ORIGINATOR_ID = 0x1031

_ELEMENT = struct.Struct("<HHL")
_UL = struct.Struct("<L")
_US = struct.Struct("<H")
_US_ELEMENT = struct.Struct("<HHLH")
_UID = re.compile(rb"[0-9.]{1,64}")
_AE = re.compile(rb"[\x20-\x5b\x5d-\x7e]{1,16}")  # ISO 646 G0 without backslash


class CommandError(Exception):
    """Malformed or incomplete DIMSE command set.

    Detected above the Upper Layer, so the conventional answer is A-ABORT with source 0
    (service-user) and reason 0, the values in :attr:`source` and :attr:`reason`.
    """

    source = AbortSource.SERVICE_USER
    reason = AbortReason.NOT_SPECIFIED


@dataclass(frozen=True, slots=True)
class CStoreRequest:
    """C-STORE-RQ (PS3.7 Table 9.3-1). A data set always follows."""

    message_id: int
    sop_class_uid: str
    sop_instance_uid: str
    priority: int
    move_originator_aet: str | None
    move_originator_message_id: int | None


@dataclass(frozen=True, slots=True)
class CEchoRequest:
    """C-ECHO-RQ (PS3.7 Table 9.3-12). Never followed by a data set."""

    message_id: int
    sop_class_uid: str


@dataclass(frozen=True, slots=True)
class OtherCommand:
    """Any other command, decoded only as far as needed to answer or refuse it."""

    command_field: int
    message_id: int | None
    has_dataset: bool
    message_id_being_responded_to: int | None = None
    status: int | None = None
    sop_class_uid: str | None = None
    remaining: int | None = None
    completed: int | None = None
    failed: int | None = None
    warning: int | None = None
    error_comment: str | None = None


def parse_command(data: bytes | memoryview) -> CStoreRequest | CEchoRequest | OtherCommand:
    """Decode one complete command set (the reassembled command PDVs of one message)."""
    # One copy of the (small) command set: struct and slicing are faster on bytes than on a
    # memoryview, and the result holds no reference into the caller's buffer.
    view = bytes(data)
    size = len(view)
    if size < 12:
        raise CommandError("command set shorter than its group length element")
    group, element, length = _ELEMENT.unpack_from(view, 0)
    if group != 0 or element != _GROUP_LENGTH or length != 4:
        raise CommandError("command set does not start with (0000,0000) UL")
    (group_length,) = _UL.unpack_from(view, 8)
    if group_length != size - 12:
        raise CommandError(f"command group length {group_length} but {size - 12} bytes follow")
    # element -> (value offset, value length)
    fields: dict[int, tuple[int, int]] = {}
    offset = 12
    last = _GROUP_LENGTH
    unpack = _ELEMENT.unpack_from
    while offset < size:
        if size - offset < 8:
            raise CommandError("truncated element header in command set")
        group, element, length = unpack(view, offset)
        if group != 0:
            raise CommandError(f"tag ({group:04X},{element:04X}) outside group 0000")
        if element <= last:
            raise CommandError(f"tag (0000,{element:04X}) out of ascending order")
        offset += 8
        if length > size - offset:
            raise CommandError(f"(0000,{element:04X}) length {length} overflows the command")
        fields[element] = (offset, length)
        offset += length
        last = element

    command_field = _us(view, fields, _COMMAND_FIELD)
    dataset_type = _us(view, fields, _DATASET_TYPE)
    if command_field is None or dataset_type is None:
        raise CommandError("command set lacks CommandField or CommandDataSetType")
    has_dataset = dataset_type != NO_DATASET
    message_id = _us(view, fields, _MESSAGE_ID)

    if command_field == C_STORE_RQ:
        sop_class = _uid(view, fields, _AFFECTED_SOP_CLASS)
        sop_instance = _uid(view, fields, _AFFECTED_SOP_INSTANCE)
        priority = _us(view, fields, _PRIORITY)
        if message_id is None or sop_class is None or sop_instance is None or priority is None:
            raise CommandError("C-STORE-RQ lacks a required field")
        if not has_dataset:
            raise CommandError("C-STORE-RQ without a data set")
        return CStoreRequest(
            message_id,
            sop_class,
            sop_instance,
            priority,
            _ae(view, fields, _MOVE_ORIGINATOR_AET),
            _us(view, fields, _MOVE_ORIGINATOR_ID),
        )
    if command_field == C_ECHO_RQ:
        sop_class = _uid(view, fields, _AFFECTED_SOP_CLASS)
        if message_id is None or sop_class is None:
            raise CommandError("C-ECHO-RQ lacks a required field")
        if has_dataset:
            raise CommandError("C-ECHO-RQ with a data set")
        return CEchoRequest(message_id, sop_class)
    return OtherCommand(
        command_field,
        message_id,
        has_dataset,
        _us(view, fields, _RESPONDED_TO),
        _us(view, fields, _STATUS),
        _uid(view, fields, _AFFECTED_SOP_CLASS),
        _us(view, fields, _REMAINING),
        _us(view, fields, _COMPLETED),
        _us(view, fields, _FAILED),
        _us(view, fields, _WARNING),
        _text(view, fields, _ERROR_COMMENT),
    )


def _us(view: bytes, fields: dict[int, tuple[int, int]], element: int) -> int | None:
    found = fields.get(element)
    if found is None:
        return None
    if found[1] != 2:
        raise CommandError(f"(0000,{element:04X}) US with length {found[1]}")
    value: int = _US.unpack_from(view, found[0])[0]
    return value


def _uid(view: bytes, fields: dict[int, tuple[int, int]], element: int) -> str | None:
    """A UI value: trailing NUL (the padding) and spaces (seen in the field) stripped."""
    found = fields.get(element)
    if found is None:
        return None
    offset, length = found
    raw = view[offset : offset + length].rstrip(b"\0 ")
    if _UID.fullmatch(raw) is None:
        raise CommandError(f"(0000,{element:04X}) is not a UID: {raw[:80]!r}")
    return raw.decode("ascii")


def _ae(view: bytes, fields: dict[int, tuple[int, int]], element: int) -> str | None:
    """An AE value with its padding stripped; empty (seen in the field) reads as absent."""
    found = fields.get(element)
    if found is None:
        return None
    offset, length = found
    raw = view[offset : offset + length].strip(b"\0 ")
    if not raw:
        return None
    if _AE.fullmatch(raw) is None:
        raise CommandError(f"(0000,{element:04X}) is not an AE title: {raw[:40]!r}")
    return raw.decode("ascii")


def _text(view: bytes, fields: dict[int, tuple[int, int]], element: int) -> str | None:
    """A short text value (LO), decoded leniently: it is only ever logged."""
    found = fields.get(element)
    if found is None:
        return None
    offset, length = found
    return view[offset : offset + length].decode("ascii", "replace").strip("\0 ")


# --- encoding -------------------------------------------------------------------------------


def _element(element: int, value: bytes) -> bytes:
    return _ELEMENT.pack(0, element, len(value)) + value


def _us_element(element: int, value: int) -> bytes:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"(0000,{element:04X}) value {value} does not fit in US")
    return _US_ELEMENT.pack(0, element, 2, value)


def _uid_element(element: int, uid: str) -> bytes:
    raw = uid.encode("ascii")
    if _UID.fullmatch(raw) is None:
        raise ValueError(f"invalid UID {uid!r}")
    if len(raw) & 1:
        raw += b"\0"
    return _ELEMENT.pack(0, element, len(raw)) + raw


def _command(*elements: bytes) -> bytes:
    body = b"".join(elements)
    return _ELEMENT.pack(0, _GROUP_LENGTH, 4) + _UL.pack(len(body)) + body


_NO_DATASET = _us_element(_DATASET_TYPE, NO_DATASET)
_WITH_DATASET = _us_element(_DATASET_TYPE, DATASET_PRESENT)


def encode_c_store_rsp(request: CStoreRequest, status: int) -> bytes:
    """The C-STORE-RSP command set answering ``request`` (PS3.7 Table 9.3-2)."""
    return _command(
        _uid_element(_AFFECTED_SOP_CLASS, request.sop_class_uid),
        _us_element(_COMMAND_FIELD, C_STORE_RSP),
        _us_element(_RESPONDED_TO, request.message_id),
        _NO_DATASET,
        _us_element(_STATUS, status),
        _uid_element(_AFFECTED_SOP_INSTANCE, request.sop_instance_uid),
    )


def encode_c_echo_rsp(request: CEchoRequest, status: int = 0) -> bytes:
    """The C-ECHO-RSP command set answering ``request`` (PS3.7 Table 9.3-13)."""
    return _command(
        _uid_element(_AFFECTED_SOP_CLASS, request.sop_class_uid),
        _us_element(_COMMAND_FIELD, C_ECHO_RSP),
        _us_element(_RESPONDED_TO, request.message_id),
        _NO_DATASET,
        _us_element(_STATUS, status),
    )


def encode_c_store_rq(
    *,
    message_id: int,
    sop_class_uid: str,
    sop_instance_uid: str,
    priority: int = 0,
    move_originator_aet: str | None = None,
    move_originator_message_id: int | None = None,
) -> bytes:
    """A C-STORE-RQ command set (PS3.7 Table 9.3-1); the data set follows separately."""
    elements = [
        _uid_element(_AFFECTED_SOP_CLASS, sop_class_uid),
        _us_element(_COMMAND_FIELD, C_STORE_RQ),
        _us_element(_MESSAGE_ID, message_id),
        _us_element(_PRIORITY, priority),
        _WITH_DATASET,
        _uid_element(_AFFECTED_SOP_INSTANCE, sop_instance_uid),
    ]
    if move_originator_aet is not None:
        raw = move_originator_aet.strip(" ").encode("ascii")
        if _AE.fullmatch(raw) is None:
            raise ValueError(f"invalid AE title {move_originator_aet!r}")
        elements.append(_element(_MOVE_ORIGINATOR_AET, raw + b" " * (len(raw) & 1)))
    if move_originator_message_id is not None:
        elements.append(_us_element(_MOVE_ORIGINATOR_ID, move_originator_message_id))
    return _command(*elements)


def encode_c_echo_rq(*, message_id: int, sop_class_uid: str = VERIFICATION) -> bytes:
    """A C-ECHO-RQ command set (PS3.7 Table 9.3-12)."""
    return _command(
        _uid_element(_AFFECTED_SOP_CLASS, sop_class_uid),
        _us_element(_COMMAND_FIELD, C_ECHO_RQ),
        _us_element(_MESSAGE_ID, message_id),
        _NO_DATASET,
    )


def encode_c_get_rq(*, message_id: int, sop_class_uid: str, priority: int = 0) -> bytes:
    """A C-GET-RQ command set (PS3.7 Table 9.3-8); the identifier follows as the data set."""
    return _command(
        _uid_element(_AFFECTED_SOP_CLASS, sop_class_uid),
        _us_element(_COMMAND_FIELD, C_GET_RQ),
        _us_element(_MESSAGE_ID, message_id),
        _us_element(_PRIORITY, priority),
        _WITH_DATASET,
    )


def encode_c_find_rq(*, message_id: int, sop_class_uid: str, priority: int = 0) -> bytes:
    """A C-FIND-RQ command set (PS3.7 Table 9.3-3); the identifier follows as the data set."""
    return _command(
        _uid_element(_AFFECTED_SOP_CLASS, sop_class_uid),
        _us_element(_COMMAND_FIELD, C_FIND_RQ),
        _us_element(_MESSAGE_ID, message_id),
        _us_element(_PRIORITY, priority),
        _WITH_DATASET,
    )


def encode_c_move_rq(
    *, message_id: int, sop_class_uid: str, move_destination: str, priority: int = 0
) -> bytes:
    """A C-MOVE-RQ command set (PS3.7 Table 9.3-10); the identifier follows as the data set."""
    raw = move_destination.strip(" ").encode("ascii")
    if _AE.fullmatch(raw) is None:
        raise ValueError(f"invalid AE title {move_destination!r}")
    return _command(
        _uid_element(_AFFECTED_SOP_CLASS, sop_class_uid),
        _us_element(_COMMAND_FIELD, C_MOVE_RQ),
        _us_element(_MESSAGE_ID, message_id),
        _element(_MOVE_DESTINATION, raw + b" " * (len(raw) & 1)),
        _us_element(_PRIORITY, priority),
        _WITH_DATASET,
    )


def encode_c_cancel_rq(*, message_id_being_responded_to: int) -> bytes:
    """A C-CANCEL-RQ command set (PS3.7 Table 9.3-5 etc.) for the operation with that id."""
    return _command(
        _us_element(_COMMAND_FIELD, C_CANCEL_RQ),
        _us_element(_RESPONDED_TO, message_id_being_responded_to),
        _NO_DATASET,
    )
