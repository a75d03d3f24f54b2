"""One HTTP connection: hypercorn's protocol objects in rst's own I/O shell.

hypercorn parses and answers HTTP with sans-IO protocol objects (``hypercorn/protocol/``,
around h11) and runs them in a thin shell per runtime (``hypercorn/trio/tcp_server.py``: read
into ``protocol.handle``, write what the protocol sends). rst keeps the protocol objects and
replaces the shell, because that shell ends a connection only when its reader ends, lets any
task write or close, closes with unread bytes, and loses its keep-alive timer after the first
answer — each of which cost rst connection slots or answers (issue 8). :class:`Connection`
says how each is done here; the rule it keeps is that whatever a client does, its connection
ends in bounded time with its socket closed, and a client that is still there receives whole
answers.
"""

from __future__ import annotations

import json
import logging
import math
import ssl
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from http import HTTPStatus

import h11
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.protocol import ProtocolWrapper
from hypercorn.protocol.events import Event as StreamEvent
from hypercorn.protocol.events import Response
from hypercorn.protocol.h2 import H2Protocol
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import AppWrapper, ConnectionState, LifespanState
from hypercorn.utils import parse_socket_addr

from rst.http import tls

__all__ = ["LINGER", "SEND_SLICE", "Connection"]

log = logging.getLogger(__name__)

SEND_SLICE = 256 * 1024
"""Bytes a client must accept within ``http.send_timeout``."""
RECEIVE_SIZE = 64 * 1024
"""Bytes read from a connection at once (as hypercorn)."""
LINGER = 2.0
"""Seconds a closing connection waits for its client to close its end, dropping what it still
sends (a close with unread bytes would reset the connection and could destroy the answer)."""
DISCONNECT_GRACE = 1.0
"""Seconds given to telling a request that its client is gone, before it is cancelled."""


class Connection:
    """One HTTP connection (HTTP/1.1, or h2 by prior knowledge; over TLS, either as the
    client's ALPN says), from its first byte to its closed socket. What it does that
    hypercorn's shell did not:

    - **A client that is gone ends the connection, whatever the protocol waits for.** With a
      pipelined request buffered, hypercorn's h11 protocol parks the reader on ``can_read``
      until the current response completes (h11 ``PAUSED``, ``_handle_events``); a send that
      fails only closes the request's stream (``handle(Closed())``), so once the client has
      hung up the response never completes and the reader waits for ever, with the task, the
      descriptor and a slot of ``http.max_connections``. Here a failed or stalled send, an end
      of file or a reset calls :meth:`_drop`: the reader is cancelled wherever it waits, the
      socket closed, the request told (``http.disconnect``) and whatever still runs for the
      connection cancelled.
    - **One writer at a time, the close included.** hypercorn's ``_close`` (``send_eof``, then
      ``aclose``) ran in whichever task asked for the close, outside the send lock: the
      request's task, at the end of its answer to a ``Connection: close`` request, fell
      between the head and the body of the 400 the reader was sending for the bytes after that
      request (``BusyResourceError``, an ERROR logged, a head without its body). Here the end
      of file goes through the send lock, hypercorn's error answers are one write, and a close
      that a protocol error asks for while a response is being sent waits for its end.
    - **A lingering close.** Closing a socket with unread bytes makes the kernel reset the
      connection, and a reset can destroy the end of the answer before the client has read
      it. Here the end of file follows the last byte, then what the client still sends is read
      and dropped until it closes its end, for at most :data:`LINGER` seconds.
    - **A keep-alive timer that survives the end of an answer.** hypercorn restarts its
      timer (``nursery.start``) from the request's task when an answer ends, just after
      telling the request ``http.disconnect`` — which cancels that task, so the restart
      failed and a connection idle after its first answer stayed open for good (and kept
      shutdown waiting for ``graceful_timeout``); HTTP/2 by prior knowledge was never idle
      (h11 called the connection busy before handing it to h2). Here the timer is one task
      whose deadline :meth:`_set_idle` moves, without a checkpoint.
    - **A client that stops reading is taken for gone**: each slice of :data:`SEND_SLICE`
      bytes must be taken within ``send_timeout`` seconds (hypercorn sends under a shield, so a
      client that never reads would hold its request, and the request its associations).

    - **TLS inside the connection's own task** (:mod:`rst.http.tls`): a handshake that fails
      or stalls, or a client that is not speaking TLS, ends this connection alone, logged as
      the client's affair. The end of file is a ``close_notify`` then the TCP end of file, and
      the lingering close reads the TCP stream under TLS.

    Every way a connection ends is then bounded: by ``tls_handshake_timeout`` until the TLS
    handshake is done, ``send_timeout`` while sending, ``keep_alive_timeout`` while idle or
    receiving a request head, ``body_timeout`` while a request waits for its body (it answers
    408 and ends), :data:`LINGER` once closing, and the time the request's own work takes to
    answer."""

    def __init__(
        self,
        app: AppWrapper,
        config: HypercornConfig,
        context: WorkerContext,
        state: LifespanState,
        stream: trio.SocketStream,
        send_timeout: float = math.inf,
        ssl_context: ssl.SSLContext | None = None,
        handshake_timeout: float = math.inf,
    ) -> None:
        self.app = app
        self.config = config
        self.context = context
        self.state = state
        self.tcp = stream
        self.stream: trio.SocketStream | trio.SSLStream[tls.TlsTransport] = stream
        """What HTTP is spoken on: the TCP stream, or the TLS stream over it."""
        self.send_timeout = send_timeout
        self.ssl_context = ssl_context
        self.handshake_timeout = handshake_timeout
        self.protocol: ProtocolWrapper
        self._send_lock = trio.Lock()
        self._everything = trio.CancelScope()
        """Whatever runs for this connection (its reader, its requests, its idle timer)."""
        self._reading = trio.CancelScope()
        """The reader, while it hands what it reads to the protocol."""
        self._draining = trio.CancelScope()
        """The reader, once the protocol is done with the connection; a deadline once closing."""
        self._idle = True
        """No request is being served (none has come yet, or the last one is answered)."""
        self._idle_timer = trio.CancelScope()
        """The keep-alive timer: its deadline is moved as the connection is idle or busy."""
        self._closing = False
        """A close was asked for (end of file sent, or about to be)."""
        self._eof_sent = False
        self._gone = False
        """Nothing can be sent any more: the client is gone, or is taken for gone."""
        self._hold_head = False
        """The next bytes the protocol sends are the head of a response whose body of known,
        non-zero length follows at once (HTTP/1.1): hold them for the body's first write."""
        self._held_head = b""
        """A response head waiting to go out with the first bytes of its body."""

    async def run(self) -> None:
        """Serve the connection until it ends; the socket is closed and nothing of it runs
        any more when this returns."""
        sock = self.tcp.socket
        try:
            client = parse_socket_addr(sock.family, sock.getpeername())
            server = parse_socket_addr(sock.family, sock.getsockname())
        except OSError:
            return  # gone before its first byte
        alpn = "http/1.1"
        if self.ssl_context is not None:
            peer = f"{client[0]}:{client[1]}" if client else "a client"
            secured = await tls.accept(self.tcp, self.ssl_context, self.handshake_timeout, peer)
            if secured is None:
                return  # the caller closes the socket
            self.stream = secured
            alpn = secured.selected_alpn_protocol() or alpn
        with self._everything:
            async with TaskGroup() as tasks:
                self.protocol = ProtocolWrapper(
                    self.app,
                    self.config,
                    self.context,
                    tasks,
                    ConnectionState(self.state.copy()),
                    self.ssl_context is not None,  # the request's scheme: https
                    client,
                    server,
                    self._send,
                    alpn,  # "h2": hypercorn's H2Protocol from the first byte
                )
                inner = self.protocol.protocol
                if isinstance(inner, H11Protocol):
                    # hypercorn answers requests it cannot parse (400, 431) itself, with an
                    # empty body and in three writes; rst's answer is JSON, in one write.
                    inner._send_error_response = partial(_json_error_response, inner)  # type: ignore[method-assign]
                    inner.stream_send = partial(self._stream_send, inner.stream_send)  # type: ignore[method-assign]
                self._idle_timer.deadline = trio.current_time() + self.config.keep_alive_timeout
                tasks.spawn(self._keep_alive)
                await self.protocol.initiate()  # h2 sends its settings first
                with self._reading:
                    await self._read()
                if not self._gone:
                    with self._draining:
                        await self._drain()
                await self._end()

    async def _read(self) -> None:
        """Hand what the client sends to the protocol, until the client is gone or the
        protocol is done with the connection (which cancels this)."""
        read_timeout = self.config.read_timeout
        while True:
            try:
                if read_timeout:
                    with trio.fail_after(read_timeout):
                        data = await self.stream.receive_some(RECEIVE_SIZE)
                else:  # hypercorn's default, rst's: no scope that never fires, per read
                    data = await self.stream.receive_some(RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
                self._drop()
                return
            await self.protocol.handle(RawData(bytes(data)))  # b"": h11 learns of the end
            inner = self.protocol.protocol
            if isinstance(inner, H2Protocol) and inner.idle and not self._idle:
                # h11 called the connection busy when it saw the HTTP/2 preface as a request,
                # then handed over to h2, which says "idle" only when a stream ends.
                self._set_idle(True)
            if not data:
                # A client that half-closes is taken for gone, as in hypercorn (its request is
                # told ``http.disconnect``), unless its last answer is sent already.
                if not self._closing:
                    self._drop()
                return

    async def _drain(self) -> None:
        """Read and drop what the client still sends: while a response asked to be the last
        is being sent, then for at most :data:`LINGER` seconds after the end of file, until
        the client closes its end. Under TLS the TCP stream is read: bytes that are dropped
        need no decrypting, and the TLS stream may already be closed (``close_notify``)."""
        while True:
            try:
                data = await self.tcp.receive_some(RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._drop()
                return
            if not data:
                if not self._closing:
                    self._drop()
                return

    async def _end(self) -> None:
        """Close the socket, tell the request, if one is left, that its client is gone, and
        cancel whatever still runs for this connection: it can reach no one any more."""
        self._gone = True
        await trio.aclose_forcefully(self.tcp)  # under TLS too: its close_notify is sent, or moot
        with trio.move_on_after(DISCONNECT_GRACE):
            # ``http.disconnect`` for a request still running (and its access log line); it
            # waits only if the request's queue is full, and the request is cancelled anyway.
            await self.protocol.handle(Closed())
        self._everything.cancel()

    def _drop(self) -> None:
        """End the connection now: the client is gone, or is taken for gone (it stopped
        reading, or idled too long). Stop reading wherever the reader waits, even inside the
        protocol; :meth:`run` then ends the connection."""
        self._gone = True
        self._reading.cancel()
        self._draining.cancel()

    async def _stream_send(
        self, stream_send: Callable[[StreamEvent], Awaitable[None]], event: StreamEvent
    ) -> None:
        """hypercorn's HTTP/1.1 ``stream_send``, with the head of a response whose body is
        ready whole (a ``Content-Length``: rst's bodies of known size are bytes in hand, see
        :mod:`rst.http.request_scope`) held back to go out in one write with the body's
        first bytes — a small response is one socket send, not two."""
        if isinstance(event, Response) and event.status_code >= 200:
            self._hold_head = _known_length(event.headers)
        try:
            await stream_send(event)
        finally:
            self._hold_head = False

    async def _send(self, event: Event) -> None:
        """What the protocol asks of the connection: bytes to send, the end, idle or busy."""
        if isinstance(event, RawData):
            if self._hold_head:
                self._hold_head = False
                self._held_head = event.data
                return
            await self._write(event.data)
            return
        if self._held_head:
            await self._write(b"")  # a head held back goes out before anything else happens
        if isinstance(event, Closed):
            if self._response_in_flight():
                # A protocol error from the reader (bytes after a ``Connection: close``
                # request) while the request's response is being sent: read no more, and
                # close when that response has ended (hypercorn closed it halfway).
                self._reading.cancel()
            else:
                await self._close()
        elif isinstance(event, Updated):
            self._set_idle(event.idle)

    def _set_idle(self, idle: bool) -> None:
        # No checkpoint: this runs in a request's task that is being cancelled (see above).
        self._idle = idle
        if not idle:
            self._idle_timer.deadline = math.inf
        elif self.context.terminated.is_set():
            self._idle_timer.deadline = trio.current_time()  # shutting down: drop it now
        else:
            self._idle_timer.deadline = trio.current_time() + self.config.keep_alive_timeout

    def _response_in_flight(self) -> bool:
        inner = self.protocol.protocol
        return (
            isinstance(inner, H11Protocol)
            and inner.stream is not None
            and inner.connection.our_state is h11.SEND_BODY
        )

    async def _write(self, data: bytes) -> None:
        head, self._held_head = self._held_head, b""
        if not data and not head:
            # Nothing to send (h11's end of a body of known length): no lock, no checkpoint.
            return
        async with self._send_lock:
            if self._gone or self._eof_sent:
                return  # nothing can reach the client any more
            view = memoryview(data)
            pieces: list[bytes | memoryview] = [
                view[start : start + SEND_SLICE] for start in range(0, len(view), SEND_SLICE)
            ]
            if head:
                # The held head and the body's first slice in one send: copying those bytes
                # costs less than a send of the head's own.
                pieces[:1] = [head + pieces[0] if pieces else head]
            # Shielded as in hypercorn (a write cut halfway would garble the stream); the
            # send timeout and the closing of the socket still end it. One scope per write,
            # shielded and with the timeout as its own deadline (a shield stops only the
            # cancellations from outside), moved on after each slice (not one scope per
            # slice; measured neutral within noise at 16 retrieves at once).
            deadline = trio.current_time() + self.send_timeout
            with trio.CancelScope(shield=True, deadline=deadline) as stalled:
                for number, piece in enumerate(pieces, 1):
                    try:
                        await self.stream.send_all(piece)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        self._drop()
                        return
                    if number < len(pieces):
                        stalled.deadline = trio.current_time() + self.send_timeout
            if stalled.cancelled_caught:
                log.info(
                    "a client accepted no data for %g s (http.send_timeout): "
                    "closing its connection",
                    self.send_timeout,
                )
                self._drop()
                return

    async def _close(self) -> None:
        """Close once everything asked to be sent before is sent: end of file after the
        last byte, then linger (:meth:`_drain`)."""
        if self._closing:
            return
        self._closing = True
        self._reading.cancel()
        # Shielded: this runs in whichever task asked for the close, often a request's task
        # whose scope is being cancelled by the very end of its response; a close cut short
        # would leave the client waiting for an end of file. Bounded by the send in progress.
        with trio.CancelScope(shield=True):
            async with self._send_lock:
                if self._gone:
                    return
                try:
                    if isinstance(self.stream, trio.SSLStream):
                        # close_notify, then the TCP end of file (tls.TlsTransport.aclose)
                        await self.stream.aclose()
                    else:
                        await self.stream.send_eof()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self._drop()
                    return
                self._eof_sent = True
        self._draining.deadline = trio.current_time() + LINGER

    async def _keep_alive(self) -> None:
        """An idle connection, or one whose request head is not complete, is dropped after
        ``keep_alive_timeout`` seconds, or on shutdown once it is idle (hypercorn's HTTP/1.1
        closes a busy one at the end of its answer then). No answer is pending: there is
        nothing to linger for."""
        with self._idle_timer:
            await self.context.terminated.wait()
            if not self._idle:
                await trio.sleep_forever()  # until :meth:`_set_idle` sets the deadline
        self._drop()


async def _json_error_response(protocol: H11Protocol, status_code: int) -> None:
    """hypercorn's answer to a request it could not parse, with a JSON body like rst's own,
    sent in one write: another task asking for the close cannot come between its parts."""
    try:
        phrase = HTTPStatus(status_code).phrase
    except ValueError:
        phrase = "Error"
    if status_code == HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE:
        limit = protocol.config.h11_max_incomplete_size
        why = f"the request line and headers exceed {limit} bytes (http.max_header_bytes)"
    else:
        why = "the request is not valid HTTP/1.1"
    body = json.dumps({"error": f"{phrase}: {why}", "status": status_code}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *protocol.config.response_headers("h11"),
    ]
    answer = bytearray()
    for event in (
        h11.Response(status_code=status_code, headers=headers),
        h11.Data(data=body),
        h11.EndOfMessage(),
    ):
        try:
            answer += protocol.connection.send(event) or b""
        except h11.LocalProtocolError:
            # As hypercorn's _send_h11_event: what h11 refuses once the client broke the
            # protocol (a body after the head of an answer to HEAD) is left out.
            if protocol.connection.their_state is not h11.ERROR:
                raise
    await protocol.send(RawData(data=bytes(answer)))


def _known_length(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether a response head says its body has a length, and not zero: the body is then
    in hand and follows the head at once (see :meth:`Connection._stream_send`)."""
    for name, value in headers:
        if name.lower() == b"content-length":
            return value.strip() not in (b"0", b"")
    return False
