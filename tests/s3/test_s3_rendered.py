"""Rendered and thumbnail resources of an S3 AE (moto in server mode), through the same service
code as a DIMSE archive: the representative instance comes from the bucket's QIDO index."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
import trio
from dicomweb_client.api import DICOMwebClient
from PIL import Image

from rst.dicom.render import render
from rst.dicom.render_params import PNG, Rendering, Viewport
from rst.server import Running
from tests.support.sample import StudyFiles

from .conftest import AET
from .test_s3_backend import stow


def base(running: Running) -> str:
    return f"{running.http_url}/aets/{AET}"


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def expected(path: Path, rendering: Rendering) -> bytes:
    return decoded(render(pydicom.dcmread(path), [0], rendering)).tobytes()


async def in_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs))


@pytest.fixture
async def stored(s3_gateway: Running, study: StudyFiles) -> StudyFiles:
    response = await stow(s3_gateway, study.paths)
    assert response.status_code == 200, response.text
    return study


async def test_rendered_with_dicomweb_client(s3_gateway: Running, stored: StudyFiles) -> None:
    client = DICOMwebClient(url=base(s3_gateway))
    series = stored.series_uids[1]
    paths = stored.series_paths(series)
    sop = stored.sop_uids[stored.paths.index(paths[2])]
    instance = await in_thread(
        client.retrieve_instance_rendered,
        stored.study_uid,
        series,
        sop,
        media_types=("image/png",),
        params={"viewport": "32,32"},
    )
    of_series = await in_thread(
        client.retrieve_series_rendered, stored.study_uid, series, media_types=("image/png",)
    )
    small = decoded(instance)
    assert small.size == (32, 32)
    assert small.tobytes() == expected(paths[2], Rendering(PNG, viewport=Viewport(32, 32)))
    assert decoded(of_series).tobytes() == expected(paths[0], Rendering(PNG))


async def test_thumbnails(s3_gateway: Running, stored: StudyFiles) -> None:
    first_series = stored.series_paths(stored.series_uids[0])
    middle = first_series[len(first_series) // 2]
    async with httpx.AsyncClient(base_url=base(s3_gateway), timeout=60, trust_env=False) as http:
        of_study = await http.get(
            f"/studies/{stored.study_uid}/thumbnail",
            params={"viewport": "256,256"},
            headers={"Accept": "image/png"},
        )
        of_instance = await http.get(
            f"/studies/{stored.study_uid}/series/{stored.instance_series[0]}/instances/"
            f"{stored.sop_uids[0]}/thumbnail"
        )
        missing = await http.get("/studies/1.2.3.4.5/thumbnail")
    assert of_study.status_code == 200, of_study.text
    image = decoded(of_study.content)
    assert image.size == (256, 256)
    assert image.tobytes() == expected(middle, Rendering(PNG, viewport=Viewport(256, 256)))
    assert of_instance.status_code == 200, of_instance.text
    assert of_instance.headers["Content-Type"] == "image/jpeg"
    assert decoded(of_instance.content).size == (128, 128)
    assert missing.status_code == 404
