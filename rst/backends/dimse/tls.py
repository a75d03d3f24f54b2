"""DICOM TLS (PS3.15 §B.9, BCP 195 profile): rst as a TLS client of a PACS, and its C-STORE
receiver as a TLS server.

TLS sits between TCP and the DICOM upper layer and changes nothing above it: the association
code reads and writes a :class:`trio.abc.Stream` — a :class:`trio.SocketStream`, or the
:class:`TlsStream` made here — and reads through :func:`receive_into` (straight into the PDU
reader's buffer from a socket, through a copy from TLS). Both directions get the profile of
:mod:`rst.tls`.

- **Client** (``[[aets]] tls = true``): every association to that PACS — C-ECHO (health
  checks too), C-FIND, C-MOVE, C-GET, C-STORE — is TLS. The PACS's certificate must chain to
  ``tls_ca`` (the system's authorities when not set) and be valid for ``host`` (name or IP
  address); rst presents ``tls_cert`` when set. The handshake comes after the TCP connect, with
  a ``connect_timeout`` of its own. A handshake that fails is a 502 saying why (certificate
  not trusted, no suite in common…); the PACS's address goes to the log only, as for the TCP
  connect.
- **Receiver** (``[dimse] tls_cert``): the port speaks TLS only — one port, no plain DICOM
  beside it, so a misconfigured PACS fails loudly instead of sending in clear. With ``tls_ca``
  every caller must present a certificate signed by it (mutual TLS). A caller gets
  ``handshake_timeout`` for its TLS handshake, then again for its A-ASSOCIATE-RQ. A failed or
  stalled handshake is logged once with the peer, counted
  (``rst_receiver_refused_total{reason="tls"}``) and ends that connection
  only. Connections beyond ``max_connections`` are closed without a handshake (the
  A-ASSOCIATE-RJ that plain DICOM callers get there would need one).

The streams are ``https_compatible``: a peer that closes without a TLS ``close_notify`` is an
end of file, not an error, and rst closes its connections without sending one (nor waiting, in
a shielded cleanup, on a peer that does not read). The DICOM upper layer ends an association
itself (A-RELEASE, A-ABORT), so a truncated stream cannot pass for a complete one; and peers
(dcmtk among them) often close bluntly after the release.
"""

from __future__ import annotations

import functools
import logging
import ssl

import trio

from rst.config import AeConfig, Config, DimseConfig
from rst.errors import BackendTimeout, PacsUnreachable
from rst.tls import check_readable, harden, load_identity, load_trust

__all__ = [
    "TlsStream",
    "accept",
    "check",
    "client_context",
    "connect",
    "receive_into",
    "server_context",
]

log = logging.getLogger(__name__)


def client_context(ae: AeConfig) -> ssl.SSLContext | None:
    """The context for associations to *ae* (``None`` when ``tls`` is off). Built once per set
    of files: every association of a PACS shares it."""
    if not ae.tls:
        return None
    return _client_context(ae.aet, ae.tls_ca, ae.tls_cert, ae.tls_key)


@functools.lru_cache(maxsize=64)
def _client_context(aet: str, ca: str | None, cert: str | None, key: str | None) -> ssl.SSLContext:
    section = f"[[aets]] {aet}:"
    check_readable(section, {"tls_ca": ca, "tls_cert": cert, "tls_key": key})
    if ca is None:
        context = harden(ssl.create_default_context(ssl.Purpose.SERVER_AUTH))
    else:
        # only these authorities (a PACS's private CA), not the system's besides; verifying
        # the certificate and its host name is the default of this protocol
        context = harden(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
        load_trust(context, ca, f"{section} tls_ca = {ca!r}")
    if cert is not None:
        where = f"{section} tls_cert = {cert!r}" + (f", tls_key = {key!r}" if key else "")
        load_identity(context, cert, key, where)
    return context


def server_context(dimse: DimseConfig) -> ssl.SSLContext | None:
    """The receiver's context (``None`` when ``tls_cert`` is not set: plain DICOM)."""
    if dimse.tls_cert is None:
        return None
    check_readable(
        "[dimse]", {"tls_cert": dimse.tls_cert, "tls_key": dimse.tls_key, "tls_ca": dimse.tls_ca}
    )
    context = harden(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))
    where = f"[dimse] tls_cert = {dimse.tls_cert!r}"
    if dimse.tls_key is not None:
        where += f", tls_key = {dimse.tls_key!r}"
    load_identity(context, dimse.tls_cert, dimse.tls_key, where)
    if dimse.tls_ca is not None:
        load_trust(context, dimse.tls_ca, f"[dimse] tls_ca = {dimse.tls_ca!r}")
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def check(config: Config) -> None:
    """Build every DICOM TLS context of *config* once: a bad file is a
    :class:`~rst.config.ConfigError` at start-up (and from ``rst check-config``)."""
    server_context(config.dimse)
    for ae in config.aets:
        if isinstance(ae, AeConfig):
            client_context(ae)


async def connect(stream: trio.SocketStream, ae: AeConfig) -> trio.abc.Stream:
    """*stream* (connected to *ae*) as the association should use it: unchanged when ``tls``
    is off, else wrapped in TLS once the handshake succeeded within ``connect_timeout``.

    Raises :class:`~rst.errors.PacsUnreachable` (502) when the handshake fails and
    :class:`~rst.errors.BackendTimeout` (504) when it does not end in time, closing *stream*;
    the message names the PACS's AE title, the log its address too."""
    context = client_context(ae)
    if context is None:
        return stream
    tls = trio.SSLStream(stream, context, server_hostname=ae.host, https_compatible=True)
    try:
        await _handshake(tls, ae)
    except BaseException:  # cancelled too: the socket is ours until the handshake is done
        await trio.aclose_forcefully(stream)
        raise
    return TlsStream(tls)


async def _handshake(tls: trio.SSLStream[trio.SocketStream], ae: AeConfig) -> None:
    with trio.move_on_after(ae.connect_timeout) as waiting:
        try:
            await tls.do_handshake()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
            reason = _reason(error)
            log.warning(
                "the TLS handshake with the PACS %s at %s:%s failed: %s",
                ae.aet,
                ae.host,
                ae.port,
                reason,
            )
            raise PacsUnreachable(
                f"the TLS handshake with the PACS {ae.aet} failed: {reason} "
                "(the log has its address)"
            ) from None
    if waiting.cancelled_caught:
        log.warning(
            "the PACS %s at %s:%s did not complete its TLS handshake within %g s",
            ae.aet,
            ae.host,
            ae.port,
            ae.connect_timeout,
        )
        raise BackendTimeout(
            f"the PACS {ae.aet} did not complete the TLS handshake within "
            f"{ae.connect_timeout:g} s (connect_timeout)"
        )


async def accept(
    stream: trio.SocketStream, context: ssl.SSLContext, handshake_timeout: float, peer: str
) -> TlsStream | None:
    """The TLS stream of a connection to the receiver once its handshake is done within
    *handshake_timeout* seconds, or ``None`` (logged once, with *peer*): the caller hung up,
    does not speak TLS, presented no certificate or one rst does not trust, or stalled. The
    caller of this function closes *stream* either way; nothing is raised but
    :class:`trio.Cancelled`."""
    tls = trio.SSLStream(stream, context, server_side=True, https_compatible=True)
    with trio.move_on_after(handshake_timeout):
        try:
            await tls.do_handshake()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
            log.warning(
                "refused the DICOM connection from %s: its TLS handshake failed (%s)",
                peer,
                _reason(error),
            )
            return None
        return TlsStream(tls)
    log.warning(
        "refused the DICOM connection from %s: no TLS handshake within %g s "
        "(dimse.handshake_timeout)",
        peer,
        handshake_timeout,
    )
    return None


class TlsStream(trio.abc.Stream):
    """An established TLS stream whose breakage says it was TLS, and what that can mean.

    Under TLS 1.3 a server checks the client's certificate after the client's side of the
    handshake is over: a PACS that wants rst's certificate, or does not trust it, breaks the
    connection at rst's first write or read (the A-ASSOCIATE-RQ), which would otherwise read
    as a bare "connection reset by peer"."""

    def __init__(self, tls: trio.SSLStream[trio.SocketStream]) -> None:
        self.tls = tls

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            await self.tls.send_all(data)
        except trio.BrokenResourceError as error:
            raise _broken(error) from error

    async def wait_send_all_might_not_block(self) -> None:
        await self.tls.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        try:
            return await self.tls.receive_some(max_bytes)
        except trio.BrokenResourceError as error:
            raise _broken(error) from error

    async def aclose(self) -> None:
        await self.tls.aclose()


def _broken(error: trio.BrokenResourceError) -> trio.BrokenResourceError:
    return trio.BrokenResourceError(
        f"the TLS connection broke ({_reason(error)}; a TLS 1.3 peer that wants a certificate, "
        "or does not trust the one it was shown, ends the connection so)"
    )


async def receive_into(stream: trio.abc.Stream, buffer: memoryview) -> int:
    """Read what has arrived (at least one byte, at most ``len(buffer)``) into *buffer*; 0 at
    end of file. A plain socket reads straight into it; TLS decrypts into a copy first."""
    if isinstance(stream, trio.SocketStream):
        return await stream.socket.recv_into(buffer)
    data = await stream.receive_some(len(buffer))
    buffer[: len(data)] = data
    return len(data)


def _reason(error: BaseException) -> str:
    """What went wrong in a handshake, in words a person acts on."""
    cause = error.__cause__
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"certificate not accepted: {cause.verify_message}"
    if isinstance(cause, ssl.SSLError):
        return (cause.reason or str(cause)).replace("_", " ").lower()
    if cause is None:
        return str(error) or "the peer closed the connection"
    return str(cause) or type(cause).__name__
