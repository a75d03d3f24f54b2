"""PDU codec: round trips against pynetdicom (the independent reference), framing, error paths."""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Sequence
from typing import Any

import pytest
from pydicom.uid import UID
from pynetdicom.pdu import (
    A_ABORT_RQ,
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RJ,
    A_ASSOCIATE_RQ,
    A_RELEASE_RP,
    A_RELEASE_RQ,
    P_DATA_TF,
)
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    P_DATA,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext

from rst.backends.dimse.ul import (
    APPLICATION_CONTEXT,
    Abort,
    AssociateAccept,
    AssociateReject,
    AssociateRequest,
    ContextResult,
    PData,
    PduReader,
    PresentationContextRQ,
    ReleaseRequest,
    ReleaseResponse,
    UpperLayerError,
    encode_abort,
    encode_associate_ac,
    encode_associate_rj,
    encode_associate_rq,
    encode_pdata,
    encode_release_rp,
    encode_release_rq,
)
from tests.support.garbage import cyclic_collection_paused, cyclic_garbage

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
MAX = 131072


def pynetdicom_rq(
    contexts: list[tuple[int, str, Sequence[str | bytes | UID]]],
    *,
    max_length: int = 16384,
    version: str | None = "PYNETDICOM_304",
    roles: dict[str, tuple[bool, bool]] | None = None,
) -> bytes:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = APPLICATION_CONTEXT
    primitive.calling_ae_title = "ORTHANC"
    primitive.called_ae_title = "RST"
    definitions = []
    for context_id, abstract, syntaxes in contexts:
        cx = PresentationContext()
        cx.context_id = context_id
        cx.abstract_syntax = abstract
        cx.transfer_syntax = list(syntaxes)
        definitions.append(cx)
    primitive.presentation_context_definition_list = definitions
    ml = MaximumLengthNotification()
    ml.maximum_length_received = max_length
    ic = ImplementationClassUIDNotification()
    ic.implementation_class_uid = "1.2.826.0.1.3680043.9.3811.3.0.4"
    user: list[Any] = [ml, ic]
    if version is not None:
        iv = ImplementationVersionNameNotification()
        iv.implementation_version_name = version
        user.append(iv)
    for uid, (scu, scp) in (roles or {}).items():
        rs = SCP_SCU_RoleSelectionNegotiation()
        rs.sop_class_uid = uid
        rs.scu_role = scu
        rs.scp_role = scp
        user.append(rs)
    primitive.user_information = user
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


def roles_of(primitive: A_ASSOCIATE) -> list[SCP_SCU_RoleSelectionNegotiation]:
    return [
        i for i in primitive.user_information if isinstance(i, SCP_SCU_RoleSelectionNegotiation)
    ]


def version_name(primitive: A_ASSOCIATE) -> str:
    (found,) = [i for i in primitive.user_information if hasattr(i, "implementation_version_name")]
    return str(found.implementation_version_name)


def read_all(data: bytes, **kwargs: int) -> list[object]:
    reader = PduReader(max_pdu_length=kwargs.pop("max_pdu_length", MAX), **kwargs)
    reader.feed(data)
    pdus: list[object] = []
    while (pdu := reader.next_pdu()) is not None:
        pdus.append(pdu)
    assert reader.buffered == 0
    return pdus


def read_one(data: bytes, **kwargs: int) -> object:
    (pdu,) = read_all(data, **kwargs)
    return pdu


def request(**overrides: object) -> AssociateRequest:
    fields: dict[str, object] = {
        "called_aet": "RST",
        "calling_aet": "ORTHANC",
        "application_context": APPLICATION_CONTEXT,
        "contexts": (PresentationContextRQ(1, CT, (EXPLICIT, IMPLICIT)),),
        "max_pdu_length": 16384,
        "implementation_class_uid": "1.2.3",
        "implementation_version": None,
        "roles": {},
        "protocol_version": 1,
    }
    fields.update(overrides)
    return AssociateRequest(**fields)  # type: ignore[arg-type]


# --- round trips with pynetdicom -------------------------------------------------------------


def test_associate_rq_from_pynetdicom() -> None:
    raw = pynetdicom_rq(
        [(1, CT, [EXPLICIT, IMPLICIT]), (3, MR, [IMPLICIT])],
        roles={CT: (False, True)},
    )
    rq = read_one(raw)
    assert rq == AssociateRequest(
        called_aet="RST",
        calling_aet="ORTHANC",
        application_context=APPLICATION_CONTEXT,
        contexts=(
            PresentationContextRQ(1, CT, (EXPLICIT, IMPLICIT)),
            PresentationContextRQ(3, MR, (IMPLICIT,)),
        ),
        max_pdu_length=16384,
        implementation_class_uid="1.2.826.0.1.3680043.9.3811.3.0.4",
        implementation_version="PYNETDICOM_304",
        roles={CT: (False, True)},
        protocol_version=1,
    )


def test_associate_rq_without_version_name() -> None:
    rq = read_one(pynetdicom_rq([(1, CT, [EXPLICIT])], version=None, max_length=0))
    assert isinstance(rq, AssociateRequest)
    assert rq.implementation_version is None
    assert rq.max_pdu_length == 0


def test_associate_rq_to_pynetdicom() -> None:
    raw = encode_associate_rq(
        called_aet="ORTHANC",
        calling_aet="RST",
        contexts=[
            PresentationContextRQ(1, CT, (EXPLICIT,)),
            PresentationContextRQ(255, MR, (IMPLICIT, EXPLICIT)),
        ],
        max_pdu_length=MAX,
        implementation_class_uid="1.2.3.4",
        implementation_version="RST_1",
        roles={MR: (True, False)},
    )
    pdu = A_ASSOCIATE_RQ()
    pdu.decode(raw)
    primitive = pdu.to_primitive()
    assert primitive.called_ae_title == "ORTHANC"
    assert primitive.calling_ae_title == "RST"
    contexts = primitive.presentation_context_definition_list
    assert [(c.context_id, c.abstract_syntax, c.transfer_syntax) for c in contexts] == [
        (1, CT, [EXPLICIT]),
        (255, MR, [IMPLICIT, EXPLICIT]),
    ]
    assert primitive.maximum_length_received == MAX
    assert primitive.implementation_class_uid == "1.2.3.4"
    assert version_name(primitive) == "RST_1"
    (role,) = roles_of(primitive)
    assert (role.sop_class_uid, role.scu_role, role.scp_role) == (MR, True, False)
    # and ours reads it back identically
    rq = read_one(raw)
    assert isinstance(rq, AssociateRequest)
    assert rq.roles == {MR: (True, False)}
    assert rq.called_aet == "ORTHANC"


def test_associate_ac_to_pynetdicom() -> None:
    rq = read_one(pynetdicom_rq([(1, CT, [EXPLICIT]), (3, MR, [IMPLICIT])]))
    assert isinstance(rq, AssociateRequest)
    results = [ContextResult(1, 0, EXPLICIT), ContextResult(3, 3, IMPLICIT)]
    raw = encode_associate_ac(
        rq,
        results,
        max_pdu_length=MAX,
        implementation_class_uid="1.2.826.0.1.3680043.10.1",
        implementation_version="RST_0_1",
        roles={CT: (False, True)},
    )
    pdu = A_ASSOCIATE_AC()
    pdu.decode(raw)
    primitive = pdu.to_primitive()
    assert pdu.called_ae_title == "RST"
    assert pdu.calling_ae_title == "ORTHANC"
    assert primitive.application_context_name == APPLICATION_CONTEXT
    got = [
        (c.context_id, c.result, c.transfer_syntax[0])
        for c in primitive.presentation_context_definition_results_list
    ]
    assert got == [(1, 0, EXPLICIT), (3, 3, IMPLICIT)]
    assert primitive.maximum_length_received == MAX
    assert primitive.implementation_class_uid == "1.2.826.0.1.3680043.10.1"
    assert version_name(primitive) == "RST_0_1"
    (role,) = roles_of(primitive)
    assert (role.sop_class_uid, role.scu_role, role.scp_role) == (CT, False, True)
    ac = read_one(raw)
    assert ac == AssociateAccept(
        "RST", "ORTHANC", APPLICATION_CONTEXT, tuple(results), MAX,
        "1.2.826.0.1.3680043.10.1", "RST_0_1", {CT: (False, True)}, 1,
    )  # fmt: skip


def test_associate_ac_from_pynetdicom() -> None:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = APPLICATION_CONTEXT
    primitive.calling_ae_title = "RST"
    primitive.called_ae_title = "ORTHANC"
    primitive.result = 0
    cx = PresentationContext()
    cx.context_id = 5
    cx.result = 0
    cx.transfer_syntax = [EXPLICIT]
    primitive.presentation_context_definition_results_list = [cx]
    ml = MaximumLengthNotification()
    ml.maximum_length_received = 0
    ic = ImplementationClassUIDNotification()
    ic.implementation_class_uid = "1.2.3"
    primitive.user_information = [ml, ic]
    pdu = A_ASSOCIATE_AC()
    pdu.from_primitive(primitive)
    ac = read_one(bytes(pdu.encode()))
    assert isinstance(ac, AssociateAccept)
    assert ac.contexts == (ContextResult(5, 0, EXPLICIT),)
    assert ac.max_pdu_length == 0
    assert ac.implementation_version is None


@pytest.mark.parametrize(("result", "source", "reason"), [(1, 1, 7), (2, 3, 1), (1, 2, 2)])
def test_associate_rj_both_ways(result: int, source: int, reason: int) -> None:
    raw = encode_associate_rj(result, source, reason)
    pdu = A_ASSOCIATE_RJ()
    pdu.decode(raw)
    assert (pdu.result, pdu.source, pdu.reason_diagnostic) == (result, source, reason)
    assert read_one(raw) == AssociateReject(result, source, reason)
    assert read_one(bytes(pdu.encode())) == AssociateReject(result, source, reason)


def test_release_and_abort_both_ways() -> None:
    assert encode_release_rq() == bytes(A_RELEASE_RQ().encode())
    assert encode_release_rp() == bytes(A_RELEASE_RP().encode())
    assert read_one(encode_release_rq()) == ReleaseRequest()
    assert read_one(encode_release_rp()) == ReleaseResponse()
    abort = A_ABORT_RQ()
    abort.decode(encode_abort(2, 6))
    assert (abort.source, abort.reason_diagnostic) == (2, 6)
    assert read_one(encode_abort(2, 6)) == Abort(2, 6)
    assert read_one(encode_abort(0, 5)) == Abort(0, 0)  # reason not significant for the user


def test_pdata_from_pynetdicom() -> None:
    primitive = P_DATA()
    primitive.presentation_data_value_list = [[1, b"\x03" + b"cmd!"], [3, b"\x00" + b"x" * 1000]]  # type: ignore[list-item]
    pdu = P_DATA_TF()
    pdu.from_primitive(primitive)
    pdata = read_one(bytes(pdu.encode()))
    assert isinstance(pdata, PData)
    assert [(p.context_id, p.is_command, p.is_last, bytes(p.data)) for p in pdata.pdvs] == [
        (1, True, True, b"cmd!"),
        (3, False, False, b"x" * 1000),
    ]


@pytest.mark.parametrize(
    ("is_command", "is_last", "control"), [(0, 0, 0), (1, 0, 1), (0, 1, 2), (1, 1, 3)]
)
def test_pdata_to_pynetdicom(is_command: int, is_last: int, control: int) -> None:
    raw = encode_pdata(7, bool(is_command), bool(is_last), memoryview(b"payload"))
    pdu = P_DATA_TF()
    pdu.decode(raw)
    (item,) = pdu.presentation_data_value_items
    assert item.presentation_context_id == 7
    assert item.presentation_data_value == bytes([control]) + b"payload"


def test_pdata_views_point_into_the_buffer() -> None:
    reader = PduReader(max_pdu_length=MAX)
    reader.feed(encode_pdata(1, False, True, b"z" * 1000) + encode_pdata(3, True, False, b"c"))
    first = reader.next_pdu()
    second = reader.next_pdu()
    assert reader.next_pdu() is None
    assert isinstance(first, PData)
    assert isinstance(second, PData)
    assert first.pdvs[0].data.obj is second.pdvs[0].data.obj  # no copy: the reader's buffer
    assert bytes(first.pdvs[0].data) == b"z" * 1000
    assert second.pdvs[0].is_command
    assert not second.pdvs[0].is_last


# --- framing ---------------------------------------------------------------------------------


def test_byte_at_a_time() -> None:
    stream = pynetdicom_rq([(1, CT, [EXPLICIT])]) + encode_pdata(1, True, True, b"ab")
    stream += encode_release_rq()
    reader = PduReader(max_pdu_length=MAX)
    got = []
    for i in range(len(stream)):
        reader.feed(stream[i : i + 1])
        while (pdu := reader.next_pdu()) is not None:
            got.append(type(pdu))
    assert got == [AssociateRequest, PData, ReleaseRequest]


def test_max_pdu_length_is_the_pdu_length_field() -> None:
    """PS3.8 D.1: the limit applies to the PDU-length field (PDV items with their headers)."""
    data = b"d" * (1000 - 6)
    pdata = read_one(encode_pdata(1, False, True, data), max_pdu_length=1000)
    assert isinstance(pdata, PData)
    with pytest.raises(UpperLayerError) as info:
        read_one(encode_pdata(1, False, True, data + b"!"), max_pdu_length=1000)
    assert (info.value.source, info.value.reason) == (2, 6)


def test_buffer_grows_to_one_pdu_and_no_more() -> None:
    reader = PduReader(max_pdu_length=MAX, buffer_size=64)
    pdu = encode_pdata(1, False, True, b"q" * (MAX - 6))
    offset = 0
    while offset < len(pdu):
        assert reader.next_pdu() is None
        target = reader.writable()
        n = min(len(target), len(pdu) - offset, 10000)
        target[:n] = pdu[offset : offset + n]
        reader.advance(n)
        offset += n
    assert reader.capacity == MAX + 6
    got = reader.next_pdu()
    assert isinstance(got, PData)
    assert len(got.pdvs[0].data) == MAX - 6


def test_large_reads_land_in_place() -> None:
    """A 128 KiB PDU read in a few large recv_into calls is decoded without moving it."""
    reader = PduReader(max_pdu_length=MAX)
    pdu = encode_pdata(1, False, True, bytes(MAX - 6))
    for _ in range(3):
        target = reader.writable()
        target[: len(pdu)] = pdu
        reader.advance(len(pdu))
        got = reader.next_pdu()
        assert isinstance(got, PData)
        assert reader.next_pdu() is None
    assert reader.capacity == 4 * 1024 * 1024


def test_writable_refuses_an_undrained_full_buffer() -> None:
    reader = PduReader(max_pdu_length=MAX, buffer_size=16)
    reader.feed(encode_release_rq())
    reader.feed(encode_release_rp()[:4])
    with pytest.raises(BufferError):
        reader.feed(b"\x00" * 5)
    reader.feed(encode_release_rp()[4:6])
    with pytest.raises(BufferError):
        reader.writable()
    assert reader.next_pdu() == ReleaseRequest()
    assert reader.next_pdu() is None
    assert len(reader.writable()) == 16 - 6  # compacted: the partial RP moved to the front
    reader.feed(encode_release_rp()[6:])
    assert reader.next_pdu() == ReleaseResponse()


def test_truncated_pdu_is_incomplete() -> None:
    reader = PduReader(max_pdu_length=MAX)
    reader.feed(rq(APP, context(), USER)[:-1])
    assert reader.next_pdu() is None


def test_advance_beyond_writable() -> None:
    reader = PduReader(max_pdu_length=MAX, buffer_size=100)
    with pytest.raises(ValueError, match="beyond"):
        reader.advance(101)
    with pytest.raises(ValueError, match="beyond"):
        reader.advance(-1)


def test_error_is_sticky() -> None:
    reader = PduReader(max_pdu_length=MAX)
    reader.feed(b"\x09\x00\x00\x00\x00\x00" + encode_release_rq())
    with pytest.raises(UpperLayerError) as first:
        reader.next_pdu()
    with pytest.raises(UpperLayerError) as second:
        reader.next_pdu()
    assert (str(second.value), second.value.source, second.value.reason) == (
        str(first.value),
        first.value.source,
        first.value.reason,
    )


def test_a_failed_reader_keeps_no_reference_cycle() -> None:
    # Not the error it raised: that one's traceback holds the reader and its buffer (issue 8).
    def read(reader: PduReader) -> None:
        reader.feed(b"\x09\x00\x00\x00\x00\x00" + encode_release_rq())
        for _ in range(2):
            with contextlib.suppress(UpperLayerError):
                reader.next_pdu()

    with cyclic_collection_paused():
        read(PduReader(max_pdu_length=MAX))
        garbage = cyclic_garbage()

    assert not garbage, garbage.describe()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_pdu_length": 0},
        {"max_pdu_length": 2**32},
        {"max_pdu_length": MAX, "max_associate_length": 10},
        {"max_pdu_length": MAX, "buffer_size": 5},
    ],
)
def test_reader_arguments(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=r"max_pdu_length|max_associate_length|buffer_size"):
        PduReader(**kwargs)


# --- error paths -----------------------------------------------------------------------------


def header(pdu_type: int, body: bytes) -> bytes:
    return struct.pack(">BxL", pdu_type, len(body)) + body


def item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BxH", item_type, len(value)) + value


def associate_body(
    *items: bytes, called: bytes = b"RST", calling: bytes = b"ORTHANC", version: int = 1
) -> bytes:
    fixed = struct.pack(">H2x16s16s32x", version, called.ljust(16), calling.ljust(16))
    return fixed + b"".join(items)


APP = item(0x10, APPLICATION_CONTEXT.encode())
USER = item(0x50, item(0x51, struct.pack(">L", 16384)) + item(0x52, b"1.2.3"))


def context(context_id: int = 1, *subitems: bytes) -> bytes:
    subitems = subitems or (item(0x30, CT.encode()), item(0x40, EXPLICIT.encode()))
    return item(0x20, bytes((context_id, 0, 0, 0)) + b"".join(subitems))


def rq(*items: bytes, **kwargs: object) -> bytes:
    return header(1, associate_body(*items, **kwargs))  # type: ignore[arg-type]


def test_minimal_handmade_rq_parses() -> None:
    parsed = read_one(rq(APP, context(), USER))
    assert isinstance(parsed, AssociateRequest)
    assert parsed.contexts == (PresentationContextRQ(1, CT, (EXPLICIT,)),)


def test_unknown_items_are_skipped() -> None:
    """PS3.8 §9.3.1: items of unrecognized types are ignored; items in any order."""
    user = item(
        0x50,
        item(0x52, b"1.2.3\0")  # a trailing NUL, as some implementations send
        + item(0x53, b"\x00\x01\x00\x01")
        + item(0x58, b"\x01\x00\x00\x04user\x00\x00")
        + item(0x99, b"future")
        + item(0x51, struct.pack(">L", 0)),
    )
    ctx = context(1, item(0x40, EXPLICIT.encode()), item(0x77, b""), item(0x30, CT.encode()))
    parsed = read_one(rq(user, item(0x60, b"x" * 10), ctx, APP))
    assert isinstance(parsed, AssociateRequest)
    assert parsed.implementation_class_uid == "1.2.3"
    assert parsed.contexts[0].abstract_syntax == CT


def test_128_contexts_accepted() -> None:
    contexts = [context(i) for i in range(1, 256, 2)]
    parsed = read_one(rq(APP, *contexts, USER))
    assert isinstance(parsed, AssociateRequest)
    assert len(parsed.contexts) == 128


def _pdv(length: int, context_id: int, control: int, data: bytes = b"") -> bytes:
    return struct.pack(">LBB", length, context_id, control) + data


BAD_PDUS: dict[str, tuple[bytes, int]] = {
    "unknown PDU type": (header(0x08, bytes(4)), 1),
    "PDU type 0": (header(0x00, bytes(4)), 1),
    "release rq length 5": (header(0x05, bytes(5)), 6),
    "release rp length 0": (header(0x06, b""), 6),
    "abort length 3": (header(0x07, bytes(3)), 6),
    "rj length 6": (header(0x03, bytes(6)), 6),
    "rj result 0": (header(0x03, bytes((0, 0, 1, 1))), 6),
    "rj source 0": (header(0x03, bytes((0, 1, 0, 1))), 6),
    "pdata too long": (struct.pack(">BxL", 4, MAX + 1), 6),
    "associate too long": (struct.pack(">BxL", 1, 65537), 6),
    "pdata without pdv": (header(0x04, b""), 6),
    "pdv length < 2": (header(0x04, _pdv(1, 1, 0)), 6),
    "pdv length 0": (header(0x04, _pdv(0, 1, 0, b"xx")), 6),
    "pdv header truncated": (header(0x04, _pdv(2, 1, 0) + b"\x00\x00\x00"), 6),
    "pdv overflows pdu": (header(0x04, _pdv(11, 1, 0, b"12345678")), 6),
    "pdv context 0": (header(0x04, _pdv(3, 0, 0, b"x")), 6),
    "pdv context even": (header(0x04, _pdv(3, 2, 0, b"x")), 6),
    "pdv reserved control bits": (header(0x04, _pdv(3, 1, 0x04, b"x")), 6),
    "pdv reserved control bit 7": (header(0x04, _pdv(3, 1, 0x83, b"x")), 6),
    "associate fixed part short": (header(0x01, bytes(67)), 6),
    "no application context": (rq(context(), USER), 6),
    "two application contexts": (rq(APP, APP, context(), USER), 6),
    "application context not a UID": (rq(item(0x10, b"abc"), context(), USER), 6),
    "no presentation context": (rq(APP, USER), 6),
    "no user information": (rq(APP, context()), 6),
    "two user information": (rq(APP, context(), USER, USER), 6),
    "context id even": (rq(APP, context(2), USER), 6),
    "context id 0": (rq(APP, context(0), USER), 6),
    "duplicate context id": (rq(APP, context(1), context(1), USER), 6),
    "AC context item in RQ": (rq(APP, context(), item(0x21, bytes(4)), USER), 5),
    "context without abstract": (rq(APP, context(1, item(0x40, b"1.2")), USER), 6),
    "context without transfer": (rq(APP, context(1, item(0x30, b"1.2")), USER), 6),
    "two abstract syntaxes": (
        rq(APP, context(1, item(0x30, b"1.2"), item(0x30, b"1.3"), item(0x40, b"1.2")), USER),
        6,
    ),
    "context item truncated": (rq(APP, item(0x20, b"\x01\x00"), USER), 6),
    "UID too long": (rq(APP, context(1, item(0x30, b"1" * 65), item(0x40, b"1.2")), USER), 6),
    "UID empty": (rq(APP, context(1, item(0x30, b""), item(0x40, b"1.2")), USER), 6),
    "UID with letters": (rq(APP, context(1, item(0x30, b"1.2.x"), item(0x40, b"1.2")), USER), 6),
    "item length overflows parent": (
        rq(APP, struct.pack(">BxH", 0x20, 200) + bytes(10), USER),
        6,
    ),
    "sub-item overflows its item": (
        rq(APP, item(0x20, b"\x01\x00\x00\x00" + struct.pack(">BxH", 0x30, 99) + b"1.2"), USER),
        6,
    ),
    "truncated item header": (rq(APP, context(), USER, b"\x10\x00"), 6),
    "user info without max length": (rq(APP, context(), item(0x50, item(0x52, b"1.2"))), 6),
    "user info without class uid": (rq(APP, context(), item(0x50, item(0x51, bytes(4)))), 6),
    "max length sub-item 3 bytes": (
        rq(APP, context(), item(0x50, item(0x51, bytes(3)) + item(0x52, b"1.2"))),
        6,
    ),
    "duplicate max length": (
        rq(APP, context(), item(0x50, item(0x51, bytes(4)) * 2 + item(0x52, b"1.2"))),
        6,
    ),
    "duplicate class uid": (
        rq(APP, context(), item(0x50, item(0x51, bytes(4)) + item(0x52, b"1.2") * 2)),
        6,
    ),
    "version name 17 bytes": (
        rq(APP, context(), item(0x50, USER[4:] + item(0x55, b"A" * 17))),
        6,
    ),
    "version name empty": (rq(APP, context(), item(0x50, USER[4:] + item(0x55, b""))), 6),
    "role uid length wrong": (
        rq(APP, context(), item(0x50, USER[4:] + item(0x54, b"\x00\x05" + b"1.2" + b"\x01\x00"))),
        6,
    ),
    "role value 2": (
        rq(APP, context(), item(0x50, USER[4:] + item(0x54, b"\x00\x031.2\x02\x00"))),
        6,
    ),
    "role truncated": (rq(APP, context(), item(0x50, USER[4:] + item(0x54, b"\x00"))), 6),
    "conflicting roles": (
        rq(
            APP,
            context(),
            item(
                0x50,
                USER[4:] + item(0x54, b"\x00\x031.2\x01\x00") + item(0x54, b"\x00\x031.2\x00\x01"),
            ),
        ),
        6,
    ),
    "called AE with control char": (rq(APP, context(), USER, called=b"R\x01T"), 6),
    "calling AE with backslash": (rq(APP, context(), USER, calling=b"A\\B"), 6),
}


@pytest.mark.parametrize("name", sorted(BAD_PDUS))
def test_malformed_pdus(name: str) -> None:
    data, reason = BAD_PDUS[name]
    reader = PduReader(max_pdu_length=MAX)
    reader.feed(data)
    with pytest.raises(UpperLayerError) as info:
        reader.next_pdu()
    assert (info.value.source, info.value.reason) == (2, reason), str(info.value)


def test_too_many_contexts() -> None:
    """129 contexts cannot all have distinct odd ids; the count is capped either way."""
    contexts = [context(i) for i in range(1, 256, 2)] + [context(1)]
    with pytest.raises(UpperLayerError) as info:
        read_one(rq(APP, *contexts, USER), max_associate_length=1 << 20)
    assert info.value.reason == 6


def test_ac_context_results() -> None:
    ac_item = item(0x21, bytes((1, 0, 5, 0)) + item(0x40, b"1.2"))
    with pytest.raises(UpperLayerError, match="out of range"):
        read_one(header(2, associate_body(APP, ac_item, USER)))
    two_syntaxes = item(0x21, bytes((1, 0, 0, 0)) + item(0x40, b"1.2") * 2)
    with pytest.raises(UpperLayerError, match="one transfer syntax"):
        read_one(header(2, associate_body(APP, two_syntaxes, USER)))
    rejected = item(0x21, bytes((3, 0, 4, 0)) + item(0x40, b"junk\xff"))  # not tested
    ac = read_one(header(2, associate_body(APP, rejected, USER, called=b"\x01")))
    assert isinstance(ac, AssociateAccept)
    assert ac.contexts[0].result == 4
    with pytest.raises(UpperLayerError) as info:
        read_one(header(2, associate_body(APP, context(), USER)))
    assert info.value.reason == 5


def test_all_space_ae_titles_parse_as_empty() -> None:
    parsed = read_one(rq(APP, context(), USER, called=b"", calling=b"  X  "))
    assert isinstance(parsed, AssociateRequest)
    assert (parsed.called_aet, parsed.calling_aet) == ("", "X")
    # the AC echoes them, still 16 bytes each
    raw = encode_associate_ac(
        parsed, [], max_pdu_length=MAX, implementation_class_uid="1.2", implementation_version="V"
    )
    assert raw[10:42] == b" " * 16 + b"X".ljust(16)


# --- encoder argument checks -----------------------------------------------------------------


def test_encoders_refuse_invalid_values() -> None:
    with pytest.raises(ValueError, match="RJ"):
        encode_associate_rj(0, 1, 1)
    with pytest.raises(ValueError, match="A-ABORT"):
        encode_abort(1, 0)
    with pytest.raises(ValueError, match="context id"):
        encode_pdata(2, False, False, b"")
    with pytest.raises(ValueError, match="AE title"):
        encode_associate_rq(
            called_aet="X" * 17,
            calling_aet="A",
            contexts=[PresentationContextRQ(1, CT, (EXPLICIT,))],
            max_pdu_length=0,
            implementation_class_uid="1.2",
        )
    with pytest.raises(ValueError, match="presentation contexts"):
        encode_associate_rq(
            called_aet="B",
            calling_aet="A",
            contexts=[],
            max_pdu_length=0,
            implementation_class_uid="1.2",
        )
    with pytest.raises(ValueError, match="UID"):
        encode_associate_ac(
            request(),
            [ContextResult(1, 0, "not a uid")],
            max_pdu_length=MAX,
            implementation_class_uid="1.2",
            implementation_version="V",
        )
    with pytest.raises(ValueError, match="version"):
        encode_associate_ac(
            request(), [], max_pdu_length=MAX, implementation_class_uid="1.2",
            implementation_version="V" * 17,
        )  # fmt: skip


def test_repeated_identical_role_selections_are_tolerated() -> None:
    """Orthanc answers one role selection per accepted context, so a class proposed on several
    contexts comes back several times, each time the same."""
    ac_item = item(0x21, bytes((1, 0, 0, 0)) + item(0x40, b"1.2"))
    role = item(0x54, b"\x00\x031.2\x00\x01")
    ac = read_one(header(2, associate_body(APP, ac_item, item(0x50, USER[4:] + role * 3))))
    assert isinstance(ac, AssociateAccept)
    assert ac.roles == {"1.2": (False, True)}
