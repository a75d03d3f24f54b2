"""One DICOM association, sans-IO: bytes in, events out; calls in, bytes out (h11's shape).

An :class:`Association` owns everything an association is — the PS3.8 state
(:mod:`.states`), the :class:`~rst.backends.dimse.ul.pdu.PduReader`, the negotiated
presentation contexts and maximum PDU lengths, and the reassembly of DIMSE messages from PDVs
— and nothing about sockets, trio or timers. The I/O shells (:mod:`rst.backends.dimse.wire`,
``client.py``, ``receiver.py``) read bytes into it, act on the events :meth:`next_event`
returns, and write the bytes the ``send_*`` methods return.

Receiving. :meth:`receive_data` takes bytes (``b""``: the transport closed); for the zero-copy
path a shell reads straight into :meth:`writable` and calls :meth:`advance`. :meth:`next_event`
then returns one event at a time, or :data:`NEED_DATA`. A command set is reassembled (it is
small, :data:`~rst.backends.dimse.ul.commands.MAX_COMMAND_SET` at most) and parsed; a data set
is *not*: each PDV is one :class:`DataFragment` whose ``data`` is a view into the read buffer,
valid until the next read — a large C-STORE streams into its spool file without being copied
into a Python object of its own or held whole in memory.

The peer's mistakes. Every PDU is checked against the state table: one the standard does not
expect (AA-1, AA-7, AA-8), bytes that are not a PDU (Evt19), a PDV on a context that was not
accepted, a data set without its command, a command set that cannot be parsed — each moves the
association to Sta13 and raises :class:`ProtocolViolation`, whose :attr:`~AssociationError.to_send`
is the A-ABORT to write before closing. The peer's A-ABORT and a closed transport are events
(:class:`Aborted`, :class:`ConnectionClosed`); a shell in the middle of an operation turns them
into :class:`PeerAborted` / :class:`ConnectionLost`. All four are :class:`AssociationError`.

Our mistakes. A ``send_*`` that the table does not allow in the current state raises
:class:`LocalProtocolError` (an :class:`AssociationError` too) before anything is encoded.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, NoReturn

from rst.backends.dimse.ul.commands import (
    MAX_COMMAND_SET,
    CEchoRequest,
    CommandError,
    CStoreRequest,
    OtherCommand,
    parse_command,
)
from rst.backends.dimse.ul.pdu import (
    Abort,
    AbortReason,
    AbortSource,
    AssociateAccept,
    AssociateReject,
    AssociateRequest,
    ContextResult,
    PData,
    PduReader,
    Pdv,
    PresentationContextRQ,
    RejectReason,
    RejectResult,
    RejectSource,
    ReleaseRequest,
    ReleaseResponse,
    UpperLayerError,
    describe_abort,
    describe_rejection,
    encode_abort,
    encode_associate_ac,
    encode_associate_rj,
    encode_associate_rq,
    encode_pdata,
    encode_release_rp,
    encode_release_rq,
)
from rst.backends.dimse.ul.states import Action, Event, IllegalTransition, State, transition

__all__ = [
    "NEED_DATA",
    "Aborted",
    "AcceptedContext",
    "Association",
    "AssociationAccepted",
    "AssociationError",
    "AssociationEvent",
    "AssociationRejected",
    "AssociationRequested",
    "Command",
    "CommandReceived",
    "ConnectionClosed",
    "ConnectionLost",
    "DataFragment",
    "LocalProtocolError",
    "NeedData",
    "PeerAborted",
    "ProtocolViolation",
    "ReleaseConfirmed",
    "ReleaseRequested",
    "Role",
]

Command = CStoreRequest | CEchoRequest | OtherCommand
UNLIMITED_CHUNK = 1 << 20
"""PDV data per P-DATA-TF sent to a peer whose maximum length is 0 (unlimited)."""
PDV_OVERHEAD = 6  # PDV item header counted in the PDU-length (PS3.8 D.1)


class Role(enum.Enum):
    REQUESTOR = "requestor"
    """This side sent the A-ASSOCIATE-RQ."""
    ACCEPTOR = "acceptor"


class NeedData(enum.Enum):
    NEED_DATA = "need data"


NEED_DATA = NeedData.NEED_DATA
""":meth:`Association.next_event`'s answer when it needs more bytes."""


class AcceptedContext(NamedTuple):
    abstract_syntax: str  # "" when not known (an association resumed from another worker)
    transfer_syntax: str


# --- events ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AssociationRequested:
    """Acceptor, Sta3: answer with :meth:`Association.send_associate_ac` or ``_rj``."""

    request: AssociateRequest


@dataclass(frozen=True, slots=True)
class AssociationAccepted:
    """Requestor, Sta6."""

    accept: AssociateAccept


@dataclass(frozen=True, slots=True)
class AssociationRejected:
    """Requestor, Sta1: close the transport."""

    result: int
    source: int
    reason: int

    @property
    def description(self) -> str:
        return describe_rejection(self.result, self.source, self.reason)


@dataclass(frozen=True, slots=True)
class CommandReceived:
    """A whole command set (``command_set``: its bytes) on an accepted context."""

    context_id: int
    command: Command
    command_set: bytes = field(repr=False)


class DataFragment(NamedTuple):
    """One PDV of the data set that follows the last command. ``data`` is a view into the read
    buffer, valid until the next read (:meth:`Association.writable` / ``receive_data``) — or,
    while the shell keeps fragments (:meth:`Association.keep_fragments`), until it is told to
    copy them out.

    A named tuple, not a frozen dataclass like the other events: it comes once per P-DATA-TF,
    and building one costs a fifth as much."""

    context_id: int
    data: memoryview
    last: bool

    def __repr__(self) -> str:
        size = len(self.data)
        return f"DataFragment(context_id={self.context_id}, {size} bytes, last={self.last})"


@dataclass(frozen=True, slots=True)
class ReleaseRequested:
    """The peer asked to release: answer :meth:`Association.send_release_rp` (Sta8, or a
    release collision: Sta9 for the requestor, Sta10 for the acceptor)."""

    collision: bool


@dataclass(frozen=True, slots=True)
class ReleaseConfirmed:
    """Our A-RELEASE-RQ was answered (Sta1; in a collision on the acceptor's side, Sta12: it
    still owes its A-RELEASE-RP)."""


@dataclass(frozen=True, slots=True)
class Aborted:
    """The peer sent A-ABORT (Sta1)."""

    source: int
    reason: int

    @property
    def description(self) -> str:
        return describe_abort(self.source, self.reason)


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The transport closed, or the association ended in Sta1."""


AssociationEvent = (
    AssociationRequested
    | AssociationAccepted
    | AssociationRejected
    | CommandReceived
    | DataFragment
    | ReleaseRequested
    | ReleaseConfirmed
    | Aborted
    | ConnectionClosed
)

_RELEASE_CONFIRMED = ReleaseConfirmed()
_CLOSED = ConnectionClosed()


# --- errors ---------------------------------------------------------------------------------


class AssociationError(Exception):
    """The association is broken. The message says what the peer (or we) did, in words, for
    the 502 a client gets; :attr:`to_send` is what to write before closing (an A-ABORT, or
    ``b""``)."""

    def __init__(self, message: str, *, to_send: bytes = b"") -> None:
        super().__init__(message)
        self.to_send = to_send


class ProtocolViolation(AssociationError):
    """The peer broke PS3.7/PS3.8: answer with :attr:`to_send` (the A-ABORT) and close."""

    def __init__(self, message: str, *, source: AbortSource, reason: AbortReason) -> None:
        super().__init__(message, to_send=encode_abort(source, reason))
        self.source = source
        self.reason = reason


class PeerAborted(AssociationError):
    """The peer aborted the association."""


class ConnectionLost(AssociationError):
    """The transport closed while the association existed."""


class LocalProtocolError(AssociationError):
    """We asked for something the state table does not allow in the current state."""


_RECEIVED_EVENT: dict[type, Event] = {
    AssociateRequest: Event.ASSOCIATE_RQ_RECEIVED,
    AssociateAccept: Event.ASSOCIATE_AC_RECEIVED,
    AssociateReject: Event.ASSOCIATE_RJ_RECEIVED,
    PData: Event.PDATA_RECEIVED,
    ReleaseRequest: Event.RELEASE_RQ_RECEIVED,
    ReleaseResponse: Event.RELEASE_RP_RECEIVED,
    Abort: Event.ABORT_RECEIVED,
}
_VIOLATIONS = (Action.AA_1, Action.AA_7, Action.AA_8)
_DATA_STATES = frozenset((State.ESTABLISHED, State.AWAITING_RELEASE_RP))
"""Where a P-DATA-TF received is DT-2 or AR-6: handed on, the state unchanged."""


class Association:
    """One association, either role. See the module docstring.

    *max_pdu_length*: the Maximum Length we offer (and enforce on P-DATA-TF received);
    positive. *max_associate_length*: the largest A-ASSOCIATE-RQ/AC taken. An acceptor reads
    into a buffer of *handshake_buffer* bytes until it accepts, so a connection that has not
    even asked for an association cannot make rst allocate the data buffer
    (*buffer_size*), and until then no PDU may be larger than *max_associate_length*.
    """

    def __init__(
        self,
        role: Role,
        *,
        max_pdu_length: int,
        max_associate_length: int = 65536,
        buffer_size: int = 4 * 1024 * 1024,
        handshake_buffer: int = 16 * 1024,
    ) -> None:
        self.role = role
        self.state = State.IDLE
        self.max_pdu_length = max_pdu_length
        self.peer_max_pdu_length = 0
        self.max_associate_length = max_associate_length
        self._buffer_size = buffer_size
        self.accepted: dict[int, AcceptedContext] = {}
        self.request: AssociateRequest | None = None
        self.accept: AssociateAccept | None = None
        self._proposed: dict[int, str] = {}
        self._pdvs: collections.deque[Pdv] = collections.deque()
        self._backlog = bytearray()  # received bytes that did not fit the reader yet
        self._eof = False
        self._command = bytearray()
        self._command_context = 0
        self._dataset_context: int | None = None  # a data set follows on this context
        if role is Role.ACCEPTOR:
            self.reader = PduReader(
                max_pdu_length=max_associate_length,
                max_associate_length=max_associate_length,
                buffer_size=handshake_buffer,
            )
            self._local(Event.TRANSPORT_INDICATION)  # AE-5: Sta2
        else:
            # small until data comes: most requestors (C-FIND, C-MOVE) only get responses
            self.reader = PduReader(
                max_pdu_length=max_pdu_length,
                max_associate_length=max_associate_length,
                buffer_size=handshake_buffer,
                grow_to=buffer_size,
            )

    @classmethod
    def resumed(
        cls,
        accepted: Mapping[int, str],
        *,
        max_pdu_length: int,
        replay: bytes,
        buffer_size: int = 4 * 1024 * 1024,
    ) -> Association:
        """An acceptor in Sta6 carrying on an association another process accepted, with its
        transfer syntaxes by context id, having received *replay* first."""
        association = cls(
            Role.ACCEPTOR,
            max_pdu_length=max_pdu_length,
            buffer_size=max(buffer_size, len(replay) + (1 << 16)),
        )
        association.state = State.ESTABLISHED
        association.accepted = {
            cid: AcceptedContext("", syntax) for cid, syntax in accepted.items()
        }
        association._open_data_buffer()
        association.receive_data(replay)
        return association

    # -- the state table -----------------------------------------------------------------------

    def allows(self, event: Event) -> bool:
        """Whether the table allows local *event* now (e.g. ``Event.ABORT_REQUEST``)."""
        try:
            transition(self.state, event, requestor=self.role is Role.REQUESTOR)
        except IllegalTransition:
            return False
        return True

    def _local(self, event: Event) -> Action:
        try:
            action, following = transition(self.state, event, requestor=self.role is Role.REQUESTOR)
        except IllegalTransition as exc:
            raise LocalProtocolError(str(exc)) from None
        self.state = following
        return action

    def _check(self, event: Event) -> None:
        if not self.allows(event):
            raise LocalProtocolError(
                f"{event.name} ({event.value}) is not allowed in {self.state.value} "
                f"({self.state.name})"
            )

    # -- receiving -----------------------------------------------------------------------------

    def writable(self) -> memoryview:
        """The free part of the read buffer, to ``recv_into``; then :meth:`advance`. Only
        after :meth:`next_event` returned :data:`NEED_DATA` (it invalidates fragment views)."""
        return self.reader.writable()

    def keep_fragments(self, copy_out: Callable[[], None] | None) -> None:
        """Keep the data of the :class:`DataFragment` events returned from now on valid past
        the next read, until ``copy_out()`` is called: the association calls it each time
        just before it would move or overwrite them, and the shell copies out what it still
        holds. ``None``: the shell holds nothing any more (views die with the next read
        again).

        A data set can so be reassembled with one copy instead of two (fragment, then join):
        the fragments stay in the read buffer until the data set is complete, which with a
        4 MiB buffer is nearly always."""
        self.reader.keep = copy_out

    def advance(self, nbytes: int) -> None:
        """Record that *nbytes* were read into :meth:`writable`; 0 means the transport closed."""
        if nbytes == 0:
            self._eof = True
        else:
            self.reader.advance(nbytes)

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes from the peer; ``b""``: the transport closed."""
        if not data:
            self._eof = True
            return
        if self._backlog or self._pdvs:
            self._backlog += data
            return
        try:
            room = len(self.reader.writable())
        except BufferError:
            room = 0
        if len(data) <= room:
            self.reader.feed(data)
        else:
            self.reader.feed(memoryview(data)[:room])
            self._backlog += memoryview(data)[room:]

    def _refill(self) -> bool:
        """Move backlog into the reader; whether anything moved."""
        if not self._backlog:
            return False
        try:
            room = len(self.reader.writable())
        except BufferError:
            return False
        if room == 0:
            return False
        take = min(room, len(self._backlog))
        self.reader.feed(memoryview(self._backlog)[:take])
        del self._backlog[:take]
        return True

    def next_event(self) -> AssociationEvent | NeedData:
        """The next event, or :data:`NEED_DATA`. Raises :class:`ProtocolViolation`."""
        while True:
            if self._pdvs:
                event = self._on_pdv(self._pdvs.popleft())
                if event is not None:
                    return event
                continue
            if self.state is State.IDLE or self.state is State.AWAITING_TRANSPORT_OPEN:
                return _CLOSED if self._eof or self.state is State.IDLE else NEED_DATA
            if self.state in _DATA_STATES and (single := self.reader.next_data_pdv()) is not None:
                # the hot path: a P-DATA-TF of one PDV (DT-2 / AR-6 leave the state as it is);
                # a fragment of the data set being received is an event at once
                context_id, control, data = single
                if not control & 1 and context_id == self._dataset_context:
                    last = control & 2 != 0
                    if last:
                        self._dataset_context = None
                    return DataFragment(context_id, data, last)
                event = self._on_pdv(Pdv(context_id, control & 1 != 0, control & 2 != 0, data))
                if event is not None:
                    return event
                continue
            try:
                pdu = self.reader.next_pdu()
            except UpperLayerError as exc:
                self._violation(str(exc), exc.source, exc.reason)
            if pdu is None:
                if self._refill():
                    continue
                if self._eof:
                    self._local_closed()
                    return _CLOSED
                return NEED_DATA
            if pdu.__class__ is PData and self.state in _DATA_STATES:
                # the hot path: DT-2 / AR-6 leave the state as it is
                pdvs = pdu.pdvs
                if len(pdvs) == 1:
                    event = self._on_pdv(pdvs[0])
                    if event is not None:
                        return event
                else:
                    self._pdvs.extend(pdvs)
                continue
            pdu_event = self._on_pdu(pdu)
            if pdu_event is not None:
                return pdu_event

    def _local_closed(self) -> None:
        # AA-4, AA-5, AR-5: every state with a transport goes to Sta1
        self.state = transition(
            self.state, Event.TRANSPORT_CLOSED, requestor=self.role is Role.REQUESTOR
        )[1]

    def _violation(
        self,
        message: str,
        source: AbortSource = AbortSource.SERVICE_PROVIDER,
        reason: AbortReason = AbortReason.UNEXPECTED_PDU,
    ) -> NoReturn:
        """AA-1/AA-7/AA-8 (or a DIMSE-level error): Sta13 and raise; the A-ABORT goes with the
        error. In Sta13 already (AA-7) the abort is sent again, nothing else changes."""
        self.state = State.AWAITING_CLOSE
        self._pdvs.clear()
        raise ProtocolViolation(message, source=source, reason=reason)

    def _on_pdu(self, pdu: object) -> AssociationEvent | None:
        event = _RECEIVED_EVENT[type(pdu)]
        before = self.state
        action, following = transition(
            before,
            event,
            requestor=self.role is Role.REQUESTOR,
        )
        if action in _VIOLATIONS:
            self._violation(
                f"{type(pdu).__name__} PDU out of turn in {before.value} ({before.name})"
            )
        self.state = following
        if action is Action.AA_6:
            return None
        if isinstance(pdu, PData):
            self._pdvs.extend(pdu.pdvs)
            return None
        if isinstance(pdu, AssociateRequest):  # AE-6
            self.request = pdu
            self.peer_max_pdu_length = pdu.max_pdu_length
            return AssociationRequested(pdu)
        if isinstance(pdu, AssociateAccept):  # AE-3
            return self._accepted(pdu)
        if isinstance(pdu, AssociateReject):  # AE-4
            return AssociationRejected(pdu.result, pdu.source, pdu.reason)
        if isinstance(pdu, ReleaseRequest):  # AR-2, AR-8
            return ReleaseRequested(collision=action is Action.AR_8)
        if isinstance(pdu, ReleaseResponse):  # AR-3, AR-10
            return _RELEASE_CONFIRMED
        assert isinstance(pdu, Abort)  # AA-2, AA-3
        return Aborted(pdu.source, pdu.reason)

    def _accepted(self, accept: AssociateAccept) -> AssociationEvent:
        self.accept = accept
        self.peer_max_pdu_length = accept.max_pdu_length
        self.accepted = {
            r.context_id: AcceptedContext(self._proposed[r.context_id], r.transfer_syntax)
            for r in accept.contexts
            if r.result == 0 and r.context_id in self._proposed
        }
        return AssociationAccepted(accept)

    def _on_pdv(self, pdv: Pdv) -> AssociationEvent | None:
        context_id = pdv.context_id
        if context_id not in self.accepted:
            self._violation(
                f"P-DATA on presentation context {context_id}, which was not accepted",
                reason=AbortReason.INVALID_PARAMETER,
            )
        if not pdv.is_command:
            if self._dataset_context != context_id:
                self._violation(
                    "a data set fragment without its command"
                    if self._dataset_context is None
                    else f"a data set fragment on context {context_id} after a command on "
                    f"{self._dataset_context}",
                )
            if pdv.is_last:
                self._dataset_context = None
            return DataFragment(context_id, pdv.data, pdv.is_last)
        if self._dataset_context is not None:
            self._violation("a command before the data set ended")
        if self._command and context_id != self._command_context:
            self._violation("a command set split across contexts")
        if len(self._command) + len(pdv.data) > MAX_COMMAND_SET:
            self._violation(
                f"a command set longer than {MAX_COMMAND_SET} bytes",
                CommandError.source,
                CommandError.reason,
            )
        self._command += pdv.data
        self._command_context = context_id
        if not pdv.is_last:
            return None
        raw = bytes(self._command)
        self._command.clear()
        try:
            command = parse_command(raw)
        except CommandError as exc:
            self._violation(
                f"a command set that cannot be parsed: {exc}",
                CommandError.source,
                CommandError.reason,
            )
        follows = isinstance(command, CStoreRequest) or (
            isinstance(command, OtherCommand) and command.has_dataset
        )
        if follows:
            self._dataset_context = context_id
        return CommandReceived(context_id, command, raw)

    def take_unprocessed(self) -> bytes:
        """What was received but not yet returned as events — the rest of the current PDU's
        PDVs (re-encoded) and the bytes after it — removed (to pass the connection on)."""
        parts = [encode_pdata(p.context_id, p.is_command, p.is_last, p.data) for p in self._pdvs]
        self._pdvs.clear()
        parts.append(self.reader.take_buffered())
        parts.append(bytes(self._backlog))
        self._backlog.clear()
        return b"".join(parts)

    def _open_data_buffer(self) -> None:
        """Accepted: read into the (large) data buffer, taking along what already arrived."""
        early = self.reader.take_buffered()
        self.reader = PduReader(
            max_pdu_length=self.max_pdu_length,
            max_associate_length=self.max_associate_length,
            buffer_size=max(self._buffer_size, len(early) + 1),
        )
        self.reader.feed(early)

    # -- sending -------------------------------------------------------------------------------

    def send_associate_rq(
        self,
        *,
        called_aet: str,
        calling_aet: str,
        contexts: Sequence[PresentationContextRQ],
        implementation_class_uid: str,
        implementation_version: str | None = None,
        roles: Mapping[str, tuple[bool, bool]] | None = None,
    ) -> bytes:
        """A-ASSOCIATE-RQ (requestor, Sta1 → Sta4 → Sta5: the transport is already open)."""
        if self.role is not Role.REQUESTOR:
            raise LocalProtocolError("only the requestor sends A-ASSOCIATE-RQ")
        self._check(Event.ASSOCIATE_REQUEST)
        data = encode_associate_rq(
            called_aet=called_aet,
            calling_aet=calling_aet,
            contexts=contexts,
            max_pdu_length=self.max_pdu_length,
            implementation_class_uid=implementation_class_uid,
            implementation_version=implementation_version,
            roles=dict(roles or {}),
        )
        self._local(Event.ASSOCIATE_REQUEST)  # AE-1
        self._local(Event.TRANSPORT_CONNECTED)  # AE-2
        self._proposed = {c.context_id: c.abstract_syntax for c in contexts}
        return data

    def send_associate_ac(
        self,
        results: Sequence[ContextResult],
        *,
        implementation_class_uid: str,
        implementation_version: str,
        roles: Mapping[str, tuple[bool, bool]] | None = None,
    ) -> bytes:
        """A-ASSOCIATE-AC (acceptor, Sta3 → Sta6); the accepted contexts take effect."""
        self._check(Event.ASSOCIATE_ACCEPT)
        assert self.request is not None
        data = encode_associate_ac(
            self.request,
            results,
            max_pdu_length=self.max_pdu_length,
            implementation_class_uid=implementation_class_uid,
            implementation_version=implementation_version,
            roles=dict(roles or {}),
        )
        self._local(Event.ASSOCIATE_ACCEPT)
        proposed = {c.context_id: c.abstract_syntax for c in self.request.contexts}
        self.accepted = {
            r.context_id: AcceptedContext(proposed.get(r.context_id, ""), r.transfer_syntax)
            for r in results
            if r.result == 0
        }
        self._open_data_buffer()
        return data

    def send_associate_rj(
        self, result: RejectResult, source: RejectSource, reason: RejectReason
    ) -> bytes:
        """A-ASSOCIATE-RJ (acceptor, Sta3 → Sta13)."""
        self._check(Event.ASSOCIATE_REJECT)
        data = encode_associate_rj(result, source, reason)
        self._local(Event.ASSOCIATE_REJECT)
        return data

    def _chunk(self) -> int:
        peer = self.peer_max_pdu_length
        return peer - PDV_OVERHEAD if peer > PDV_OVERHEAD else UNLIMITED_CHUNK

    def _pdata_context(self, context_id: int) -> None:
        self._check(Event.PDATA_REQUEST)
        if context_id not in self.accepted:
            raise LocalProtocolError(f"presentation context {context_id} was not accepted")

    def send_command(self, context_id: int, command_set: bytes | memoryview) -> bytes:
        """A command set as P-DATA-TF (Sta6, or Sta8 before answering a release)."""
        self._pdata_context(context_id)
        return b"".join(self._pdvs_out(context_id, True, command_set))

    def send_dataset(self, context_id: int, dataset: bytes | memoryview) -> Iterator[bytes]:
        """A data set as P-DATA-TF PDUs within the peer's maximum length, made as they are
        taken (one PDU's worth of copying at a time). Checked now and before each PDU."""
        self._pdata_context(context_id)
        return self._pdvs_out(context_id, False, dataset)

    def _pdvs_out(
        self, context_id: int, command: bool, data: bytes | memoryview
    ) -> Iterator[bytes]:
        chunk = self._chunk()
        view = memoryview(data)
        size = len(view)
        for start in range(0, max(size, 1), chunk):
            self._local(Event.PDATA_REQUEST)
            yield encode_pdata(
                context_id, command, start + chunk >= size, view[start : start + chunk]
            )

    def send_release_rq(self) -> bytes:
        """A-RELEASE-RQ (Sta6 → Sta7)."""
        self._local(Event.RELEASE_REQUEST)
        return encode_release_rq()

    def send_release_rp(self) -> bytes:
        """A-RELEASE-RP (Sta8 or Sta12 → Sta13; in a collision, the requestor Sta9 → Sta11)."""
        self._local(Event.RELEASE_RESPONSE)
        return encode_release_rp()

    def send_abort(
        self,
        source: AbortSource = AbortSource.SERVICE_USER,
        reason: AbortReason = AbortReason.NOT_SPECIFIED,
    ) -> bytes:
        """A-ABORT (AA-1: → Sta13). ``b""`` where the table has no A-ABORT to send (no
        association yet or any more: Sta1, Sta2, Sta4, Sta13), the state then Sta1 except in
        Sta2/Sta13, where closing the transport (Evt17) ends it."""
        if not self.allows(Event.ABORT_REQUEST):
            if self.state is State.AWAITING_TRANSPORT_OPEN:
                self._local(Event.ABORT_REQUEST)
            return b""
        self._local(Event.ABORT_REQUEST)
        return encode_abort(source, reason)

    def timer_expired(self) -> None:
        """ARTIM expired (Evt18): in Sta2 or Sta13, AA-2 (Sta1: close the transport)."""
        self._local(Event.ARTIM_EXPIRED)

    def closed(self) -> None:
        """We closed the transport: every state goes to Sta1."""
        if self.state is not State.IDLE and self.state is not State.AWAITING_TRANSPORT_OPEN:
            self._local_closed()
        else:
            self.state = State.IDLE
        self._eof = True
