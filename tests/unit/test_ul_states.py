"""PS3.8 Table 9-10 as rst's state table holds it: spot checks against the standard's rows and
the rules that make the table complete."""

from __future__ import annotations

import pytest

from rst.backends.dimse.ul.states import (
    LOCAL_EVENTS,
    RECEIVED_EVENTS,
    TRANSITIONS,
    Action,
    Event,
    IllegalTransition,
    State,
    transition,
)

S, E, A = State, Event, Action
WITH_TRANSPORT = [s for s in State if s not in (S.IDLE, S.AWAITING_TRANSPORT_OPEN)]
LIVE = [s for s in WITH_TRANSPORT if s not in (S.AWAITING_ASSOCIATE_RQ, S.AWAITING_CLOSE)]


def test_names_are_the_standards() -> None:
    assert [s.value for s in State] == [f"Sta{n}" for n in range(1, 14)]
    assert [e.value for e in Event] == [f"Evt{n}" for n in range(1, 20)]
    assert RECEIVED_EVENTS.isdisjoint(LOCAL_EVENTS)


@pytest.mark.parametrize("state", WITH_TRANSPORT)
@pytest.mark.parametrize("event", [e for e in Event if e in RECEIVED_EVENTS])
def test_every_received_event_has_an_action_wherever_there_is_a_transport(
    state: State, event: Event
) -> None:
    action, following = transition(state, event, requestor=True)
    assert following in State
    if action in (A.AA_1, A.AA_7, A.AA_8):  # the answer to a PDU out of turn: A-ABORT
        assert following is S.AWAITING_CLOSE


@pytest.mark.parametrize("state", LIVE)
def test_unexpected_pdus_in_live_states_are_aa8(state: State) -> None:
    expected = {
        (S.AWAITING_ASSOCIATE_AC, E.ASSOCIATE_AC_RECEIVED),
        (S.AWAITING_ASSOCIATE_AC, E.ASSOCIATE_RJ_RECEIVED),
        (S.ESTABLISHED, E.PDATA_RECEIVED),
        (S.ESTABLISHED, E.RELEASE_RQ_RECEIVED),
        (S.AWAITING_RELEASE_RP, E.PDATA_RECEIVED),
        (S.AWAITING_RELEASE_RP, E.RELEASE_RQ_RECEIVED),
        (S.AWAITING_RELEASE_RP, E.RELEASE_RP_RECEIVED),
        (S.COLLISION_ACCEPTOR_AWAITING_RP, E.RELEASE_RP_RECEIVED),
        (S.COLLISION_REQUESTOR_AWAITING_RP, E.RELEASE_RP_RECEIVED),
    }
    for event in RECEIVED_EVENTS - {E.ABORT_RECEIVED}:
        action = TRANSITIONS[(state, event)]
        assert (action is A.AA_8) == ((state, event) not in expected), (state, event, action)
    assert TRANSITIONS[(state, E.ABORT_RECEIVED)] is A.AA_3
    assert TRANSITIONS[(state, E.TRANSPORT_CLOSED)] is A.AA_4
    assert TRANSITIONS[(state, E.ABORT_REQUEST)] is A.AA_1


@pytest.mark.parametrize(
    ("state", "event", "action", "following"),
    [
        (S.IDLE, E.ASSOCIATE_REQUEST, A.AE_1, S.AWAITING_TRANSPORT_OPEN),
        (S.AWAITING_TRANSPORT_OPEN, E.TRANSPORT_CONNECTED, A.AE_2, S.AWAITING_ASSOCIATE_AC),
        (S.AWAITING_ASSOCIATE_AC, E.ASSOCIATE_AC_RECEIVED, A.AE_3, S.ESTABLISHED),
        (S.AWAITING_ASSOCIATE_AC, E.ASSOCIATE_RJ_RECEIVED, A.AE_4, S.IDLE),
        (S.IDLE, E.TRANSPORT_INDICATION, A.AE_5, S.AWAITING_ASSOCIATE_RQ),
        (
            S.AWAITING_ASSOCIATE_RQ,
            E.ASSOCIATE_RQ_RECEIVED,
            A.AE_6,
            S.AWAITING_LOCAL_ASSOCIATE_RESPONSE,
        ),
        (S.AWAITING_LOCAL_ASSOCIATE_RESPONSE, E.ASSOCIATE_ACCEPT, A.AE_7, S.ESTABLISHED),
        (S.AWAITING_LOCAL_ASSOCIATE_RESPONSE, E.ASSOCIATE_REJECT, A.AE_8, S.AWAITING_CLOSE),
        (S.ESTABLISHED, E.PDATA_REQUEST, A.DT_1, S.ESTABLISHED),
        (S.ESTABLISHED, E.PDATA_RECEIVED, A.DT_2, S.ESTABLISHED),
        (S.ESTABLISHED, E.RELEASE_REQUEST, A.AR_1, S.AWAITING_RELEASE_RP),
        (S.ESTABLISHED, E.RELEASE_RQ_RECEIVED, A.AR_2, S.AWAITING_LOCAL_RELEASE_RESPONSE),
        (S.AWAITING_RELEASE_RP, E.RELEASE_RP_RECEIVED, A.AR_3, S.IDLE),
        (S.AWAITING_LOCAL_RELEASE_RESPONSE, E.RELEASE_RESPONSE, A.AR_4, S.AWAITING_CLOSE),
        (S.AWAITING_CLOSE, E.TRANSPORT_CLOSED, A.AR_5, S.IDLE),
        (S.AWAITING_RELEASE_RP, E.PDATA_RECEIVED, A.AR_6, S.AWAITING_RELEASE_RP),
        (
            S.AWAITING_LOCAL_RELEASE_RESPONSE,
            E.PDATA_REQUEST,
            A.AR_7,
            S.AWAITING_LOCAL_RELEASE_RESPONSE,
        ),
        (
            S.COLLISION_REQUESTOR_AWAITING_LOCAL,
            E.RELEASE_RESPONSE,
            A.AR_9,
            S.COLLISION_REQUESTOR_AWAITING_RP,
        ),
        (
            S.COLLISION_ACCEPTOR_AWAITING_RP,
            E.RELEASE_RP_RECEIVED,
            A.AR_10,
            S.COLLISION_ACCEPTOR_AWAITING_LOCAL,
        ),
        (S.COLLISION_REQUESTOR_AWAITING_RP, E.RELEASE_RP_RECEIVED, A.AR_3, S.IDLE),
        (S.COLLISION_ACCEPTOR_AWAITING_LOCAL, E.RELEASE_RESPONSE, A.AR_4, S.AWAITING_CLOSE),
        (S.AWAITING_ASSOCIATE_RQ, E.PDATA_RECEIVED, A.AA_1, S.AWAITING_CLOSE),
        (S.AWAITING_ASSOCIATE_RQ, E.INVALID_PDU_RECEIVED, A.AA_1, S.AWAITING_CLOSE),
        (S.AWAITING_ASSOCIATE_RQ, E.ARTIM_EXPIRED, A.AA_2, S.IDLE),
        (S.AWAITING_ASSOCIATE_RQ, E.ABORT_RECEIVED, A.AA_2, S.IDLE),
        (S.AWAITING_ASSOCIATE_RQ, E.TRANSPORT_CLOSED, A.AA_5, S.IDLE),
        (S.AWAITING_TRANSPORT_OPEN, E.ABORT_REQUEST, A.AA_2, S.IDLE),
        (S.AWAITING_TRANSPORT_OPEN, E.TRANSPORT_CLOSED, A.AA_4, S.IDLE),
        (S.AWAITING_CLOSE, E.ARTIM_EXPIRED, A.AA_2, S.IDLE),
        (S.AWAITING_CLOSE, E.ABORT_RECEIVED, A.AA_2, S.IDLE),
        (S.AWAITING_CLOSE, E.PDATA_RECEIVED, A.AA_6, S.AWAITING_CLOSE),
        (S.AWAITING_CLOSE, E.RELEASE_RP_RECEIVED, A.AA_6, S.AWAITING_CLOSE),
        (S.AWAITING_CLOSE, E.ASSOCIATE_RQ_RECEIVED, A.AA_7, S.AWAITING_CLOSE),
        (S.AWAITING_CLOSE, E.INVALID_PDU_RECEIVED, A.AA_7, S.AWAITING_CLOSE),
    ],
)
def test_table_9_10_rows(state: State, event: Event, action: Action, following: State) -> None:
    assert transition(state, event, requestor=True) == (action, following)


def test_release_collision_depends_on_the_role() -> None:
    rq = transition(S.AWAITING_RELEASE_RP, E.RELEASE_RQ_RECEIVED, requestor=True)
    ac = transition(S.AWAITING_RELEASE_RP, E.RELEASE_RQ_RECEIVED, requestor=False)
    assert rq == (A.AR_8, S.COLLISION_REQUESTOR_AWAITING_LOCAL)
    assert ac == (A.AR_8, S.COLLISION_ACCEPTOR_AWAITING_RP)


def test_an_unacceptable_request_is_rejected_by_the_provider() -> None:
    action, following = transition(
        S.AWAITING_ASSOCIATE_RQ, E.ASSOCIATE_RQ_RECEIVED, requestor=False, acceptable=False
    )
    assert (action, following) == (A.AE_6, S.AWAITING_CLOSE)


@pytest.mark.parametrize("state", list(State))
def test_local_events_outside_the_table_are_refused(state: State) -> None:
    for event in LOCAL_EVENTS:
        if (state, event) in TRANSITIONS:
            continue
        with pytest.raises(IllegalTransition) as raised:
            transition(state, event, requestor=False)
        assert state.value in str(raised.value)
        assert event.value in str(raised.value)


def test_no_transport_no_received_events() -> None:
    for state in (S.IDLE, S.AWAITING_TRANSPORT_OPEN):
        for event in RECEIVED_EVENTS:
            with pytest.raises(IllegalTransition):
                transition(state, event, requestor=True)


def test_sending_is_allowed_exactly_where_the_standard_says() -> None:
    allowed = {(state, event) for (state, event) in TRANSITIONS if event in LOCAL_EVENTS}
    assert {(s, e) for s, e in allowed if e is E.PDATA_REQUEST} == {
        (S.ESTABLISHED, E.PDATA_REQUEST),
        (S.AWAITING_LOCAL_RELEASE_RESPONSE, E.PDATA_REQUEST),
    }
    assert {s for s, e in allowed if e is E.RELEASE_RESPONSE} == {
        S.AWAITING_LOCAL_RELEASE_RESPONSE,
        S.COLLISION_REQUESTOR_AWAITING_LOCAL,
        S.COLLISION_ACCEPTOR_AWAITING_LOCAL,
    }
    assert {s for s, e in allowed if e is E.ABORT_REQUEST} == set(LIVE) | {
        S.AWAITING_TRANSPORT_OPEN
    }
