"""A hostile PACS: a minimal Query/Retrieve SCP that misbehaves at one scripted point.

It speaks the DICOM upper layer on raw trio sockets through rst's own sans-IO codec
(:mod:`rst.backends.dimse.ul`), and is a correct, if small, archive of two CT instances — it
accepts every proposed context, answers C-ECHO, C-FIND (two pending matches, then success), C-GET
(C-STORE sub-operations on the same association), C-MOVE (C-STORE sub-operations on an
association it opens to the move destination, which is rst's receiver) and C-STORE (STOW) —
except at the one point its :class:`Script` names: a :class:`Phase` of the exchange where it
does an :class:`Action` instead of the right thing (garbage, a PDU out of turn, an impossible
length, an undecodable command set, A-ABORT or silence). The fault happens once, the first time
the phase is reached; afterwards the PACS behaves again, so the gateway's recovery can be
checked against the same peer.

After a fault that does not close the connection itself, the PACS reads (and drops) whatever
comes until rst closes it: a gateway that does not notice the fault, or notices it and keeps the
association open, is seen as a connection that never ends (:meth:`HostilePacs.wait_idle`).

:mod:`tests.support.hostile_scu` is the same idea turned round; the pieces they share are
:mod:`.hostile_faults` (the scripts and the faults), :mod:`.hostile_wire` (the wire) and
:mod:`.hostile_archive` (the archive).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio
from pydicom import Dataset
from pydicom.uid import ImplicitVRLittleEndian

from rst.backends.dimse.ul import (
    AssociateAccept,
    AssociateRequest,
    CEchoRequest,
    CommandError,
    CStoreRequest,
    OtherCommand,
    PresentationContextRQ,
    ReleaseRequest,
    ReleaseResponse,
    UpperLayerError,
    encode_associate_ac,
    encode_associate_rq,
    encode_c_echo_rsp,
    encode_c_store_rq,
    encode_c_store_rsp,
    encode_release_rp,
    encode_release_rq,
    negotiate,
)
from rst.dicom.statuses import (
    CANCEL,
    MOVE_DESTINATION_UNKNOWN,
    PENDING,
    SUBOPERATIONS_FAILED,
    SUCCESS,
)

from .hostile_archive import SampleInstance, sample_instances
from .hostile_faults import Action, Done, Phase, Script, misbehave
from .hostile_wire import (
    C_CANCEL_RQ,
    C_FIND_RQ,
    C_FIND_RSP,
    C_GET_RQ,
    C_GET_RSP,
    C_MOVE_RQ,
    C_MOVE_RSP,
    C_STORE_RSP,
    IMPLEMENTATION_UID,
    IMPLEMENTATION_VERSION,
    MAX_PDU,
    SYNTAXES,
    T_ASSOCIATE_AC,
    Link,
    Message,
    decode_dataset,
    encode_dataset,
    response_command,
    retrieve_response,
)

__all__ = ["HostilePacs"]


async def _first_of(*waits: Callable[[], Awaitable[object]]) -> None:
    """Run *waits* concurrently until the first returns."""
    async with trio.open_nursery() as nursery:
        for wait in waits:

            async def run(wait: Callable[[], Awaitable[object]] = wait) -> None:
                await wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(run)


@dataclass
class HostilePacs:
    """The fake PACS. Start it with ``port = await nursery.start(pacs.serve)``."""

    aet: str
    script: Script | None = None
    instances: tuple[SampleInstance, ...] = field(default_factory=sample_instances)
    destinations: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Move destinations it knows: AE title -> (host, port)."""
    empty_pendings: int = 0
    """Pending C-FIND responses without an identifier sent before the matches (a PACS that
    reports progress so; PS3.4 C.4.1.1.4 wants an identifier in each)."""
    collide_on_release: bool = False
    """Answer rst's A-RELEASE-RQ with one of its own (a release collision, PS3.8 Sta10), then
    wait for rst's A-RELEASE-RP before sending its own (AR-10, AR-4)."""

    def __post_init__(self) -> None:
        self.struck: Phase | None = None
        """Set when the scripted fault has been committed."""
        self.events: list[str] = []
        self.open_connections = 0
        self._idle = trio.Event()
        self._idle.set()
        self._stores = 0

    # -- bookkeeping ---------------------------------------------------------------------------

    def _strike(self, phase: Phase, suboperation: int = 0) -> Script | None:
        script = self.script
        if script is None or self.struck is not None or script.phase is not phase:
            return None
        if phase in (Phase.STORE_COMMAND, Phase.STORE_DATA) and suboperation != script.suboperation:
            return None
        self.struck = phase
        self.events.append(f"fault: {script.id}")
        return script

    async def wait_idle(self) -> None:
        """Until no connection to or from this PACS is open (rst closed every association)."""
        while self.open_connections:
            await self._idle.wait()

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = int(listeners[0].socket.getsockname()[1])
        task_status.started(port)
        await trio.serve_listeners(self._connection, listeners)

    def _opened(self) -> None:
        if not self.open_connections:
            self._idle = trio.Event()
        self.open_connections += 1

    def _closed(self) -> None:
        self.open_connections -= 1
        if not self.open_connections:
            self._idle.set()

    async def _connection(self, stream: trio.SocketStream) -> None:
        self._opened()
        try:
            async with stream:
                await self._association(Link(stream))
        except Done:
            pass
        except (
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            OSError,
            UpperLayerError,
            CommandError,
        ) as exc:
            self.events.append(f"connection ended: {exc!r}")
        finally:
            self._closed()

    async def _fault(self, link: Link, script: Script, **kw: int) -> None:
        await misbehave(link, script, requestor=False, **kw)
        raise Done

    async def _respond(
        self,
        link: Link,
        phase: Phase,
        context_id: int,
        command: bytes,
        dataset: bytes | None = None,
    ) -> None:
        if (script := self._strike(phase)) is not None:
            await self._fault(link, script, context_id=context_id)
        await link.send_command(context_id, command)
        if dataset is not None:
            await link.send_dataset(context_id, dataset)

    # -- the association -----------------------------------------------------------------------

    async def _association(self, link: Link) -> None:
        request = await link.pdu()
        if not isinstance(request, AssociateRequest):
            return
        if (script := self._strike(Phase.ASSOCIATION)) is not None:
            await self._fault(link, script, expected_type=T_ASSOCIATE_AC)
        results = negotiate(
            request,
            abstract_syntaxes={cx.abstract_syntax for cx in request.contexts},
            transfer_syntaxes=SYNTAXES,
        )
        abstract = {cx.context_id: cx.abstract_syntax for cx in request.contexts}
        link.contexts = {
            r.context_id: (abstract[r.context_id], r.transfer_syntax)
            for r in results
            if r.result == 0
        }
        link.peer_max = request.max_pdu_length
        await link.send(
            encode_associate_ac(
                request,
                results,
                max_pdu_length=MAX_PDU,
                implementation_class_uid=IMPLEMENTATION_UID,
                implementation_version=IMPLEMENTATION_VERSION,
                roles={uid: (False, True) for uid, (_, scp) in request.roles.items() if scp},
            )
        )
        while True:
            message = await link.message()
            if isinstance(message, ReleaseRequest):
                if (script := self._strike(Phase.RELEASE)) is not None:
                    await self._fault(link, script)
                if self.collide_on_release:
                    await self._collide(link)
                    return
                await link.send(encode_release_rp())
                return
            if not isinstance(message, Message):
                return  # closed, aborted, or a PDU out of turn: hang up
            await self._dispatch(link, message, request.calling_aet)

    async def _collide(self, link: Link) -> None:
        """The acceptor's side of a release collision: its own A-RELEASE-RQ, then the
        requestor's A-RELEASE-RP, then its own A-RELEASE-RP; anything else is noted."""
        await link.send(encode_release_rq())
        answer = await link.pdu()
        if not isinstance(answer, ReleaseResponse):
            self.events.append(f"collision: {type(answer).__name__} instead of A-RELEASE-RP")
            return
        self.events.append("collision: A-RELEASE-RP")
        await link.send(encode_release_rp())
        await link.drain()

    async def _dispatch(self, link: Link, message: Message, calling_aet: str) -> None:
        command = message.command
        if isinstance(command, CEchoRequest):
            response = encode_c_echo_rsp(command)
            await self._respond(link, Phase.FIRST_RESPONSE, message.context_id, response)
        elif isinstance(command, CStoreRequest):
            phase = Phase.FIRST_RESPONSE if self._stores == 0 else Phase.FINAL
            self._stores += 1
            response = encode_c_store_rsp(command, SUCCESS)
            await self._respond(link, phase, message.context_id, response)
        elif command.command_field == C_FIND_RQ:
            await self._find(link, message)
        elif command.command_field == C_GET_RQ:
            await self._get(link, message)
        elif command.command_field == C_MOVE_RQ:
            await self._move(link, message, calling_aet)
        # C-CANCEL outside an operation (it crossed the final response): nothing to do

    # -- C-FIND --------------------------------------------------------------------------------

    async def _find(self, link: Link, message: Message) -> None:
        context_id, syntax = message.context_id, link.contexts[message.context_id][1]
        query = decode_dataset(message.dataset or b"", syntax)
        pending = response_command(message, C_FIND_RSP, PENDING, dataset=True)
        for _ in range(self.empty_pendings):
            await link.send_command(context_id, response_command(message, C_FIND_RSP, PENDING))
        for number, instance in enumerate(self.instances):
            match = encode_dataset(_match(query, instance.dataset), syntax)
            phase = Phase.FIRST_RESPONSE if number == 0 else Phase.PENDING
            await self._respond(link, phase, context_id, pending, match)
        final = response_command(message, C_FIND_RSP, SUCCESS)
        await self._respond(link, Phase.FINAL, context_id, final)

    # -- C-GET and C-MOVE ----------------------------------------------------------------------

    def _selected(self, identifier: Dataset) -> list[SampleInstance]:
        def wanted(instance: SampleInstance) -> bool:
            return all(
                keyword not in identifier or str(identifier[keyword].value) == uid
                for keyword, uid in (
                    ("StudyInstanceUID", instance.study_uid),
                    ("SeriesInstanceUID", instance.series_uid),
                    ("SOPInstanceUID", instance.sop_instance_uid),
                )
            )

        return [instance for instance in self.instances if wanted(instance)]

    async def _get(self, link: Link, message: Message) -> None:
        context_id, syntax = message.context_id, link.contexts[message.context_id][1]
        selected = self._selected(decode_dataset(message.dataset or b"", syntax))
        total = len(selected)

        def response(status: int, completed: int) -> bytes:
            return retrieve_response(message, C_GET_RSP, status, total, completed)

        await self._respond(link, Phase.FIRST_RESPONSE, context_id, response(PENDING, 0))
        for number, instance in enumerate(selected):
            found = link.context_for(instance.sop_class_uid)
            if found is None:
                raise Done  # rst offered no context for it: not a case these tests make
            store_context, store_syntax = found
            store = encode_c_store_rq(
                message_id=number + 1,
                sop_class_uid=instance.sop_class_uid,
                sop_instance_uid=instance.sop_instance_uid,
            )
            if (script := self._strike(Phase.STORE_COMMAND, number)) is not None:
                await self._fault(link, script, context_id=store_context)
            await link.send_command(store_context, store)
            if (script := self._strike(Phase.STORE_DATA, number)) is not None:
                await self._fault(link, script, context_id=store_context)
            await link.send_dataset(store_context, encode_dataset(instance.dataset, store_syntax))
            answer = await link.message()
            if not isinstance(answer, Message):
                raise Done
            if (
                isinstance(answer.command, OtherCommand)
                and answer.command.command_field == C_CANCEL_RQ
            ):
                await link.send_command(context_id, response(CANCEL, number))
                return
            if number + 1 < total:
                await self._respond(link, Phase.PENDING, context_id, response(PENDING, number + 1))
        await self._respond(link, Phase.FINAL, context_id, response(SUCCESS, total))

    async def _move(self, link: Link, message: Message, calling_aet: str) -> None:
        context_id, syntax = message.context_id, link.contexts[message.context_id][1]
        selected = self._selected(decode_dataset(message.dataset or b"", syntax))
        total = len(selected)
        raw = decode_dataset(message.raw_command, ImplicitVRLittleEndian)
        destination = str(raw.get("MoveDestination", "")).strip()
        address = self.destinations.get(destination)
        if address is None:
            refused = retrieve_response(message, C_MOVE_RSP, MOVE_DESTINATION_UNKNOWN, 0, 0)
            await self._respond(link, Phase.FIRST_RESPONSE, context_id, refused)
            return

        def response(status: int, completed: int, failed: int = 0) -> bytes:
            return retrieve_response(message, C_MOVE_RSP, status, total, completed, failed)

        if not selected:  # no sub-operations: no association to the destination either
            await self._respond(link, Phase.FINAL, context_id, response(SUCCESS, 0))
            return
        await self._respond(link, Phase.FIRST_RESPONSE, context_id, response(PENDING, 0))
        completed = 0
        async with await trio.open_tcp_stream(*address) as stream:
            self._opened()
            try:
                sub = Link(stream)
                if not await self._associate_to(sub, destination, selected):
                    raise Done
                for number, instance in enumerate(selected):
                    if not await self._store_to(sub, link, instance, number, calling_aet, message):
                        break
                    completed += 1
                    if number + 1 < total:
                        await self._respond(
                            link, Phase.PENDING, context_id, response(PENDING, completed)
                        )
                else:
                    await sub.send(encode_release_rq())
                    with trio.move_on_after(5):
                        while not isinstance(await sub.pdu(), ReleaseResponse | None):
                            pass
            finally:
                self._closed()
        failed = total - completed
        status = SUCCESS if not failed else SUBOPERATIONS_FAILED
        await self._respond(link, Phase.FINAL, context_id, response(status, completed, failed))

    async def _associate_to(self, sub: Link, called: str, instances: list[SampleInstance]) -> bool:
        """Open the sub-operations' association with the move destination."""
        classes = sorted({instance.sop_class_uid for instance in instances})
        contexts = [
            PresentationContextRQ(1 + 2 * n, uid, SYNTAXES) for n, uid in enumerate(classes)
        ]
        await sub.send(
            encode_associate_rq(
                called_aet=called,
                calling_aet=self.aet,
                contexts=contexts,
                max_pdu_length=MAX_PDU,
                implementation_class_uid=IMPLEMENTATION_UID,
                implementation_version=IMPLEMENTATION_VERSION,
            )
        )
        accept = await sub.pdu()
        if not isinstance(accept, AssociateAccept):
            self.events.append(f"move destination answered {accept!r}")
            return False
        abstract = {cx.context_id: cx.abstract_syntax for cx in contexts}
        sub.contexts = {
            r.context_id: (abstract[r.context_id], r.transfer_syntax)
            for r in accept.contexts
            if r.result == 0
        }
        sub.peer_max = accept.max_pdu_length
        return True

    async def _store_to(
        self,
        sub: Link,
        main: Link,
        instance: SampleInstance,
        number: int,
        calling_aet: str,
        message: Message,
    ) -> bool:
        """One C-STORE sub-operation on the destination association; ``False`` if it failed.

        A fault here goes to the destination (rst's receiver). With silence the whole PACS
        hangs (until rst gives up on the C-MOVE); otherwise the PACS waits for the destination
        to drop the association and reports the sub-operation failed, as a real one would."""
        found = sub.context_for(instance.sop_class_uid)
        if found is None:
            return False
        context_id, syntax = found
        store = encode_c_store_rq(
            message_id=number + 1,
            sop_class_uid=instance.sop_class_uid,
            sop_instance_uid=instance.sop_instance_uid,
            move_originator_aet=calling_aet,
            move_originator_message_id=message.command.message_id,
        )
        script = self._strike(Phase.STORE_COMMAND, number)
        if script is None:
            await sub.send_command(context_id, store)
            script = self._strike(Phase.STORE_DATA, number)
        if script is not None:
            if script.action is Action.SILENCE:
                await main.drain()
                raise Done

            gave_up = False

            async def fault() -> None:
                await misbehave(sub, script, requestor=True, context_id=context_id)

            async def main_closed() -> None:
                nonlocal gave_up
                await main.drain()
                gave_up = True

            await _first_of(fault, main_closed)
            if gave_up:  # rst ended the C-MOVE before its receiver dropped the association
                raise Done
            return False
        await sub.send_dataset(context_id, encode_dataset(instance.dataset, syntax))
        answer = await sub.message()
        if not isinstance(answer, Message) or not isinstance(answer.command, OtherCommand):
            return False
        return answer.command.command_field == C_STORE_RSP and answer.command.status == SUCCESS


def _match(query: Dataset, instance: Dataset) -> Dataset:
    """The C-FIND answer to *query* from *instance*: every requested key, filled if known."""
    match = Dataset()
    for element in query:
        if element.tag in instance:
            match.add(instance[element.tag])
        else:
            match.add(element)
    return match
