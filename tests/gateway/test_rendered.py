"""Rendered and thumbnail resources through the real app and listener, in front of an in-memory
archive that records every search and retrieve: which instance is chosen, that only that one is
retrieved, that malformed requests never reach the archive, and the multipart form."""

from __future__ import annotations

import io
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import cast

import httpx
import numpy as np
import pytest
import trio
from PIL import Image
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from rst.config import Config, HttpConfig
from rst.dicom.multipart import MultipartReader, parse_content_type
from rst.dicom.query import QidoQuery
from rst.errors import NotFound, NotSupported
from rst.http.app import create_app
from rst.http.listener import serve_http
from rst.services.protocols import Backend, Instance, RetrieveKeys

STUDY = "1.2.826.0.1.3680043.10.1"
SR_SERIES = f"{STUDY}.1"
CT_SERIES = f"{STUDY}.2"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"


def instance(
    series: str, number: int, value: int, *, frames: int = 1, modality: str = "CT"
) -> Dataset:
    """An instance whose frame k (0-based) is uniform grey ``value + k`` against a black and a
    white pixel (so that each frame renders to its own known grey)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY, series
    ds.SOPInstanceUID = f"{series}.{number}"
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, series[-1], number
    if modality == "SR":
        ds.SOPClassUID = BASIC_TEXT_SR
        return ds
    ds.SOPClassUID = SECONDARY_CAPTURE
    pixels = np.zeros((frames, 40, 60), dtype=np.uint8)
    for k in range(frames):
        pixels[k] = value + k
        pixels[k, 0, 0], pixels[k, 0, 1] = 0, 255
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 40, 60, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = pixels.tobytes()
    return ds


def as_instance(ds: Dataset) -> Instance:
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    syntax = str(ExplicitVRLittleEndian)
    return Instance(buffer.getvalue(), str(ds.SOPClassUID), str(ds.SOPInstanceUID), syntax)


def row(ds: Dataset, level: str) -> Dataset:
    out = Dataset()
    out.StudyInstanceUID, out.SeriesInstanceUID = ds.StudyInstanceUID, ds.SeriesInstanceUID
    if level == "SERIES":
        out.Modality, out.SeriesNumber = ds.Modality, ds.SeriesNumber
    else:
        out.SOPInstanceUID, out.InstanceNumber = ds.SOPInstanceUID, ds.InstanceNumber
    return out


@dataclass
class Archive:
    """Holds *datasets*; searches and retrieves them by their UIDs, and records every call."""

    datasets: list[Dataset]
    name: str = "ARCHIVE"
    can_search: bool = True
    searches: list[str] = field(default_factory=list)
    retrieves: list[RetrieveKeys] = field(default_factory=list)
    handed_out: int = 0

    async def echo(self) -> None:
        return None

    @asynccontextmanager
    async def search(self, query: QidoQuery) -> AsyncIterator[AsyncIterator[Dataset]]:
        self.searches.append(query.level)
        if not self.can_search:
            raise NotSupported("no index")
        series = query.identifier.get("SeriesInstanceUID")
        rows = [
            row(ds, query.level)
            for ds in self.datasets
            if not series or ds.SeriesInstanceUID == series
        ]
        if query.level == "SERIES":
            rows = list({r.SeriesInstanceUID: r for r in rows}.values())

        async def found() -> AsyncGenerator[Dataset]:
            for r in reversed(rows):  # not in number order: rst must sort
                yield r

        async with aclosing(found()) as matches:
            yield matches

    @asynccontextmanager
    async def retrieve(
        self, keys: RetrieveKeys, prefer: str | None = None
    ) -> AsyncIterator[AsyncIterator[Instance]]:
        self.retrieves.append(keys)
        chosen = [
            ds
            for ds in self.datasets
            if keys.series_uid in (None, ds.SeriesInstanceUID)
            and keys.sop_uid in (None, ds.SOPInstanceUID)
        ]
        if not chosen:
            raise NotFound("nothing")

        async def instances() -> AsyncGenerator[Instance]:
            for ds in chosen:
                self.handed_out += 1
                yield as_instance(ds)

        async with aclosing(instances()) as found:
            yield found

    def store(self) -> None:  # pragma: no cover - not used here
        raise NotImplementedError


def study_archive() -> Archive:
    """An SR series (Series Number 1) and a CT series of five instances (values 10, 20, ...)."""
    report = instance(SR_SERIES, 1, 0, modality="SR")
    images = [instance(CT_SERIES, n, 10 * n) for n in range(1, 6)]
    return Archive([report, *images])


@asynccontextmanager
async def serving(archive: Archive) -> AsyncIterator[httpx.AsyncClient]:
    config = Config(http=HttpConfig(host="127.0.0.1", port=0))
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            serve_http, create_app(config, {"A": cast(Backend, archive)}), config.http
        )
        base = f"{binds[0]}/aets/A/studies/{STUDY}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            yield client
        nursery.cancel_scope.cancel()


def image_of(response: httpx.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image


def centre_grey(image: Image.Image) -> int:
    """The grey of the middle pixel (PNG: lossless)."""
    value = image.convert("L").getpixel((image.width // 2, image.height // 2))
    assert isinstance(value, int)
    return value


def expected_grey(value: int) -> int:
    """What a uniform frame of *value* renders to: its range 0..255 is kept (the black and the
    white pixel), so the grey is the value itself."""
    return value


PNG = {"Accept": "image/png"}


async def test_study_thumbnail_is_the_middle_image_of_the_first_image_series() -> None:
    archive = study_archive()
    async with serving(archive) as client:
        response = await client.get("/thumbnail", headers=PNG)
    image = image_of(response)
    assert image.format == "PNG"
    assert image.size == (128, 85)  # 60x40 fitted into the default 128x128
    assert centre_grey(image) == expected_grey(30)  # instance 3 of 5
    assert archive.searches == ["SERIES", "IMAGE"]
    # only that instance crossed the network, not the study
    assert archive.retrieves == [RetrieveKeys(STUDY, CT_SERIES, f"{CT_SERIES}.3")]


async def test_series_rendered_is_its_first_instance_by_number() -> None:
    archive = study_archive()
    async with serving(archive) as client:
        response = await client.get(f"/series/{CT_SERIES}/rendered", params={"accept": "image/png"})
    image = image_of(response)
    assert response.headers["Content-Type"] == "image/png"
    assert image.size == (60, 40)
    assert centre_grey(image) == expected_grey(10)
    assert archive.searches == ["IMAGE"]
    assert archive.retrieves == [RetrieveKeys(STUDY, CT_SERIES, f"{CT_SERIES}.1")]


async def test_without_search_the_first_image_of_the_level_is_rendered() -> None:
    archive = study_archive()
    archive.can_search = False
    async with serving(archive) as client:
        response = await client.get("/rendered", headers=PNG)
    assert centre_grey(image_of(response)) == expected_grey(10)
    assert archive.retrieves == [RetrieveKeys(STUDY)]
    assert archive.handed_out == 2  # the SR, then the first image: the rest was never taken


async def test_an_instance_without_pixel_data_is_406() -> None:
    archive = study_archive()
    async with serving(archive) as client:
        response = await client.get(f"/series/{SR_SERIES}/instances/{SR_SERIES}.1/rendered")
    assert response.status_code == 406
    assert BASIC_TEXT_SR in response.json()["error"]


async def test_instance_thumbnail_honours_the_viewport_and_jpeg_is_the_default() -> None:
    archive = study_archive()
    async with serving(archive) as client:
        response = await client.get(
            f"/series/{CT_SERIES}/instances/{CT_SERIES}.2/thumbnail",
            params={"viewport": "256,256", "quality": "80"},
        )
    image = image_of(response)
    assert response.headers["Content-Type"] == "image/jpeg"
    assert image.format == "JPEG"
    assert image.size == (256, 171)


async def test_frames_rendered() -> None:
    archive = Archive([instance(CT_SERIES, 1, 100, frames=5)])
    url = f"/series/{CT_SERIES}/instances/{CT_SERIES}.1"
    async with serving(archive) as client:
        third = await client.get(f"{url}/frames/3/rendered", headers=PNG)
        animated = await client.get(f"{url}/frames/2,4/rendered", headers={"Accept": "image/gif"})
        whole = await client.get(f"{url}/rendered", headers=PNG)
        thumbnail = await client.get(f"{url}/thumbnail", headers=PNG)
        beyond = await client.get(f"{url}/frames/6/rendered")
    assert centre_grey(image_of(third)) == expected_grey(102)
    gif = image_of(animated)
    assert getattr(gif, "n_frames", 1) == 2
    assert centre_grey(image_of(whole)) == expected_grey(100)  # the first frame
    assert centre_grey(image_of(thumbnail)) == expected_grey(102)  # the middle frame
    assert beyond.status_code == 404
    assert "has 5 frame(s)" in beyond.json()["error"]


def parts_of(response: httpx.Response) -> list[tuple[dict[str, str], bytes]]:
    assert response.status_code == 200, response.text
    media_type, params = parse_content_type(response.headers["Content-Type"])
    assert media_type == "multipart/related"
    reader = MultipartReader(params["boundary"], max_part_bytes=1 << 24, max_total_bytes=1 << 26)
    return [(dict(p.headers), p.data) for p in reader.feed(response.content) + reader.finish()]


async def test_multipart_one_part_per_instance_or_frame() -> None:
    archive = study_archive()
    archive.datasets.append(instance(CT_SERIES, 6, 200, frames=3))
    multipart = {"Accept": 'multipart/related; type="image/png"'}
    mf_url = f"/series/{CT_SERIES}/instances/{CT_SERIES}.6"
    async with serving(archive) as client:
        study = await client.get("/rendered", headers=multipart)
        frames = await client.get(f"{mf_url}/rendered", headers=multipart)
        listed = await client.get(f"{mf_url}/frames/3,1/rendered", headers=multipart)
    assert 'type="image/png"' in study.headers["Content-Type"]
    parts = parts_of(study)
    assert len(parts) == 6  # the SR is left out
    for n, (headers, data) in enumerate(parts, start=1):
        assert headers["Content-Type"] == "image/png"
        assert headers["Content-Location"].endswith(
            f"/aets/A/studies/{STUDY}/series/{CT_SERIES}/instances/{CT_SERIES}.{n}/rendered"
        )
        assert centre_grey(Image.open(io.BytesIO(data))) == expected_grey(10 * n if n < 6 else 200)
    greys = [centre_grey(Image.open(io.BytesIO(data))) for _, data in parts_of(frames)]
    assert greys == [200, 201, 202]
    listed_parts = parts_of(listed)
    assert [h["Content-Location"].rsplit("/", 2)[-2] for h, _ in listed_parts] == ["3", "1"]
    assert [centre_grey(Image.open(io.BytesIO(d))) for _, d in listed_parts] == [202, 200]


@pytest.mark.parametrize(
    ("path", "params", "headers", "status", "message"),
    [
        ("/rendered", {"quality": "0"}, {}, 400, "quality"),
        ("/rendered", {"viewport": "0,10"}, {}, 400, "viewport vw"),
        ("/thumbnail", {"window": "40,0,linear"}, {}, 400, "at least 1"),
        ("/rendered", {"annotation": "everything"}, {}, 400, "annotation"),
        ("/rendered", {}, {"Accept": "application/dicom"}, 406, "rst renders image/jpeg"),
        ("/rendered", {"accept": "image/jp2"}, {}, 406, "rst renders image/jpeg"),
        (
            "/thumbnail",
            {},
            {"Accept": 'multipart/related; type="image/jpeg"'},
            406,
            "rst renders image/jpeg",
        ),
        (f"/series/{CT_SERIES}/instances/1.2.3.1/frames/0/rendered", {}, {}, 400, "frame 0"),
        (f"/series/{CT_SERIES}/instances/1.2.3.1/frames/a/thumbnail", {}, {}, 400, "frame list"),
        (f"/series/{CT_SERIES}/instances/1.2.3.1/frames/1,2/rendered", {}, {}, 406, "image/gif"),
        ("/series/1.2.x/rendered", {}, {}, 400, "series"),
    ],
)
async def test_bad_requests_never_reach_the_archive(
    path: str, params: dict[str, str], headers: dict[str, str], status: int, message: str
) -> None:
    archive = study_archive()
    async with serving(archive) as client:
        response = await client.get(path, params=params, headers=headers)
    assert response.status_code == status
    assert message in response.json()["error"]
    assert archive.searches == []
    assert archive.retrieves == []
