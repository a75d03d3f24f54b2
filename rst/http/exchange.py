"""What passed between a client and the app during one HTTP request, as an ASGI middleware sees it.

The metrics and the audit trail both need, once a request is over, its status, the body bytes
each way, whether the response reached its last byte and whether the client went away. A
streamed retrieve ends long after its route handler returned, so only the messages themselves
tell: :class:`Exchange` wraps the ASGI ``receive`` and ``send`` of one request and keeps count.
"""

from __future__ import annotations

from collections.abc import Callable

from hypercorn.typing import (
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    ASGISendEvent,
)

__all__ = ["Exchange"]


class Exchange:
    """Counts one request's messages; pass :meth:`receive` and :meth:`send` to the app."""

    def __init__(
        self,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
        first_byte: Callable[[], None] | None = None,
    ) -> None:
        self._receive = receive
        self._send = send
        self._first_byte = first_byte
        """Called once, as the first body message with bytes has been sent (here rather than
        in a wrapper of :meth:`send`: one coroutine less per message)."""
        self.status: int | None = None
        """The response's status, once the app began it."""
        self.sent = 0
        """Body bytes the server took."""
        self.received = 0
        """Body bytes of the request the app read."""
        self.complete = False
        """The response's last body message was sent."""
        self.client_gone = False
        """The app was told the client disconnected."""

    @property
    def broken(self) -> bool:
        """A response was begun and never finished."""
        return self.status is not None and not self.complete

    async def receive(self) -> ASGIReceiveEvent:
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
        elif message["type"] == "http.disconnect":
            self.client_gone = True
        return message

    async def send(self, message: ASGISendEvent) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]  # the app's answer, even if the client is gone
        await self._send(message)
        if message["type"] == "http.response.body":
            body = message.get("body", b"")
            self.sent += len(body)
            self.complete = not message.get("more_body", False)
            if body and self._first_byte is not None:
                first_byte, self._first_byte = self._first_byte, None
                first_byte()
