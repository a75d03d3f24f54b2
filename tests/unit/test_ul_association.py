"""The sans-IO :class:`Association`: two of them talking through byte strings, no sockets."""

from __future__ import annotations

import struct
from collections.abc import Iterable

import pytest
from pydicom import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from rst.backends.dimse.ul import (
    ContextResult,
    CStoreRequest,
    OtherCommand,
    PresentationContextRQ,
    encode_abort,
    encode_associate_rq,
    encode_c_cancel_rq,
    encode_c_echo_rq,
    encode_c_find_rq,
    encode_c_move_rq,
    encode_c_store_rq,
    encode_pdata,
    encode_release_rp,
    encode_release_rq,
    negotiate,
)
from rst.backends.dimse.ul.association import (
    NEED_DATA,
    Aborted,
    Association,
    AssociationAccepted,
    AssociationError,
    AssociationEvent,
    AssociationRejected,
    AssociationRequested,
    CommandReceived,
    ConnectionClosed,
    DataFragment,
    LocalProtocolError,
    ProtocolViolation,
    ReleaseConfirmed,
    ReleaseRequested,
    Role,
)
from rst.backends.dimse.ul.pdu import (
    AbortReason,
    AbortSource,
    RejectResult,
    RejectSource,
    UserRejectReason,
)
from rst.backends.dimse.ul.states import Event, State

VERIFICATION = "1.2.840.10008.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
FIND = "1.2.840.10008.5.1.4.1.2.2.1"
MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
UID = "1.2.3.4"
CONTEXTS = [
    PresentationContextRQ(1, VERIFICATION, (IMPLICIT,)),
    PresentationContextRQ(3, CT, (EXPLICIT, IMPLICIT)),
    PresentationContextRQ(5, FIND, (IMPLICIT,)),
    PresentationContextRQ(7, MOVE, (IMPLICIT,)),
    PresentationContextRQ(9, "1.2.3.999", (IMPLICIT,)),  # refused
]
ACCEPTED = {VERIFICATION, CT, FIND, MOVE}


def command_set(**values: object) -> bytes:
    """A DIMSE command set by keyword (Implicit VR Little Endian, group length first)."""
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, True
    write_dataset(fp, ds)
    body = fp.getvalue()
    return struct.pack("<HHLL", 0, 0, 4, len(body)) + body


def response(field: int, responding_to: int, status: int, *, dataset: bool = False) -> bytes:
    return command_set(
        CommandField=field,
        MessageIDBeingRespondedTo=responding_to,
        CommandDataSetType=0x0001 if dataset else 0x0101,
        Status=status,
    )


def pdata(*pdvs: tuple[int, int, bytes]) -> bytes:
    """A P-DATA-TF with several PDVs: (context id, control header, data)."""
    items = b"".join(struct.pack(">LBB", len(d) + 2, cid, ctl) + d for cid, ctl, d in pdvs)
    return struct.pack(">BxL", 4, len(items)) + items


def events(
    association: Association, data: bytes = b"", *, split: int = 0
) -> list[AssociationEvent]:
    """Feed *data* (in pieces of *split* bytes, if given) and collect every event."""
    pieces = [data[i : i + split] for i in range(0, len(data), split)] if split else [data]
    found: list[AssociationEvent] = []
    for piece in pieces:
        association.receive_data(piece)  # b"": the transport closed
        while association.state is not State.IDLE or not found:
            event = association.next_event()
            if event is NEED_DATA:
                break
            assert not isinstance(event, type(NEED_DATA))
            if isinstance(event, DataFragment):  # views die with the next read: copy
                event = DataFragment(event.context_id, memoryview(bytes(event.data)), event.last)
            found.append(event)
            if association.state is State.IDLE:  # the association has ended: no more events
                return found
    return found


def state_of(association: Association) -> State:
    """The state now (a call, so that mypy does not narrow ``.state`` across calls)."""
    return association.state


def joined(chunks: Iterable[bytes]) -> bytes:
    return b"".join(chunks)


def associated(*, rq_max: int = 16384, ac_max: int = 16384) -> tuple[Association, Association]:
    requestor = Association(Role.REQUESTOR, max_pdu_length=rq_max)
    acceptor = Association(Role.ACCEPTOR, max_pdu_length=ac_max)
    assert state_of(acceptor) is State.AWAITING_ASSOCIATE_RQ
    rq = requestor.send_associate_rq(
        called_aet="RST",
        calling_aet="PACS",
        contexts=CONTEXTS,
        implementation_class_uid=UID,
        implementation_version="TEST",
    )
    assert state_of(requestor) is State.AWAITING_ASSOCIATE_AC
    [requested] = events(acceptor, rq, split=7)
    assert isinstance(requested, AssociationRequested)
    assert state_of(acceptor) is State.AWAITING_LOCAL_ASSOCIATE_RESPONSE
    results = negotiate(
        requested.request, abstract_syntaxes=ACCEPTED, transfer_syntaxes=[EXPLICIT, IMPLICIT]
    )
    ac = acceptor.send_associate_ac(
        results, implementation_class_uid=UID, implementation_version="RST"
    )
    [accepted] = events(requestor, ac)
    assert isinstance(accepted, AssociationAccepted)
    return requestor, acceptor


def test_negotiation_both_roles() -> None:
    requestor, acceptor = associated(rq_max=8192, ac_max=4096)
    assert state_of(requestor) is State.ESTABLISHED
    assert state_of(acceptor) is State.ESTABLISHED
    assert requestor.accepted == acceptor.accepted
    assert {cid: ctx.transfer_syntax for cid, ctx in requestor.accepted.items()} == {
        1: IMPLICIT,
        3: EXPLICIT,
        5: IMPLICIT,
        7: IMPLICIT,
    }
    assert requestor.accepted[3].abstract_syntax == CT
    assert requestor.peer_max_pdu_length == 4096
    assert acceptor.peer_max_pdu_length == 8192
    assert acceptor.reader.capacity > 16 * 1024  # the data buffer once accepted


def test_the_acceptor_reads_a_small_buffer_until_it_accepts() -> None:
    acceptor = Association(Role.ACCEPTOR, max_pdu_length=16384, max_associate_length=4096)
    assert acceptor.reader.capacity == 16 * 1024
    acceptor.receive_data(encode_pdata(1, True, True, b"x" * 5000))  # larger than any RQ
    with pytest.raises(ProtocolViolation) as raised:
        acceptor.next_event()
    assert raised.value.to_send == encode_abort(
        AbortSource.SERVICE_PROVIDER, AbortReason.INVALID_PARAMETER
    )
    assert state_of(acceptor) is State.AWAITING_CLOSE


def test_rejection() -> None:
    requestor = Association(Role.REQUESTOR, max_pdu_length=16384)
    acceptor = Association(Role.ACCEPTOR, max_pdu_length=16384)
    rq = requestor.send_associate_rq(
        called_aet="X", calling_aet="Y", contexts=CONTEXTS[:1], implementation_class_uid=UID
    )
    assert isinstance(events(acceptor, rq)[0], AssociationRequested)
    rj = acceptor.send_associate_rj(
        RejectResult.PERMANENT, RejectSource.SERVICE_USER, UserRejectReason.CALLED_AE_NOT_RECOGNIZED
    )
    assert state_of(acceptor) is State.AWAITING_CLOSE
    [rejected] = events(requestor, rj)
    assert isinstance(rejected, AssociationRejected)
    assert rejected.description == "permanently: called AE title not recognized"
    assert state_of(requestor) is State.IDLE
    assert isinstance(requestor.next_event(), ConnectionClosed)
    # the requestor closes: the acceptor's Sta13 ends (AR-5)
    assert events(acceptor, b"") == [ConnectionClosed()]
    assert state_of(acceptor) is State.IDLE


def test_artim_expiry_before_a_request() -> None:
    acceptor = Association(Role.ACCEPTOR, max_pdu_length=16384)
    acceptor.receive_data(b"\x01\x00")  # a partial header, then nothing
    assert acceptor.next_event() is NEED_DATA
    acceptor.timer_expired()
    assert state_of(acceptor) is State.IDLE
    assert acceptor.send_abort() == b""  # nothing to abort: AA-2 closes without A-ABORT


def test_transport_closed_before_a_request() -> None:
    acceptor = Association(Role.ACCEPTOR, max_pdu_length=16384)
    assert events(acceptor, b"") == [ConnectionClosed()]
    assert state_of(acceptor) is State.IDLE


def test_artim_is_refused_where_it_does_not_run() -> None:
    requestor, _ = associated()
    with pytest.raises(LocalProtocolError):
        requestor.timer_expired()
    assert state_of(requestor) is State.ESTABLISHED


def test_command_and_data_set_in_one_pdu() -> None:
    _, acceptor = associated()
    store = encode_c_store_rq(message_id=7, sop_class_uid=CT, sop_instance_uid="1.2.3.4.5")
    data = bytes(range(256)) * 3
    found = events(acceptor, pdata((3, 3, store), (3, 0, data[:500]), (3, 2, data[500:])))
    assert [type(e) for e in found] == [CommandReceived, DataFragment, DataFragment]
    command = found[0]
    assert isinstance(command, CommandReceived)
    assert isinstance(command.command, CStoreRequest)
    assert command.command.message_id == 7
    assert command.command_set == store
    fragments = [e for e in found if isinstance(e, DataFragment)]
    assert b"".join(bytes(f.data) for f in fragments) == data
    assert [f.last for f in fragments] == [False, True]


def test_data_fragments_are_views_into_the_read_buffer() -> None:
    _, acceptor = associated()
    store = encode_c_store_rq(message_id=1, sop_class_uid=CT, sop_instance_uid="1.2.3")
    acceptor.receive_data(pdata((3, 3, store), (3, 2, b"abcdef")))
    assert isinstance(acceptor.next_event(), CommandReceived)
    fragment = acceptor.next_event()
    assert isinstance(fragment, DataFragment)
    assert fragment.data.obj is acceptor.reader._buf  # no copy
    assert bytes(fragment.data) == b"abcdef"


@pytest.mark.parametrize("split", [1, 5, 4096])
def test_pdvs_split_across_pdus_and_reads(split: int) -> None:
    requestor, acceptor = associated(ac_max=4096)
    store = encode_c_store_rq(message_id=3, sop_class_uid=CT, sop_instance_uid="1.2.3")
    wire = encode_pdata(3, True, False, store[:10]) + encode_pdata(3, True, True, store[10:])
    data = bytes(20000)
    wire += joined(requestor.send_dataset(3, data))
    found = events(acceptor, wire, split=split)
    assert isinstance(found[0], CommandReceived)
    fragments = found[1:]
    assert all(isinstance(f, DataFragment) for f in fragments)
    assert b"".join(bytes(f.data) for f in fragments if isinstance(f, DataFragment)) == data
    assert [f.last for f in fragments if isinstance(f, DataFragment)][-1] is True


def test_fragmentation_to_4_kib() -> None:
    requestor, _ = associated(ac_max=4096)
    pdus = list(requestor.send_dataset(3, bytes(10000)))
    assert [len(p) for p in pdus] == [6 + 4096, 6 + 4096, 6 + 6 + 10000 - 2 * 4090]
    assert [p[11] for p in pdus] == [0, 0, 2]  # control header: last only on the last


def test_max_pdu_0_is_unlimited() -> None:
    requestor, _ = associated(ac_max=16384)
    requestor.peer_max_pdu_length = 0
    pdus = list(requestor.send_dataset(3, bytes(3 << 20)))
    assert len(pdus) == 3  # 1 MiB each, whatever the peer
    assert list(requestor.send_dataset(3, b"")) == [encode_pdata(3, False, True, b"")]


def test_c_find_cancelled_and_drained() -> None:
    requestor, acceptor = associated()
    identifier = b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY "
    wire = requestor.send_command(5, encode_c_find_rq(message_id=9, sop_class_uid=FIND))
    wire += joined(requestor.send_dataset(5, identifier))
    found = events(acceptor, wire)
    assert [type(e) for e in found] == [CommandReceived, DataFragment]
    # one pending match, then the requestor cancels
    answer = acceptor.send_command(5, response(0x8020, 9, 0xFF00, dataset=True))
    answer += joined(acceptor.send_dataset(5, identifier))
    got = events(requestor, answer)
    assert [type(e) for e in got] == [CommandReceived, DataFragment]
    cancel = requestor.send_command(5, encode_c_cancel_rq(message_id_being_responded_to=9))
    # the acceptor sent one more pending match before it saw the C-CANCEL
    late = acceptor.send_command(5, response(0x8020, 9, 0xFF00, dataset=True))
    late += joined(acceptor.send_dataset(5, identifier))
    [cancelled] = events(acceptor, cancel)
    assert isinstance(cancelled, CommandReceived)
    assert isinstance(cancelled.command, OtherCommand)
    assert cancelled.command.command_field == 0x0FFF
    final = acceptor.send_command(5, response(0x8020, 9, 0xFE00))
    drained = events(requestor, late + final)
    statuses = [
        e.command.status
        for e in drained
        if isinstance(e, CommandReceived) and isinstance(e.command, OtherCommand)
    ]
    assert statuses == [0xFF00, 0xFE00]
    assert state_of(requestor) is state_of(acceptor) is State.ESTABLISHED


def test_c_move_cancelled_then_released() -> None:
    requestor, acceptor = associated()
    move = encode_c_move_rq(message_id=2, sop_class_uid=MOVE, move_destination="RST")
    events(acceptor, requestor.send_command(7, move) + joined(requestor.send_dataset(7, b"")))
    pending = acceptor.send_command(7, response(0x8021, 2, 0xFF00))
    assert isinstance(events(requestor, pending)[0], CommandReceived)
    cancel = requestor.send_command(7, encode_c_cancel_rq(message_id_being_responded_to=2))
    events(acceptor, cancel)
    # the requestor gives up waiting and releases; the final response arrives in Sta7 (AR-6)
    release = requestor.send_release_rq()
    assert state_of(requestor) is State.AWAITING_RELEASE_RP
    final = acceptor.send_command(7, response(0x8021, 2, 0xFE00))
    [requested] = events(acceptor, release)
    assert requested == ReleaseRequested(collision=False)
    assert state_of(acceptor) is State.AWAITING_LOCAL_RELEASE_RESPONSE
    rp = acceptor.send_release_rp()
    assert state_of(acceptor) is State.AWAITING_CLOSE
    found = events(requestor, final + rp)
    assert [type(e) for e in found] == [CommandReceived, ReleaseConfirmed]
    assert state_of(requestor) is State.IDLE


def test_release_by_the_acceptor_side_with_data_before_the_response() -> None:
    requestor, acceptor = associated()
    release = acceptor.send_release_rq()  # the acceptor may release too
    [requested] = events(requestor, release)
    assert requested == ReleaseRequested(collision=False)
    # AR-7: data may still go out before the A-RELEASE-RP
    echo = requestor.send_command(1, encode_c_echo_rq(message_id=1))
    rp = requestor.send_release_rp()
    found = events(acceptor, echo + rp)
    assert [type(e) for e in found] == [CommandReceived, ReleaseConfirmed]
    assert state_of(acceptor) is State.IDLE
    assert state_of(requestor) is State.AWAITING_CLOSE
    with pytest.raises(LocalProtocolError):
        requestor.send_command(1, encode_c_echo_rq(message_id=2))


def test_release_collision() -> None:
    requestor, acceptor = associated()
    rq_from_requestor = requestor.send_release_rq()
    rq_from_acceptor = acceptor.send_release_rq()
    # each receives the other's A-RELEASE-RQ in Sta7: AR-8
    assert events(requestor, rq_from_acceptor) == [ReleaseRequested(collision=True)]
    assert state_of(requestor) is State.COLLISION_REQUESTOR_AWAITING_LOCAL
    assert events(acceptor, rq_from_requestor) == [ReleaseRequested(collision=True)]
    assert state_of(acceptor) is State.COLLISION_ACCEPTOR_AWAITING_RP
    # the acceptor may not answer first: it awaits the requestor's A-RELEASE-RP (Sta10)
    with pytest.raises(LocalProtocolError):
        acceptor.send_release_rp()
    rp1 = requestor.send_release_rp()  # AR-9
    assert state_of(requestor) is State.COLLISION_REQUESTOR_AWAITING_RP
    assert events(acceptor, rp1) == [ReleaseConfirmed()]  # AR-10
    assert state_of(acceptor) is State.COLLISION_ACCEPTOR_AWAITING_LOCAL
    rp2 = acceptor.send_release_rp()  # AR-4
    assert state_of(acceptor) is State.AWAITING_CLOSE
    assert events(requestor, rp2) == [ReleaseConfirmed()]  # AR-3
    assert state_of(requestor) is State.IDLE
    assert events(acceptor, b"") == [ConnectionClosed()]
    assert state_of(acceptor) is State.IDLE


@pytest.mark.parametrize("aborting", [Role.REQUESTOR, Role.ACCEPTOR])
def test_abort_both_ways(aborting: Role) -> None:
    requestor, acceptor = associated()
    sender, receiver = (
        (requestor, acceptor) if aborting is Role.REQUESTOR else (acceptor, requestor)
    )
    abort = sender.send_abort()
    assert abort == encode_abort(AbortSource.SERVICE_USER, AbortReason.NOT_SPECIFIED)
    assert state_of(sender) is State.AWAITING_CLOSE
    [aborted] = events(receiver, abort)
    assert aborted == Aborted(0, 0)
    assert aborted.description == "the service-user aborted"
    assert state_of(receiver) is State.IDLE
    assert events(sender, b"") == [ConnectionClosed()]
    assert state_of(sender) is State.IDLE


def test_abort_in_the_middle_of_a_data_set() -> None:
    requestor, acceptor = associated()
    store = encode_c_store_rq(message_id=1, sop_class_uid=CT, sop_instance_uid="1.2")
    wire = requestor.send_command(3, store) + next(iter(requestor.send_dataset(3, bytes(40000))))
    wire += encode_abort(AbortSource.SERVICE_PROVIDER, AbortReason.NOT_SPECIFIED)
    found = events(acceptor, wire)
    assert [type(e) for e in found] == [CommandReceived, DataFragment, Aborted]
    assert isinstance(found[-1], Aborted)
    assert found[-1].description == "the service-provider aborted (not specified)"


def test_transport_closed_mid_association() -> None:
    requestor, _ = associated()
    assert events(requestor, b"") == [ConnectionClosed()]  # AA-4
    assert state_of(requestor) is State.IDLE
    with pytest.raises(LocalProtocolError):
        requestor.send_command(1, b"")


OUT_OF_TURN = {
    "A-ASSOCIATE-RQ": encode_associate_rq(
        called_aet="A",
        calling_aet="B",
        contexts=CONTEXTS[:1],
        max_pdu_length=0,
        implementation_class_uid=UID,
    ),
    "A-RELEASE-RP": encode_release_rp(),
    "garbage": b"\x09\x00\x00\x00\x00\x04abcd",
}


@pytest.mark.parametrize("pdu", OUT_OF_TURN.values(), ids=OUT_OF_TURN.keys())
def test_unexpected_pdus_when_established_abort(pdu: bytes) -> None:
    requestor, _ = associated()
    requestor.receive_data(pdu)
    with pytest.raises(ProtocolViolation) as raised:
        requestor.next_event()
    assert raised.value.to_send[:1] == b"\x07"  # an A-ABORT
    assert raised.value.to_send[8] == AbortSource.SERVICE_PROVIDER
    assert state_of(requestor) is State.AWAITING_CLOSE


def _in_state(state: State) -> tuple[Association, Association]:
    """An association in *state* (the first of the pair), built by talking."""
    if state is State.AWAITING_ASSOCIATE_RQ:
        return Association(Role.ACCEPTOR, max_pdu_length=16384), Association(
            Role.REQUESTOR, max_pdu_length=16384
        )
    if state is State.AWAITING_ASSOCIATE_AC:
        requestor = Association(Role.REQUESTOR, max_pdu_length=16384)
        requestor.send_associate_rq(
            called_aet="A", calling_aet="B", contexts=CONTEXTS, implementation_class_uid=UID
        )
        return requestor, Association(Role.ACCEPTOR, max_pdu_length=16384)
    if state is State.AWAITING_LOCAL_ASSOCIATE_RESPONSE:
        acceptor = Association(Role.ACCEPTOR, max_pdu_length=16384)
        events(acceptor, OUT_OF_TURN["A-ASSOCIATE-RQ"])
        return acceptor, Association(Role.REQUESTOR, max_pdu_length=16384)
    requestor, acceptor = associated()
    if state is State.ESTABLISHED:
        return requestor, acceptor
    if state is State.AWAITING_RELEASE_RP:
        requestor.send_release_rq()
        return requestor, acceptor
    if state is State.AWAITING_LOCAL_RELEASE_RESPONSE:
        events(acceptor, requestor.send_release_rq())
        return acceptor, requestor
    a, b = requestor.send_release_rq(), acceptor.send_release_rq()
    events(requestor, b)
    events(acceptor, a)
    if state is State.COLLISION_REQUESTOR_AWAITING_LOCAL:
        return requestor, acceptor
    if state is State.COLLISION_ACCEPTOR_AWAITING_RP:
        return acceptor, requestor
    rp = requestor.send_release_rp()
    if state is State.COLLISION_REQUESTOR_AWAITING_RP:
        return requestor, acceptor
    events(acceptor, rp)
    assert state is State.COLLISION_ACCEPTOR_AWAITING_LOCAL
    return acceptor, requestor


LIVE_STATES = [
    State.AWAITING_ASSOCIATE_RQ,
    State.AWAITING_LOCAL_ASSOCIATE_RESPONSE,
    State.AWAITING_ASSOCIATE_AC,
    State.ESTABLISHED,
    State.AWAITING_RELEASE_RP,
    State.AWAITING_LOCAL_RELEASE_RESPONSE,
    State.COLLISION_REQUESTOR_AWAITING_LOCAL,
    State.COLLISION_ACCEPTOR_AWAITING_RP,
    State.COLLISION_REQUESTOR_AWAITING_RP,
    State.COLLISION_ACCEPTOR_AWAITING_LOCAL,
]
EXPECTED = {
    (State.AWAITING_ASSOCIATE_RQ, "rq"),
    (State.AWAITING_ASSOCIATE_AC, "ac"),
    (State.AWAITING_ASSOCIATE_AC, "rj"),
    (State.ESTABLISHED, "pdata"),
    (State.ESTABLISHED, "release-rq"),
    (State.AWAITING_RELEASE_RP, "pdata"),
    (State.AWAITING_RELEASE_RP, "release-rq"),
    (State.AWAITING_RELEASE_RP, "release-rp"),
    (State.COLLISION_ACCEPTOR_AWAITING_RP, "release-rp"),
    (State.COLLISION_REQUESTOR_AWAITING_RP, "release-rp"),
}


def _pdus() -> dict[str, bytes]:
    requestor, _ = associated()
    return {
        "rq": OUT_OF_TURN["A-ASSOCIATE-RQ"],
        "ac": _accept_bytes(),
        "rj": b"\x03\x00\x00\x00\x00\x04\x00\x01\x01\x01",
        "pdata": requestor.send_command(1, encode_c_echo_rq(message_id=1)),
        "release-rq": encode_release_rq(),
        "release-rp": encode_release_rp(),
        "garbage": b"\x0a\x00\x00\x00\x00\x00",
    }


def _accept_bytes() -> bytes:
    requestor = Association(Role.REQUESTOR, max_pdu_length=16384)
    acceptor = Association(Role.ACCEPTOR, max_pdu_length=16384)
    events(
        acceptor,
        requestor.send_associate_rq(
            called_aet="A", calling_aet="B", contexts=CONTEXTS, implementation_class_uid=UID
        ),
    )
    results = [ContextResult(c.context_id, 0, c.transfer_syntaxes[0]) for c in CONTEXTS]
    return acceptor.send_associate_ac(
        results, implementation_class_uid=UID, implementation_version="X"
    )


@pytest.mark.parametrize("state", LIVE_STATES, ids=lambda s: s.value)
@pytest.mark.parametrize("kind", ["rq", "ac", "rj", "pdata", "release-rq", "release-rp", "garbage"])
def test_unexpected_pdus_in_every_state_abort(state: State, kind: str) -> None:
    association, _ = _in_state(state)
    assert association.state is state
    association.receive_data(_pdus()[kind])
    if (state, kind) in EXPECTED:
        assert association.next_event() is not NEED_DATA
        assert state_of(association) is not State.AWAITING_CLOSE
        return
    with pytest.raises(ProtocolViolation) as raised:
        association.next_event()
    assert raised.value.to_send[:2] == b"\x07\x00"
    assert state_of(association) is State.AWAITING_CLOSE
    association.receive_data(_pdus()["garbage"])  # Sta13: an invalid PDU is AA-7, A-ABORT again
    with pytest.raises(AssociationError):
        association.next_event()
    assert state_of(association) is State.AWAITING_CLOSE


def test_pdus_after_the_end_are_ignored_then_the_close_ends_it() -> None:
    requestor, acceptor = associated()
    abort = acceptor.send_abort()
    assert state_of(acceptor) is State.AWAITING_CLOSE
    late = requestor.send_command(1, encode_c_echo_rq(message_id=1)) + encode_release_rp()
    assert events(acceptor, late) == []  # AA-6
    assert state_of(acceptor) is State.AWAITING_CLOSE
    assert events(acceptor, b"") == [ConnectionClosed()]  # AR-5
    assert isinstance(events(requestor, abort)[0], Aborted)


@pytest.mark.parametrize(
    ("wire", "words"),
    [
        (pdata((9, 3, encode_c_echo_rq(message_id=1))), "not accepted"),
        (pdata((1, 2, b"data")), "without its command"),
        (pdata((1, 3, b"\x00\x00")), "cannot be parsed"),
        (
            pdata((3, 3, encode_c_store_rq(message_id=1, sop_class_uid=CT, sop_instance_uid="1.2")))
            + pdata((3, 3, b"")),
            "before the data set ended",
        ),
        (pdata((3, 1, b"\x00\x00")) + pdata((1, 3, b"")), "split across contexts"),
        (
            pdata(
                (3, 3, encode_c_store_rq(message_id=1, sop_class_uid=CT, sop_instance_uid="1.2")),
                (1, 2, b""),
            ),
            "context 1",
        ),
    ],
)
def test_dimse_level_violations(wire: bytes, words: str) -> None:
    _, acceptor = associated()
    with pytest.raises(ProtocolViolation, match=words) as raised:
        events(acceptor, wire)
    assert state_of(acceptor) is State.AWAITING_CLOSE
    assert raised.value.to_send[:1] == b"\x07"


def test_a_command_set_too_long_is_a_user_abort() -> None:
    _, acceptor = associated(ac_max=1 << 20)
    with pytest.raises(ProtocolViolation, match="longer than") as raised:
        events(acceptor, pdata((1, 1, bytes(40000)), (1, 1, bytes(40000))))
    assert raised.value.to_send == encode_abort(AbortSource.SERVICE_USER, AbortReason.NOT_SPECIFIED)


def test_sends_are_checked_against_the_table() -> None:
    requestor = Association(Role.REQUESTOR, max_pdu_length=16384)
    with pytest.raises(LocalProtocolError):
        requestor.send_command(1, b"")
    with pytest.raises(LocalProtocolError):
        requestor.send_release_rq()
    assert not requestor.allows(Event.PDATA_REQUEST)
    requestor, acceptor = associated()
    with pytest.raises(LocalProtocolError, match="not accepted"):
        requestor.send_command(9, b"")
    with pytest.raises(LocalProtocolError):
        acceptor.send_associate_ac([], implementation_class_uid=UID, implementation_version="X")
    with pytest.raises(LocalProtocolError):
        requestor.send_release_rp()
    assert state_of(requestor) is State.ESTABLISHED


def test_a_data_set_being_sent_stops_when_the_association_does() -> None:
    requestor, _ = associated(ac_max=4096)
    pdus = requestor.send_dataset(3, bytes(20000))
    next(pdus)
    requestor.send_abort()
    with pytest.raises(LocalProtocolError):
        next(pdus)


def test_resumed_association_carries_on_with_the_replay() -> None:
    requestor, acceptor = associated()
    store = encode_c_store_rq(message_id=1, sop_class_uid=CT, sop_instance_uid="1.2")
    wire = requestor.send_command(3, store) + joined(requestor.send_dataset(3, b"abc"))
    acceptor.receive_data(wire)
    assert isinstance(acceptor.next_event(), CommandReceived)
    replay = encode_pdata(3, True, True, store) + acceptor.take_unprocessed()
    resumed = Association.resumed({3: EXPLICIT}, max_pdu_length=16384, replay=replay)
    found = []
    while (event := resumed.next_event()) is not NEED_DATA:
        found.append(event)
    assert [type(e) for e in found] == [CommandReceived, DataFragment]
    assert state_of(resumed) is State.ESTABLISHED
