"""WADO-RS instance resources: instances from the archive into a multipart/related stream."""

from __future__ import annotations

import trio

from rst.bridge import run_sync
from rst.dicom.accept import RetrieveFormat
from rst.dicom.multipart import MultipartWriter
from rst.dicom.part10 import reencode
from rst.services.protocols import Backend, Instance, RetrieveKeys

__all__ = ["as_requested", "produce_parts"]

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
UNCOMPRESSED = {
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.2",
}


async def as_requested(instance: Instance, fmt: RetrieveFormat) -> tuple[bytes, str]:
    """The instance's bytes in the transfer syntax the client asked for, and that syntax.

    Re-encoding between uncompressed syntaxes is lossless and cheap; compressed data that the
    client wants uncompressed is decompressed (on a worker thread). Encoding *into* a
    compressed syntax is not done (NotAcceptable at negotiation)."""
    wanted = fmt.transfer_syntax
    if wanted is None or wanted == instance.transfer_syntax:
        return instance.data, instance.transfer_syntax
    data = await run_sync(lambda: reencode(instance.data, wanted))
    return data, wanted


async def produce_parts(
    backend: Backend,
    keys: RetrieveKeys,
    fmt: RetrieveFormat,
    writer: MultipartWriter,
    send: trio.MemorySendChannel[bytes],
) -> None:
    """Send each instance as a part: its header, then its bytes (no copy of the payload)."""
    async with backend.retrieve(keys, fmt.transfer_syntax) as instances:
        async for instance in instances:
            data, syntax = await as_requested(instance, fmt)
            await send.send(writer.part_head(f"application/dicom; transfer-syntax={syntax}"))
            await send.send(data)
