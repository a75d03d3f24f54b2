"""WADO-RS instance resources: instances from the archive into a multipart/related stream."""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from rst.bridge import run_sync
from rst.dicom.accept import RetrieveFormat
from rst.dicom.part10 import reencode
from rst.services.protocols import Backend, Instance, RetrieveKeys

__all__ = ["PartSink", "as_requested", "produce_parts", "whole"]


class PartSink(Protocol):
    """Where a producer sends the parts of a ``multipart/related`` body; the framing (part
    heads, boundary, close delimiter) is the sink's (``rst/http/multipart_body.py``)."""

    async def part(
        self, content_type: str, data: bytes, *, location: str | None = None
    ) -> None: ...

    async def more(self, data: bytes) -> None:
        """More data of the part started last."""


async def whole(instance: Instance) -> Instance:
    """*instance* with all its bytes in ``data`` (waiting for the rest if it is still arriving)."""
    if instance.rest is None:
        return instance
    chunks = [instance.data]
    async for chunk in instance.rest:
        chunks.append(chunk)
    return replace(instance, data=b"".join(chunks), rest=None)


async def as_requested(instance: Instance, fmt: RetrieveFormat) -> Instance:
    """The instance in the transfer syntax the client asked for.

    Sent as it came (an instance still arriving stays so), or re-encoded on a worker thread,
    one instance at a time: between uncompressed syntaxes that is lossless and cheap; compressed
    data that the client wants uncompressed is decompressed; data the client wants in another
    compressed syntax is decompressed if need be and encoded into it (lossless targets only,
    see :func:`~rst.dicom.part10.encodable_syntaxes`; others are refused at negotiation).

    :raises NotAcceptable: this instance's pixel data cannot be decoded, or encoded in the
        requested syntax (1-bit or float pixels, say)."""
    wanted = fmt.transfer_syntax
    if wanted is None or wanted == instance.transfer_syntax:
        return instance
    data = (await whole(instance)).data
    reencoded = await run_sync(lambda: reencode(data, wanted))
    return replace(instance, data=reencoded, transfer_syntax=wanted, rest=None)


async def produce_parts(
    backend: Backend, keys: RetrieveKeys, fmt: RetrieveFormat, parts: PartSink
) -> None:
    """Send each instance as a part — an instance still arriving fragment by fragment, as the
    fragments arrive."""
    async with backend.retrieve(keys, fmt.transfer_syntax) as instances:
        async for received in instances:
            instance = await as_requested(received, fmt)
            syntax = instance.transfer_syntax
            await parts.part(f"application/dicom; transfer-syntax={syntax}", instance.data)
            if instance.rest is not None:
                async for chunk in instance.rest:
                    await parts.more(chunk)
