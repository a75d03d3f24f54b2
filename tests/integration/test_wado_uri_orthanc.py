"""WADO-URI through rst in front of a real Orthanc, asked the way OHIF's ``wadouri`` image loader,
Weasis and RIS links ask.

The DICOM file must carry the original's pixel data byte for byte (as stored, and in Explicit
VR Little Endian, decompressed when stored compressed); an image must have the requested size
and be exactly the rendering, made here with rst.dicom.render from the uploaded file, of the
instance, frame, window and region asked for: proof that the parameters reached the pipeline and
that the right instance crossed C-MOVE / C-GET intact."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from rst.config import AeConfig
from rst.dicom.render import render
from rst.dicom.render_params import JPEG, PNG, Region, Rendering, Viewport, Window
from rst.server import Running
from tests.support.gateway import run_gateway
from tests.support.orthanc import Orthanc, add_modality, upload
from tests.support.sample import StudyFiles, write_ct_study, write_multiframe

pytestmark = pytest.mark.integration

OHIF_LOADER_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


def wado_url(running: Running) -> str:
    return f"{running.http_url}/aets/ORTHANC/wado"


def naming(study: StudyFiles, index: int) -> dict[str, str]:
    """The WADO-URI parameters naming the instance ``study.paths[index]``."""
    return {
        "requestType": "WADO",
        "studyUID": study.study_uid,
        "seriesUID": study.instance_series[index],
        "objectUID": study.sop_uids[index],
    }


def decoded(response: httpx.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    picture = Image.open(io.BytesIO(response.content))
    picture.load()
    return picture


def rendering_of(path: Path, rendering: Rendering, frames: Sequence[int] = (0,)) -> Image.Image:
    picture = Image.open(io.BytesIO(render(pydicom.dcmread(path), frames, rendering)))
    picture.load()
    return picture


def same_pixels(got: Image.Image, expected: Image.Image) -> bool:
    return got.size == expected.size and got.tobytes() == expected.tobytes()


async def test_the_dicom_file_as_ohif_asks_and_by_default(
    gateway: Running, ct_study: StudyFiles
) -> None:
    original = pydicom.dcmread(ct_study.paths[3])
    async with httpx.AsyncClient(timeout=60) as http:
        ohif = await http.get(
            wado_url(gateway),
            params={
                **naming(ct_study, 3),
                "contentType": "application/dicom",
                "transferSyntax": "*",
            },
            headers={"Accept": OHIF_LOADER_ACCEPT},
        )
        default = await http.get(
            wado_url(gateway), params={**naming(ct_study, 3), "contentType": "application/dicom"}
        )
    for response in (ohif, default):
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"] == "application/dicom"
        got = pydicom.dcmread(io.BytesIO(response.content))
        assert got.SOPInstanceUID == original.SOPInstanceUID
        assert got.PixelData == original.PixelData
    assert pydicom.dcmread(io.BytesIO(default.content)).file_meta.TransferSyntaxUID == (
        ExplicitVRLittleEndian
    )


async def test_a_jpeg_of_the_requested_size(gateway: Running, ct_study: StudyFiles) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        plain = await http.get(wado_url(gateway), params=naming(ct_study, 1))
        small = await http.get(
            wado_url(gateway),
            params={**naming(ct_study, 1), "rows": "32", "columns": "48", "imageQuality": "60"},
        )
    assert plain.headers["Content-Type"] == JPEG
    assert decoded(plain).format == "JPEG"
    assert decoded(plain).size == (64, 64)
    assert decoded(small).size == (32, 32)  # 64x64 fitted into 48 wide, 32 high


async def test_window_and_region_are_honoured(gateway: Running, ct_study: StudyFiles) -> None:
    path = ct_study.paths[4]
    window = {"windowCenter": "300", "windowWidth": "1500"}  # not the preset (40, 400)
    async with httpx.AsyncClient(timeout=60) as http:
        windowed = await http.get(
            wado_url(gateway), params={**naming(ct_study, 4), "contentType": PNG, **window}
        )
        region = await http.get(
            wado_url(gateway),
            params={
                **naming(ct_study, 4),
                "contentType": PNG,
                "region": "0.25,0.25,0.75,0.75",
                "rows": "128",
                "columns": "128",
                **window,
            },
        )
    ct_window = Window(300.0, 1500.0, "LINEAR")
    assert same_pixels(decoded(windowed), rendering_of(path, Rendering(PNG, window=ct_window)))
    assert not same_pixels(decoded(windowed), rendering_of(path, Rendering(PNG)))
    centre = Rendering(PNG, viewport=Viewport(128, 128, Region(16, 16, 32, 32)), window=ct_window)
    assert same_pixels(decoded(region), rendering_of(path, centre))
    assert decoded(region).size == (128, 128)


async def test_frames_of_a_multiframe_instance(orthanc: Orthanc, tmp_path: Path) -> None:
    mf = write_multiframe(tmp_path / "mf", frames=5, rows=48, columns=32, seed=5)
    await upload(orthanc, mf.paths)
    config = AeConfig(aet=orthanc.aet, host="127.0.0.1", port=orthanc.dicom_port)
    async with run_gateway(config) as running:
        await add_modality(orthanc, "rst", "RST", *running.dimse_address)
        params = naming(mf, 0)
        async with httpx.AsyncClient(timeout=60) as http:
            fourth = await http.get(
                wado_url(running), params={**params, "contentType": PNG, "frameNumber": "4"}
            )
            beyond = await http.get(wado_url(running), params={**params, "frameNumber": "6"})
    assert same_pixels(decoded(fourth), rendering_of(mf.paths[0], Rendering(PNG), [3]))
    assert beyond.status_code == 400
    assert "has 5 frame(s)" in beyond.json()["error"]


async def test_a_compressed_instance_as_stored_or_decompressed(
    orthanc: Orthanc, tmp_path: Path
) -> None:
    rle = write_ct_study(tmp_path / "rle", images=2, transfer_syntax=RLELossless, seed=9)
    await upload(orthanc, rle.paths)
    original = pydicom.dcmread(rle.paths[1])
    config = AeConfig(aet=orthanc.aet, host="127.0.0.1", port=orthanc.dicom_port)
    async with run_gateway(config) as running:
        await add_modality(orthanc, "rst", "RST", *running.dimse_address)
        dicom = {**naming(rle, 1), "contentType": "application/dicom"}
        async with httpx.AsyncClient(timeout=60) as http:
            stored = await http.get(wado_url(running), params={**dicom, "transferSyntax": "*"})
            plain = await http.get(wado_url(running), params=dicom)
    assert stored.status_code == 200, stored.text
    as_stored = pydicom.dcmread(io.BytesIO(stored.content))
    assert as_stored.file_meta.TransferSyntaxUID == RLELossless  # C-MOVE sends as stored
    assert as_stored.PixelData == original.PixelData
    assert plain.status_code == 200, plain.text
    decompressed = pydicom.dcmread(io.BytesIO(plain.content))
    assert decompressed.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(decompressed.pixel_array, original.pixel_array)
