"""Rebuild the QIDO-RS index of an S3 archive from the objects in its bucket (``rst index AE``)."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

import trio
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from rst.backends.s3 import layout
from rst.backends.s3.index import Index
from rst.errors import RstError
from rst.groups import collapse

__all__ = ["ObjectSource", "RebuildReport", "header_of", "rebuild"]

log = logging.getLogger(__name__)


class ObjectSource(Protocol):
    """What a rebuild needs of :class:`rst.backends.s3.client.S3Client`."""

    def list_keys(self, prefix: str) -> AsyncIterator[str]: ...

    async def get(self, key: str) -> bytes: ...


@dataclass
class RebuildReport:
    """What a rebuild did: objects indexed, skipped (not DICOM, or without UIDs), failed (the
    object could not be read)."""

    indexed: int = 0
    skipped: int = 0
    failed: int = 0


def header_of(data: bytes) -> Dataset | None:
    """The header (attributes before Pixel Data) of a Part 10 object, or None if not DICOM."""
    try:
        return dcmread(io.BytesIO(data), stop_before_pixels=True)
    except (InvalidDicomError, ValueError, EOFError, TypeError, KeyError, AttributeError):
        return None


async def rebuild(
    source: ObjectSource,
    index: Index,
    prefix: str,
    *,
    concurrency: int = 16,
    on_total: Callable[[int], None] = lambda total: None,
    on_done: Callable[[], None] = lambda: None,
) -> RebuildReport:
    """Empty ``index`` and index every object under ``prefix``, ``concurrency`` at a time.

    ``on_total`` is told how many objects were listed, ``on_done`` called after each object
    (for a progress bar). Objects are read whole (:class:`S3Client` has no ranged GET yet).
    A listing failure raises (:class:`rst.errors.StorageError`); a failed object is counted.
    Cancelling stops the workers; the index then holds part of the bucket.
    """
    keys = [
        key async for key in source.list_keys(prefix) if layout.parse_key(prefix, key) is not None
    ]
    on_total(len(keys))
    await index.clear()
    report = RebuildReport()
    send, receive = trio.open_memory_channel[str](0)

    async def worker(receive: trio.MemoryReceiveChannel[str]) -> None:
        async with receive:
            async for key in receive:
                await _one(source, index, key, report)
                on_done()

    with collapse():
        async with trio.open_nursery() as nursery:
            async with receive:
                for _ in range(max(1, concurrency)):
                    nursery.start_soon(worker, receive.clone())
            async with send:
                for key in keys:
                    await send.send(key)
    return report


async def _one(source: ObjectSource, index: Index, key: str, report: RebuildReport) -> None:
    try:
        data = await source.get(key)
    except RstError as exc:
        log.warning("cannot read %s: %s", key, exc.message)
        report.failed += 1
        return
    header = header_of(data)
    if header is None:
        log.info("skipping %s: not a DICOM Part 10 object", key)
        report.skipped += 1
        return
    try:
        await index.add(key, header)
    except ValueError as exc:
        log.info("skipping %s: %s", key, exc)
        report.skipped += 1
        return
    report.indexed += 1
