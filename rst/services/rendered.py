"""WADO-RS rendered and thumbnail resources: one instance at a time from the archive, rendered
off the trio thread (:mod:`rst.dicom.render` does the pixels).

A single-image answer names one instance. At study and series level that is a representative
one, chosen by a search before anything is retrieved — the first image series by Series Number,
in it the first instance by Instance Number (rendered) or the middle one (thumbnail) — so one
instance crosses the network, not the study. An archive that cannot search (a backend without
search, a PACS that refuses an IMAGE-level C-FIND) gets the level retrieved and its first instance
with pixel data rendered; leaving the retrieve there cancels the rest.

A multipart answer renders every instance (or frame) as the archive sends it and streams each
out before the next instance is read: never more than one instance is held.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager
from functools import partial

from pydicom import Dataset

from rst.bridge import run_sync
from rst.dicom.query import Level, parse_qido
from rst.dicom.render import (
    GIF,
    Rendering,
    Viewport,
    frame_indices,
    has_pixels,
    number_of_frames,
    read_dataset,
    render,
    require_pixels,
)
from rst.errors import DimseFailure, NotAcceptable, NotSupported
from rst.services.protocols import Backend, RetrieveKeys
from rst.services.wado import PartSink, whole

__all__ = ["THUMBNAIL_VIEWPORT", "produce_rendered_parts", "render_one"]

log = logging.getLogger(__name__)

THUMBNAIL_VIEWPORT = Viewport(128, 128)
"""A thumbnail's size when the request names no viewport (fit into, aspect ratio kept)."""
NOT_IMAGES = frozenset(
    {"SR", "KO", "PR", "DOC", "REG", "FID", "RTSTRUCT", "RTPLAN", "RTRECORD", "ECG", "HD", "AU"}
)
"""Modalities of series that hold no images: a study's representative series is another one."""


async def render_one(
    backend: Backend,
    keys: RetrieveKeys,
    frames: Sequence[int] | None,
    rendering: Rendering,
    *,
    thumbnail: bool = False,
) -> bytes:
    """The one image a rendered or thumbnail resource answers with.

    The named instance, or the representative one of a study or series; its frames *frames*
    (1-based), else its first frame — its middle one for a thumbnail, all of them as an
    animated GIF for a rendered ``image/gif``.

    :raises NotAcceptable: nothing named has pixel data.
    :raises NotFound: nothing matched, or a frame past the last one.
    """
    chosen = await _representative(backend, keys, middle=thumbnail)
    async with _datasets(backend, chosen or keys) as datasets:
        async for ds in datasets:
            if chosen is None and not has_pixels(ds):
                continue  # no search: the level's first image will do
            require_pixels(ds)
            indices = _indices(ds, frames, rendering, thumbnail=thumbnail)
            return await run_sync(partial(render, ds, indices, rendering))
    raise NotAcceptable(f"nothing in {_named(keys)} has pixel data to render as an image")


async def produce_rendered_parts(
    backend: Backend,
    keys: RetrieveKeys,
    frames: Sequence[int] | None,
    rendering: Rendering,
    base: str,
    sink: PartSink,
) -> None:
    """Send one part per rendered image, each with its ``Content-Location``: per instance of a
    study or series (as :func:`render_one` renders an instance), per frame of an instance
    (*frames*, or all of them). Instances without pixel data are left out of a study or series.

    :raises NotAcceptable: nothing named has pixel data.
    """
    sent = 0
    async with _datasets(backend, keys) as datasets:
        async for ds in datasets:
            if not has_pixels(ds) and keys.sop_uid is None:
                log.info("rendered %s: %s has no pixel data, left out", _named(keys), _url(ds, ""))
                continue
            if keys.sop_uid is None:
                parts = [(_indices(ds, None, rendering), _url(ds, base) + "/rendered")]
            else:
                numbers = list(frames or range(1, number_of_frames(ds) + 1))
                located = zip(frame_indices(ds, numbers), numbers, strict=True)
                parts = [([i], f"{_url(ds, base)}/frames/{n}/rendered") for i, n in located]
            for indices, location in parts:
                image = await run_sync(partial(render, ds, indices, rendering))
                await sink.part(rendering.media_type, image, location=location)
                sent += 1
    if not sent:
        raise NotAcceptable(f"nothing in {_named(keys)} has pixel data to render as an image")


def _indices(
    ds: Dataset, frames: Sequence[int] | None, rendering: Rendering, *, thumbnail: bool = False
) -> list[int]:
    """Which frames of *ds* make its image (0-based)."""
    if frames is not None:
        return frame_indices(ds, frames[:1] if thumbnail else frames)
    count = number_of_frames(ds)
    if thumbnail:
        return [count // 2]
    if rendering.media_type == GIF:
        return list(range(count))
    return [0]


@asynccontextmanager
async def _datasets(backend: Backend, keys: RetrieveKeys) -> AsyncIterator[AsyncIterator[Dataset]]:
    """The instances *keys* names, each read (on a worker thread) once it has all arrived.
    Leaving early cancels the rest of the retrieve."""
    async with backend.retrieve(keys, None) as instances:

        async def read() -> AsyncGenerator[Dataset]:
            async for instance in instances:
                data = (await whole(instance)).data
                ds = await run_sync(partial(read_dataset, data))
                del instance, data  # the data set holds what it needs: one copy, not two
                yield ds

        async with aclosing(read()) as datasets:
            yield datasets


async def _representative(
    backend: Backend, keys: RetrieveKeys, *, middle: bool
) -> RetrieveKeys | None:
    """The instance that stands for a study or series (*keys* itself for an instance), found by
    searching; ``None`` when the archive cannot search (or refuses to) or finds nothing."""
    if keys.sop_uid is not None:
        return keys
    try:
        series = keys.series_uid or await _first_image_series(backend, keys.study_uid)
        if series is None:
            return None
        sop = await _pick_instance(backend, keys.study_uid, series, middle=middle)
    except (NotSupported, DimseFailure):  # no index, or a PACS that refuses IMAGE-level C-FIND
        return None
    return None if sop is None else RetrieveKeys(keys.study_uid, series, sop)


async def _first_image_series(backend: Backend, study: str) -> str | None:
    rows = await _search(backend, "SERIES", study)
    candidates = [
        (
            str(row.get("Modality") or "").strip().upper() in NOT_IMAGES,
            _number(row.get("SeriesNumber")),
            str(row.get("SeriesInstanceUID") or ""),
        )
        for row in rows
        if row.get("SeriesInstanceUID")
    ]
    return min(candidates)[2] if candidates else None


async def _pick_instance(backend: Backend, study: str, series: str, *, middle: bool) -> str | None:
    rows = await _search(backend, "IMAGE", study, series)
    ordered = sorted(
        (_number(row.get("InstanceNumber")), str(row.get("SOPInstanceUID")))
        for row in rows
        if row.get("SOPInstanceUID")
    )
    if not ordered:
        return None
    return ordered[len(ordered) // 2 if middle else 0][1]


async def _search(
    backend: Backend, level: Level, study: str, series: str | None = None
) -> list[Dataset]:
    query = parse_qido(level, [], study_uid=study, series_uid=series)
    async with backend.search(query) as matches:
        return [row async for row in matches]


def _number(value: object) -> float:
    """An IS value to sort by; missing or malformed ones sort last."""
    try:
        return float(str(value).strip()) if value not in (None, "") else float("inf")
    except ValueError:
        return float("inf")


def _url(ds: Dataset, base: str) -> str:
    return (
        f"{base}/studies/{ds.get('StudyInstanceUID', '')}/series/"
        f"{ds.get('SeriesInstanceUID', '')}/instances/{ds.get('SOPInstanceUID', '')}"
    )


def _named(keys: RetrieveKeys) -> str:
    return {"STUDY": "study", "SERIES": "series", "IMAGE": "instance"}[keys.level] + f" {keys.uid}"
