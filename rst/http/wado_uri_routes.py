"""The WADO-URI route (PS3.18 chapter 9): ``GET /aets/{aet}/wado?requestType=WADO&…``.

One instance named by ``studyUID``, ``seriesUID`` and ``objectUID``: as a Part 10 file
(``contentType=application/dicom``; OHIF's ``wadouri`` image loader, Weasis, links in RIS
reports) or as a JPEG, PNG or GIF image. The request is checked whole
(:func:`~rst.dicom.wado_uri.parse_wado_uri`) before anything reaches the archive. The file is a
single-part body streamed as the archive delivers it; its status is decided when the instance
has arrived (an error after that breaks the body off). An image is answered once rendered.
"""

from __future__ import annotations

from quart import Blueprint, Response, request

from rst.dicom.wado_uri import DICOM, RenderedRequest, parse_wado_uri
from rst.http.byte_channel import ByteSendChannel
from rst.http.context import RouteContext
from rst.http.request_scope import request_nursery
from rst.http.streaming import start_body
from rst.services.protocols import RetrieveKeys
from rst.services.wado_uri import produce_instance, render_instance

__all__ = ["register"]


def register(bp: Blueprint, ctx: RouteContext) -> None:
    async def wado(aet: str) -> Response:
        backend = ctx.backend_for(aet)
        wanted = parse_wado_uri(list(request.args.items(multi=True)), request.headers.get("Accept"))
        keys = RetrieveKeys(wanted.study_uid, wanted.series_uid, wanted.sop_uid)
        if isinstance(wanted, RenderedRequest):
            image = await render_instance(backend, keys, wanted)
            return Response(image, content_type=wanted.media_type)

        syntax = wanted.transfer_syntax

        async def produce(channel: ByteSendChannel) -> None:
            await produce_instance(backend, keys, syntax, channel.send)

        body = await start_body(request_nursery(request), produce)
        response = Response(body, content_type=DICOM)
        response.timeout = None
        return response

    bp.add_url_rule("/aets/<aet>/wado", "wado-uri", wado, methods=["GET"])
