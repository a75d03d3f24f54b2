"""WADO-RS rendered and thumbnail resources: one instance at a time from the archive, rendered
off the trio thread (:mod:`rst.dicom.render` does the pixels).

A single-image answer names one instance. At study and series level that is a representative
one, chosen by a search before anything is retrieved — the first image series by Series Number,
in it the first instance by Instance Number (rendered) or the middle one (thumbnail) — so one
instance crosses the network, not the study. An archive that cannot search (a backend without
search, a PACS that refuses an IMAGE-level C-FIND) gets the level retrieved and its first instance
with pixel data rendered; leaving the retrieve there cancels the rest.

A multipart answer renders every instance (or frame) as the archive sends it and streams each
out before the next instance is read: never more than one instance is held. Where the archive
reads parts of a stored instance (a large S3 object), only its head and the frames drawn are
read (:class:`~rst.services.ranged.FrameReader`), one part's frames at a time.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
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
from rst.services.protocols import Backend, Instance, RetrieveKeys
from rst.services.ranged import FrameReader, frame_reader, ranges_of
from rst.services.wado import PartSink, whole

__all__ = [
    "THUMBNAIL_VIEWPORT",
    "RenderSource",
    "produce_rendered_parts",
    "render_one",
    "render_source",
]

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
    async with _images(backend, chosen or keys) as images:
        async for image in images:
            ds = image.dataset
            if chosen is None and not has_pixels(ds):
                continue  # no search: the level's first image will do
            require_pixels(ds)
            indices = _indices(ds, frames, rendering, thumbnail=thumbnail)
            ds, held = await image.holding(indices)
            return await run_sync(partial(render, ds, indices, rendering, held))
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
    async with _images(backend, keys) as images:
        async for image in images:
            ds = image.dataset
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
                holding, held = await image.holding(indices)  # one part's frames at a time
                rendered = await run_sync(partial(render, holding, indices, rendering, held))
                await sink.part(rendering.media_type, rendered, location=location)
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


@dataclass
class RenderSource:
    """One instance to render: its data set — whole, or (a large stored object read by
    ranges) up to its pixel data, whose frames :meth:`holding` reads as they are needed.
    Used while the instance is the retrieve's current one (a cached file is open until then)."""

    dataset: Dataset
    reader: FrameReader | None = None
    instance: Instance | None = None
    """The instance itself, read whole if its frames cannot be read by ranges after all."""

    async def holding(self, indices: Sequence[int]) -> tuple[Dataset, dict[int, int] | None]:
        """A data set holding the frames *indices* (0-based), and where each lies in its pixel
        data (``None``: at its own index, the data set is whole)."""
        if self.reader is not None:
            source = await self.reader.read([index + 1 for index in indices])
            if source is not None:
                return source.dataset, {i: k for k, i in enumerate(sorted(set(indices)))}
            if self.instance is not None:  # the whole object's reader answers instead
                data = (await whole(self.instance)).data
                self.dataset = await run_sync(partial(read_dataset, data))
            self.reader = self.instance = None
        return self.dataset, None


async def render_source(instance: Instance) -> RenderSource:
    """What renders *instance*: by ranges where parts of it can be read, else read whole."""
    reader = await frame_reader(instance) if ranges_of(instance) else None
    if reader is not None:
        return RenderSource(reader.source.dataset, reader, instance)
    data = (await whole(instance)).data
    return RenderSource(await run_sync(partial(read_dataset, data)))


@asynccontextmanager
async def _images(
    backend: Backend, keys: RetrieveKeys
) -> AsyncIterator[AsyncIterator[RenderSource]]:
    """The instances *keys* names, each read (on a worker thread) once it has all arrived —
    or, where parts of a large stored instance can be read (an S3 object, a cached file), its
    head now and its frames when they are rendered (:mod:`rst.services.ranged`). Leaving early
    cancels the rest of the retrieve."""
    async with backend.retrieve(keys, None) as instances:

        async def read() -> AsyncGenerator[RenderSource]:
            async for instance in instances:
                yield await render_source(instance)

        async with aclosing(read()) as images:
            yield images


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
