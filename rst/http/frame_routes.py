"""The WADO-RS frames route: ``/aets/{aet}/studies/{s}/series/{se}/instances/{i}/frames/{list}``.

The request is checked whole — archive, UIDs, frame list, Accept — before anything reaches the
archive; the answer is ready (every frame cut, decoded or encoded) before the response starts.
"""

from __future__ import annotations

from functools import lru_cache

from quart import Blueprint, Response, request

from rst.dicom.accept import FrameChoice, negotiate_frames
from rst.dicom.frames import parse_frame_list
from rst.http.context import RouteContext
from rst.http.multipart_body import one_part, ready_multipart
from rst.services.frames import retrieve_frames

__all__ = ["register"]


def register(bp: Blueprint, ctx: RouteContext) -> None:
    async def serve_frames(aet: str, study: str, series: str, sop: str, frames: str) -> Response:
        backend = ctx.backend_for(aet)
        keys = ctx.path_keys(study, series, sop)
        numbers = parse_frame_list(frames)
        choices = _negotiated(request.headers.get("Accept"), ctx.accept_param())
        answer = await retrieve_frames(backend, keys, numbers, choices)
        instance_url = f"{ctx.base_url(aet)}/studies/{study}/series/{series}/instances/{sop}"

        def location(number: int) -> str:
            return f"{instance_url}/frames/{number}"

        if not answer.format.multipart:
            (frame,) = answer.frames
            return one_part(frame.data, answer.part_type, location(frame.number))
        return ready_multipart(
            lambda writer: answer.parts(writer, location),
            answer.size,
            answer.format.media_type,
            answer.format.transfer_syntax,
        )

    bp.add_url_rule(
        "/aets/<aet>/studies/<study>/series/<series>/instances/<sop>/frames/<frames>",
        "wado:frames",
        serve_frames,
        methods=["GET"],
    )


@lru_cache(maxsize=64)
def _negotiated(accept: str | None, accept_param: str | None) -> tuple[FrameChoice, ...]:
    """:func:`negotiate_frames`, parsed once per ``Accept`` and ``accept`` parameter: a viewer
    sends the same one with each of a study's hundreds of frame requests. The choices are
    frozen; a refusal (:class:`~rst.errors.NotAcceptable`) is raised each time, never kept."""
    return negotiate_frames(accept, accept_param)
