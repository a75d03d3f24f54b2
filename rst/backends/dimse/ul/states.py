"""The DICOM Upper Layer state machine (PS3.8 §9.2): every rule about states in one table.

:data:`TRANSITIONS` is PS3.8 Table 9-10 as data: ``(state, event) → action``, and each
:class:`Action` names the state it leads to (PS3.8 Table 9-9). Two actions choose between two
states, and :func:`transition` makes that choice: AE-6 (an A-ASSOCIATE-RQ arrived: Sta3 if the
provider can hand it to its user, else reject and Sta13) and AR-8 (release collision: Sta9 on
the association-requestor's side, Sta10 on the acceptor's).

A (state, event) pair the table does not hold did not happen in the standard's world:

* for events *received* from the peer the table is complete in every state with a transport
  (an unexpected PDU there is AA-1, AA-6, AA-7 or AA-8: the peer's mistake is answered with an
  A-ABORT, never an exception of this module); Sta1 and Sta4 have no transport to receive on;
* for *local* events (a primitive the user asks for: send a PDU, abort) a missing pair is the
  user's mistake, reported as :class:`IllegalTransition` before anything is sent.

No I/O and no timers here: :class:`~rst.backends.dimse.ul.association.Association` drives this
table, the shells around it read sockets and run the ARTIM timer (Evt18).
"""

from __future__ import annotations

import enum

__all__ = [
    "LOCAL_EVENTS",
    "RECEIVED_EVENTS",
    "TRANSITIONS",
    "Action",
    "Event",
    "IllegalTransition",
    "State",
    "transition",
]


class State(enum.Enum):
    """PS3.8 Table 9-9 states; the value is the standard's name."""

    IDLE = "Sta1"
    AWAITING_ASSOCIATE_RQ = "Sta2"
    """Transport open (acceptor), ARTIM running, waiting for an A-ASSOCIATE-RQ."""
    AWAITING_LOCAL_ASSOCIATE_RESPONSE = "Sta3"
    """The request was handed to the acceptor's user, who answers AC or RJ."""
    AWAITING_TRANSPORT_OPEN = "Sta4"
    AWAITING_ASSOCIATE_AC = "Sta5"
    """A-ASSOCIATE-RQ sent; waiting for A-ASSOCIATE-AC or -RJ."""
    ESTABLISHED = "Sta6"
    AWAITING_RELEASE_RP = "Sta7"
    """A-RELEASE-RQ sent; P-DATA may still arrive."""
    AWAITING_LOCAL_RELEASE_RESPONSE = "Sta8"
    """A-RELEASE-RQ received; the user may still send P-DATA, then answers A-RELEASE-RP."""
    COLLISION_REQUESTOR_AWAITING_LOCAL = "Sta9"
    COLLISION_ACCEPTOR_AWAITING_RP = "Sta10"
    COLLISION_REQUESTOR_AWAITING_RP = "Sta11"
    COLLISION_ACCEPTOR_AWAITING_LOCAL = "Sta12"
    AWAITING_CLOSE = "Sta13"
    """The association no longer exists; ARTIM running until the transport closes."""


class Event(enum.Enum):
    """PS3.8 Table 9-10 events; the value is the standard's name."""

    ASSOCIATE_REQUEST = "Evt1"  # local user asks to associate
    TRANSPORT_CONNECTED = "Evt2"  # requestor's transport connect confirmation
    ASSOCIATE_AC_RECEIVED = "Evt3"
    ASSOCIATE_RJ_RECEIVED = "Evt4"
    TRANSPORT_INDICATION = "Evt5"  # acceptor: a connection came in
    ASSOCIATE_RQ_RECEIVED = "Evt6"
    ASSOCIATE_ACCEPT = "Evt7"  # local user accepts (send A-ASSOCIATE-AC)
    ASSOCIATE_REJECT = "Evt8"  # local user rejects (send A-ASSOCIATE-RJ)
    PDATA_REQUEST = "Evt9"  # local user sends P-DATA
    PDATA_RECEIVED = "Evt10"
    RELEASE_REQUEST = "Evt11"  # local user sends A-RELEASE-RQ
    RELEASE_RQ_RECEIVED = "Evt12"
    RELEASE_RP_RECEIVED = "Evt13"
    RELEASE_RESPONSE = "Evt14"  # local user sends A-RELEASE-RP
    ABORT_REQUEST = "Evt15"  # local user sends A-ABORT
    ABORT_RECEIVED = "Evt16"
    TRANSPORT_CLOSED = "Evt17"
    ARTIM_EXPIRED = "Evt18"
    INVALID_PDU_RECEIVED = "Evt19"  # unrecognized or invalid PDU


RECEIVED_EVENTS = frozenset(
    (
        Event.ASSOCIATE_AC_RECEIVED,
        Event.ASSOCIATE_RJ_RECEIVED,
        Event.ASSOCIATE_RQ_RECEIVED,
        Event.PDATA_RECEIVED,
        Event.RELEASE_RQ_RECEIVED,
        Event.RELEASE_RP_RECEIVED,
        Event.ABORT_RECEIVED,
        Event.INVALID_PDU_RECEIVED,
    )
)
"""Events a peer causes by sending bytes (the PDU received, or garbage)."""
LOCAL_EVENTS = frozenset(
    (
        Event.ASSOCIATE_REQUEST,
        Event.ASSOCIATE_ACCEPT,
        Event.ASSOCIATE_REJECT,
        Event.PDATA_REQUEST,
        Event.RELEASE_REQUEST,
        Event.RELEASE_RESPONSE,
        Event.ABORT_REQUEST,
    )
)
"""Events the local user causes (service primitives); each sends a PDU, except abort in Sta4."""


class Action(enum.Enum):
    """PS3.8 Table 9-6..9-9 actions: ``(name, next state)``; the next state is ``None`` where
    :func:`transition` chooses (AE-6, AR-8)."""

    AE_1 = ("AE-1", State.AWAITING_TRANSPORT_OPEN)  # issue transport connect
    AE_2 = ("AE-2", State.AWAITING_ASSOCIATE_AC)  # send A-ASSOCIATE-RQ
    AE_3 = ("AE-3", State.ESTABLISHED)  # A-ASSOCIATE confirmation (accept)
    AE_4 = ("AE-4", State.IDLE)  # A-ASSOCIATE confirmation (reject), close
    AE_5 = ("AE-5", State.AWAITING_ASSOCIATE_RQ)  # transport response, start ARTIM
    AE_6 = ("AE-6", None)  # stop ARTIM; indication (Sta3) or send RJ (Sta13)
    AE_7 = ("AE-7", State.ESTABLISHED)  # send A-ASSOCIATE-AC
    AE_8 = ("AE-8", State.AWAITING_CLOSE)  # send A-ASSOCIATE-RJ, start ARTIM
    DT_1 = ("DT-1", State.ESTABLISHED)  # send P-DATA-TF
    DT_2 = ("DT-2", State.ESTABLISHED)  # P-DATA indication
    AR_1 = ("AR-1", State.AWAITING_RELEASE_RP)  # send A-RELEASE-RQ
    AR_2 = ("AR-2", State.AWAITING_LOCAL_RELEASE_RESPONSE)  # A-RELEASE indication
    AR_3 = ("AR-3", State.IDLE)  # A-RELEASE confirmation, close
    AR_4 = ("AR-4", State.AWAITING_CLOSE)  # send A-RELEASE-RP, start ARTIM
    AR_5 = ("AR-5", State.IDLE)  # stop ARTIM
    AR_6 = ("AR-6", State.AWAITING_RELEASE_RP)  # P-DATA indication while releasing
    AR_7 = ("AR-7", State.AWAITING_LOCAL_RELEASE_RESPONSE)  # send P-DATA-TF while releasing
    AR_8 = ("AR-8", None)  # A-RELEASE indication (collision): Sta9 requestor, Sta10 acceptor
    AR_9 = ("AR-9", State.COLLISION_REQUESTOR_AWAITING_RP)  # send A-RELEASE-RP
    AR_10 = ("AR-10", State.COLLISION_ACCEPTOR_AWAITING_LOCAL)  # A-RELEASE confirmation
    AA_1 = ("AA-1", State.AWAITING_CLOSE)  # send A-ABORT, (re)start ARTIM
    AA_2 = ("AA-2", State.IDLE)  # stop ARTIM, close transport
    AA_3 = ("AA-3", State.IDLE)  # A-ABORT / A-P-ABORT indication, close
    AA_4 = ("AA-4", State.IDLE)  # A-P-ABORT indication
    AA_5 = ("AA-5", State.IDLE)  # stop ARTIM
    AA_6 = ("AA-6", State.AWAITING_CLOSE)  # ignore the PDU
    AA_7 = ("AA-7", State.AWAITING_CLOSE)  # send A-ABORT
    AA_8 = ("AA-8", State.AWAITING_CLOSE)  # send A-ABORT (provider), A-P-ABORT, start ARTIM

    label: str
    """The standard's name, e.g. ``"AA-8"``."""
    next_state: State | None

    def __init__(self, label: str, next_state: State | None) -> None:
        self.label = label
        self.next_state = next_state


class IllegalTransition(Exception):
    """The local user asked for something PS3.8 Table 9-10 does not allow in this state."""

    def __init__(self, state: State, event: Event) -> None:
        super().__init__(
            f"{event.name} ({event.value}) is not allowed in {state.value} ({state.name})"
        )
        self.state = state
        self.event = event


def _fill() -> dict[tuple[State, Event], Action]:
    s, e, a = State, Event, Action
    table: dict[tuple[State, Event], Action] = {
        (s.IDLE, e.ASSOCIATE_REQUEST): a.AE_1,
        (s.AWAITING_TRANSPORT_OPEN, e.TRANSPORT_CONNECTED): a.AE_2,
        (s.IDLE, e.TRANSPORT_INDICATION): a.AE_5,
        (s.AWAITING_LOCAL_ASSOCIATE_RESPONSE, e.ASSOCIATE_ACCEPT): a.AE_7,
        (s.AWAITING_LOCAL_ASSOCIATE_RESPONSE, e.ASSOCIATE_REJECT): a.AE_8,
        (s.ESTABLISHED, e.PDATA_REQUEST): a.DT_1,
        (s.AWAITING_LOCAL_RELEASE_RESPONSE, e.PDATA_REQUEST): a.AR_7,
        (s.ESTABLISHED, e.RELEASE_REQUEST): a.AR_1,
        (s.AWAITING_LOCAL_RELEASE_RESPONSE, e.RELEASE_RESPONSE): a.AR_4,
        (s.COLLISION_REQUESTOR_AWAITING_LOCAL, e.RELEASE_RESPONSE): a.AR_9,
        (s.COLLISION_ACCEPTOR_AWAITING_LOCAL, e.RELEASE_RESPONSE): a.AR_4,
        (s.AWAITING_TRANSPORT_OPEN, e.ABORT_REQUEST): a.AA_2,
        (s.AWAITING_ASSOCIATE_RQ, e.ARTIM_EXPIRED): a.AA_2,
        (s.AWAITING_CLOSE, e.ARTIM_EXPIRED): a.AA_2,
        (s.AWAITING_ASSOCIATE_RQ, e.ABORT_RECEIVED): a.AA_2,
        (s.AWAITING_CLOSE, e.ABORT_RECEIVED): a.AA_2,
        (s.AWAITING_ASSOCIATE_RQ, e.TRANSPORT_CLOSED): a.AA_5,
        (s.AWAITING_TRANSPORT_OPEN, e.TRANSPORT_CLOSED): a.AA_4,
        (s.AWAITING_CLOSE, e.TRANSPORT_CLOSED): a.AR_5,
    }
    # The states in which an association is being negotiated, exists, or is being released:
    # PS3.8 gives them the same row for most events.
    live = (
        s.AWAITING_LOCAL_ASSOCIATE_RESPONSE,
        s.AWAITING_ASSOCIATE_AC,
        s.ESTABLISHED,
        s.AWAITING_RELEASE_RP,
        s.AWAITING_LOCAL_RELEASE_RESPONSE,
        s.COLLISION_REQUESTOR_AWAITING_LOCAL,
        s.COLLISION_ACCEPTOR_AWAITING_RP,
        s.COLLISION_REQUESTOR_AWAITING_RP,
        s.COLLISION_ACCEPTOR_AWAITING_LOCAL,
    )
    for state in live:
        for event in RECEIVED_EVENTS - {e.ABORT_RECEIVED}:
            table[(state, event)] = a.AA_8  # unexpected or invalid PDU
        table[(state, e.ABORT_RECEIVED)] = a.AA_3
        table[(state, e.TRANSPORT_CLOSED)] = a.AA_4
        table[(state, e.ABORT_REQUEST)] = a.AA_1
    for event in RECEIVED_EVENTS - {e.ABORT_RECEIVED}:
        table[(s.AWAITING_ASSOCIATE_RQ, event)] = a.AA_1  # anything but an A-ASSOCIATE-RQ
        table[(s.AWAITING_CLOSE, event)] = a.AA_6  # ignored once the association is gone
    table.update(
        {
            (s.AWAITING_ASSOCIATE_RQ, e.ASSOCIATE_RQ_RECEIVED): a.AE_6,
            (s.AWAITING_CLOSE, e.ASSOCIATE_RQ_RECEIVED): a.AA_7,
            (s.AWAITING_CLOSE, e.INVALID_PDU_RECEIVED): a.AA_7,
            (s.AWAITING_ASSOCIATE_AC, e.ASSOCIATE_AC_RECEIVED): a.AE_3,
            (s.AWAITING_ASSOCIATE_AC, e.ASSOCIATE_RJ_RECEIVED): a.AE_4,
            (s.ESTABLISHED, e.PDATA_RECEIVED): a.DT_2,
            (s.AWAITING_RELEASE_RP, e.PDATA_RECEIVED): a.AR_6,
            (s.ESTABLISHED, e.RELEASE_RQ_RECEIVED): a.AR_2,
            (s.AWAITING_RELEASE_RP, e.RELEASE_RQ_RECEIVED): a.AR_8,
            (s.AWAITING_RELEASE_RP, e.RELEASE_RP_RECEIVED): a.AR_3,
            (s.COLLISION_ACCEPTOR_AWAITING_RP, e.RELEASE_RP_RECEIVED): a.AR_10,
            (s.COLLISION_REQUESTOR_AWAITING_RP, e.RELEASE_RP_RECEIVED): a.AR_3,
        }
    )
    return table


TRANSITIONS: dict[tuple[State, Event], Action] = _fill()
"""PS3.8 Table 9-10: what each event does in each state (absent pairs: see the module doc)."""


def transition(
    state: State, event: Event, *, requestor: bool, acceptable: bool = True
) -> tuple[Action, State]:
    """The action PS3.8 takes for *event* in *state*, and the state it leads to.

    *requestor*: whether this side sent the A-ASSOCIATE-RQ (decides AR-8). *acceptable*:
    whether an A-ASSOCIATE-RQ can be handed to the user (decides AE-6).

    Raises :class:`IllegalTransition` for a pair the table lacks: a local event it does not
    allow, or a received one in Sta1 or Sta4, where there is no transport to receive on.
    """
    action = TRANSITIONS.get((state, event))
    if action is None:
        raise IllegalTransition(state, event)
    following = action.next_state
    if following is None:
        if action is Action.AE_6:
            following = (
                State.AWAITING_LOCAL_ASSOCIATE_RESPONSE if acceptable else State.AWAITING_CLOSE
            )
        else:  # AR-8
            following = (
                State.COLLISION_REQUESTOR_AWAITING_LOCAL
                if requestor
                else State.COLLISION_ACCEPTOR_AWAITING_RP
            )
    return action, following
