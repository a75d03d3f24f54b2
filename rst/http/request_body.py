"""Request bodies that push back on the client.

quart appends every chunk of a request body to one buffer as fast as the client sends it, so a
STOW-RS of a whole study would sit in memory however incrementally rst parses it. Here the
connection stops reading from hypercorn (whose per-request queue is bounded, so it stops
reading the socket, and TCP slows the client) while more than ``HIGH_WATER`` bytes wait to be
consumed. The body itself takes the ASGI messages (:meth:`FlowControlledBody.receive_from`),
so its flow control — the high-water mark, the stall timeout — lives in one class, and the
connection (:mod:`.request_scope`) only hands it the receive callable.
"""

from __future__ import annotations

import logging

import trio
from hypercorn.typing import ASGIReceiveCallable
from quart_trio.wrappers.request import TrioBody, TrioRequest

from rst.errors import RequestTimeout
from rst.groups import copy_of

__all__ = ["HIGH_WATER", "FlowControlledBody", "RstRequest"]

HIGH_WATER = 1024 * 1024
"""Unconsumed body bytes at which rst stops taking messages from hypercorn."""

log = logging.getLogger(__name__)


class FlowControlledBody(TrioBody):
    def __init__(self, expected_content_length: int | None, max_content_length: int | None) -> None:
        super().__init__(expected_content_length, max_content_length)
        self._room = trio.Event()

    async def __anext__(self) -> bytes:
        if self._must_raise is not None:
            raise copy_of(self._must_raise)  # a copy: the raised one's frames hold self
        if not self._complete.is_set():
            await self._has_data.wait()
        if self._must_raise is not None and not self._data:
            raise copy_of(self._must_raise)
        data = await super().__anext__()
        self._room.set()
        return data

    @property
    def complete(self) -> bool:
        """The client has sent the whole body (or it has failed)."""
        return self._complete.is_set() or self._must_raise is not None

    def fail(self, error: Exception) -> None:
        """The body will not arrive: its reader gets *error* once the bytes before it are read."""
        self._must_raise = error
        self._has_data.set()

    async def wait_for_room(self) -> None:
        """Return once fewer than ``HIGH_WATER`` bytes are buffered."""
        while len(self._data) >= HIGH_WATER:
            self._room = trio.Event()
            await self._room.wait()

    async def receive_from(self, receive: ASGIReceiveCallable, *, stall: float, what: str) -> None:
        """Take the request's ASGI messages until the client disconnects: append the body's
        chunks, taking no further message while ``HIGH_WATER`` bytes wait to be consumed; if
        the client sends nothing of an unfinished body for *stall* seconds, the reader gets a
        :class:`~rst.errors.RequestTimeout` (*what* names the request in the log)."""
        while True:
            stalled = None
            if self.complete:  # only the disconnect is still to come: no timeout to keep
                message = await receive()
            else:
                with trio.move_on_after(stall) as stalled:
                    message = await receive()
            if stalled is not None and stalled.cancelled_caught:
                log.info("%s: the client stopped sending its body", what)
                self.fail(
                    RequestTimeout(
                        f"the client sent nothing of the request body for {stall:g} s "
                        "(http.body_timeout)"
                    )
                )
                continue
            if message["type"] == "http.request":
                self.append(message.get("body", b""))
                if not message.get("more_body", False):
                    self.set_complete()
                else:
                    await self.wait_for_room()
            elif message["type"] == "http.disconnect":
                return


class RstRequest(TrioRequest):
    """quart-trio's request with a flow-controlled body, and the nursery its
    :class:`~rst.http.request_scope.RequestScopedConnection` opened for it."""

    body_class = FlowControlledBody
    nursery: trio.Nursery | None = None
