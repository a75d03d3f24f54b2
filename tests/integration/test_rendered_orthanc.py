"""Rendered and thumbnail resources through rst in front of a real Orthanc, asked by
dicomweb-client (which has rendered calls but no thumbnail ones) and httpx.

Each image must decode, have the requested size, and be exactly the rendering of the instance
(and frame) the resource names, made here from the uploaded file: proof that the right instance
was chosen and crossed C-MOVE / C-GET intact."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
import trio
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.uid import RLELossless

from rst.config import AeConfig
from rst.dicom.multipart import MultipartReader, parse_content_type
from rst.dicom.render import render
from rst.dicom.render_params import JPEG, PNG, Rendering, Viewport, Window
from rst.server import Running
from tests.support.gateway import run_gateway
from tests.support.orthanc import Orthanc, add_modality, upload
from tests.support.sample import StudyFiles, write_ct_study, write_multiframe

pytestmark = pytest.mark.integration


def base(running: Running) -> str:
    return f"{running.http_url}/aets/ORTHANC"


async def in_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """dicomweb-client is synchronous (requests): run it off the event loop rst runs on."""
    return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs))


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def rendering_of(path: Path, rendering: Rendering, frames: Sequence[int] = (0,)) -> Image.Image:
    return decoded(render(pydicom.dcmread(path), frames, rendering))


def same_pixels(got: Image.Image, expected: Image.Image) -> bool:
    return got.size == expected.size and got.tobytes() == expected.tobytes()


async def test_instance_and_series_rendered_with_dicomweb_client(
    gateway: Running, ct_study: StudyFiles
) -> None:
    client = DICOMwebClient(url=base(gateway))
    series = ct_study.series_uids[1]
    paths = ct_study.series_paths(series)
    sop = ct_study.sop_uids[ct_study.paths.index(paths[1])]
    png = await in_thread(
        client.retrieve_instance_rendered,
        ct_study.study_uid,
        series,
        sop,
        media_types=("image/png",),
    )
    jpeg = await in_thread(
        client.retrieve_instance_rendered,
        ct_study.study_uid,
        series,
        sop,
        media_types=("image/jpeg",),
        params={"viewport": "32,32", "quality": "75"},
    )
    of_series = await in_thread(
        client.retrieve_series_rendered,
        ct_study.study_uid,
        series,
        media_types=("image/png",),
        params={"window": "0,2000,linear"},
    )
    assert same_pixels(decoded(png), rendering_of(paths[1], Rendering(PNG)))
    small = decoded(jpeg)
    assert small.format == "JPEG"
    assert small.size == (32, 32)
    # a series is rendered as its first instance, with the request's window
    windowed = Rendering(PNG, window=Window(0.0, 2000.0, "LINEAR"))
    assert same_pixels(decoded(of_series), rendering_of(paths[0], windowed))


async def test_thumbnails_at_every_level(gateway: Running, ct_study: StudyFiles) -> None:
    study = ct_study.study_uid
    first_series = ct_study.series_uids[0]
    paths = ct_study.series_paths(first_series)
    middle = paths[len(paths) // 2]
    sop = ct_study.sop_uids[ct_study.paths.index(middle)]
    viewport = {"viewport": "256,256"}  # what OHIF asks
    async with httpx.AsyncClient(base_url=base(gateway), timeout=60) as http:
        of_study = await http.get(f"/studies/{study}/thumbnail", params=viewport)
        of_series = await http.get(
            f"/studies/{study}/series/{first_series}/thumbnail",
            params=viewport,
            headers={"Accept": "image/png"},
        )
        of_instance = await http.get(
            f"/studies/{study}/series/{first_series}/instances/{sop}/thumbnail"
        )
    for response in (of_study, of_series, of_instance):
        assert response.status_code == 200, response.text
    study_image = decoded(of_study.content)
    assert of_study.headers["Content-Type"] == "image/jpeg"
    assert study_image.format == "JPEG"
    assert study_image.size == (256, 256)
    expected = rendering_of(middle, Rendering(PNG, viewport=Viewport(256, 256)))
    assert same_pixels(decoded(of_series.content), expected)  # the middle of the first series
    assert decoded(of_instance.content).size == (128, 128)  # the default size


async def test_study_rendered_and_multipart_series(gateway: Running, ct_study: StudyFiles) -> None:
    study = ct_study.study_uid
    series = ct_study.series_uids[0]
    async with httpx.AsyncClient(base_url=base(gateway), timeout=60) as http:
        one = await http.get(f"/studies/{study}/rendered", headers={"Accept": "image/png"})
        parts = await http.get(
            f"/studies/{study}/series/{series}/rendered",
            headers={"Accept": 'multipart/related; type="image/png"'},
        )
    assert one.status_code == 200, one.text
    assert same_pixels(decoded(one.content), rendering_of(ct_study.paths[0], Rendering(PNG)))
    assert parts.status_code == 200, parts.text
    _, params = parse_content_type(parts.headers["Content-Type"])
    reader = MultipartReader(params["boundary"], max_part_bytes=1 << 24, max_total_bytes=1 << 26)
    received = reader.feed(parts.content) + reader.finish()
    expected = {
        f"{sop}/rendered": rendering_of(path, Rendering(PNG))
        for sop, path, s in zip(
            ct_study.sop_uids, ct_study.paths, ct_study.instance_series, strict=True
        )
        if s == series
    }
    assert len(received) == len(expected)
    for part in received:
        location = dict(part.headers)["Content-Location"]
        assert same_pixels(decoded(part.data), expected[location.rsplit("/", 2)[-2] + "/rendered"])


async def test_frames_of_a_multiframe_instance(orthanc: Orthanc, tmp_path: Path) -> None:
    mf = write_multiframe(tmp_path / "mf", frames=5, rows=48, columns=32, seed=3)
    await upload(orthanc, mf.paths)
    config = AeConfig(aet=orthanc.aet, host="127.0.0.1", port=orthanc.dicom_port)
    async with run_gateway(config) as running:
        await add_modality(orthanc, "rst", "RST", *running.dimse_address)
        client = DICOMwebClient(url=base(running))
        keys = (mf.study_uid, mf.series_uids[0], mf.sop_uids[0])
        frame = await in_thread(
            client.retrieve_instance_frames_rendered, *keys, [4], media_types=("image/png",)
        )
        animation = await in_thread(
            client.retrieve_instance_frames_rendered,
            *keys,
            [1, 3, 5],
            media_types=("image/gif",),
            params={"viewport": "64,64"},
        )
        whole = await in_thread(
            client.retrieve_instance_rendered, *keys, media_types=("image/png",)
        )
        async with httpx.AsyncClient(base_url=base(running), timeout=60) as http:
            beyond = await http.get(
                f"/studies/{keys[0]}/series/{keys[1]}/instances/{keys[2]}/frames/6/rendered"
            )
    assert same_pixels(decoded(frame), rendering_of(mf.paths[0], Rendering(PNG), [3]))
    gif = decoded(animation)
    assert gif.format == "GIF"
    assert getattr(gif, "n_frames", 1) == 3
    assert gif.size == (43, 64)  # 32x48 fitted into 64x64
    assert same_pixels(decoded(whole), rendering_of(mf.paths[0], Rendering(PNG), [0]))
    assert beyond.status_code == 404


async def test_compressed_instances_are_rendered(orthanc: Orthanc, tmp_path: Path) -> None:
    rle = write_ct_study(tmp_path / "rle", images=2, transfer_syntax=RLELossless, seed=8)
    await upload(orthanc, rle.paths)
    config = AeConfig(aet=orthanc.aet, host="127.0.0.1", port=orthanc.dicom_port)
    async with run_gateway(config) as running:
        await add_modality(orthanc, "rst", "RST", *running.dimse_address)
        async with httpx.AsyncClient(base_url=base(running), timeout=60) as http:
            response = await http.get(
                f"/studies/{rle.study_uid}/series/{rle.series_uids[0]}/instances/"
                f"{rle.sop_uids[1]}/rendered",
                params={"accept": JPEG},
            )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "image/jpeg"
    assert decoded(response.content).size == (64, 64)
