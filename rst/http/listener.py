"""The HTTP listener: hypercorn's trio protocol, with every connection contained.

hypercorn's own ``serve`` runs each connection as a task of the server's nursery: an exception
that escapes one connection — raised inside hypercorn's HTTP/1.1 handling (a body shorter than
its ``Content-Length`` with ``Connection: close``, a 500 it tries to send after h11 entered its
ERROR state) or inside the app — cancels the nursery and ends the whole process. This module
does what ``hypercorn.trio.serve`` does (lifespan, listeners, graceful shutdown), but runs each
connection through :func:`_contained`: whatever a connection raises is logged and closes that
connection alone. Cancellation (shutdown) still passes through.

It is also the one place that knows about the listening sockets, so it bounds the number of
open HTTP connections (``http.max_connections``): beyond the cap, new connections wait in the
kernel's accept queue instead of costing rst memory.
"""

from __future__ import annotations

import errno
import json
import logging
import math
from collections.abc import Awaitable, Callable
from functools import partial
from http import HTTPStatus
from typing import Any

import h11
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed, Event, RawData
from hypercorn.protocol import ProtocolWrapper
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import AppWrapper, ConnectionState, Framework, LifespanState
from hypercorn.utils import repr_socket_addr, wrap_app

from rst.config import HttpConfig

__all__ = ["hypercorn_config", "serve_http"]

log = logging.getLogger(__name__)

_ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
"""accept() failures that mean "out of resources for now" (as in trio.serve_listeners)."""
_ACCEPT_CAPACITY_PAUSE = 0.1
SEND_SLICE = 256 * 1024
"""Bytes a client must accept within ``http.send_timeout``."""


def hypercorn_config(http: HttpConfig, fd: int | None = None) -> HypercornConfig:
    """hypercorn's settings for rst's ``[http]`` section; *fd*: serve on an inherited
    listening socket (a worker process) instead of binding ``host:port``."""
    hc = HypercornConfig()
    host = http.host
    hc.bind = [f"[{host}]:{http.port}" if ":" in host else f"{host}:{http.port}"]
    if fd is not None:
        hc.bind = [f"fd://{fd}"]
    hc.graceful_timeout = http.graceful_timeout
    hc.accesslog = logging.getLogger("rst.access")
    hc.errorlog = logging.getLogger("rst.http")
    hc.keep_alive_timeout = http.keep_alive_timeout
    return hc


async def serve_http(
    app: Framework,
    http: HttpConfig,
    *,
    fd: int | None = None,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve *app* until *shutdown_trigger* returns (or until cancelled); report the URLs bound.

    On shutdown, stop accepting, give open connections ``config.graceful_timeout`` seconds to
    finish, then cancel them."""
    config = hypercorn_config(http, fd)
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    state: LifespanState = {}
    lifespan = Lifespan(wrapped, config, state)
    context = WorkerContext(None)
    slots = trio.Semaphore(http.max_connections)

    async def connection(stream: trio.SocketStream) -> None:
        try:
            await _contained(
                wrapped, config, context, ConnectionState(state.copy()), stream, http.send_timeout
            )
        finally:
            slots.release()

    async def accept(listener: trio.SocketListener, connections: trio.Nursery) -> None:
        while True:
            await slots.acquire()  # at the cap, new connections wait in the kernel's queue
            try:
                stream = await listener.accept()
            except OSError as error:
                slots.release()
                if error.errno not in _ACCEPT_CAPACITY_ERRNOS:
                    raise
                log.error("cannot accept HTTP connections for now: %s", error)
                await trio.sleep(_ACCEPT_CAPACITY_PAUSE)
            except BaseException:
                slots.release()
                raise
            else:
                connections.start_soon(connection, stream)

    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        listeners = []
        binds = []
        for sock in config.create_sockets().insecure_sockets:
            sock.listen(config.backlog)
            listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
            binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
        async with trio.open_nursery() as connections:
            async with trio.open_nursery() as accepting:
                for listener in listeners:
                    accepting.start_soon(accept, listener, connections)
                task_status.started(binds)
                if shutdown_trigger is None:
                    await trio.sleep_forever()
                else:
                    await shutdown_trigger()
                accepting.cancel_scope.cancel()
            for listener in listeners:
                await listener.aclose()
            await context.terminated.set()
            connections.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()


class _Connection(TCPServer):
    """hypercorn's connection with two changes.

    - A client that stops reading is taken for gone: hypercorn sends under a shielded scope,
      so a response to a client that never reads would hold its request — and the request its
      associations — forever. Here each slice of ``SEND_SLICE`` bytes must be taken within
      ``send_timeout`` seconds, or the connection is closed (which ends the request).
    - Once the client has closed its end, hypercorn's keep-alive timer would still hold the
      connection's task (and its slot) for ``keep_alive_timeout`` seconds: it is stopped.
    - Closing the connection cannot be cancelled halfway (see :meth:`_close`)."""

    send_timeout: float = math.inf

    @property
    def protocol(self) -> ProtocolWrapper:
        return self._protocol

    @protocol.setter
    def protocol(self, wrapper: ProtocolWrapper) -> None:
        # hypercorn answers requests it cannot parse (400, 431) itself, with an empty body;
        # its HTTP/1.1 protocol object is made here, so this is where to give them rst's JSON.
        self._protocol = wrapper
        inner = wrapper.protocol
        if isinstance(inner, H11Protocol):
            inner._send_error_response = partial(_json_error_response, inner)  # type: ignore[method-assign]

    async def protocol_send(self, event: Event) -> None:
        if not isinstance(event, RawData):
            await super().protocol_send(event)
            return
        async with self.send_lock:
            view = memoryview(event.data)
            try:
                with trio.CancelScope(shield=True):
                    for start in range(0, len(view), SEND_SLICE):
                        with trio.move_on_after(self.send_timeout) as stalled:
                            await self.stream.send_all(view[start : start + SEND_SLICE])
                        if stalled.cancelled_caught:
                            log.info(
                                "a client accepted no data for %g s (http.send_timeout): "
                                "closing its connection",
                                self.send_timeout,
                            )
                            await trio.aclose_forcefully(self.stream)
                            raise trio.ClosedResourceError
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await self.protocol.handle(Closed())

    async def _read_data(self) -> None:
        await super()._read_data()
        await self.idle_task.stop()

    async def _close(self) -> None:
        # Called from whichever task saw the end, often a request's task at the moment its
        # response ends; that task's scope may be cancelled right then (the request's nursery
        # closes on the disconnect that the close itself causes), and a close cut short leaves
        # the socket open: ``Connection: close`` then never closed anything.
        with trio.CancelScope(shield=True):
            await super()._close()


async def _contained(
    app: AppWrapper,
    config: HypercornConfig,
    context: WorkerContext,
    state: ConnectionState,
    stream: trio.SocketStream,
    send_timeout: float,
) -> None:
    """Run one HTTP connection; anything it raises ends it alone."""
    connection = _Connection(app, config, context, state, stream)  # type: ignore[arg-type]
    connection.send_timeout = send_timeout
    try:
        await connection
    except trio.Cancelled:
        raise
    except BaseExceptionGroup as group:
        cancelled, rest = group.split(trio.Cancelled)
        if rest is not None:
            _log_failure(stream, rest)
        if cancelled is not None:
            raise cancelled from None
    except Exception as error:
        _log_failure(stream, error)
    finally:
        # hypercorn closes the stream itself, unless cancelled or failing on the way.
        await trio.aclose_forcefully(stream)


async def _json_error_response(protocol: H11Protocol, status_code: int) -> None:
    """hypercorn's answer to a request it could not parse, with a JSON body like rst's own."""
    try:
        phrase = HTTPStatus(status_code).phrase
    except ValueError:
        phrase = "Error"
    body = json.dumps(
        {"error": f"{phrase}: the request is not valid HTTP/1.1", "status": status_code}
    )
    data = body.encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
        (b"connection", b"close"),
        *protocol.config.response_headers("h11"),
    ]
    await protocol._send_h11_event(h11.Response(status_code=status_code, headers=headers))
    await protocol._send_h11_event(h11.Data(data=data))
    await protocol._send_h11_event(h11.EndOfMessage())


def _log_failure(stream: trio.SocketStream, error: BaseException) -> None:
    try:
        peer = repr_socket_addr(stream.socket.family, stream.socket.getpeername())
    except OSError:
        peer = "a client that has gone"
    log.error(
        "an HTTP connection from %s failed inside the server; closed it, serving on",
        peer,
        exc_info=error,
    )
