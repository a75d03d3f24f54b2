"""C-MOVE and C-GET on a trio association: send the request, follow its responses.

For C-GET the PACS sends the instances as C-STORE sub-operations on the same association; each
goes through an :class:`~rst.backends.dimse.incoming.IncomingInstance` — reassembled into a
Part 10 buffer, or streamed fragment by fragment if it is large — to the request's sink
(waiting for room, then spooling — the same backpressure as the receiver) and only then
answered. For C-MOVE the instances arrive at the receiver; this association carries only the
C-MOVE responses.

If the task running :func:`follow` is cancelled (the client went away, a timeout fired), it sends
C-CANCEL under a shielded scope and keeps reading — refusing any further C-STORE — until the
PACS ends the operation, for at most ``cancel_timeout``; after that the association is marked
broken, so that leaving it aborts instead of releasing.
"""

from __future__ import annotations

import logging

import trio

from rst.backends.dimse.client import BROKEN, Connection, broken_association
from rst.backends.dimse.incoming import IncomingInstance
from rst.backends.dimse.outcome import status_of
from rst.backends.dimse.sink import InstanceSink
from rst.backends.dimse.ul import (
    CommandError,
    CStoreRequest,
    OtherCommand,
    UpperLayerError,
    encode_c_cancel_rq,
    encode_c_store_rsp,
)
from rst.backends.dimse.ul.pdu import AbortReason
from rst.dicom.statuses import SUCCESS, Status, is_pending

__all__ = ["cancel_operation", "follow"]

log = logging.getLogger(__name__)


async def follow(
    connection: Connection,
    *,
    context_id: int,
    msg_id: int,
    request: bytes,
    identifier: bytes,
    sink: InstanceSink | None,
    cancel_timeout: float,
    calling_aet: str,
    pacs: str,
) -> Status:
    """Send the C-MOVE/C-GET *request* and return its final status.
    C-STOREs on the association go to *sink*. Raises :class:`~rst.errors.AssociationBroken` or
    :class:`~rst.errors.PeerProtocolError` if the association breaks off."""
    try:
        await connection.send(context_id, request, identifier)
        return await _responses(connection, msg_id, sink, calling_aet)
    except trio.Cancelled:
        with trio.CancelScope(shield=True):
            await cancel_operation(connection, context_id, msg_id, cancel_timeout, calling_aet)
        raise
    except BROKEN as exc:
        connection.broken = True
        raise broken_association(exc, pacs, "a retrieve") from None


async def _responses(
    connection: Connection, msg_id: int, sink: InstanceSink | None, calling_aet: str
) -> Status:
    while True:
        context_id, command = await connection.receive_command()
        if isinstance(command, CStoreRequest):
            status = await _store(connection, context_id, command, sink, calling_aet)
            await connection.send(context_id, encode_c_store_rsp(command, status))
            continue
        if not isinstance(command, OtherCommand) or command.message_id_being_responded_to != msg_id:
            raise UpperLayerError(
                f"unexpected DIMSE message {command!r}", reason=AbortReason.UNEXPECTED_PDU
            )
        if command.has_dataset:  # e.g. a failed SOP instance list: read and drop it
            await connection.receive_dataset(bytearray())
        if command.status is None:
            raise CommandError("a C-MOVE/C-GET response without a Status")
        if is_pending(command.status):  # one after each sub-operation: only its code is read
            continue
        final = status_of(command)
        assert final is not None
        return final


async def _store(
    connection: Connection,
    context_id: int,
    request: CStoreRequest,
    sink: InstanceSink | None,
    calling_aet: str,
) -> int:
    incoming = IncomingInstance(
        request,
        connection.transfer_syntax(context_id),
        source_aet=connection.accept.called_aet or None,
        locate=lambda _: sink,
        borrow=True,
    )
    journal = connection.journal
    # the fragments stay in the read buffer until the instance is joined (one copy, not two)
    connection.association.keep_fragments(incoming.copy_out)
    try:
        while True:
            pdv = await connection.dataset_fragment()
            journal.bytes += len(pdv.data)
            if pdv.last or not incoming.hold(pdv.data):
                await incoming.add(pdv.data, last=pdv.last)
            if pdv.last:
                status = await incoming.finish()
                journal.stores += 1
                journal.stores_refused += int(status != SUCCESS)
                return status
    except BaseException as exc:
        incoming.abandon(f"the C-GET association broke off ({exc!r})")
        raise
    finally:
        connection.association.keep_fragments(None)


async def cancel_operation(
    connection: Connection, context_id: int, msg_id: int, grace: float, calling_aet: str
) -> None:
    """C-CANCEL, then drain until the final response; mark the association broken if the PACS
    does not end the operation in time (leaving it will then abort)."""
    if connection.broken:
        return
    with trio.move_on_after(grace) as scope:
        try:
            log.info("sending C-CANCEL for message %d", msg_id)
            await connection.send(
                context_id, encode_c_cancel_rq(message_id_being_responded_to=msg_id)
            )
            await _responses(connection, msg_id, None, calling_aet)
            return
        except BROKEN:
            pass
    if scope.cancelled_caught:
        log.warning("the PACS did not end the operation within %g s of C-CANCEL", grace)
    connection.broken = True
