"""The WADO-RS frames route: ``/aets/{aet}/studies/{s}/series/{se}/instances/{i}/frames/{list}``.

The request is checked whole — archive, UIDs, frame list, Accept — before anything reaches the
archive; the answer is ready (every frame cut, decoded or encoded) before the response starts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from quart import Blueprint, Response, request

from rst.dicom.accept import negotiate_frames
from rst.dicom.frames import parse_frame_list
from rst.dicom.multipart import MultipartWriter
from rst.http.context import RouteContext
from rst.services.frames import FramesAnswer, retrieve_frames

__all__ = ["register"]

JOIN_BELOW = 16 << 20
"""Answers up to this size go out as one body with a Content-Length (a viewer asks for one
frame at a time: one write, no chunking); larger ones part by part."""


def register(bp: Blueprint, ctx: RouteContext) -> None:
    async def serve_frames(aet: str, study: str, series: str, sop: str, frames: str) -> Response:
        backend = ctx.backend_for(aet)
        keys = ctx.path_keys(study, series, sop)
        numbers = parse_frame_list(frames)
        choices = negotiate_frames(request.headers.get("Accept"), ctx.accept_param())
        answer = await retrieve_frames(backend, keys, numbers, choices)
        instance_url = f"{ctx.base_url(aet)}/studies/{study}/series/{series}/instances/{sop}"

        def location(number: int) -> str:
            return f"{instance_url}/frames/{number}"

        if not answer.format.multipart:
            (frame,) = answer.frames
            response = Response(frame.data, content_type=answer.part_type)
            response.headers["Content-Location"] = location(frame.number)
            return response
        writer = MultipartWriter()
        content_type = writer.content_type(answer.format.media_type, answer.format.transfer_syntax)
        if answer.size <= JOIN_BELOW:
            return Response(b"".join(answer.parts(writer, location)), content_type=content_type)
        response = Response(_stream(answer, writer, location), content_type=content_type)
        response.timeout = None
        return response

    bp.add_url_rule(
        "/aets/<aet>/studies/<study>/series/<series>/instances/<sop>/frames/<frames>",
        "wado:frames",
        serve_frames,
        methods=["GET"],
    )


async def _stream(
    answer: FramesAnswer, writer: MultipartWriter, location: Callable[[int], str]
) -> AsyncIterator[bytes]:
    for piece in answer.parts(writer, location):
        yield piece
