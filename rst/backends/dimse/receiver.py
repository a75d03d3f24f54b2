"""rst's C-STORE SCP, written on trio: the destination of every C-MOVE.

It reads with ``recv_into`` into one preallocated buffer, frames PDUs and PDVs on memoryviews
(:mod:`rst.backends.dimse.ul`), parses the C-STORE command by hand and answers with a
hand-encoded response (pynetdicom's Storage SCP, which earlier versions of rst ran, used two
polling threads per association, read 4 KiB at a time and topped out near 100 MB/s). There is no
thread: a connection is a trio task in the server's nursery, and handing an instance to the
request that wants it is a plain ``await``.

An instance is routed by Move Originator AE Title + Message ID (or by UIDs for PACS that omit
them), handed to that request's sink — waiting for room (backpressure) up to ``stall_timeout``,
then spooled — and only then answered; instances nobody waits for are refused.

Whatever one peer does ends its own association at most, with bounded resources: at most
``max_connections`` connections are served (more are turned away, :mod:`.admission`); until
its association is accepted a connection reads into a small buffer (:data:`HANDSHAKE_BUFFER`,
an A-ASSOCIATE-RQ of at most :data:`MAX_ASSOCIATE_RQ`) and must have sent its request within
``handshake_timeout``; a command set is at most :data:`MAX_COMMAND_SET` bytes; what an
instance nobody has claimed yet may hold is bounded by :mod:`.incoming`; and no exception of a
connection's task leaves it, whatever its cause (only cancellation does).
"""

from __future__ import annotations

import functools
import logging
import socket
from dataclasses import dataclass, field

import trio
from prometheus_client import Counter

from rst.backends.dimse import wire
from rst.backends.dimse.admission import MAX_TURNING_AWAY, accept_loop, peer_of, turn_away
from rst.backends.dimse.callers import REJECT_UNKNOWN_CALLER, Callers
from rst.backends.dimse.handoff import Handover, PassOn, WorkerRing
from rst.backends.dimse.incoming import IncomingInstance, UidsNotYetArrived
from rst.backends.dimse.journal import INCOMING, AssociationJournal
from rst.backends.dimse.mediator import Mediator
from rst.backends.dimse.sink import InstanceSink
from rst.backends.dimse.tls import accept, server_context
from rst.backends.dimse.ul import (
    AssociateRequest,
    CEchoRequest,
    CommandError,
    ContextResult,
    CStoreRequest,
    OtherCommand,
    PduReader,
    UpperLayerError,
    check_association,
    encode_c_echo_rsp,
    encode_c_store_rsp,
    encode_pdata,
    negotiate,
)
from rst.backends.dimse.ul.association import (
    Aborted,
    Association,
    AssociationError,
    AssociationEvent,
    AssociationRequested,
    CommandReceived,
    ConnectionLost,
    DataFragment,
    ProtocolViolation,
    ReleaseRequested,
    Role,
)
from rst.backends.dimse.ul.pdu import AbortReason, AbortSource, Rejection, describe_rejection
from rst.backends.dimse.ul.states import State
from rst.config import DimseConfig
from rst.dicom.statuses import SUCCESS
from rst.dicom.uids import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION,
    STORAGE_CLASSES,
    VERIFICATION,
)
from rst.metrics import Metrics

__all__ = ["StoreReceiver"]

log = logging.getLogger(__name__)

ABSTRACT_SYNTAXES = frozenset((*STORAGE_CLASSES, VERIFICATION))  # what the receiver accepts
NETWORK_TIMEOUT = 120.0  # silence on an established association before rst aborts it
HANDSHAKE_BUFFER = 16 * 1024
"""Read buffer of a connection until its association is accepted: a typical A-ASSOCIATE-RQ
fits (pynetdicom's with 128 storage contexts: about 17 KB), a larger one grows it to its size."""
MAX_ASSOCIATE_RQ = 64 * 1024
"""Largest A-ASSOCIATE-RQ taken (and largest PDU of any type before the association is
accepted): what a connection that has not been accepted may make rst allocate."""
BYTES_REPORTED_EVERY = 1 << 20
"""``rst_receiver_bytes`` grows at the end of each instance, and every this many bytes within
one (a large instance shows its progress): not at each fragment, where the counter's lock cost
more than the rest of the fragment's handling."""


class StoreReceiver:
    """The C-STORE SCP that receives C-MOVE sub-operations for every configured PACS."""

    def __init__(
        self,
        config: DimseConfig,
        mediator: Mediator,
        *,
        listener: socket.socket | None = None,
        ring: WorkerRing | None = None,
        callers: Callers | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """*listener*: a listening socket to serve instead of binding ``config.port`` (a worker
        process's share of the port); *ring*: this worker's siblings, when there are several;
        *callers*: who may associate (:mod:`.callers`; ``None``: anyone, for tests);
        *metrics*: the gateway's (``None``: a registry of the receiver's own)."""
        self.config = config
        self.callers = callers
        self.metrics = metrics if metrics is not None else Metrics()
        """What the receiver counts (``rst_receiver_*``): associations, refusals, C-STOREs."""
        self.mediator = mediator
        self.ring = ring
        self._listener = listener
        self.address: tuple[str, int] | None = None
        self.associations = 0
        """Connections being served (accepted ones and those still negotiating)."""
        self.turned_away = 0
        """Connections refused since the start because ``max_connections`` were being served."""
        self._refusals_logged = _RefusalLog()
        self._turning_away = 0
        self._full_since: int | None = None  # turned_away when the cap was last reached
        self._connections: set[_Connection] = set()
        self.tls = server_context(config)
        """DICOM TLS (:mod:`.tls`): set, every connection must complete a TLS handshake."""

    def caller_label(self, calling_aet: str) -> str:
        """*calling_aet* as a metrics label: a configured caller's title, else ``unknown``
        (labels stay bounded whoever calls)."""
        known = self.callers is not None and calling_aet in self.callers.allowed
        return calling_aet if known else "unknown"

    @property
    def connections(self) -> tuple[_Connection, ...]:
        """The connections being served (for monitoring and tests)."""
        return tuple(self._connections)

    async def run(
        self, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled; report the bound (host, port) through *task_status*."""
        if self._listener is not None:
            sock = trio.socket.from_stdlib_socket(self._listener)
            listeners = [trio.SocketListener(sock)]
        else:
            listeners = await trio.open_tcp_listeners(self.config.port, host=self.config.host)
        sockname = listeners[0].socket.getsockname()
        self.address = (str(sockname[0]), int(sockname[1]))
        log.info("C-STORE receiver %s listening on %s:%s", self.config.aet, *self.address)
        async with trio.open_nursery() as nursery:
            if self.ring is not None:
                nursery.start_soon(self._take_handovers, self.ring, nursery)
            for listener in listeners:
                nursery.start_soon(
                    accept_loop, listener, functools.partial(self._admit, nursery=nursery)
                )
            task_status.started(self.address)

    def _admit(self, stream: trio.SocketStream, *, nursery: trio.Nursery) -> None:
        """Serve *stream*, or turn it away if ``max_connections`` are being served."""
        if self.associations < self.config.max_connections:
            if self._full_since is not None:
                log.info(
                    "the C-STORE receiver is below its limit again; %d connections were "
                    "turned away meanwhile",
                    self.turned_away - self._full_since,
                )
                self._full_since = None
            nursery.start_soon(self._serve, self._open(stream))
            return
        self.turned_away += 1
        self.metrics.receiver_refused.labels("limit").inc()
        if self._full_since is None:
            self._full_since = self.turned_away - 1
            log.warning(
                "the C-STORE receiver serves its limit of %d connections "
                "(dimse.max_connections): turning new ones away, first %s",
                self.config.max_connections,
                peer_of(stream),
            )
        else:
            log.debug("turning away the connection from %s", peer_of(stream))
        if self._turning_away >= MAX_TURNING_AWAY:
            stream.socket.close()  # a flood: not even the A-ASSOCIATE-RJ
            return
        self._turning_away += 1
        nursery.start_soon(self._turn_away, stream)

    async def _turn_away(self, stream: trio.SocketStream) -> None:
        try:
            await turn_away(
                stream, linger=self.config.handshake_timeout, max_request=MAX_ASSOCIATE_RQ
            )
        finally:
            self._turning_away -= 1

    def check_caller(
        self, calling_aet: str, stream: trio.SocketStream, peer: str
    ) -> Rejection | None:
        """The A-ASSOCIATE-RJ for a caller :attr:`callers` does not let in, or None."""
        if self.callers is None:
            return None
        why = self.callers.refusal(calling_aet, _host_of(stream))
        if why is None:
            return None
        self.metrics.receiver_refused.labels("unknown_caller").inc()
        self._refusals_logged.refused(calling_aet, peer, why)
        return REJECT_UNKNOWN_CALLER

    def _open(self, stream: trio.SocketStream) -> _Connection:
        connection = _Connection(self, stream)
        self.associations += 1
        self._connections.add(connection)
        return connection

    async def _take_handovers(self, ring: WorkerRing, nursery: trio.Nursery) -> None:
        failures = 0
        while True:
            try:
                sock, state, replay = await ring.receive()
            except Exception as exc:  # a sibling's bug must not take this worker's receiver down
                log.error("dropped an association passed on by another worker: %r", exc)
                failures += 1  # an inbox that keeps failing must not spin
                await trio.sleep(min(1.0, 0.01 * 2**failures))
                continue
            failures = 0
            try:
                stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
            except Exception as exc:  # not a connected stream socket
                sock.close()
                log.error("dropped an association passed on by another worker: %r", exc)
                continue
            # Not counted against max_connections: a sibling accepted it, the PACS is
            # already talking on it.
            nursery.start_soon(self._serve, self._open(stream), (state, replay))

    async def _serve(
        self, connection: _Connection, handover: tuple[Handover, bytes] | None = None
    ) -> None:
        """One connection, from its first byte to its close. Raises nothing but
        :class:`trio.Cancelled`: whatever one peer does ends its own association only."""
        try:
            await self._converse(connection, handover)
        except Exception:  # a bug must not take the receiver down for every other PACS
            log.exception("the association from %s ended on an internal error", connection.peer)
        finally:
            try:
                connection.abandon("the association from the PACS ended")
            except Exception:
                log.exception("cannot abandon the instance from %s", connection.peer)
            self.associations -= 1
            self._connections.discard(connection)
            journal = connection.journal
            journal.ended("aborted", "the receiver stopped", by="rst")  # unless it ended before
            journal.close()
            with trio.CancelScope(shield=True):
                await connection.stream.aclose()  # this process's descriptor, not the connection

    async def _converse(
        self, connection: _Connection, handover: tuple[Handover, bytes] | None
    ) -> None:
        try:
            if handover is None:
                await connection.run()
            else:
                await connection.resume(*handover)
        except _PassAssociation as passing:
            connection.pending = None
            connection.journal.ended("passed", f"to worker {passing.target}")
            await self._pass_on(connection, passing)
        except _HandshakeTimeout as exc:
            # ARTIM expired before an A-ASSOCIATE-RQ: close, no A-ABORT (PS3.8 §9.1.4 b, AA-2)
            log.info("closing the connection from %s: %s", connection.peer, exc)
            self.metrics.receiver_refused.labels("handshake_timeout").inc()
            connection.journal.ended("failed", str(exc))
        except ProtocolViolation as exc:  # its A-ABORT has been sent (wire.receive_event)
            log.warning("aborted association from %s: %s", connection.peer, exc)
            connection.journal.ended("aborted", str(exc), by="rst")
        except ConnectionLost as exc:
            log.info("association from %s ended: %s", connection.peer, exc)
            connection.journal.ended("aborted", str(exc), by="peer")
        except AssociationError as exc:  # a send the state table refused: a bug of ours
            log.error("aborting association from %s: %s", connection.peer, exc)
            await self._abort(connection, str(exc))
        except UpperLayerError as exc:
            log.warning("aborting association from %s: %s", connection.peer, exc)
            await self._abort(connection, str(exc), exc.source, exc.reason)
        except CommandError as exc:
            log.warning("aborting association from %s: %s", connection.peer, exc)
            await self._abort(connection, str(exc), exc.source, exc.reason)
        except trio.TooSlowError:
            log.warning("aborting association from %s: timed out", connection.peer)
            await self._abort(connection, "timed out")
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.info("association from %s ended: %s", connection.peer, exc)
            connection.journal.ended("aborted", str(exc) or type(exc).__name__, by="peer")
        except Exception:  # a bug must not take the receiver down for every other PACS
            log.exception("aborting association from %s after an internal error", connection.peer)
            await self._abort(connection, "internal error")

    @staticmethod
    async def _abort(
        connection: _Connection,
        why: str,
        source: AbortSource = AbortSource.SERVICE_PROVIDER,
        reason: AbortReason = AbortReason.NOT_SPECIFIED,
    ) -> None:
        connection.journal.ended("aborted", why, by="rst")
        await connection.abort(source, reason)

    async def _pass_on(self, connection: _Connection, passing: _PassAssociation) -> None:
        assert self.ring is not None
        state = Handover(connection.calling_aet, connection.accepted, connection.peer, passing.hops)
        try:
            await self.ring.pass_on(
                passing.target, connection.tcp.socket.fileno(), state, passing.replay
            )
        except Exception as exc:
            log.error("cannot pass the association from %s on: %r", connection.peer, exc)
            connection.journal.outcome = None  # not passed on after all
            await self._abort(connection, f"cannot pass it on: {exc!r}")


def _host_of(stream: trio.SocketStream) -> str:
    """The peer's IP address (``""`` once it has gone)."""
    try:
        return str(stream.socket.getpeername()[0])
    except (OSError, ValueError, IndexError):
        return ""


class _RefusalLog:
    """Logs refused callers at WARNING, at most :attr:`BURST` lines per :attr:`WINDOW`
    seconds: a peer that keeps calling must not flood the log; the lines it would have had are
    counted in the next one."""

    BURST = 10
    WINDOW = 60.0

    def __init__(self) -> None:
        self._window_start = -self.WINDOW
        self._logged = 0
        self._suppressed = 0

    def refused(self, calling_aet: str, peer: str, why: str) -> None:
        now = trio.current_time()
        if now - self._window_start >= self.WINDOW:
            self._window_start, self._logged = now, 0
        if self._logged >= self.BURST:
            self._suppressed += 1
            log.debug("rejected the association from %r at %s: %s", calling_aet, peer, why)
            return
        self._logged += 1
        also = f" ({self._suppressed} more rejections not logged)" if self._suppressed else ""
        self._suppressed = 0
        log.warning("rejected the association from AE %r at %s: %s%s", calling_aet, peer, why, also)


class _HandshakeTimeout(Exception):
    """No complete A-ASSOCIATE-RQ (or no answer sent) within ``handshake_timeout``."""


class _PassAssociation(Exception):
    """The association goes to another worker, with the bytes to process first."""

    def __init__(self, target: int, hops: int, replay: bytes) -> None:
        super().__init__(f"to worker {target}")
        self.target = target
        self.hops = hops
        self.replay = replay


@dataclass(eq=False)  # one per connection, kept in a set
class _Connection:
    """One connection's I/O shell: reads events from its :class:`Association` and acts on
    them. States, PDV reassembly and every protocol violation are the association's."""

    receiver: StoreReceiver
    stream: trio.abc.Stream  # TCP, or TLS over it once run() has done the handshake
    tcp: trio.SocketStream = field(init=False)
    pending: IncomingInstance | None = None
    pending_context: int = 0
    peer: str = "?"
    calling_aet: str = ""
    command_set: bytes = b""  # of the pending C-STORE, to replay it when passing it on
    hops: int = 0  # how many workers passed the pending C-STORE on
    _counted: tuple[str, Counter] | None = None  # (calling AET, its rst_receiver_bytes)
    _unreported: int = 0  # bytes read but not yet added to rst_receiver_bytes

    def __post_init__(self) -> None:
        assert isinstance(self.stream, trio.SocketStream)  # TLS comes later, in run()
        self.tcp = self.stream
        self.peer = peer_of(self.tcp)
        self.journal = AssociationJournal(INCOMING, self.peer)
        """What the association did, for its log line (:mod:`.journal`)."""
        self.max_pdu = self.receiver.config.max_pdu or 1 << 20
        # Until the association is accepted no PDU may be larger than an A-ASSOCIATE-RQ: a
        # peer that has not even asked for an association gets a few KB, not the data buffer.
        self.association = Association(
            Role.ACCEPTOR,
            max_pdu_length=self.max_pdu,
            max_associate_length=MAX_ASSOCIATE_RQ,
            handshake_buffer=HANDSHAKE_BUFFER,
        )

    @property
    def accepted(self) -> dict[int, str]:
        """Accepted presentation contexts: id -> transfer syntax."""
        return {cid: ctx.transfer_syntax for cid, ctx in self.association.accepted.items()}

    @property
    def reader(self) -> PduReader:
        return self.association.reader

    async def _send(self, data: bytes) -> None:
        # a peer that stops reading must not hold the association (and its buffer) for ever
        # (a plain scope: fail_after's context manager costs more than the send, once per
        # instance)
        scope = trio.CancelScope(deadline=trio.current_time() + NETWORK_TIMEOUT)
        with scope:
            await self.stream.send_all(data)
        if scope.cancelled_caught:
            raise trio.TooSlowError

    async def abort(self, source: AbortSource, reason: AbortReason) -> None:
        await wire.abort(self.stream, self.association, source, reason)

    async def _next_event(self) -> AssociationEvent:
        return await wire.receive_event(self.stream, self.association, read_timeout=NETWORK_TIMEOUT)

    async def resume(self, state: Handover, replay: bytes) -> None:
        """Carry on an association another worker established and passed on."""
        self.calling_aet, self.peer, self.hops = state.calling_aet, state.peer, state.hops
        self.journal.peer, self.journal.peer_aet = state.peer, state.calling_aet
        self.association = Association.resumed(
            state.accepted, max_pdu_length=self.max_pdu, replay=replay
        )
        await self._established()

    async def run(self) -> None:
        timeout = self.receiver.config.handshake_timeout
        if self.receiver.tls is not None:
            tls = await accept(self.tcp, self.receiver.tls, timeout, self.peer)
            if tls is None:
                self.receiver.metrics.receiver_refused.labels("tls").inc()
                self.journal.ended("rejected", "TLS handshake failed or stalled")
                return
            self.stream = tls
        accepted = False
        with trio.move_on_after(timeout) as handshake:  # ARTIM, PS3.8 §9.1.4 b
            event = await self._next_event()
            if not isinstance(event, AssociationRequested):
                # Sta2: the peer closed or aborted (AA-2, AA-5)
                self.journal.ended("aborted", "before an A-ASSOCIATE-RQ", by="peer")
                return
            accepted = await self._associate(event.request)
        if handshake.cancelled_caught:
            if self.association.state is State.AWAITING_ASSOCIATE_RQ:
                self.association.timer_expired()  # AA-2: close, no A-ABORT
            raise _HandshakeTimeout(f"no A-ASSOCIATE-RQ within {timeout:g} s")
        if accepted:
            await self._established()

    async def _established(self) -> None:
        while True:
            event = await self._next_event()
            if isinstance(event, CommandReceived):
                self.command_set = event.command_set
                try:
                    await self._on_command(event.command, event.context_id)
                except PassOn as passing:
                    raise _PassAssociation(
                        passing.target, passing.hops, self._replay(complete=False)
                    ) from None
            elif isinstance(event, DataFragment):
                try:
                    await self._on_fragment(event)
                except PassOn as passing:
                    replay = self._replay(complete=event.last)
                    raise _PassAssociation(passing.target, passing.hops, replay) from None
            elif isinstance(event, ReleaseRequested):
                if self.pending is not None:
                    log.warning("%s released the association in the middle of a C-STORE", self.peer)
                await self._send(self.association.send_release_rp())
                self.journal.ended("released")
                return
            elif isinstance(event, Aborted):
                log.info("%s aborted the association: %s", self.peer, event.description)
                self.journal.ended("aborted", event.description, by="peer")
                return
            else:  # the peer closed the connection (AA-4)
                raise ConnectionLost("the peer closed the connection")

    async def _associate(self, request: AssociateRequest) -> bool:
        config = self.receiver.config
        self.calling_aet = self.journal.peer_aet = request.calling_aet
        rejection = check_association(request, our_aet=None) or self.receiver.check_caller(
            request.calling_aet, self.tcp, self.peer
        )
        if rejection is not None:
            self.journal.ended("rejected", describe_rejection(*rejection))
            await self._send(self.association.send_associate_rj(*rejection))
            return False
        self.receiver.metrics.receiver_associations.labels(
            self.receiver.caller_label(request.calling_aet)
        ).inc()
        results: list[ContextResult] = negotiate(
            request,
            abstract_syntaxes=ABSTRACT_SYNTAXES,
            transfer_syntaxes=list(config.transfer_syntaxes),
        )
        await self._send(
            self.association.send_associate_ac(
                results,
                implementation_class_uid=IMPLEMENTATION_CLASS_UID,
                implementation_version=IMPLEMENTATION_VERSION,
            )
        )
        return True

    def _replay(self, *, complete: bool) -> bytes:
        """What the next worker must process before reading the socket: the pending C-STORE
        from its command on (*complete*: its data set has been received whole), the rest of
        the current PDU, and what was read after it."""
        assert self.pending is not None
        context_id = self.pending_context
        parts = [encode_pdata(context_id, True, True, self.command_set)]
        data = self.pending.received_dataset()
        step = self.max_pdu - 6
        for start in range(0, len(data), step):
            last = complete and start + step >= len(data)
            parts.append(encode_pdata(context_id, False, last, data[start : start + step]))
        if complete and not data:
            parts.append(encode_pdata(context_id, False, True, b""))
        parts.append(self.association.take_unprocessed())
        return b"".join(parts)

    async def _on_fragment(self, fragment: DataFragment) -> None:
        pending = self.pending
        assert pending is not None  # the association checks that a C-STORE came first
        size = len(fragment.data)
        self.journal.bytes += size
        self._unreported += size
        if fragment.last or self._unreported >= BYTES_REPORTED_EVERY:
            self._report_bytes()
        if fragment.last or not pending.hold(fragment.data):
            await pending.add(fragment.data, last=fragment.last)
        if fragment.last:
            status = await self._deliver(pending)
            self.association.keep_fragments(None)  # joined (or dropped): nothing borrowed
            self.pending, self.hops = None, 0
            response = encode_c_store_rsp(pending.request, status)
            await self._send(self.association.send_command(fragment.context_id, response))

    def _report_bytes(self) -> None:
        """Add the bytes read since the last report to ``rst_receiver_bytes`` (for this
        caller, its labelled child looked up once, not once per report)."""
        if not self._unreported:
            return
        counted = self._counted
        if counted is None or counted[0] != self.calling_aet:
            label = self.receiver.caller_label(self.calling_aet)
            counted = (self.calling_aet, self.receiver.metrics.receiver_bytes.labels(label))
            self._counted = counted
        counted[1].inc(self._unreported)
        self._unreported = 0

    async def _on_command(
        self, command: CStoreRequest | CEchoRequest | OtherCommand, context_id: int
    ) -> None:
        if isinstance(command, CStoreRequest):
            syntax = self.association.accepted[context_id].transfer_syntax
            self.pending = IncomingInstance(
                command,
                syntax,
                source_aet=self.calling_aet or None,
                locate=self._route,
                borrow=True,
            )
            # its fragments stay in the read buffer until it is joined (one copy, not two)
            self.association.keep_fragments(self.pending.copy_out)
            self.pending_context = context_id
            ring, message_id = self.receiver.ring, command.move_originator_message_id
            if ring is not None and message_id is not None and self.hops == 0:
                owner = ring.owner(message_id)
                if owner != ring.index:  # a C-MOVE of another worker's
                    raise PassOn(owner, 1)
        elif isinstance(command, CEchoRequest):
            self.journal.echoes += 1
            response = encode_c_echo_rsp(command, SUCCESS)
            await self._send(self.association.send_command(context_id, response))
        else:
            raise UpperLayerError(
                "the receiver only serves C-STORE and C-ECHO "
                f"(command 0x{command.command_field:04X})",
                reason=AbortReason.UNEXPECTED_PDU,
            )

    def abandon(self, reason: str) -> None:
        """The association ended: an instance still arriving will not be completed."""
        self._report_bytes()
        if self.pending is not None:
            self.pending.abandon(reason)
            self.pending = None

    async def _deliver(self, pending: IncomingInstance) -> int:
        """Hand the instance over (unless already streaming); the C-STORE status to answer."""
        receiver = self.receiver
        status = await pending.finish()
        outcome = (
            "unsolicited" if pending.unsolicited else "accepted" if status == SUCCESS else "failed"
        )
        receiver.metrics.receiver_stores.labels(
            receiver.caller_label(self.calling_aet), outcome
        ).inc()
        self.journal.stores += 1
        if outcome != "accepted":
            self.journal.stores_refused += 1
        if pending.unsolicited:
            request = pending.request
            log.warning(
                "refused unsolicited C-STORE of %s from %s (originator %r, message id %r)",
                request.sop_instance_uid,
                self.calling_aet,
                request.move_originator_aet,
                request.move_originator_message_id,
            )
        return status

    def _route(self, pending: IncomingInstance) -> InstanceSink | None:
        mediator = self.receiver.mediator
        request = pending.request
        if request.move_originator_aet and request.move_originator_message_id is not None:
            found = mediator.by_originator(
                request.move_originator_aet, request.move_originator_message_id
            )
            if found is not None:
                self.journal.served(found.request_id, found.aet)
                return found.sink
            if self.receiver.ring is not None:
                return None  # ours by its message id, but the request has gone
        if mediator.needs_uids():
            try:
                study, series = pending.study_series()
            except UidsNotYetArrived:
                raise
            except Exception:
                log.warning("cannot read the UIDs of %s", request.sop_instance_uid, exc_info=True)
                return None
            found = mediator.by_uids(study, series, request.sop_instance_uid)
            if found is not None:
                self.journal.served(found.request_id, found.aet)
                return found.sink
        ring = self.receiver.ring
        if ring is not None and (target := ring.next_after(self.hops)) is not None:
            raise PassOn(target, self.hops + 1)  # perhaps another worker's, by its UIDs
        return None
