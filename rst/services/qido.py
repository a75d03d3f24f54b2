"""QIDO-RS and MWL-RS: a search, streamed out as DICOM JSON while the archive still answers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import trio
from pydicom import Dataset

from rst.dicom.query import QidoQuery, decoded_form, to_dicom_json
from rst.services.protocols import Backend

__all__ = [
    "CHUNK_BYTES",
    "MORE",
    "Rows",
    "SearchPlan",
    "json_array",
    "produce_matches",
    "retrieve_url_for",
]

MORE = object()
"""Sent after the last row when the archive had more matches than ``limit``."""
CHUNK_BYTES = 64 << 10
"""Bytes of JSON rows joined into one HTTP chunk when several are waiting: enough to pay one
gzip flush and one send for dozens of rows, small enough that memory stays flat."""

_encode = json.JSONEncoder(separators=(",", ":")).encode


@dataclass(frozen=True)
class SearchPlan:
    """How many rows to read before answering: all of a limited page (the Warning header needs
    to know whether more remain), or just the first one of an unlimited search."""

    prefetch: int

    @classmethod
    def of(cls, query: QidoQuery) -> SearchPlan:
        return cls(prefetch=query.limit + 1 if query.limit is not None else 1)


_UID_KEYS = {
    "StudyInstanceUID": "0020000D",
    "SeriesInstanceUID": "0020000E",
    "SOPInstanceUID": "00080018",
}


def _uid(row: Dataset, keyword: str) -> Any:
    """A UID of a match: from the JSON form decoded at arrival when it holds one value (asking
    pydicom would decode the element a second time), else as pydicom reads it."""
    encoded = decoded_form(row)
    if encoded is not None:
        values = encoded.get(_UID_KEYS[keyword], {}).get("Value")
        if values is not None and len(values) == 1:
            return values[0]
    return row.get(keyword)


def retrieve_url_for(base: str, row: Dataset, level: str) -> str | None:
    """The WADO-RS URL of a C-FIND match (``base`` ends with ``/aets/{aet}``)."""
    study = _uid(row, "StudyInstanceUID")
    if not study:
        return None
    url = f"{base}/studies/{study}"
    if level in ("SERIES", "IMAGE"):
        series = _uid(row, "SeriesInstanceUID")
        if not series:
            return None
        url += f"/series/{series}"
    if level == "IMAGE":
        sop = _uid(row, "SOPInstanceUID")
        if not sop:
            return None
        url += f"/instances/{sop}"
    return url


async def produce_matches(
    backend: Backend, query: QidoQuery, base: str, send: trio.MemorySendChannel[Any]
) -> None:
    """Send the page ``offset``/``limit`` of matches as JSON dicts, then :data:`MORE` if the
    archive had more. Leaving the search early makes the backend cancel it (C-CANCEL)."""
    skipped = sent = 0
    async with backend.search(query) as matches:
        async for identifier in matches:
            if skipped < query.offset:
                skipped += 1
                continue
            if query.limit is not None and sent >= query.limit:
                await send.send(MORE)
                return
            # A worklist item is an order, not a stored study: nothing to retrieve yet.
            url = (
                retrieve_url_for(base, identifier, query.level)
                if query.model == "study-root"
                else None
            )
            await send.send(to_dicom_json(query, identifier, url))
            sent += 1


class Rows(Protocol):
    """What :func:`json_array` reads: rows awaited one by one, and those already waiting taken
    without waiting (:class:`rst.http.streaming.Stream`)."""

    def __aiter__(self) -> AsyncIterator[Any]: ...

    def receive_nowait(self) -> Any:
        """A row already waiting; :class:`trio.WouldBlock` if none, :class:`trio.EndOfChannel`
        after the last."""
        ...


async def json_array(rows: Rows) -> AsyncIterator[bytes]:
    """Encode rows as one JSON array. Each chunk holds the row awaited and the rows already
    waiting behind it, up to :data:`CHUNK_BYTES`: one gzip flush and one send for all of them,
    while a row that arrives alone still goes out at once (nothing waits for company)."""
    parts = [b"["]
    size = 0
    separator = b""
    async for first in rows:
        row = first
        while True:
            if row is not MORE:
                data = _encode(row).encode()
                parts += (separator, data)
                separator = b","
                size += len(data)
            if size >= CHUNK_BYTES:
                break
            try:
                row = rows.receive_nowait()
            except trio.WouldBlock:
                break
            except trio.EndOfChannel:
                parts.append(b"]")
                yield b"".join(parts)
                return
        if size:
            yield b"".join(parts)
            parts.clear()
            size = 0
    parts.append(b"]")
    yield b"".join(parts)
