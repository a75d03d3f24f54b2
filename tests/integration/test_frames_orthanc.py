"""WADO-RS frames and transcoding through rst in front of a real Orthanc.

dicomweb-client (what many scripts use) and OHIF's exact Accept headers (raw httpx): every frame
comes back with the pixel values of the original, whether it was stored uncompressed or as
JPEG-LS, asked for as stored (``transfer-syntax=*``), decompressed (the default) or transcoded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from io import BytesIO
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np
import pydicom
import pytest
import trio
from dicomweb_client.api import DICOMwebClient

from rst.config import AeConfig
from rst.dicom.multipart import parse_content_type
from rst.server import Running
from tests.support.frames import EVLE, J2K, JLS, OHIF_LOADER, OHIF_VIEWER, RLE, decode, parts
from tests.support.gateway import run_gateway
from tests.support.orthanc import Orthanc, add_modality, upload
from tests.support.sample import StudyFiles, write_multiframe

pytestmark = pytest.mark.integration

JPEG = "1.2.840.10008.1.2.4.50"
AS_STORED = (("application/octet-stream", "*"),)
FRAMES = 6
SIZE = 64  # OpenJPEG encodes images of at least 32x32

Mode = Literal["move", "get"]


class Archive:
    """Orthanc holding two 6-frame instances: one uncompressed, one JPEG-LS Lossless."""

    def __init__(self, orthanc: Orthanc, plain: StudyFiles, jls: StudyFiles) -> None:
        self.orthanc = orthanc
        self.plain = plain
        self.jls = jls

    @staticmethod
    def pixels(study: StudyFiles) -> np.ndarray:
        return pydicom.dcmread(study.paths[0]).pixel_array  # (frames, rows, columns), int16


@pytest.fixture
async def archive(orthanc: Orthanc, tmp_path: Path) -> Archive:
    common: dict[str, Any] = {"frames": FRAMES, "rows": SIZE, "columns": SIZE}
    plain = write_multiframe(tmp_path / "plain", seed=31, patient_id="MF-PLAIN", **common)
    jls = write_multiframe(
        tmp_path / "jls", seed=32, patient_id="MF-JLS", transfer_syntax=JLS, **common
    )
    assert pydicom.dcmread(jls.paths[0]).file_meta.TransferSyntaxUID == JLS
    await upload(orthanc, [*plain.paths, *jls.paths])
    return Archive(orthanc, plain, jls)


async def gateway_for(orthanc: Orthanc, mode: Mode) -> AsyncIterator[Running]:
    config = AeConfig(aet=orthanc.aet, host="127.0.0.1", port=orthanc.dicom_port, retrieve=mode)
    async with run_gateway(config) as running:
        await add_modality(orthanc, "rst", "RST", *running.dimse_address)
        yield running


@pytest.fixture(params=["move", "get"])
async def gateway(request: Any, archive: Archive) -> AsyncIterator[Running]:
    async for running in gateway_for(archive.orthanc, request.param):
        yield running


@pytest.fixture
async def move_gateway(archive: Archive) -> AsyncIterator[Running]:
    async for running in gateway_for(archive.orthanc, "move"):
        yield running


def base(running: Running) -> str:
    return f"{running.http_url}/aets/ORTHANC"


def instance_path(study: StudyFiles) -> str:
    return f"/studies/{study.study_uid}/series/{study.series_uids[0]}/instances/{study.sop_uids[0]}"


async def in_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """dicomweb-client is synchronous (requests): run it off the event loop rst runs on."""
    return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs))


async def frames_of(
    running: Running, study: StudyFiles, numbers: list[int], **kwargs: Any
) -> list[bytes]:
    client = DICOMwebClient(url=base(running))
    uids = (study.study_uid, study.series_uids[0], study.sop_uids[0])
    frames: list[bytes] = await in_thread(client.retrieve_instance_frames, *uids, numbers, **kwargs)
    return frames


def syntax_of(part_type: str) -> str:
    return parse_content_type(part_type)[1]["transfer-syntax"]


# -- dicomweb-client -----------------------------------------------------------------------------


async def test_uncompressed_multiframe(gateway: Running, archive: Archive) -> None:
    expected = archive.pixels(archive.plain)
    numbers = [1, 4, 6]
    default = await frames_of(gateway, archive.plain, numbers)
    stored = await frames_of(gateway, archive.plain, [2], media_types=AS_STORED)
    assert len(default) == len(numbers)
    for frame, number in zip(default, numbers, strict=True):
        assert frame == expected[number - 1].astype("<i2").tobytes()
    assert stored == [expected[1].astype("<i2").tobytes()]


async def test_jpeg_ls_multiframe_as_stored_and_decompressed(
    move_gateway: Running, archive: Archive
) -> None:
    """C-MOVE: Orthanc sends the instance as stored (JPEG-LS), so ``*`` gives JPEG-LS frames
    and the default gives frames rst decompressed itself."""
    expected = archive.pixels(archive.jls)
    numbers = [6, 2, 3]
    stored = await frames_of(move_gateway, archive.jls, numbers, media_types=AS_STORED)
    default = await frames_of(move_gateway, archive.jls, numbers)
    for frame, number in zip(stored, numbers, strict=True):
        assert frame[:2] == b"\xff\xd8"  # a JPEG-LS codestream, not pixels
        assert np.array_equal(decode(frame, JLS, expected), expected[number - 1])
    for frame, number in zip(default, numbers, strict=True):
        assert frame == expected[number - 1].astype("<i2").tobytes()
    assert len(stored) == len(default) == len(numbers)


async def test_jpeg_ls_multiframe_by_c_get(archive: Archive) -> None:
    """C-GET proposes the syntaxes per request: whatever Orthanc picks, the frames' label tells
    the truth and the pixels are the originals."""
    expected = archive.pixels(archive.jls)
    async for running in gateway_for(archive.orthanc, "get"):
        default = await frames_of(running, archive.jls, [5])
        async with httpx.AsyncClient(base_url=base(running), timeout=60) as http:
            response = await http.get(
                f"{instance_path(archive.jls)}/frames/1,5", headers={"Accept": OHIF_LOADER}
            )
    assert default == [expected[4].astype("<i2").tobytes()]
    assert response.status_code == 200
    got = parts(response)
    for (part_type, frame), number in zip(got, [1, 5], strict=True):
        assert np.array_equal(decode(frame, syntax_of(part_type), expected), expected[number - 1])


@pytest.mark.parametrize(("media_type", "syntax"), [("image/jls", JLS), ("image/jp2", J2K)])
async def test_frames_transcoded(
    move_gateway: Running, archive: Archive, media_type: str, syntax: str
) -> None:
    """Frames of the uncompressed instance encoded, and of the JPEG-LS one re-encoded."""
    for study in (archive.plain, archive.jls):
        expected = archive.pixels(study)
        frames = await frames_of(move_gateway, study, [3], media_types=((media_type, syntax),))
        assert len(frames) == 1
        assert np.array_equal(decode(frames[0], syntax, expected), expected[2])


@pytest.mark.parametrize("syntax", [JLS, J2K, RLE])
async def test_instance_retrieve_transcoded_losslessly(
    gateway: Running, archive: Archive, syntax: str
) -> None:
    client = DICOMwebClient(url=base(gateway))
    for study in (archive.plain, archive.jls):
        uids = (study.study_uid, study.series_uids[0], study.sop_uids[0])
        got = await in_thread(
            client.retrieve_instance, *uids, media_types=(("application/dicom", syntax),)
        )
        assert got.file_meta.TransferSyntaxUID == syntax
        assert got.SOPInstanceUID == study.sop_uids[0]
        assert np.array_equal(got.pixel_array, archive.pixels(study))


async def test_study_retrieve_transcoded_instance_by_instance(
    move_gateway: Running, archive: Archive
) -> None:
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={J2K}'
    async with httpx.AsyncClient(base_url=base(move_gateway), timeout=60) as http:
        response = await http.get(f"/studies/{archive.jls.study_uid}", headers={"Accept": accept})
    assert response.status_code == 200
    [(part_type, data)] = parts(response)
    assert part_type == f"application/dicom; transfer-syntax={J2K}"
    ds = pydicom.dcmread(BytesIO(data))
    assert np.array_equal(ds.pixel_array, archive.pixels(archive.jls))


# -- OHIF ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("accept", [OHIF_VIEWER, OHIF_LOADER])
async def test_ohif_accept_headers(move_gateway: Running, archive: Archive, accept: str) -> None:
    async with httpx.AsyncClient(base_url=base(move_gateway), timeout=60) as http:
        plain = await http.get(
            f"{instance_path(archive.plain)}/frames/2", headers={"Accept": accept}
        )
        jls = await http.get(f"{instance_path(archive.jls)}/frames/2", headers={"Accept": accept})
    for response, media_type, syntax, study in (
        (plain, "application/octet-stream", EVLE, archive.plain),
        (jls, "image/jls", JLS, archive.jls),
    ):
        assert response.status_code == 200
        boundary = parse_content_type(response.headers["Content-Type"])[1]["boundary"]
        first = f"--{boundary}\r\nContent-Type: {media_type}; transfer-syntax={syntax}\r\n"
        assert response.content.startswith(first.encode())
        [(_, frame)] = parts(response)
        expected = archive.pixels(study)
        assert np.array_equal(decode(frame, syntax, expected), expected[1])


async def test_errors(move_gateway: Running, archive: Archive) -> None:
    path = instance_path(archive.plain)
    async with httpx.AsyncClient(base_url=base(move_gateway), timeout=60) as http:
        beyond = await http.get(f"{path}/frames/2,7")
        zero = await http.get(f"{path}/frames/0")
        lossy = await http.get(
            f"{path}/frames/1",
            headers={"Accept": f"multipart/related; type=image/jpeg; transfer-syntax={JPEG}"},
        )
        unknown = await http.get(
            f"/studies/{archive.plain.study_uid}/series/{archive.plain.series_uids[0]}"
            "/instances/1.2.3.999/frames/1"
        )
    assert beyond.status_code == 404
    assert f"has {FRAMES} frames" in beyond.json()["error"]
    assert zero.status_code == 400
    assert lossy.status_code == 406
    assert "image/jls" in lossy.json()["error"]
    assert unknown.status_code == 404
