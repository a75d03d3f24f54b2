"""A client that asks for a response and then reads it slowly, or not at all: a 4 KiB receive
buffer and a raw h11 connection, so that rst's backpressure and spooling show."""

from __future__ import annotations

import socket

import h11
import trio

__all__ = ["slow_request"]


async def slow_request(
    http_url: str, target: str, accept: str = "multipart/related; type=application/dicom"
) -> tuple[trio.SocketStream, h11.Connection]:
    """Send ``GET target`` to rst at *http_url* from a socket with a small receive buffer; the
    caller reads the response (or does not) through the returned stream and h11 client."""
    host, port = http_url.removeprefix("http://").split(":")
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a slow, small client
    await sock.connect((host, int(port)))
    stream = trio.SocketStream(sock)
    client = h11.Connection(h11.CLIENT)
    request = h11.Request(method="GET", target=target, headers=[("Host", host), ("Accept", accept)])
    await stream.send_all(client.send(request) + client.send(h11.EndOfMessage()))
    return stream, client
