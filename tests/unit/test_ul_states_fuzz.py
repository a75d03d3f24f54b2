"""Property-based tests of :class:`Association` against PS3.8's state table.

Two properties, each over bounded random runs (seconds, not minutes):

* **Two well-behaved peers** (a requestor and an acceptor) take random turns — send a C-ECHO
  or a C-STORE with its data set, release, answer a release, abort, close once the association
  is over — while the bytes between them arrive in random pieces and crossing each other (so
  release collisions and P-DATA during a release happen). Invariants: no exception at all (a
  send the table refuses is :class:`LocalProtocolError`, checked before it is made, and leaves
  the state alone); every PDU sent was allowed by the table in the state it was sent from; the
  state is always one of the table's; and finishing politely always brings both to Sta1.
* **A hostile peer**: any sequence of PDUs — valid ones of every type, mutated ones, garbage —
  cut anywhere, in any state. Invariants: nothing but :class:`AssociationError` is raised; a
  violation leaves the association in Sta13 with an A-ABORT to send; a PDU the table accepts
  moves the state as the table says.
"""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rst.backends.dimse.ul import (
    ContextResult,
    PresentationContextRQ,
    encode_c_echo_rq,
    encode_c_store_rq,
)
from rst.backends.dimse.ul.association import (
    NEED_DATA,
    Association,
    AssociationAccepted,
    AssociationError,
    AssociationRequested,
    LocalProtocolError,
    ProtocolViolation,
    Role,
)
from rst.backends.dimse.ul.states import RECEIVED_EVENTS, TRANSITIONS, Event, State, transition
from tests.unit.test_ul_association import LIVE_STATES, _in_state
from tests.unit.test_ul_fuzz import chunked, valid_pdu

FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,  # no .hypothesis directory in the work tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
UID = "1.2.3.4"
CT = "1.2.840.10008.5.1.4.1.1.2"
CONTEXTS = [
    PresentationContextRQ(1, "1.2.840.10008.1.1", ("1.2.840.10008.1.2",)),
    PresentationContextRQ(3, CT, ("1.2.840.10008.1.2",)),
]
MAX_PDU = 4096


class Peer:
    """One side: its association, what it has sent and not yet been delivered, and whether
    it has closed its end of the transport."""

    def __init__(self, association: Association) -> None:
        self.association = association
        self.outbox = bytearray()
        self.closed = False
        self.eof_delivered = False

    @property
    def state(self) -> State:
        return self.association.state


def pair() -> tuple[Peer, Peer]:
    """An established association, with small buffers so that big reads spill over."""
    requestor = Association(Role.REQUESTOR, max_pdu_length=MAX_PDU, buffer_size=8192)
    acceptor = Association(Role.ACCEPTOR, max_pdu_length=MAX_PDU, buffer_size=8192)
    acceptor.receive_data(
        requestor.send_associate_rq(
            called_aet="RST", calling_aet="PACS", contexts=CONTEXTS, implementation_class_uid=UID
        )
    )
    assert isinstance(acceptor.next_event(), AssociationRequested)
    results = [ContextResult(c.context_id, 0, c.transfer_syntaxes[0]) for c in CONTEXTS]
    requestor.receive_data(
        acceptor.send_associate_ac(
            results, implementation_class_uid=UID, implementation_version="X"
        )
    )
    assert isinstance(requestor.next_event(), AssociationAccepted)
    return Peer(requestor), Peer(acceptor)


SENDS = {
    "echo": Event.PDATA_REQUEST,
    "store": Event.PDATA_REQUEST,
    "release-rq": Event.RELEASE_REQUEST,
    "release-rp": Event.RELEASE_RESPONSE,
    "abort": Event.ABORT_REQUEST,
}


def send(peer: Peer, kind: str, size: int) -> None:
    """*kind* if the table allows it now; else it must be refused and change nothing."""
    association = peer.association
    before = association.state
    allowed = (before, SENDS[kind]) in TRANSITIONS
    assert association.allows(SENDS[kind]) is allowed
    try:
        if kind == "echo":
            data = association.send_command(1, encode_c_echo_rq(message_id=1))
        elif kind == "store":
            command = encode_c_store_rq(message_id=2, sop_class_uid=CT, sop_instance_uid="1.2")
            data = association.send_command(3, command)
            data += b"".join(association.send_dataset(3, bytes(size)))
        elif kind == "release-rq":
            data = association.send_release_rq()
        elif kind == "release-rp":
            data = association.send_release_rp()
        else:
            data = association.send_abort()
    except LocalProtocolError:
        assert not allowed
        assert association.state is before
        return
    if kind == "abort" and not allowed:  # no association to abort: nothing is sent
        assert data == b""
        assert association.state is before
        return
    assert allowed, f"{kind} sent in {before}"
    peer.outbox += data


def deliver(source: Peer, target: Peer, count: int) -> None:
    """Up to *count* bytes from *source* to *target* (then the close, once all are through),
    and every event they make."""
    if target.closed:
        source.outbox.clear()
        return
    if source.outbox:
        piece = bytes(source.outbox[:count])
        del source.outbox[:count]
        target.association.receive_data(piece)
    elif source.closed and not target.eof_delivered:
        target.association.receive_data(b"")
        target.eof_delivered = True
    drain(target)


def drain(peer: Peer) -> None:
    association = peer.association
    while association.state is not State.IDLE:
        event = association.next_event()  # a well-behaved peer never makes this raise
        assert association.state in State
        if event is NEED_DATA:
            return


def close(peer: Peer) -> None:
    """A well-behaved peer closes its end once the association is over (Sta1, Sta13)."""
    if peer.closed or peer.state not in (State.IDLE, State.AWAITING_CLOSE):
        return
    peer.association.closed()
    assert peer.state is State.IDLE
    peer.closed = True


step = st.one_of(
    st.tuples(st.just("send"), st.booleans(), st.sampled_from(sorted(SENDS)), st.integers(0, 9000)),
    st.tuples(st.just("deliver"), st.booleans(), st.just(""), st.integers(1, 20000)),
    st.tuples(st.just("close"), st.booleans(), st.just(""), st.just(0)),
)


@FUZZ
@given(steps=st.lists(step, max_size=25))
def test_two_well_behaved_peers_follow_the_table_and_end_in_sta1(
    steps: list[tuple[str, bool, str, int]],
) -> None:
    requestor, acceptor = pair()
    for action, first, kind, number in steps:
        peer, other = (requestor, acceptor) if first else (acceptor, requestor)
        if action == "send" and not peer.closed:
            send(peer, kind, number)
        elif action == "deliver":
            deliver(peer, other, number)
        elif action == "close":
            close(peer)
        assert requestor.state in State
        assert acceptor.state in State
    finish(requestor, acceptor)
    assert requestor.state is State.IDLE
    assert acceptor.state is State.IDLE


def finish(requestor: Peer, acceptor: Peer) -> None:
    """Finish politely: release (or answer the release) where due, close once it is over, and
    let every byte through. Bounded: a run that does not end fails the test."""
    for _ in range(40):
        if requestor.state is State.IDLE and acceptor.state is State.IDLE:
            return
        for peer in (requestor, acceptor):
            if peer.closed:
                continue
            state = peer.state
            if state is State.ESTABLISHED and peer is requestor:
                send(peer, "release-rq", 0)
            elif state in (
                State.AWAITING_LOCAL_RELEASE_RESPONSE,
                State.COLLISION_REQUESTOR_AWAITING_LOCAL,
                State.COLLISION_ACCEPTOR_AWAITING_LOCAL,
            ):
                send(peer, "release-rp", 0)
            close(peer)
        deliver(requestor, acceptor, 1 << 30)
        deliver(acceptor, requestor, 1 << 30)
    raise AssertionError(f"no end: {requestor.state}, {acceptor.state}")


def mutated(pdu: bytes, cuts: list[int], flips: list[int]) -> bytes:
    data = bytearray(pdu)
    for flip in flips:
        if data:
            data[flip % len(data)] ^= 1 << (flip % 8)
    if cuts and data:
        del data[cuts[0] % len(data) :]
    return bytes(data)


def reachable(state: State, role: Role) -> set[State]:
    """The states a received PDU (or its absence) can lead to from *state*, by the table."""
    found = {state}
    for event in RECEIVED_EVENTS | {Event.TRANSPORT_CLOSED}:
        if (state, event) in TRANSITIONS:
            found.add(transition(state, event, requestor=role is Role.REQUESTOR)[1])
    return found


hostile_pdu = st.one_of(
    valid_pdu,
    st.builds(
        mutated,
        valid_pdu,
        st.lists(st.integers(0, 1 << 16), max_size=1),
        st.lists(st.integers(0, 1 << 16), max_size=3),
    ),
    st.binary(max_size=40),
)


@FUZZ
@given(
    state=st.sampled_from(LIVE_STATES),
    pdus=st.lists(hostile_pdu, max_size=5),
    cuts=st.lists(st.integers(0, 1 << 16), max_size=6),
)
def test_anything_a_peer_sends_is_an_event_or_a_violation(
    state: State, pdus: list[bytes], cuts: list[int]
) -> None:
    association, _ = _in_state(state)
    for chunk in chunked(b"".join(pdus), cuts):
        association.receive_data(chunk)
        while True:
            before = association.state
            violation: AssociationError | None = None
            try:
                event = association.next_event()
            except AssociationError as raised:  # the documented base; nothing else may escape
                violation = raised
            if violation is not None:
                assert isinstance(violation, ProtocolViolation)
                assert association.state is State.AWAITING_CLOSE
                assert violation.to_send[:2] == b"\x07\x00"
                assert len(violation.to_send) == 10
                break
            assert association.state in State
            if event is NEED_DATA:
                break
            assert association.state in reachable(before, association.role)
            if association.state is State.IDLE:
                return
    with contextlib.suppress(AssociationError):
        association.receive_data(b"")
        association.next_event()
    assert association.state in State
