"""The WADO-RS metadata and bulk data routes, under ``/aets/{aet}/studies/{study}``:

* ``…/metadata`` at study, series and instance level: a DICOM JSON array, one object per
  instance, streamed as the instances arrive;
* ``…/bulkdata`` and ``…/pixeldata`` at study, series and instance level: every bulk value, or
  the pixel data, of each instance as a ``multipart/related`` body;
* ``…/instances/{instance}/bulkdata/{tag path}``: one value, the BulkDataURIs of the metadata
  (the URI scheme is described in :mod:`rst.services.bulkdata`).

Each request is checked — archive, UIDs, tag path, Accept — before anything reaches the
archive; the status is decided by the first instance (an error after it breaks the body off).
"""

from __future__ import annotations

from functools import partial

import trio
from quart import Blueprint, Response, request

from rst.dicom.accept import negotiate_bulkdata, negotiate_json
from rst.errors import NotAcceptable
from rst.http.byte_channel import ByteSendChannel
from rst.http.context import RouteContext
from rst.http.multipart_body import PartSender, one_part, start_multipart
from rst.http.request_scope import request_nursery
from rst.http.streaming import start_body, start_stream
from rst.services.bulkdata import BulkPart, Selection, TagPath, produce_bulkdata
from rst.services.metadata import produce_metadata

__all__ = ["METADATA_CHUNK", "METADATA_ITEMS", "METADATA_LINGER", "register"]

METADATA_CHUNK = 64 << 10
"""Bytes of a metadata response's JSON objects gathered into one HTTP chunk..."""
METADATA_LINGER = 0.025
"""...or the seconds a chunk may wait for more after its first byte. A viewer parses the array
only once it has all of it, while each chunk costs gzip a flush and quart, hypercorn and h11 a
round of Python: a cold series' instances arrive a few milliseconds apart, each object a few
kilobytes, and would otherwise go out one chunk each."""
METADATA_ITEMS = 64
"""JSON objects a metadata producer may be ahead of the client (enough for a chunk of them)."""

_LEVELS = (
    "studies/<study>",
    "studies/<study>/series/<series>",
    "studies/<study>/series/<series>/instances/<sop>",
)


def register(bp: Blueprint, ctx: RouteContext) -> None:
    async def metadata(
        aet: str, study: str, series: str | None = None, sop: str | None = None
    ) -> Response:
        backend = ctx.backend_for(aet)
        keys = ctx.path_keys(study, series, sop)
        media_type = negotiate_json(request.headers.get("Accept"), ctx.accept_param())
        base = ctx.base_url(aet)

        async def produce(channel: ByteSendChannel) -> None:
            await produce_metadata(backend, keys, base, channel.send)

        body = await start_body(
            request_nursery(request),
            produce,
            items=METADATA_ITEMS,
            chunk=METADATA_CHUNK,
            linger=METADATA_LINGER,
        )
        response = Response(body, content_type=media_type)
        response.timeout = None
        return response

    async def bulkdata(
        aet: str,
        study: str,
        series: str | None = None,
        sop: str | None = None,
        tags: str | None = None,
        selection: Selection = "bulkdata",
    ) -> Response:
        backend = ctx.backend_for(aet)
        keys = ctx.path_keys(study, series, sop)
        chosen: Selection | TagPath = selection if tags is None else TagPath.parse(tags)
        fmt = negotiate_bulkdata(request.headers.get("Accept"), ctx.accept_param())
        base = ctx.base_url(aet)

        if not fmt.multipart:  # one value alone, if there is exactly one

            async def produce_one(channel: trio.MemorySendChannel[BulkPart]) -> None:
                await produce_bulkdata(backend, keys, chosen, fmt, base, channel.send)

            nursery = request_nursery(request)
            found = (await start_stream(nursery, produce_one, prefetch=2)).prefetched
            if len(found) > 1:
                raise NotAcceptable(
                    "this resource has several values (or frames); a single-part answer "
                    'holds one: accept multipart/related; type="application/octet-stream"'
                )
            [part] = found
            return one_part(part.data, part.content_type, part.location)

        first_type: list[str] = []

        async def produce(parts: PartSender) -> None:
            async def send(part: BulkPart) -> None:
                if not first_type:
                    first_type.append(part.content_type.partition(";")[0])
                await parts.part(part.content_type, part.data, location=part.location)

            await produce_bulkdata(backend, keys, chosen, fmt, base, send)

        body = await start_multipart(request_nursery(request), produce)
        return body.response(first_type[0])

    for level in _LEVELS:
        bp.add_url_rule(
            f"/aets/<aet>/{level}/metadata", f"metadata:{level}", metadata, methods=["GET"]
        )
        for name in ("bulkdata", "pixeldata"):
            bp.add_url_rule(
                f"/aets/<aet>/{level}/{name}",
                f"{name}:{level}",
                partial(bulkdata, selection=name),
                methods=["GET"],
            )
    bp.add_url_rule(
        f"/aets/<aet>/{_LEVELS[-1]}/bulkdata/<path:tags>",
        "bulkdata:value",
        bulkdata,
        methods=["GET"],
    )
