"""rst's C-STORE SCP, written on trio: the destination of every C-MOVE.

pynetdicom's receiver (:mod:`rst.backends.dimse.receiver`) runs two polling threads per
association, reads the socket 4 KiB at a time and decodes every PDU into Python objects; it tops
out near 100 MB/s. This one reads with ``recv_into`` into one preallocated buffer, frames PDUs
and PDVs on memoryviews (:mod:`rst.backends.dimse.ul`), parses the C-STORE command by hand and
answers with a hand-encoded response. There is no thread: a connection is a trio task in the
server's nursery, and handing an instance to the request that wants it is a plain ``await``.

The semantics are those of the pynetdicom receiver: an instance is routed by Move Originator AE
Title + Message ID (or by UIDs for PACS that omit them), handed to that request's sink —
waiting for room (backpressure) up to ``stall_timeout``, then spooled — and only then answered;
instances nobody waits for are refused.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

import trio
from pynetdicom.presentation import AllStoragePresentationContexts

from rst import __version__
from rst.backends.dimse.handoff import Handover, PassOn, WorkerRing
from rst.backends.dimse.incoming import IncomingInstance, UidsNotYetArrived
from rst.backends.dimse.mediator import Mediator
from rst.backends.dimse.sink import STATUS_SUCCESS, InstanceSink
from rst.backends.dimse.uids import VERIFICATION
from rst.backends.dimse.ul import (
    Abort,
    AssociateRequest,
    CEchoRequest,
    CommandError,
    ContextResult,
    CStoreRequest,
    OtherCommand,
    PData,
    PduReader,
    Pdv,
    ReleaseRequest,
    UpperLayerError,
    check_association,
    encode_abort,
    encode_associate_ac,
    encode_associate_rj,
    encode_c_echo_rsp,
    encode_c_store_rsp,
    encode_pdata,
    encode_release_rp,
    negotiate,
    parse_command,
)
from rst.config import DimseConfig
from rst.dicom.part10 import IMPLEMENTATION_CLASS_UID

__all__ = ["TrioStoreReceiver"]

log = logging.getLogger(__name__)

IMPLEMENTATION_VERSION = f"RST_{__version__}"[:16]  # in A-ASSOCIATE-AC
STORAGE_CLASSES = frozenset(str(cx.abstract_syntax) for cx in AllStoragePresentationContexts)
ACSE_TIMEOUT = 30.0  # ARTIM: from connection to A-ASSOCIATE-RQ
NETWORK_TIMEOUT = 120.0  # silence on an established association before rst aborts it


class TrioStoreReceiver:
    """The C-STORE SCP that receives C-MOVE sub-operations for every configured PACS."""

    def __init__(
        self,
        config: DimseConfig,
        mediator: Mediator,
        *,
        listener: socket.socket | None = None,
        ring: WorkerRing | None = None,
    ) -> None:
        """*listener*: a listening socket to serve instead of binding ``config.port`` (a worker
        process's share of the port); *ring*: this worker's siblings, when there are several."""
        self.config = config
        self.mediator = mediator
        self.ring = ring
        self._listener = listener
        self.address: tuple[str, int] | None = None
        self.received = 0
        self.refused = 0
        self.associations = 0

    async def run(self, *, task_status: trio.TaskStatus[tuple[str, int]]) -> None:
        """Serve until cancelled; report the bound (host, port) through *task_status*."""
        if self._listener is not None:
            sock = trio.socket.from_stdlib_socket(self._listener)
            listeners = [trio.SocketListener(sock)]
        else:
            listeners = await trio.open_tcp_listeners(self.config.port, host=self.config.host)
        sockname = listeners[0].socket.getsockname()
        self.address = (str(sockname[0]), int(sockname[1]))
        log.info("C-STORE receiver %s listening on %s:%s", self.config.aet, *self.address)
        task_status.started(self.address)
        async with trio.open_nursery() as nursery:
            if self.ring is not None:
                nursery.start_soon(self._take_handovers, self.ring, nursery)
            await trio.serve_listeners(self._serve, listeners, handler_nursery=nursery)

    async def _take_handovers(self, ring: WorkerRing, nursery: trio.Nursery) -> None:
        while True:
            try:
                sock, state, replay = await ring.receive()
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                # a sibling's bug must not take this worker's receiver down
                log.error("dropped an association passed on by another worker: %s", exc)
                continue
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
            nursery.start_soon(self._serve, stream, (state, replay))

    async def _serve(
        self, stream: trio.SocketStream, handover: tuple[Handover, bytes] | None = None
    ) -> None:
        connection = _Connection(self, stream)
        self.associations += 1
        try:
            if handover is None:
                await connection.run()
            else:
                await connection.resume(*handover)
        except _PassAssociation as passing:
            connection.pending = None
            await self._pass_on(connection, passing)
        except UpperLayerError as exc:
            log.warning("aborting association from %s: %s", connection.peer, exc)
            await connection.abort(exc.source, exc.reason)
        except CommandError as exc:
            log.warning("aborting association from %s: %s", connection.peer, exc)
            await connection.abort(2, 0)
        except trio.TooSlowError:
            log.warning("aborting association from %s: timed out", connection.peer)
            await connection.abort(2, 0)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.info("association from %s ended: %s", connection.peer, exc)
        except Exception:  # a bug must not take the receiver down for every other PACS
            log.exception("aborting association from %s after an internal error", connection.peer)
            await connection.abort(2, 0)
        finally:
            connection.abandon("the association from the PACS ended")
            self.associations -= 1
            with trio.CancelScope(shield=True):
                await stream.aclose()  # closes this process's descriptor, not the connection

    async def _pass_on(self, connection: _Connection, passing: _PassAssociation) -> None:
        assert self.ring is not None
        state = Handover(connection.calling_aet, connection.accepted, connection.peer, passing.hops)
        try:
            await self.ring.pass_on(
                passing.target, connection.stream.socket.fileno(), state, passing.replay
            )
        except OSError as exc:
            log.error("cannot pass the association from %s on: %s", connection.peer, exc)
            await connection.abort(2, 0)


class _PassAssociation(Exception):
    """The association goes to another worker, with the bytes to process first."""

    def __init__(self, target: int, hops: int, replay: bytes) -> None:
        super().__init__(f"to worker {target}")
        self.target = target
        self.hops = hops
        self.replay = replay


@dataclass
class _Connection:
    receiver: TrioStoreReceiver
    stream: trio.SocketStream
    accepted: dict[int, str] = field(default_factory=dict)  # context id -> transfer syntax
    command: bytearray = field(default_factory=bytearray)
    pending: IncomingInstance | None = None
    pending_context: int = 0
    peer: str = "?"
    calling_aet: str = ""
    command_set: bytes = b""  # of the pending C-STORE, to replay it when passing it on
    hops: int = 0  # how many workers passed the pending C-STORE on

    def __post_init__(self) -> None:
        try:
            host, port = self.stream.socket.getpeername()[:2]
            self.peer = f"{host}:{port}"
        except OSError:
            pass
        config = self.receiver.config
        self.max_pdu = config.max_pdu or 1 << 20
        self.reader = PduReader(max_pdu_length=self.max_pdu)

    async def abort(self, source: int, reason: int) -> None:
        with trio.move_on_after(1) as scope:
            scope.shield = True
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await self.stream.send_all(encode_abort(source, reason))

    async def _next_pdu(self) -> object:
        while True:
            pdu = self.reader.next_pdu()
            if pdu is not None:
                return pdu
            # a timeout only around a read that waits (most PDUs are already buffered)
            with trio.fail_after(NETWORK_TIMEOUT):
                count = await self.stream.socket.recv_into(self.reader.writable())
            if count == 0:
                raise trio.BrokenResourceError("the peer closed the connection")
            self.reader.advance(count)

    async def resume(self, state: Handover, replay: bytes) -> None:
        """Carry on an association another worker established and passed on."""
        self.accepted, self.calling_aet = state.accepted, state.calling_aet
        self.peer, self.hops = state.peer, state.hops
        self.reader = PduReader(
            max_pdu_length=self.max_pdu, buffer_size=max(4 << 20, len(replay) + (1 << 16))
        )
        self.reader.feed(replay)
        await self._established()

    async def run(self) -> None:
        with trio.fail_after(ACSE_TIMEOUT):
            request = await self._next_pdu()
        if not isinstance(request, AssociateRequest):
            raise UpperLayerError(
                f"expected A-ASSOCIATE-RQ, got {type(request).__name__}", reason=2
            )
        if not await self._associate(request):
            return
        await self._established()

    async def _established(self) -> None:
        while True:
            pdu = await self._next_pdu()
            if isinstance(pdu, PData):
                await self._on_pdata(pdu)
            elif isinstance(pdu, ReleaseRequest):
                if self.pending is not None:
                    log.warning("%s released the association in the middle of a C-STORE", self.peer)
                await self.stream.send_all(encode_release_rp())
                return
            elif isinstance(pdu, Abort):
                log.info("%s aborted the association", self.peer)
                return
            else:
                raise UpperLayerError(f"unexpected {type(pdu).__name__}", reason=2)

    async def _associate(self, request: AssociateRequest) -> bool:
        config = self.receiver.config
        self.calling_aet = request.calling_aet
        rejection = check_association(request, our_aet=None)
        if rejection is not None:
            await self.stream.send_all(encode_associate_rj(*rejection))
            return False
        results: list[ContextResult] = negotiate(
            request,
            abstract_syntaxes=STORAGE_CLASSES | {VERIFICATION},
            transfer_syntaxes=list(config.transfer_syntaxes),
        )
        self.accepted = {r.context_id: r.transfer_syntax for r in results if r.result == 0}
        await self.stream.send_all(
            encode_associate_ac(
                request,
                results,
                max_pdu_length=self.max_pdu,
                implementation_class_uid=IMPLEMENTATION_CLASS_UID,
                implementation_version=IMPLEMENTATION_VERSION,
            )
        )
        return True

    async def _on_pdata(self, pdata: PData) -> None:
        pdvs = pdata.pdvs
        for index, pdv in enumerate(pdvs):
            try:
                await self._on_pdv(pdv)
            except PassOn as passing:
                replay = self._replay(pdv, pdvs[index + 1 :])
                raise _PassAssociation(passing.target, passing.hops, replay) from None

    def _replay(self, current: Pdv, following: Sequence[Pdv]) -> bytes:
        """What the next worker must process before reading the socket: the pending C-STORE
        from its command on, the rest of the current PDU, and what was read after it."""
        assert self.pending is not None
        context_id = self.pending_context
        parts = [encode_pdata(context_id, True, True, self.command_set)]
        data = self.pending.received_dataset()
        complete = not current.is_command and current.is_last
        step = self.max_pdu - 6
        for start in range(0, len(data), step):
            last = complete and start + step >= len(data)
            parts.append(encode_pdata(context_id, False, last, data[start : start + step]))
        if complete and not data:
            parts.append(encode_pdata(context_id, False, True, b""))
        parts += [encode_pdata(p.context_id, p.is_command, p.is_last, p.data) for p in following]
        parts.append(self.reader.take_buffered())
        return b"".join(parts)

    async def _on_pdv(self, pdv: Pdv) -> None:
        syntax = self.accepted.get(pdv.context_id)
        if syntax is None:
            raise UpperLayerError(
                f"P-DATA on presentation context {pdv.context_id}, which was not accepted",
                reason=6,
            )
        if pdv.is_command:
            if self.pending is not None:
                raise UpperLayerError("a command arrived before the dataset ended", reason=2)
            self.command += pdv.data
            if pdv.is_last:
                command, self.command = bytes(self.command), bytearray()
                self.command_set = command
                await self._on_command(parse_command(command), pdv.context_id, syntax)
        else:
            pending = self.pending
            if pending is None or self.pending_context != pdv.context_id:
                raise UpperLayerError("a dataset fragment without its C-STORE", reason=2)
            await pending.add(pdv.data, last=pdv.is_last)
            if pdv.is_last:
                status = await self._deliver(pending)
                self.pending, self.hops = None, 0
                response = encode_c_store_rsp(pending.request, status)
                await self.stream.send_all(encode_pdata(pdv.context_id, True, True, response))

    async def _on_command(
        self, command: CStoreRequest | CEchoRequest | OtherCommand, context_id: int, syntax: str
    ) -> None:
        if isinstance(command, CStoreRequest):
            self.pending = IncomingInstance(
                command, syntax, source_aet=self.calling_aet or None, locate=self._route
            )
            self.pending_context = context_id
            ring, message_id = self.receiver.ring, command.move_originator_message_id
            if ring is not None and message_id is not None and self.hops == 0:
                owner = ring.owner(message_id)
                if owner != ring.index:  # a C-MOVE of another worker's
                    raise PassOn(owner, 1)
        elif isinstance(command, CEchoRequest):
            response = encode_c_echo_rsp(command, STATUS_SUCCESS)
            await self.stream.send_all(encode_pdata(context_id, True, True, response))
        else:
            raise UpperLayerError(
                "the receiver only serves C-STORE and C-ECHO "
                f"(command 0x{command.command_field:04X})",
                reason=2,
            )

    def abandon(self, reason: str) -> None:
        """The association ended: an instance still arriving will not be completed."""
        if self.pending is not None:
            self.pending.abandon(reason)
            self.pending = None

    async def _deliver(self, pending: IncomingInstance) -> int:
        """Hand the instance over (unless already streaming); the C-STORE status to answer."""
        receiver = self.receiver
        status = await pending.finish()
        if pending.unsolicited:
            receiver.refused += 1
            request = pending.request
            log.warning(
                "refused unsolicited C-STORE of %s from %s (originator %r, message id %r)",
                request.sop_instance_uid,
                self.calling_aet,
                request.move_originator_aet,
                request.move_originator_message_id,
            )
        elif status == STATUS_SUCCESS:
            receiver.received += 1
        return status

    def _route(self, pending: IncomingInstance) -> InstanceSink | None:
        mediator = self.receiver.mediator
        request = pending.request
        if request.move_originator_aet and request.move_originator_message_id is not None:
            found = mediator.by_originator(
                request.move_originator_aet, request.move_originator_message_id
            )
            if found is not None:
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
                return found.sink
        ring = self.receiver.ring
        if ring is not None and (target := ring.next_after(self.hops)) is not None:
            raise PassOn(target, self.hops + 1)  # perhaps another worker's, by its UIDs
        return None
