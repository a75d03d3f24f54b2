"""Response bodies made of parts: one part alone, or a streamed ``multipart/related`` body.

The one place that frames a response: it owns each body's :class:`MultipartWriter` (the
random boundary), writes every part head and the close delimiter — the delimiter only once the
producer has finished, never after a failure, so a broken-off body never looks complete — and
gives the body's ``Content-Type``. Producers (``services/wado.py``, ``services/rendered.py``,
the bulk data route) hand it parts through :class:`PartSender`; the bytes of the framing
themselves come from the sans-IO writer in :mod:`rst.dicom.multipart`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import trio
from quart import Response

from rst.dicom.multipart import MultipartWriter
from rst.http.byte_channel import ByteSendChannel
from rst.http.streaming import ITEMS_AHEAD, Body, start_body

__all__ = [
    "JOIN_BELOW",
    "MultipartBody",
    "PartSender",
    "one_part",
    "ready_multipart",
    "start_multipart",
]

JOIN_BELOW = 16 << 20
"""Part data up to this size goes out in one HTTP chunk with its head (each chunk costs quart,
hypercorn and h11 more than copying a few hundred kilobytes); larger data is not worth
copying: the head and the data are two items. A body that is ready whole up to this size goes
out as one, with a Content-Length (a viewer asks for one frame at a time: one write)."""


class PartSender:
    """Sends parts into a streamed body: a head and its data, then perhaps more data."""

    def __init__(
        self, writer: MultipartWriter, send: Callable[[tuple[bytes, ...]], Awaitable[None]]
    ) -> None:
        self._writer = writer
        self._send = send

    async def part(self, content_type: str, data: bytes, *, location: str | None = None) -> None:
        """Start a part of *content_type* (its ``Content-Location``: *location*) with *data*."""
        head = self._writer.part_head(
            content_type, None if location is None else {"Content-Location": location}
        )
        if len(data) <= JOIN_BELOW:
            await self._send((head, data))
        else:
            await self._send((head,))
            await self._send((data,))

    async def more(self, data: bytes) -> None:
        """More data of the current part (an instance still arriving, fragment by fragment)."""
        await self._send((data,))


@dataclass(frozen=True)
class MultipartBody:
    """A started ``multipart/related`` body and the writer that frames it."""

    body: Body
    writer: MultipartWriter

    def content_type(self, part_type: str, transfer_syntax: str | None = None) -> str:
        return self.writer.content_type(part_type, transfer_syntax)

    def response(self, part_type: str, transfer_syntax: str | None = None) -> Response:
        """The streamed response: no timeout (a study takes as long as it takes)."""
        response = Response(self.body, content_type=self.content_type(part_type, transfer_syntax))
        response.timeout = None
        return response


async def start_multipart(
    nursery: trio.Nursery,
    produce: Callable[[PartSender], Awaitable[None]],
    *,
    items: int = ITEMS_AHEAD,
) -> MultipartBody:
    """Start ``produce(parts)`` in *nursery* (see :func:`~rst.http.streaming.start_body`);
    the body ends with the close delimiter once it has returned.

    Raises the producer's error if it fails before its first part."""
    writer = MultipartWriter()

    async def run(channel: ByteSendChannel) -> None:
        await produce(PartSender(writer, channel.send))

    body = await start_body(nursery, run, items=items, tail=writer.close)
    return MultipartBody(body, writer)


def one_part(data: bytes, content_type: str, location: str | None = None) -> Response:
    """A single-part answer: the part's data as the body, its headers as the response's."""
    response = Response(data, content_type=content_type)
    if location is not None:
        response.headers["Content-Location"] = location
    return response


def ready_multipart(
    pieces: Callable[[MultipartWriter], Iterator[bytes]],
    size: int,
    part_type: str,
    transfer_syntax: str | None = None,
) -> Response:
    """A ``multipart/related`` answer that is ready before the response starts (frames):
    ``pieces(writer)`` gives its bytes, close delimiter included; *size* is its data's size.
    Joined into one body up to :data:`JOIN_BELOW`, else sent piece by piece."""
    writer = MultipartWriter()
    content_type = writer.content_type(part_type, transfer_syntax)
    if size <= JOIN_BELOW:
        return Response(b"".join(pieces(writer)), content_type=content_type)
    response = Response(_each(pieces(writer)), content_type=content_type)
    response.timeout = None
    return response


async def _each(pieces: Iterator[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece
