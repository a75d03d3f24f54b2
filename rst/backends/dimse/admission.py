"""Who gets a connection to the C-STORE receiver: the accept loop and the refusal at the cap.

Every connection the receiver serves costs a task, a descriptor and a read buffer, so their
number is capped (``[dimse] max_connections``). The decision is taken in the accept loop, in the
order the kernel queued the connections, before any task or buffer exists for it. A connection
beyond the cap is turned away with an A-ASSOCIATE-RJ that says why (PS3.8 §9.3.4: transient,
service-provider presentation-related function, local limit exceeded), so that the PACS logs a
reason and tries again later rather than a bare reset.

The rejection answers the peer's A-ASSOCIATE-RQ, as the state machine has it (PS3.8 §9.2, AE-8):
sent earlier, a requestor still in Sta4 may take it for an invalid event and drop the
connection without reading it. The request is read only to know where it ends,
into one shared scratch buffer: nothing is allocated for it. Then the socket is half-closed and
its input discarded until the peer closes, so that no late byte makes our kernel answer with a
reset (on which some stacks drop the unread rejection). All of it within the handshake timeout.
At most :data:`MAX_TURNING_AWAY` connections are turned away like this at a time; beyond that a
connection is closed at once, which is what a flood of connections gets.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable

import trio

from rst.backends.dimse.ul import encode_associate_rj
from rst.backends.dimse.ul.pdu import (
    HEADER_LENGTH,
    T_ASSOCIATE_RQ,
    PresentationRejectReason,
    RejectResult,
    RejectSource,
)

__all__ = ["MAX_TURNING_AWAY", "REJECT_BUSY", "accept_loop", "peer_of", "turn_away"]

log = logging.getLogger(__name__)

REJECT_BUSY = encode_associate_rj(
    RejectResult.TRANSIENT,
    RejectSource.PRESENTATION,
    PresentationRejectReason.LOCAL_LIMIT_EXCEEDED,
)
"""A-ASSOCIATE-RJ (PS3.8 Table 9-21): rejected-transient, DICOM UL service-provider
(presentation related function), local-limit-exceeded."""
MAX_TURNING_AWAY = 16
"""Connections turned away with an A-ASSOCIATE-RJ at the same time; more are closed at once."""

# accept(2) errors that mean the system is out of descriptors or memory for now (as in
# trio.serve_listeners): wait and accept again rather than stop serving.
_ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_ACCEPT_RETRY = 0.1
_SCRATCH = bytearray(4096)  # discarded input of turned-away connections; never read


async def accept_loop(
    listener: trio.SocketListener, admit: Callable[[trio.SocketStream], None]
) -> None:
    """Accept connections for ever and hand each to *admit*, in the order they were queued.

    *admit* runs synchronously in this loop: it decides (and starts a task for the connection
    if it wants one) before the next connection is accepted."""
    async with listener:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                    raise
                log.error(
                    "the C-STORE receiver cannot accept a connection: %s; retrying in %g s",
                    os.strerror(exc.errno or 0),
                    _ACCEPT_RETRY,
                )
                await trio.sleep(_ACCEPT_RETRY)  # a back-off: the kernel gives no event for it
                continue
            try:
                admit(stream)
            except Exception:  # a bug must not stop the receiver accepting
                log.exception("cannot take the connection from %s", peer_of(stream))
                await trio.aclose_forcefully(stream)


def peer_of(stream: trio.SocketStream) -> str:
    """``host:port`` of the other end, for logs (``?`` once it has gone)."""
    try:
        host, port = stream.socket.getpeername()[:2]
    except (OSError, ValueError):
        return "?"
    return f"{host}:{port}"


async def turn_away(stream: trio.SocketStream, *, linger: float, max_request: int) -> None:
    """Read the peer's A-ASSOCIATE-RQ (of at most *max_request* bytes) without keeping it,
    answer :data:`REJECT_BUSY`, discard the input until the peer closes, and close; all within
    *linger* seconds. A peer that sends anything else is closed without an answer. Never
    raises but :class:`trio.Cancelled`."""
    try:
        with trio.move_on_after(linger):
            if await _skip_request(stream.socket, max_request):
                await stream.send_all(REJECT_BUSY)
                await stream.send_eof()
                while await stream.socket.recv_into(_SCRATCH):
                    pass
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass  # the peer went first: nothing to tell it
    finally:
        await trio.aclose_forcefully(stream)


async def _skip_request(sock: trio.socket.SocketType, max_request: int) -> bool:
    """Read up to the end of an A-ASSOCIATE-RQ; whether there was one."""
    header = b""
    while len(header) < HEADER_LENGTH:
        chunk = await sock.recv(HEADER_LENGTH - len(header))
        if not chunk:
            return False
        header += chunk
    # PDU type, reserved, PDU length (PS3.8 §9.3.1)
    pdu_type, remaining = header[0], int.from_bytes(header[2:6], "big")
    if pdu_type != T_ASSOCIATE_RQ or remaining > max_request:
        return False
    while remaining:
        count = await sock.recv_into(_SCRATCH, min(remaining, len(_SCRATCH)))
        if not count:
            return False
        remaining -= count
    return True
