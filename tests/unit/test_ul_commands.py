"""DIMSE command sets: round trips against pynetdicom, and every malformation."""

from __future__ import annotations

import struct
from io import BytesIO

import pytest
from pynetdicom.dimse_messages import C_ECHO_RQ, C_FIND_RQ, C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_STORE
from pynetdicom.dsutils import decode

from rst.backends.dimse.ul import (
    CEchoRequest,
    CommandError,
    CStoreRequest,
    OtherCommand,
    encode_c_echo_rq,
    encode_c_echo_rsp,
    encode_c_store_rq,
    encode_c_store_rsp,
    parse_command,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
INSTANCE = "1.2.826.0.1.3680043.8.498.1234567890123456789012345678901234567"  # odd length


def pynetdicom_command(message: object) -> bytes:
    """The command bytes pynetdicom would put on the wire for ``message``."""
    fragments = []
    for p_data in message.encode_msg(1, 16384):  # type: ignore[attr-defined]
        for _, value in p_data.presentation_data_value_list:
            if value[0] & 1:
                fragments.append(value[1:])
    return b"".join(fragments)


def test_c_store_rq_from_pynetdicom() -> None:
    primitive = C_STORE()
    primitive.MessageID = 7
    primitive.AffectedSOPClassUID = CT
    primitive.AffectedSOPInstanceUID = INSTANCE
    primitive.Priority = 2
    primitive.MoveOriginatorApplicationEntityTitle = "ORTHANC"
    primitive.MoveOriginatorMessageID = 3
    primitive.DataSet = BytesIO(b"\x08\x00\x16\x00\x00\x00\x00\x00")
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    command = parse_command(memoryview(pynetdicom_command(message)))
    assert command == CStoreRequest(7, CT, INSTANCE, 2, "ORTHANC", 3)


def test_c_store_rq_without_move_originator() -> None:
    primitive = C_STORE()
    primitive.MessageID = 65535
    primitive.AffectedSOPClassUID = CT
    primitive.AffectedSOPInstanceUID = "1.2.3"
    primitive.Priority = 0
    primitive.DataSet = BytesIO(b"\x08\x00\x16\x00\x00\x00\x00\x00")
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    command = parse_command(pynetdicom_command(message))
    assert command == CStoreRequest(65535, CT, "1.2.3", 0, None, None)


def test_c_echo_rq_from_pynetdicom() -> None:
    primitive = C_ECHO()
    primitive.MessageID = 1
    primitive.AffectedSOPClassUID = "1.2.840.10008.1.1"
    message = C_ECHO_RQ()
    message.primitive_to_message(primitive)
    assert parse_command(pynetdicom_command(message)) == CEchoRequest(1, "1.2.840.10008.1.1")


def test_other_command_from_pynetdicom() -> None:
    primitive = C_FIND()
    primitive.MessageID = 9
    primitive.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.1"
    primitive.Priority = 0
    primitive.Identifier = BytesIO(b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY ")
    message = C_FIND_RQ()
    message.primitive_to_message(primitive)
    assert parse_command(pynetdicom_command(message)) == OtherCommand(
        0x0020, 9, True, None, None, "1.2.840.10008.5.1.4.1.2.2.1"
    )


@pytest.mark.parametrize("status", [0x0000, 0xA700, 0xB000, 0xC000])
def test_c_store_rsp_decodes_in_pynetdicom(status: int) -> None:
    request = CStoreRequest(42, CT, INSTANCE, 0, "ORTHANC", 5)
    raw = encode_c_store_rsp(request, status)
    assert len(raw) % 2 == 0
    ds = decode(BytesIO(raw), True, True)
    assert ds.CommandGroupLength == len(raw) - 12
    assert ds.AffectedSOPClassUID == CT
    assert ds.AffectedSOPInstanceUID == INSTANCE
    assert ds.CommandField == 0x8001
    assert ds.MessageIDBeingRespondedTo == 42
    assert ds.CommandDataSetType == 0x0101
    assert ds.Status == status
    tags = [int(elem.tag) for elem in ds]
    assert tags == sorted(tags)
    # pynetdicom's own C-STORE-RSP encoding is byte-identical
    reference = C_STORE_RSP()
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = 42
    primitive.AffectedSOPClassUID = CT
    primitive.AffectedSOPInstanceUID = INSTANCE
    primitive.Status = status
    reference.primitive_to_message(primitive)
    assert raw == pynetdicom_command(reference)
    parsed = parse_command(raw)
    assert parsed == OtherCommand(0x8001, None, False, 42, status, CT)


def test_c_echo_rsp_decodes_in_pynetdicom() -> None:
    raw = encode_c_echo_rsp(CEchoRequest(3, "1.2.840.10008.1.1"))
    ds = decode(BytesIO(raw), True, True)
    assert (ds.CommandField, ds.MessageIDBeingRespondedTo, ds.Status) == (0x8030, 3, 0)
    assert ds.AffectedSOPClassUID == "1.2.840.10008.1.1"
    assert ds.CommandDataSetType == 0x0101


def test_encoded_requests_round_trip_and_decode_in_pynetdicom() -> None:
    raw = encode_c_store_rq(
        message_id=11, sop_class_uid=CT, sop_instance_uid=INSTANCE, priority=1,
        move_originator_aet="PACS", move_originator_message_id=12,
    )  # fmt: skip
    ds = decode(BytesIO(raw), True, True)
    assert ds.MoveOriginatorApplicationEntityTitle == "PACS"
    assert ds.AffectedSOPInstanceUID == INSTANCE
    assert ds.CommandDataSetType != 0x0101
    assert parse_command(raw) == CStoreRequest(11, CT, INSTANCE, 1, "PACS", 12)
    odd = encode_c_store_rq(
        message_id=1, sop_class_uid=CT, sop_instance_uid="1.2", move_originator_aet="ABC"
    )
    assert len(odd) % 2 == 0
    assert parse_command(odd) == CStoreRequest(1, CT, "1.2", 0, "ABC", None)
    echo = encode_c_echo_rq(message_id=5)
    assert parse_command(echo) == CEchoRequest(5, "1.2.840.10008.1.1")
    assert decode(BytesIO(echo), True, True).CommandField == 0x0030


def test_encoders_refuse_invalid_values() -> None:
    with pytest.raises(ValueError, match="US"):
        encode_c_store_rsp(CStoreRequest(70000, CT, "1.2", 0, None, None), 0)
    with pytest.raises(ValueError, match="UID"):
        encode_c_store_rsp(CStoreRequest(1, CT, "1.2.x", 0, None, None), 0)
    with pytest.raises(ValueError, match="AE"):
        encode_c_store_rq(
            message_id=1, sop_class_uid=CT, sop_instance_uid="1.2", move_originator_aet="A" * 17
        )


# --- hand-built malformations ----------------------------------------------------------------


def element(tag: int, value: bytes) -> bytes:
    return struct.pack("<HHL", 0, tag, len(value)) + value


def us(tag: int, value: int) -> bytes:
    return element(tag, struct.pack("<H", value))


def command(*elements: bytes, group_length: int | None = None) -> bytes:
    body = b"".join(elements)
    length = len(body) if group_length is None else group_length
    return element(0x0000, struct.pack("<L", length)) + body


STORE = [
    element(0x0002, CT.encode()),
    us(0x0100, 0x0001),
    us(0x0110, 1),
    us(0x0700, 0),
    us(0x0800, 0x0000),
    element(0x1000, b"1.2.3\0"),
]


def store(skip: int | None = None, **replace: bytes) -> bytes:
    tags = [0x0002, 0x0100, 0x0110, 0x0700, 0x0800, 0x1000]
    parts = []
    for tag, part in zip(tags, STORE, strict=True):
        if tag == skip:
            continue
        parts.append(replace.get(f"t{tag:04x}", part))
    return command(*parts)


def test_handmade_store_parses_with_padding_stripped() -> None:
    raw = store(t0002=element(0x0002, CT.encode() + b" "), t1000=element(0x1000, b"1.2.3\0"))
    assert parse_command(raw) == CStoreRequest(1, CT, "1.2.3", 0, None, None)
    with_ae = command(*STORE, element(0x1030, b"  "), us(0x1031, 4))
    assert parse_command(with_ae) == CStoreRequest(1, CT, "1.2.3", 0, None, 4)
    unknown = command(*STORE[:5], element(0x0900, b"\x00\x00"), element(0x0F00, b"xx"), STORE[5])
    assert isinstance(parse_command(unknown), CStoreRequest)


BAD_COMMANDS: dict[str, bytes] = {
    "empty": b"",
    "short": bytes(11),
    "no group length first": command(*STORE)[12:],
    "group length not UL": element(0x0000, b"\x00\x00") + b"".join(STORE),
    "group length too small": command(*STORE, group_length=10),
    "group length too large": command(*STORE, group_length=1000),
    "tags descending": command(*STORE[1:2], *STORE[0:1], *STORE[2:]),
    "duplicate tag": command(*STORE[:2], STORE[1], *STORE[2:]),
    "value overflows": command(*STORE[:5], struct.pack("<HHL", 0, 0x1000, 100) + b"1.2"),
    "undefined length": command(*STORE[:5], struct.pack("<HHL", 0, 0x1000, 0xFFFFFFFF)),
    "truncated element header": command(*STORE, b"\x00\x00\x00\x20"),
    "no command field": store(skip=0x0100),
    "no dataset type": store(skip=0x0800),
    "store without message id": store(skip=0x0110),
    "store without class": store(skip=0x0002),
    "store without instance": store(skip=0x1000),
    "store without priority": store(skip=0x0700),
    "store without data set": store(t0800=us(0x0800, 0x0101)),
    "command field 4 bytes": store(t0100=element(0x0100, b"\x01\x00\x00\x00")),
    "message id 1 byte": store(t0110=element(0x0110, b"\x01")),
    "class uid invalid": store(t0002=element(0x0002, b"1.2.a")),
    "class uid empty": store(t0002=element(0x0002, b"")),
    "instance uid 65 chars": store(t1000=element(0x1000, b"1" * 65 + b"\0")),
    "move originator too long": command(*STORE, element(0x1030, b"A" * 18)),
    "move originator control char": command(*STORE, element(0x1030, b"A\x01")),
    "move originator id 4 bytes": command(*STORE, element(0x1031, bytes(4))),
    "echo with data set": command(
        element(0x0002, b"1.2.840.10008.1.1\0"), us(0x0100, 0x0030), us(0x0110, 1), us(0x0800, 1)
    ),
    "echo without message id": command(
        element(0x0002, b"1.2.840.10008.1.1\0"), us(0x0100, 0x0030), us(0x0800, 0x0101)
    ),
    "echo without class": command(us(0x0100, 0x0030), us(0x0110, 1), us(0x0800, 0x0101)),
    "other with bad status length": command(
        us(0x0100, 0x8001), us(0x0800, 0x0101), element(0x0900, b"\x00")
    ),
}
BAD_COMMANDS["group 0008"] = command(*STORE, struct.pack("<HHL", 8, 0x16, 0))

# what each error message must say: the failure is the intended one, not an earlier one
EXPECTED = {
    "empty": "shorter", "short": "shorter", "no group length first": "does not start",
    "group length not UL": "does not start", "group length too small": "group length 10",
    "group length too large": "group length 1000", "tags descending": "ascending",
    "duplicate tag": "ascending", "group 0008": "outside group 0000",
    "value overflows": "overflows", "undefined length": "overflows",
    "truncated element header": "truncated", "no command field": "lacks CommandField",
    "no dataset type": "lacks CommandField", "store without message id": "C-STORE-RQ lacks",
    "store without class": "C-STORE-RQ lacks", "store without instance": "C-STORE-RQ lacks",
    "store without priority": "C-STORE-RQ lacks", "store without data set": "without a data set",
    "command field 4 bytes": "US with length 4", "message id 1 byte": "US with length 1",
    "class uid invalid": "not a UID", "class uid empty": "not a UID",
    "instance uid 65 chars": "not a UID", "move originator too long": "not an AE title",
    "move originator control char": "not an AE title",
    "move originator id 4 bytes": "US with length 4", "echo with data set": "with a data set",
    "echo without message id": "C-ECHO-RQ lacks", "echo without class": "C-ECHO-RQ lacks",
    "other with bad status length": "US with length 1",
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BAD_COMMANDS))
def test_malformed_commands(name: str) -> None:
    with pytest.raises(CommandError, match=EXPECTED[name]):
        parse_command(BAD_COMMANDS[name])


def test_command_error_maps_to_user_abort() -> None:
    assert (CommandError.source, CommandError.reason) == (0, 0)
