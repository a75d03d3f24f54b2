"""A nursery per HTTP request that lives until the response has been sent.

A route handler returns its response before the body is sent, but the work that produces the
body — an association, a C-MOVE, a receiver subscription — must live as long as the body does
and must be cancelled when the client goes away. quart-trio already runs each request in a
nursery that is cancelled on disconnect; this connection class opens one more inside it, around
both the handler and the sending of the response, and hands it to the handler on the request
it serves (:func:`request_nursery`): the handler passes it on, as an argument, to what starts
tasks in it (:func:`~rst.http.streaming.start_body`). No context variable: code that needs a
nursery is given one, and a test gives its own.
"""

from __future__ import annotations

import logging

import trio
from hypercorn.typing import (
    ASGIReceiveCallable,
    ASGISendCallable,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
)
from quart.utils import encode_headers
from quart.wrappers import Request, Response
from quart.wrappers.response import DataBody
from quart_trio.asgi import TrioASGIHTTPConnection
from werkzeug.wrappers import Response as WerkzeugResponse

from rst.groups import collapse
from rst.http.request_body import FlowControlledBody, RstRequest
from rst.logs import new_request_id, request_id

__all__ = ["RequestScopedConnection", "StreamBrokenOff", "request_nursery"]

log = logging.getLogger(__name__)


class StreamBrokenOff(Exception):
    """A response body failed after the response had started; the connection is dropped."""


def request_nursery(request: Request) -> trio.Nursery:
    """The nursery of *request*: tasks started in it end with its response.

    :raises RuntimeError: *request* is not being served by :class:`RequestScopedConnection`."""
    nursery = request.nursery if isinstance(request, RstRequest) else None
    if nursery is None:
        raise RuntimeError("the request has no nursery: not served by RequestScopedConnection")
    return nursery


class RequestScopedConnection(TrioASGIHTTPConnection):
    async def __call__(self, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        """Serve the request under its id (:mod:`rst.logs`): its tasks, started from here,
        inherit it.

        When the connection is cancelled around it, what leaves is one ``trio.Cancelled``,
        not quart-trio's group of them: hypercorn's ``_handle`` keeps the ``split`` of a group
        in a local before re-raising it, a reference cycle through the request's tracebacks
        (and the response chunks their frames hold) that only a full collection frees."""
        offered = next((v for k, v in self.scope["headers"] if k.lower() == b"x-request-id"), None)
        token = request_id.set(new_request_id(offered.decode("latin-1") if offered else None))
        try:
            with collapse():
                await super().__call__(receive, send)
        finally:
            request_id.reset(token)

    async def handle_messages(  # type: ignore[override]
        self, nursery: trio.Nursery, request: Request, receive: ASGIReceiveCallable
    ) -> None:
        """quart's loop, replaced by the body's own (see :mod:`.request_body`): it pushes back
        on the client and times out a stalled upload."""
        body = request.body
        if not isinstance(body, FlowControlledBody):
            await super().handle_messages(nursery, request, receive)
            return
        what = f"{request.method} {request.path}"
        await body.receive_from(receive, stall=self.app.config["RST_BODY_TIMEOUT"], what=what)
        nursery.cancel_scope.cancel()

    async def handle_request(  # type: ignore[override]
        self, nursery: trio.Nursery, request: Request, send: ASGISendCallable
    ) -> None:
        try:
            with collapse():
                async with trio.open_nursery() as work:
                    scoped = request if isinstance(request, RstRequest) else None
                    if scoped is not None:
                        scoped.nursery = work
                    try:
                        await super().handle_request(nursery, request, send)
                    finally:
                        if scoped is not None:
                            scoped.nursery = None
                        if work.child_tasks:  # a body still being produced; else a no-op
                            work.cancel_scope.cancel()
        except StreamBrokenOff:
            # Already logged. Returning without finishing the response makes hypercorn close
            # the connection: the client sees a truncated body, never a complete-looking one.
            nursery.cancel_scope.cancel()
        except Exception:
            # The last-resort guard: quart turns errors raised before the response into JSON
            # responses, so this is a failure while sending one. It ends this request alone,
            # the same way: a broken-off stream, and the details in the log.
            log.exception("response to %s %s broken off", request.method, request.path)
            nursery.cancel_scope.cancel()

    async def _send_response(
        self, send: ASGISendCallable, response: Response | WerkzeugResponse
    ) -> None:
        """A body that is ready whole (bytes: a frame, a JSON answer, an error) goes out as
        one ``http.response.body`` message that is also the last, where quart sends it and
        then an empty one to end it: one message less through every layer below (metrics,
        hypercorn, h11, the connection's writer) for each such response. Any other body is
        sent as quart sends it."""
        body = response.response if isinstance(response, Response) else None
        if not isinstance(body, DataBody):
            await super()._send_response(send, response)
            return
        start: HTTPResponseStartEvent = {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": encode_headers(response.headers),
        }
        await send(start)
        # The range a conditional request asked for, as quart's own iterator gives it (the
        # whole body is the very same bytes object: no copy).
        whole: HTTPResponseBodyEvent = {
            "type": "http.response.body",
            "body": body.data[body.begin : body.end],
            "more_body": False,
        }
        await send(whole)
