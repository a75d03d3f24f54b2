"""The WADO-RS rendered and thumbnail routes (PS3.18 §10.4.1.1.3, §10.4.1.1.4).

``…/rendered`` at study, series, instance and frames level; ``…/thumbnail`` at the same four.
Every request is checked whole — archive, UIDs, frame list, Accept, rendering parameters —
before anything reaches the archive. One image is answered as itself; ``multipart/related;
type="image/…"`` (asked for explicitly) is streamed a part per image as the archive sends.
"""

from __future__ import annotations

from quart import Blueprint, Response, request

from rst.dicom.frames import parse_frame_list
from rst.dicom.render_params import GIF, negotiate_rendered, parse_rendering
from rst.errors import NotAcceptable
from rst.http.context import RouteContext
from rst.http.multipart_body import PartSender, start_multipart
from rst.http.request_scope import request_nursery
from rst.services.protocols import Backend, RetrieveKeys
from rst.services.rendered import THUMBNAIL_VIEWPORT, produce_rendered_parts, render_one

__all__ = ["register"]

PARTS_AHEAD = 2
"""Rendered images the producer may be ahead of the client (each is small: one frame)."""

_LEVELS = (
    "studies/<study>",
    "studies/<study>/series/<series>",
    "studies/<study>/series/<series>/instances/<sop>",
    "studies/<study>/series/<series>/instances/<sop>/frames/<frames>",
)


def register(bp: Blueprint, ctx: RouteContext) -> None:
    def target(
        aet: str, study: str, series: str | None, sop: str | None, frames: str | None
    ) -> tuple[Backend, RetrieveKeys, tuple[int, ...] | None]:
        """The archive, the instance keys and the frame numbers a URL names, each checked."""
        numbers = None if frames is None else parse_frame_list(frames)
        return ctx.backend_for(aet), ctx.path_keys(study, series, sop), numbers

    async def rendered(
        aet: str,
        study: str,
        series: str | None = None,
        sop: str | None = None,
        frames: str | None = None,
    ) -> Response:
        backend, keys, numbers = target(aet, study, series, sop, frames)
        fmt = negotiate_rendered(request.headers.get("Accept"), ctx.accept_param())
        rendering = parse_rendering(list(request.args.items(multi=True)), fmt.media_type)
        if not fmt.multipart:
            if numbers is not None and len(numbers) > 1 and fmt.media_type != GIF:
                raise NotAcceptable(
                    f"frames {frames} are {len(numbers)} images: ask for "
                    f'multipart/related; type="{fmt.media_type}" (one part per frame) or '
                    f"{GIF} (an animation)"
                )
            image = await render_one(backend, keys, numbers, rendering)
            return Response(image, content_type=fmt.media_type)

        base = ctx.base_url(aet)

        async def produce(parts: PartSender) -> None:
            await produce_rendered_parts(backend, keys, numbers, rendering, base, parts)

        body = await start_multipart(request_nursery(request), produce, items=PARTS_AHEAD)
        return body.response(fmt.media_type)

    async def thumbnail(
        aet: str,
        study: str,
        series: str | None = None,
        sop: str | None = None,
        frames: str | None = None,
    ) -> Response:
        backend, keys, numbers = target(aet, study, series, sop, frames)
        fmt = negotiate_rendered(request.headers.get("Accept"), ctx.accept_param(), multipart=False)
        rendering = parse_rendering(
            list(request.args.items(multi=True)),
            fmt.media_type,
            default_viewport=THUMBNAIL_VIEWPORT,
        )
        image = await render_one(backend, keys, numbers, rendering, thumbnail=True)
        return Response(image, content_type=fmt.media_type)

    for level in _LEVELS:
        bp.add_url_rule(
            f"/aets/<aet>/{level}/rendered", f"rendered:{level}", rendered, methods=["GET"]
        )
        bp.add_url_rule(
            f"/aets/<aet>/{level}/thumbnail", f"thumbnail:{level}", thumbnail, methods=["GET"]
        )
