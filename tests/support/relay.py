"""A TCP relay on loopback that can stop a transfer in the middle, for fault tests.

Put it between a DICOM peer and the one it talks to: ``Relay(target, hold_after=n)`` forwards
every connection to *target*, both ways, until ``n`` bytes have gone one way on one connection.
There it stops forwarding that direction (the other keeps flowing) and sets :attr:`Relay.held`;
the test then lets the rest through (:meth:`Relay.resume`) or makes the peer vanish
(:meth:`Relay.cut`: both sockets of that connection are closed, as when a PACS dies).

    async with open_relay(("127.0.0.1", pacs_port), hold_after=2 * 1024**2) as relay:
        ...  # point the peer at relay.address
        await relay.held.wait()
        relay.cut()

Only the first connection to reach ``n`` bytes is held; later ones are forwarded untouched.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

__all__ = ["Relay", "open_relay"]

CHUNK = 65536


class Relay:
    def __init__(self, target: tuple[str, int], *, hold_after: int) -> None:
        self.target = target
        self.hold_after = hold_after
        self.address = ("", 0)
        """Where the relay listens (once running)."""
        self.held = trio.Event()
        """Set once a connection has been held (``hold_after`` bytes went one way)."""
        self.connections = 0
        self._decided = trio.Event()
        self._cut = False
        self._triggered = False

    def resume(self) -> None:
        """Let the held direction flow again."""
        self._decided.set()

    def cut(self) -> None:
        """Close both sockets of the held connection (the peer vanishes mid-transfer)."""
        self._cut = True
        self._decided.set()

    async def run(self, *, task_status: trio.TaskStatus[tuple[str, int]]) -> None:
        """Serve until cancelled; report the listening (host, port) through *task_status*."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        host, port = listeners[0].socket.getsockname()[:2]
        self.address = (str(host), int(port))
        task_status.started(self.address)
        await trio.serve_listeners(self._serve, listeners)

    async def _serve(self, downstream: trio.SocketStream) -> None:
        self.connections += 1
        try:
            upstream = await trio.open_tcp_stream(*self.target)
        except OSError:
            await downstream.aclose()
            return
        async with downstream, upstream, trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, downstream, upstream, nursery.cancel_scope)
            nursery.start_soon(self._pump, upstream, downstream, nursery.cancel_scope)

    async def _pump(
        self, source: trio.SocketStream, sink: trio.SocketStream, scope: trio.CancelScope
    ) -> None:
        """Forward *source* to *sink*; when either side ends, end the connection."""
        forwarded = 0
        try:
            while data := await source.receive_some(CHUNK):
                if not self._triggered and forwarded + len(data) >= self.hold_after:
                    self._triggered = True
                    head = self.hold_after - forwarded
                    await sink.send_all(data[:head])
                    forwarded += head
                    data = data[head:]
                    self.held.set()
                    await self._decided.wait()
                    if self._cut:
                        return
                await sink.send_all(data)
                forwarded += len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            scope.cancel()


@asynccontextmanager
async def open_relay(target: tuple[str, int], *, hold_after: int) -> AsyncIterator[Relay]:
    """A running :class:`Relay` to *target*, stopped when the block ends."""
    relay = Relay(target, hold_after=hold_after)
    async with trio.open_nursery() as nursery:
        await nursery.start(relay.run)
        yield relay
        nursery.cancel_scope.cancel()
