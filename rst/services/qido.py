"""QIDO-RS and MWL-RS: a search, streamed out as DICOM JSON while the archive still answers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import trio

from rst.dicom.query import QidoQuery, to_dicom_json
from rst.services.protocols import Backend

__all__ = ["MORE", "SearchPlan", "json_array", "produce_matches", "retrieve_url_for"]

MORE = object()
"""Sent after the last row when the archive had more matches than ``limit``."""


@dataclass(frozen=True)
class SearchPlan:
    """How many rows to read before answering: all of a limited page (the Warning header needs
    to know whether more remain), or just the first one of an unlimited search."""

    prefetch: int

    @classmethod
    def of(cls, query: QidoQuery) -> SearchPlan:
        return cls(prefetch=query.limit + 1 if query.limit is not None else 1)


def retrieve_url_for(base: str, row: Any, level: str) -> str | None:
    """The WADO-RS URL of a C-FIND match (``base`` ends with ``/aets/{aet}``)."""
    study = row.get("StudyInstanceUID")
    if not study:
        return None
    url = f"{base}/studies/{study}"
    if level in ("SERIES", "IMAGE"):
        series = row.get("SeriesInstanceUID")
        if not series:
            return None
        url += f"/series/{series}"
    if level == "IMAGE":
        sop = row.get("SOPInstanceUID")
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


async def json_array(rows: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    """Encode rows as one JSON array, chunk by chunk."""
    first = True
    yield b"["
    async for row in rows:
        if row is MORE:
            continue
        yield (b"" if first else b",") + json.dumps(row, separators=(",", ":")).encode()
        first = False
    yield b"]"
