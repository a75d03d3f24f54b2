"""The HTTP listener: hypercorn's HTTP protocol in rst's own serve loop and connection shell.

hypercorn's own ``serve`` runs each connection as a task of the server's nursery: an exception
that escapes one connection — raised inside hypercorn's HTTP/1.1 handling (a 500 it tries to
send after h11 entered its ERROR state) or inside the app — cancels the nursery and ends the
whole process. This module does what ``hypercorn.trio.serve`` does (lifespan, listeners,
graceful shutdown), but runs each connection through :func:`_contained`: whatever a connection
raises is logged and closes that connection alone. Cancellation (shutdown) still passes through.

Each connection runs in :class:`~rst.http.connection.Connection`, rst's replacement for
hypercorn's trio shell around the same protocol objects: whatever a client does, its connection
ends in bounded time, so its slot is given back.

It is also the one place that knows about the listening sockets, so it bounds the number of
open HTTP connections (``http.max_connections``): beyond the cap, new connections wait in the
kernel's accept queue instead of costing rst memory.

With ``http.certfile`` set it serves HTTPS: the SSL context is built once here
(:func:`rst.http.tls.server_context`) and each connection does its TLS handshake inside its own
task and guard, holding its slot — a handshake that fails or stalls frees the slot like any
other connection that ends.
"""

from __future__ import annotations

import errno
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import AppWrapper, Framework, LifespanState
from hypercorn.utils import repr_socket_addr, wrap_app

from rst.config import HttpConfig
from rst.http import tls
from rst.http.access_log import AccessLogger
from rst.http.connection import Connection

__all__ = ["hypercorn_config", "serve_http"]

log = logging.getLogger(__name__)

_ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
"""accept() failures that mean "out of resources for now" (as in trio.serve_listeners)."""
_ACCEPT_CAPACITY_PAUSE = 0.1


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
    hc.logger_class = AccessLogger  # no copy of the environment per request
    hc.errorlog = logging.getLogger("rst.http")
    hc.keep_alive_timeout = http.keep_alive_timeout
    # What the parsers buffer at most; rst.http.limits answers 431 past the limit itself. h2
    # counts 32 bytes more a header than HTTP/1.1 takes (RFC 9113 §6.5.2): room for that, so
    # that a head just over the limit is a 431 and not a reset connection.
    hc.h11_max_incomplete_size = http.max_header_bytes  # beyond it: 431 (rst.http.connection)
    hc.h2_max_header_list_size = 2 * http.max_header_bytes
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
    finish, then cancel them. A certificate or key that cannot be used is a
    :class:`~rst.config.ConfigError`, before anything is served."""
    ssl_context = tls.server_context(http)
    scheme = "http" if ssl_context is None else "https"
    config = hypercorn_config(http, fd)
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    state: LifespanState = {}
    lifespan = Lifespan(wrapped, config, state)
    context = WorkerContext(None)
    slots = trio.Semaphore(http.max_connections)

    async def connection(stream: trio.SocketStream) -> None:
        try:
            await _contained(wrapped, config, context, state, stream, http, ssl_context)
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
            binds.append(f"{scheme}://{repr_socket_addr(sock.family, sock.getsockname())}")
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


async def _contained(
    app: AppWrapper,
    config: HypercornConfig,
    context: WorkerContext,
    state: LifespanState,
    stream: trio.SocketStream,
    http: HttpConfig,
    ssl_context: ssl.SSLContext | None,
) -> None:
    """Run one HTTP connection, its TLS handshake included; anything it raises ends it alone."""
    try:
        await Connection(
            app,
            config,
            context,
            state,
            stream,
            http.send_timeout,
            ssl_context,
            http.tls_handshake_timeout,
        ).run()
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
        await trio.aclose_forcefully(stream)  # when failing on the way, or cancelled


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
