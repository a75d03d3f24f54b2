"""TLS for the HTTP listener: the server's SSL context, built once at start-up from ``[http]``.

The certificate and key are read here, once (a worker process reads them when it starts): a
missing or unreadable file, a file that holds no PEM certificate or key, a key that does not
match its certificate or an encrypted key is a :class:`~rst.config.ConfigError` naming the
key and the file, raised before rst serves anything (and by ``rst check-config``).

The context is Python's server default (``ssl.create_default_context(Purpose.CLIENT_AUTH)``)
with the BCP 195 profile every TLS context of rst has (:mod:`rst.tls`: TLS 1.2 at least, which
HTTP/2 requires too, RFC 9113 §9.2; forward-secret AEAD suites; no compression, no
renegotiation), and ALPN offering ``h2`` then ``http/1.1`` — the connection shell picks
hypercorn's protocol from what the client chose. With ``client_ca``, a client must present a
certificate signed by one of those authorities (mutual TLS) or its handshake fails.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import ssl

import trio

from rst.config import HttpConfig
from rst.tls import check_readable, harden, load_identity, load_trust

__all__ = ["ALPN_PROTOCOLS", "TlsTransport", "accept", "server_context"]

log = logging.getLogger(__name__)

ALPN_PROTOCOLS = ("h2", "http/1.1")
"""Offered in this order: a client that speaks HTTP/2 gets it."""


def server_context(http: HttpConfig) -> ssl.SSLContext | None:
    """The SSL context for ``[http]``, or ``None`` when ``certfile`` is not set (plain HTTP)."""
    if http.certfile is None:
        return None
    check_readable(
        "[http]",
        {"certfile": http.certfile, "keyfile": http.keyfile, "client_ca": http.client_ca},
    )
    context = harden(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))
    context.set_alpn_protocols(list(ALPN_PROTOCOLS))
    where = f"[http] certfile = {http.certfile!r}"
    if http.keyfile is not None:
        where += f", keyfile = {http.keyfile!r}"
    load_identity(context, http.certfile, http.keyfile, where)
    if http.client_ca is not None:
        load_trust(context, http.client_ca, f"[http] client_ca = {http.client_ca!r}")
        context.verify_mode = ssl.CERT_REQUIRED
    return context


_HANDSHAKE_RECORD = 0x16
"""The first byte of every TLS connection (a handshake record carrying the ClientHello)."""
_HTTP_REQUEST = re.compile(rb"[A-Z]{3,10} ")
_PLAIN_HTTP_ANSWER_LINGER = 2.0
"""Seconds the plain HTTP client gets to read its 400 before its connection is closed."""


def _plain_http_answer() -> bytes:
    body = json.dumps(
        {"error": "Bad Request: this port speaks HTTPS (TLS); use an https:// URL", "status": 400}
    ).encode()
    head = (
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class TlsTransport(trio.abc.Stream):
    """The TCP stream under an :class:`trio.SSLStream`, as the connection shell needs it.

    - It gives back first the bytes read before the handshake (to tell TLS from plain HTTP).
    - Its :meth:`aclose` only ends rst's direction (TCP end of file): :class:`trio.SSLStream`
      closes its transport right after its ``close_notify``, and closing a socket with unread
      bytes resets the connection, which can destroy the end of the answer. The shell then
      lingers on :attr:`stream` and closes it (``rst.http.connection``)."""

    def __init__(self, stream: trio.SocketStream, first: bytes = b"") -> None:
        self.stream = stream
        self._first = first

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._first:
            first, self._first = self._first, b""
            await trio.lowlevel.checkpoint()
            return first
        return bytes(await self.stream.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.stream.send_eof()


async def accept(
    stream: trio.SocketStream, context: ssl.SSLContext, handshake_timeout: float, peer: str
) -> trio.SSLStream[TlsTransport] | None:
    """The TLS stream of a new connection once its handshake is done, or ``None`` if it failed:
    the client hung up, is not speaking TLS (a plain HTTP request gets a 400 saying so), failed
    the handshake (no protocol version or cipher in common, no client certificate or one rst
    does not trust) or did not finish it within *handshake_timeout* seconds. Each is the
    client's affair: logged here at INFO (DEBUG for a client that left without a byte) rather
    than raised, and the caller closes the socket."""
    with trio.move_on_after(handshake_timeout):
        try:
            first = bytes(await stream.receive_some(64 * 1024))
            if not first:
                log.debug("a client of the HTTPS port (%s) closed before its handshake", peer)
                return None
            if first[0] != _HANDSHAKE_RECORD:
                await _refuse_not_tls(stream, first, peer)
                return None
            tls = trio.SSLStream(TlsTransport(stream, first), context, server_side=True)
            await tls.do_handshake()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
            cause = error.__cause__
            reason = (
                (cause.reason or str(cause)) if isinstance(cause, ssl.SSLError) else repr(cause)
            )
            log.info("the TLS handshake with %s failed (%s): closed its connection", peer, reason)
            return None
        return tls
    log.info(
        "%s did not complete its TLS handshake within %g s (http.tls_handshake_timeout): "
        "closed its connection",
        peer,
        handshake_timeout,
    )
    return None


async def _refuse_not_tls(stream: trio.SocketStream, first: bytes, peer: str) -> None:
    if _HTTP_REQUEST.match(first) is None:
        log.info("%s sent bytes that are not TLS to the HTTPS port: closed its connection", peer)
        return
    log.info("%s sent a plain HTTP request to the HTTPS port: answered 400", peer)
    with (
        trio.move_on_after(_PLAIN_HTTP_ANSWER_LINGER),
        contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
    ):
        await stream.send_all(_plain_http_answer())
        await stream.send_eof()
        while await stream.receive_some(64 * 1024):
            pass  # what it still sends, until it closes (see TlsTransport)
