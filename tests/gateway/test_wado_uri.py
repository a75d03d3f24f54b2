"""WADO-URI through the real app and listener, in front of an in-memory archive that records
what it was asked: the DICOM file byte for byte (as stored, or re-encoded), rendered images with
the WADO-URI parameters applied, and malformed requests answered before the archive is asked."""

from __future__ import annotations

import io
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager

import httpx
import numpy as np
import pydicom
import pytest
import trio
from PIL import Image
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
)

from rst.config import Config, HttpConfig
from rst.dicom.render import render
from rst.dicom.render_params import GIF, PNG, Region, Rendering, Viewport, Window
from rst.http.app import create_app
from rst.http.listener import serve_http
from rst.services.protocols import Backend, Instance, RetrieveKeys
from tests.support.scripted_backend import ScriptedBackend

STUDY, SERIES = "1.2.826.0.1.3680043.10.7", "1.2.826.0.1.3680043.10.7.1"
SOP = f"{SERIES}.1"
KEYS = RetrieveKeys(STUDY, SERIES, SOP)
UIDS = {"requestType": "WADO", "studyUID": STUDY, "seriesUID": SERIES, "objectUID": SOP}
OHIF_LOADER_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"


def image(*, frames: int = 1, sop: str = SOP) -> Dataset:
    """40 rows x 60 columns, 8 bits: a gradient across the columns, frame k shifted by 50*k
    (so that each frame and each window renders differently)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = SECONDARY_CAPTURE, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY, SERIES
    ds.PatientName = "WADO^URI"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 40, 60, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    gradient = np.tile(np.arange(60, dtype=np.uint16) * 4, (40, 1))
    pixels = np.stack([(gradient + 50 * k) % 256 for k in range(frames)]).astype(np.uint8)
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = pixels.tobytes()
    return ds


def report(sop: str = SOP) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = BASIC_TEXT_SR, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY, SERIES
    return ds


def part10(ds: Dataset, syntax: UID = ExplicitVRLittleEndian) -> Instance:
    if syntax == JPEGBaseline8Bit:  # each frame a JPEG made by Pillow
        frames = ds.pixel_array.reshape(-1, ds.Rows, ds.Columns)
        jpegs = []
        for frame in frames:
            out = io.BytesIO()
            Image.fromarray(frame).save(out, "JPEG", quality=90)
            jpegs.append(out.getvalue())
        ds.PixelData = encapsulate(jpegs)
        ds["PixelData"].VR = "OB"
        ds.LossyImageCompression = "01"
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return Instance(buffer.getvalue(), ds.SOPClassUID, ds.SOPInstanceUID, str(syntax))


@asynccontextmanager
async def serving(backend: Backend) -> AsyncIterator[httpx.AsyncClient]:
    config = Config(http=HttpConfig(host="127.0.0.1", port=0))
    backends: Mapping[str, Backend] = {"A": backend}
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve_http, create_app(config, backends), config.http)
        async with httpx.AsyncClient(base_url=f"{binds[0]}/aets/A", timeout=10) as client:
            yield client
        nursery.cancel_scope.cancel()


async def wado(
    backend: Backend, params: Mapping[str, str], headers: Mapping[str, str] | None = None
) -> httpx.Response:
    async with serving(backend) as client:
        return await client.get("/wado", params={**UIDS, **params}, headers=headers)


def decoded(response: httpx.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    picture = Image.open(io.BytesIO(response.content))
    picture.load()
    return picture


def rendered_here(ds: Dataset, rendering: Rendering, frame: int = 0) -> Image.Image:
    picture = Image.open(io.BytesIO(render(ds, [frame], rendering)))
    picture.load()
    return picture


def same_pixels(got: Image.Image, expected: Image.Image) -> bool:
    return got.size == expected.size and got.tobytes() == expected.tobytes()


# -- Retrieve DICOM Instance --------------------------------------------------------------------


async def test_ohif_loader_gets_the_instance_byte_for_byte() -> None:
    """OHIF's wadouri loader: contentType=application/dicom&transferSyntax=*, with the Accept
    it sends for frames; the body is the file as the archive sent it, in one part."""
    stored = part10(image(), JPEGBaseline8Bit)  # rst must not decompress it
    backend = ScriptedBackend(instances=[stored])
    response = await wado(
        backend,
        {"contentType": "application/dicom", "transferSyntax": "*"},
        {"Accept": OHIF_LOADER_ACCEPT},
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/dicom"
    assert response.content == stored.data
    assert backend.retrieves == [(KEYS, None)]  # one instance, at IMAGE level, as stored
    assert backend.opened == backend.closed == 1


async def test_default_transfer_syntax_is_explicit_vr_little_endian() -> None:
    original = image()
    backend = ScriptedBackend(instances=[part10(original, ImplicitVRLittleEndian)])
    response = await wado(backend, {"contentType": "application/dicom"})
    assert response.status_code == 200, response.text
    got = pydicom.dcmread(io.BytesIO(response.content))
    assert got.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert got.PixelData == original.PixelData
    assert got.SOPInstanceUID == SOP
    assert backend.retrieves == [(KEYS, str(ExplicitVRLittleEndian))]


async def test_transcoded_into_a_lossless_syntax() -> None:
    original = image(frames=2)
    backend = ScriptedBackend(instances=[part10(original)])
    response = await wado(
        backend, {"contentType": "application/dicom", "transferSyntax": str(RLELossless)}
    )
    assert response.status_code == 200, response.text
    got = pydicom.dcmread(io.BytesIO(response.content))
    assert got.file_meta.TransferSyntaxUID == RLELossless
    assert np.array_equal(got.pixel_array, original.pixel_array)


async def test_a_syntax_rst_cannot_encode_into_is_406_unless_stored_so() -> None:
    plain = ScriptedBackend(instances=[part10(image())])
    refused = await wado(
        plain, {"contentType": "application/dicom", "transferSyntax": str(JPEGBaseline8Bit)}
    )
    assert refused.status_code == 406
    assert f"transferSyntax={ExplicitVRLittleEndian}" in refused.json()["error"]
    stored = part10(image(), JPEGBaseline8Bit)
    as_stored = await wado(
        ScriptedBackend(instances=[stored]),
        {"contentType": "application/dicom", "transferSyntax": str(JPEGBaseline8Bit)},
    )
    assert as_stored.status_code == 200
    assert as_stored.content == stored.data


async def test_a_large_instance_streams_as_it_arrives() -> None:
    whole = part10(image(frames=4)).data
    cut = [whole[:300], whole[300:1000], whole[1000:]]

    async def rest() -> AsyncGenerator[bytes]:
        for chunk in cut[1:]:
            yield chunk

    arriving = Instance(cut[0], SECONDARY_CAPTURE, SOP, str(ExplicitVRLittleEndian), rest())
    response = await wado(
        ScriptedBackend(instances=[arriving]), {"contentType": "application/dicom"}
    )
    assert response.status_code == 200
    assert response.content == whole


async def test_a_transfer_that_breaks_off_breaks_the_body_off() -> None:
    whole = part10(image()).data

    async def rest() -> AsyncGenerator[bytes]:
        yield whole[100:200]
        raise ValueError("the PACS went away")

    arriving = Instance(whole[:100], SECONDARY_CAPTURE, SOP, str(ExplicitVRLittleEndian), rest())
    async with serving(ScriptedBackend(instances=[arriving])) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get("/wado", params={**UIDS, "contentType": "application/dicom"})


async def test_no_such_instance_is_404() -> None:
    other = part10(image(sop=f"{SERIES}.2"))
    for instances in ([], [other]):
        response = await wado(
            ScriptedBackend(instances=instances), {"contentType": "application/dicom"}
        )
        assert response.status_code == 404
        assert SOP in response.json()["error"]


# -- Retrieve Rendered Instance -----------------------------------------------------------------


async def test_jpeg_is_the_default() -> None:
    backend = ScriptedBackend(instances=[part10(image())])
    response = await wado(backend, {})
    picture = decoded(response)
    assert response.headers["Content-Type"] == "image/jpeg"
    assert picture.format == "JPEG"
    assert picture.size == (60, 40)
    assert backend.retrieves == [(KEYS, None)]


async def test_rows_and_columns_are_maxima_keeping_the_aspect_ratio() -> None:
    backend = ScriptedBackend(instances=[part10(image())])
    async with serving(backend) as client:
        both = await client.get("/wado", params={**UIDS, "rows": "120", "columns": "120"})
        rows = await client.get("/wado", params={**UIDS, "rows": "20", "contentType": PNG})
    assert decoded(both).size == (120, 80)
    assert decoded(rows).size == (30, 20)


async def test_window_and_region_as_the_rendered_pipeline_does_them() -> None:
    ds = image()
    backend = ScriptedBackend(instances=[part10(ds)])
    async with serving(backend) as client:
        windowed = await client.get(
            "/wado",
            params={**UIDS, "contentType": PNG, "windowCenter": "100", "windowWidth": "50"},
        )
        cropped = await client.get(
            "/wado", params={**UIDS, "contentType": PNG, "region": "0.5,0,1,0.5"}
        )
    window = Rendering(PNG, window=Window(100.0, 50.0, "LINEAR"))
    assert same_pixels(decoded(windowed), rendered_here(ds, window))
    assert not same_pixels(decoded(windowed), rendered_here(ds, Rendering(PNG)))
    right_top = Rendering(PNG, viewport=Viewport(30, 20, Region(30, 0, 30, 20)))
    assert same_pixels(decoded(cropped), rendered_here(ds, right_top))
    assert decoded(cropped).size == (30, 20)


async def test_frames_of_a_multiframe_instance() -> None:
    ds = image(frames=3)
    backend = ScriptedBackend(instances=[part10(ds)])
    async with serving(backend) as client:
        second = await client.get("/wado", params={**UIDS, "contentType": PNG, "frameNumber": "2"})
        first = await client.get("/wado", params={**UIDS, "contentType": PNG})
        animated = await client.get("/wado", params={**UIDS, "contentType": GIF})
        beyond = await client.get("/wado", params={**UIDS, "frameNumber": "4"})
    assert same_pixels(decoded(second), rendered_here(ds, Rendering(PNG), frame=1))
    assert same_pixels(decoded(first), rendered_here(ds, Rendering(PNG), frame=0))
    assert getattr(decoded(animated), "n_frames", 1) == 3
    assert beyond.status_code == 400  # PS3.18 §9.5.2: not a 404
    assert "has 3 frame(s)" in beyond.json()["error"]


async def test_an_instance_without_pixel_data_is_406_as_an_image() -> None:
    response = await wado(ScriptedBackend(instances=[part10(report())]), {})
    assert response.status_code == 406
    assert BASIC_TEXT_SR in response.json()["error"]


# -- refused before the archive is asked ---------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"requestType": "WADO-RS"}, 400, "requestType must be WADO"),
        ({"objectUID": "1.2.3\\1.2.4"}, 400, "invalid SOP instance UID"),
        ({"studyUID": "*"}, 400, "invalid study UID"),
        ({"contentType": "application/dicom+xml"}, 406, "URI service of rst answers"),
        ({"contentType": "image/jp2"}, 406, "URI service of rst answers"),
        ({"contentType": "application/dicom", "transferSyntax": "1.2.840.10008.1.2"}, 406, "1.2"),
        ({"contentType": "application/dicom", "transferSyntax": "x"}, 400, "transfer syntax"),
        ({"transferSyntax": "1.2.840.10008.1.2.1"}, 400, "transferSyntax applies to"),
        ({"frameNumber": "0"}, 400, "frameNumber"),
        ({"rows": "-5"}, 400, "rows"),
        ({"region": "0,0,2,1"}, 400, "region"),
        ({"windowCenter": "40"}, 400, "windowWidth"),
        ({"imageQuality": "0"}, 400, "imageQuality"),
        ({"contentType": "application/dicom", "anonymize": "yes"}, 501, "anonymize"),
        ({"presentationUID": "1.2.3"}, 501, "presentation states"),
    ],
)
async def test_refused_before_any_dimse_traffic(
    params: dict[str, str], status: int, message: str
) -> None:
    backend = ScriptedBackend(instances=[part10(image())])
    response = await wado(backend, params)
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert message in response.json()["error"]
    assert backend.opened == 0


async def test_missing_uids_and_unknown_archive() -> None:
    backend = ScriptedBackend(instances=[part10(image())])
    async with serving(backend) as client:
        missing = await client.get("/wado", params={"requestType": "WADO", "studyUID": STUDY})
        unknown = await client.get(client.base_url.copy_with(path="/aets/B/wado"), params=UIDS)
    assert missing.status_code == 400
    assert "needs seriesUID" in missing.json()["error"]
    assert unknown.status_code == 404
    assert backend.opened == 0
