"""The one read loop between a trio stream and a sans-IO association.

It feeds an :class:`~rst.backends.dimse.ul.association.Association`. Both I/O shells — the
client's :class:`~rst.backends.dimse.client.Connection` and the
receiver's connections — read here and nowhere else. The stream is any
:class:`trio.abc.Stream` (:func:`~rst.backends.dimse.tls.receive_into`): on a plain
:class:`trio.SocketStream` the bytes go straight into the association's read buffer
(``recv_into``, no copy); over DICOM TLS they are decrypted into a copy first.

What the sans-IO object decides stays there: a :class:`ProtocolViolation` it raises comes with
the A-ABORT to send, and :func:`receive_event` sends it (best effort) before letting the error
through, so every shell answers every violation the same way.
"""

from __future__ import annotations

import contextlib
import math

import trio

from rst.backends.dimse.tls import receive_into
from rst.backends.dimse.ul.association import (
    NEED_DATA,
    Association,
    AssociationEvent,
    ProtocolViolation,
)
from rst.backends.dimse.ul.pdu import AbortReason, AbortSource

__all__ = ["ABORT_GRACE", "abort", "read_into", "receive_event", "send_quietly"]

ABORT_GRACE = 1.0
"""Seconds an A-ABORT may take to go out before the connection is closed anyway."""


async def read_into(stream: trio.abc.Stream, association: Association) -> None:
    """One read from *stream* into *association*'s buffer (0 bytes: the peer closed)."""
    association.advance(await receive_into(stream, association.writable()))


async def receive_event(
    stream: trio.abc.Stream, association: Association, *, read_timeout: float = math.inf
) -> AssociationEvent:
    """The association's next event, reading as needed; a read that waits longer than
    *read_timeout* raises :class:`trio.TooSlowError` (the timer runs only around a read: most
    events come out of bytes already buffered). A :class:`ProtocolViolation` is answered with
    its A-ABORT before it is raised."""
    while True:
        try:
            event = association.next_event()
        except ProtocolViolation as violation:
            await send_quietly(stream, violation.to_send)
            raise
        if event is not NEED_DATA:
            assert not isinstance(event, type(NEED_DATA))
            return event
        if read_timeout == math.inf:
            await read_into(stream, association)
        else:
            # a plain scope rather than fail_after: its context manager costs more than the
            # read when bytes are waiting
            scope = trio.CancelScope(deadline=trio.current_time() + read_timeout)
            with scope:
                await read_into(stream, association)
            if scope.cancelled_caught:
                raise trio.TooSlowError


async def send_quietly(stream: trio.abc.Stream, data: bytes) -> None:
    """Send *data* if it can go out within :data:`ABORT_GRACE`, shielded from cancellation; a
    peer that has gone is no error here (the association is over anyway)."""
    if not data:
        return
    with trio.move_on_after(ABORT_GRACE) as scope:
        scope.shield = True
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await stream.send_all(data)


async def abort(
    stream: trio.abc.Stream,
    association: Association,
    source: AbortSource = AbortSource.SERVICE_USER,
    reason: AbortReason = AbortReason.NOT_SPECIFIED,
) -> None:
    """A-ABORT where the state table has one to send (nothing where no association exists)."""
    await send_quietly(stream, association.send_abort(source, reason))
