"""WADO-RS frames and transcoding from an S3 AE (moto): the same service code as for a PACS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
import trio
from dicomweb_client.api import DICOMwebClient

from rst.dicom.multipart import parse_content_type
from rst.server import Running
from tests.support.frames import EVLE, J2K, JLS, OHIF_VIEWER, decode, parts
from tests.support.sample import StudyFiles, write_multiframe

from .conftest import AET
from .test_s3_backend import stow

AS_STORED = (("application/octet-stream", "*"),)
FRAMES = 6
SIZE = 64  # OpenJPEG encodes images of at least 32x32


def instance_path(study: StudyFiles) -> str:
    return f"/studies/{study.study_uid}/series/{study.series_uids[0]}/instances/{study.sop_uids[0]}"


@pytest.fixture
async def stored(s3_gateway: Running, tmp_path: Path) -> tuple[StudyFiles, StudyFiles]:
    common: dict[str, Any] = {"frames": FRAMES, "rows": SIZE, "columns": SIZE}
    plain = write_multiframe(tmp_path / "plain", seed=41, patient_id="S3-PLAIN", **common)
    jls = write_multiframe(
        tmp_path / "jls", seed=42, patient_id="S3-JLS", transfer_syntax=JLS, **common
    )
    response = await stow(s3_gateway, [*plain.paths, *jls.paths])
    assert response.status_code == 200, response.text
    return plain, jls


def client_of(running: Running) -> DICOMwebClient:
    return DICOMwebClient(url=f"{running.http_url}/aets/{AET}")


async def frames_of(running: Running, study: StudyFiles, numbers: list[int], **kw: Any) -> Any:
    uids = (study.study_uid, study.series_uids[0], study.sop_uids[0])
    client = client_of(running)
    return await trio.to_thread.run_sync(
        lambda: client.retrieve_instance_frames(*uids, numbers, **kw)
    )


def pixels(study: StudyFiles) -> np.ndarray:
    return pydicom.dcmread(study.paths[0]).pixel_array


async def test_frames_from_s3(s3_gateway: Running, stored: tuple[StudyFiles, StudyFiles]) -> None:
    plain, jls = stored
    numbers = [2, 6]
    for study in (plain, jls):
        expected = pixels(study)
        default = await frames_of(s3_gateway, study, numbers)
        as_stored = await frames_of(s3_gateway, study, numbers, media_types=AS_STORED)
        syntax = EVLE if study is plain else JLS
        for frame, number in zip(default, numbers, strict=True):
            assert frame == expected[number - 1].astype("<i2").tobytes()
        for frame, number in zip(as_stored, numbers, strict=True):
            assert np.array_equal(decode(frame, syntax, expected), expected[number - 1])
        assert len(default) == len(as_stored) == len(numbers)


async def test_ohif_first_part_and_transcoding_from_s3(
    s3_gateway: Running, stored: tuple[StudyFiles, StudyFiles]
) -> None:
    plain, jls = stored
    base = f"{s3_gateway.http_url}/aets/{AET}"
    async with httpx.AsyncClient(base_url=base, timeout=60, trust_env=False) as http:
        ohif = await http.get(f"{instance_path(jls)}/frames/1", headers={"Accept": OHIF_VIEWER})
        j2k = await http.get(
            f"{instance_path(plain)}/frames/3",
            headers={"Accept": f"multipart/related; type=image/jp2; transfer-syntax={J2K}"},
        )
    assert ohif.status_code == 200
    boundary = parse_content_type(ohif.headers["Content-Type"])[1]["boundary"]
    first = f"--{boundary}\r\nContent-Type: image/jls; transfer-syntax={JLS}\r\n"
    assert ohif.content.startswith(first.encode())
    [(_, frame)] = parts(ohif)
    assert np.array_equal(decode(frame, JLS, pixels(jls)), pixels(jls)[0])
    assert j2k.status_code == 200
    [(part_type, frame)] = parts(j2k)
    assert part_type == f"image/jp2; transfer-syntax={J2K}"
    assert np.array_equal(decode(frame, J2K, pixels(plain)), pixels(plain)[2])

    # and a whole instance transcoded from JPEG-LS into JPEG 2000
    client = client_of(s3_gateway)
    uids = (jls.study_uid, jls.series_uids[0], jls.sop_uids[0])
    got = await trio.to_thread.run_sync(
        lambda: client.retrieve_instance(*uids, media_types=(("application/dicom", J2K),))
    )
    assert got.file_meta.TransferSyntaxUID == J2K
    assert np.array_equal(got.pixel_array, pixels(jls))
