"""Passing a C-STORE association to the worker process that waits for its instances.

With ``[http] workers = N`` (N > 1) N rst processes share the HTTP port and the C-STORE
receiver's port: the kernel gives each incoming connection to whichever process accepts first.
C-MOVE message ids are partitioned among the workers (worker *k* uses the ids ≡ *k* + 1 mod N,
see :class:`~rst.backends.dimse.mediator.MessageIds`), so the Move Originator Message ID of a
C-STORE-RQ names the process whose request waits for the instance. A worker that receives a
C-STORE meant for another passes the association on: the socket itself (``SCM_RIGHTS`` over a
Unix socket), the negotiated state, and the bytes it has read but not handled yet — re-encoded as
PDUs in an anonymous memory file, which the receiving worker's reader takes before the socket.
Instances without Move Originator fields go round the ring of workers until one of them wants
them (at most N - 1 passes per C-STORE), then are refused.

A worker may die and be replaced (:mod:`rst.workers`) while its siblings go on: the supervisor
keeps every socket of the ring open, so a sibling's death never breaks a send, and a send that
cannot be made fails that association alone.

The PACS sees nothing of this: one TCP connection, one association, unchanged.
"""

from __future__ import annotations

import array
import json
import logging
import os
import socket
from dataclasses import asdict, dataclass

import trio

__all__ = ["PASS_ON_TIMEOUT", "Handover", "PassOn", "WorkerRing"]

log = logging.getLogger(__name__)

_MAX_MESSAGE = 64 * 1024
_FDS = 2  # the association's socket, the memory file with the replayed bytes
PASS_ON_TIMEOUT = 10.0
"""Seconds to wait for room in a sibling's inbox before giving the association up. An inbox
outlives its worker (the supervisor holds it), so associations sent to a worker that died wait
there for its replacement. Only when that queue is full (over a hundred of them with Linux's
default socket buffers, or a worker stuck for good) does a send wait, and then not for ever."""


@dataclass(frozen=True)
class Handover:
    """What the receiving worker needs to carry on an established association."""

    calling_aet: str
    accepted: dict[int, str]  # presentation context id -> transfer syntax
    peer: str
    hops: int  # how many workers the current C-STORE has been passed through


class PassOn(Exception):
    """Raised inside the receiver: this C-STORE belongs to worker *target*."""

    def __init__(self, target: int, hops: int) -> None:
        super().__init__(f"pass the association on to worker {target}")
        self.target = target
        self.hops = hops


class WorkerRing:
    """This worker's place among its siblings and the Unix sockets that link them.

    *inbox* receives associations passed to this worker; ``outboxes[j]`` sends to worker j
    (``SOCK_SEQPACKET``: one message per association, never split or merged).
    """

    def __init__(
        self, index: int, count: int, inbox: socket.socket, outboxes: dict[int, socket.socket]
    ) -> None:
        if not 0 <= index < count or set(outboxes) != set(range(count)) - {index}:
            raise ValueError(f"inconsistent worker ring: worker {index} of {count}, {outboxes}")
        self.index = index
        self.count = count
        self._inbox = inbox
        self._outboxes = outboxes
        for sock in (inbox, *outboxes.values()):
            sock.setblocking(False)

    def owner(self, message_id: int) -> int:
        """The worker that issued C-MOVE message id *message_id*."""
        return (message_id - 1) % self.count

    def next_after(self, hops: int) -> int | None:
        """Where a C-STORE nobody here wants goes next (``None``: every worker has seen it)."""
        if hops + 1 >= self.count:
            return None
        return (self.index + 1) % self.count

    async def pass_on(self, target: int, connection: int, state: Handover, replay: bytes) -> None:
        """Send the socket *connection* (a descriptor) to worker *target*, with the bytes to
        process before reading it again.

        The caller closes its own descriptor afterwards; the TCP connection lives on in the
        target process. An :class:`OSError` fails this association alone: the target's inbox
        was closed, or stayed full for :data:`PASS_ON_TIMEOUT` seconds (:class:`TimeoutError`)."""
        memfd = os.memfd_create("rst-handover", os.MFD_CLOEXEC)
        try:
            view = memoryview(replay)
            while view:
                written = os.write(memfd, view)
                view = view[written:]
            message = json.dumps(asdict(state)).encode()
            fds = array.array("i", [connection, memfd])
            outbox = self._outboxes[target]
            with trio.move_on_after(PASS_ON_TIMEOUT) as waiting:
                while True:
                    try:
                        outbox.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
                        break
                    except BlockingIOError:
                        await trio.lowlevel.wait_writable(outbox)
            if waiting.cancelled_caught:
                raise TimeoutError(
                    f"worker {target} has taken no association for {PASS_ON_TIMEOUT:g} s "
                    "(down or stuck)"
                )
        finally:
            os.close(memfd)
        log.debug("passed the association from %s on to worker %d", state.peer, target)

    async def receive(self) -> tuple[socket.socket, Handover, bytes]:
        """The next association passed to this worker."""
        while True:
            try:
                message, ancillary, flags, _ = self._inbox.recvmsg(
                    _MAX_MESSAGE, socket.CMSG_SPACE(_FDS * array.array("i").itemsize)
                )
                break
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self._inbox)
        fds = array.array("i")
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
        try:
            if len(fds) != _FDS or flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                raise RuntimeError(f"malformed handover message ({len(fds)} descriptors)")
            size = os.fstat(fds[1]).st_size
            replay = os.pread(fds[1], size, 0) if size else b""
            raw = json.loads(message)
            state = Handover(
                calling_aet=str(raw["calling_aet"]),
                accepted={int(k): str(v) for k, v in raw["accepted"].items()},
                peer=str(raw["peer"]),
                hops=int(raw["hops"]),
            )
            connection = socket.socket(fileno=fds[0])
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        os.close(fds[1])
        return connection, state, replay
