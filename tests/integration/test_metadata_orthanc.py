"""Metadata and bulk data through rst in front of a real Orthanc (C-MOVE and C-GET), driven by
dicomweb-client and httpx: the metadata is pydicom's own DICOM JSON of the files uploaded,
and every BulkDataURI in it gives back the original bytes."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom import Dataset
from pydicom.encaps import generate_frames

from rst.config import AeConfig
from rst.dicom.multipart import MultipartReader, Part, parse_content_type
from rst.server import Running
from tests.integration.test_gateway_orthanc import base, in_thread
from tests.support.gateway import run_gateway
from tests.support.orthanc import Orthanc, add_modality, upload
from tests.support.sample import StudyFiles, write_ct_study, write_multiframe

pytestmark = pytest.mark.integration

OHIF = "application/dicom+json, multipart/related; type=application/octet-stream; transfer-syntax=*"
RLE = "1.2.840.10008.1.2.5"


def enrich(path: Path) -> None:
    """Give an instance an overlay (2 KiB) and an icon image (4 KiB of pixels in a sequence)."""
    ds = pydicom.dcmread(path)
    ds.add_new(0x60000010, "US", 128)
    ds.add_new(0x60000011, "US", 128)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", bytes(range(256)) * 8)
    icon = Dataset()
    icon.Rows = icon.Columns = 64
    icon.SamplesPerPixel = 1
    icon.PhotometricInterpretation = "MONOCHROME2"
    icon.BitsAllocated = icon.BitsStored = 8
    icon.HighBit = 7
    icon.PixelRepresentation = 0
    icon.PixelData = bytes(range(255, -1, -1)) * 16
    ds.IconImageSequence = [icon]
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture
async def study(orthanc: Orthanc, tmp_path: Path) -> StudyFiles:
    """4 CT images in 2 series (one with an overlay and an icon) and a 4-frame instance in a
    third series, in one study."""
    ct = write_ct_study(tmp_path / "ct", images=4, series=2, seed=31)
    enrich(ct.paths[1])
    mf = write_multiframe(tmp_path / "mf", frames=4, study_uid=ct.study_uid, seed=32)
    await upload(orthanc, [*ct.paths, *mf.paths])
    return StudyFiles(
        ct.study_uid,
        [*ct.series_uids, *mf.series_uids],
        [*ct.sop_uids, *mf.sop_uids],
        [*ct.paths, *mf.paths],
        [*ct.instance_series, *mf.instance_series],
    )


@pytest.fixture(params=["move", "get"])
async def gateway(request: Any, orthanc: Orthanc) -> AsyncIterator[Running]:
    config = AeConfig(
        aet=orthanc.aet, host="127.0.0.1", port=orthanc.dicom_port, retrieve=request.param
    )
    async with run_gateway(config) as running:
        await add_modality(orthanc, "rst", "RST", *running.dimse_address)
        yield running


def dicomweb(running: Running) -> DICOMwebClient:
    """dicomweb-client for rst's URL, sending its Host header with the port: it leaves the port
    out (its own bug), and a Host without a port names port 80 — where rst, which names itself
    by the Host header in the BulkDataURIs it hands out, would then send it back."""
    client = DICOMwebClient(url=base(running))
    client.host = f"{client.host}:{client.port}"
    return client


def parts_of(response: httpx.Response) -> list[Part]:
    _, params = parse_content_type(response.headers["Content-Type"])
    reader = MultipartReader(params["boundary"], max_part_bytes=1 << 30, max_total_bytes=1 << 30)
    return reader.feed(response.content) + reader.finish()


def bulk_uris(json_dataset: dict[str, Any], path: str = "") -> dict[str, str]:
    """Tag path → BulkDataURI of every bulk value in *json_dataset*, sequences too."""
    found = {}
    for key, entry in json_dataset.items():
        if "BulkDataURI" in entry:
            found[path + key] = entry["BulkDataURI"]
        for index, item in enumerate(entry.get("Value", []) if entry["vr"] == "SQ" else []):
            found |= bulk_uris(item, f"{path}{key}/{index}/")
    return found


def assert_is_the_source(ours: dict[str, Any], path: Path, bulk: dict[str, bytes]) -> None:
    """*ours* is pydicom's own JSON of the file at *path* (group 0002 excluded), except that
    bulk values are BulkDataURIs, whose bytes (*bulk*, by tag path) are the file's."""
    expected = pydicom.dcmread(path).to_json_dict()

    def compare(got: dict[str, Any], want: dict[str, Any], where: str) -> None:
        assert got.keys() == want.keys(), where
        for key, entry in got.items():
            if "BulkDataURI" in entry:
                assert entry["vr"] == want[key]["vr"]
                assert bulk[where + key] == base64.b64decode(want[key]["InlineBinary"])
            elif entry["vr"] == "SQ":
                assert len(entry.get("Value", [])) == len(want[key].get("Value", []))
                for index, (a, b) in enumerate(
                    zip(entry.get("Value", []), want[key].get("Value", []), strict=True)
                ):
                    compare(a, b, f"{where}{key}/{index}/")
            else:
                assert entry == want[key], where + key

    compare(ours, expected, "")


async def test_metadata_and_bulk_data_equal_the_uploaded_files(
    gateway: Running, study: StudyFiles
) -> None:
    client = dicomweb(gateway)
    by_sop = dict(zip(study.sop_uids, study.paths, strict=True))
    whole = await in_thread(client.retrieve_study_metadata, study.study_uid)
    series_uid = study.instance_series[1]
    series = await in_thread(client.retrieve_series_metadata, study.study_uid, series_uid)
    one = await in_thread(
        client.retrieve_instance_metadata, study.study_uid, series_uid, study.sop_uids[1]
    )
    assert sorted(row["00080018"]["Value"][0] for row in whole) == sorted(study.sop_uids)
    assert {row["0020000E"]["Value"][0] for row in series} == {series_uid}
    assert len(series) == study.instance_series.count(series_uid)
    assert one == next(row for row in whole if row["00080018"]["Value"][0] == study.sop_uids[1])

    seen: set[str] = set()
    for row in whole:
        sop = row["00080018"]["Value"][0]
        bulk = {}
        for tag_path, uri in bulk_uris(row).items():
            [value] = await in_thread(client.retrieve_bulkdata, uri)
            bulk[tag_path] = value
            seen.add(tag_path)
        assert_is_the_source(row, by_sop[sop], bulk)
    # the overlay and the icon's pixels (in a sequence) were among them
    assert {"7FE00010", "60003000", "00880200/0/7FE00010"} <= seen
    enriched = bulk_uris(one)
    assert enriched["60003000"].endswith(f"/instances/{study.sop_uids[1]}/bulkdata/60003000")
    assert enriched["00880200/0/7FE00010"].endswith("/bulkdata/00880200/0/7FE00010")
    assert enriched["7FE00010"].endswith(f"/instances/{study.sop_uids[1]}/pixeldata")


async def test_ohif_requests(gateway: Running, study: StudyFiles) -> None:
    series_uid = study.series_uids[-1]  # the multi-frame instance
    async with httpx.AsyncClient(base_url=base(gateway), timeout=60) as http:
        metadata = await http.get(
            f"/studies/{study.study_uid}/series/{series_uid}/metadata", headers={"Accept": OHIF}
        )
        pixels = await http.get(f"/studies/{study.study_uid}/pixeldata")
        missing = await http.get("/studies/1.2.3.4.5/metadata", headers={"Accept": OHIF})
    assert metadata.status_code == 200
    assert metadata.headers["Content-Type"] == "application/dicom+json"
    [row] = metadata.json()
    assert row["00280008"]["Value"] == [4]
    expected = {
        pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p).PixelData for p in study.paths
    }
    got = {
        dict(part.headers)["Content-Location"]
        .split("/instances/")[1]
        .removesuffix("/pixeldata"): part.data
        for part in parts_of(pixels)
    }
    assert got == expected
    assert missing.status_code == 404
    assert missing.json()["error"]


async def test_compressed_pixel_data_as_stored(orthanc: Orthanc, tmp_path: Path) -> None:
    """C-MOVE: Orthanc sends the RLE instance as stored; with transfer-syntax=* each frame is
    sent as it is stored, labelled image/dicom-rle; by default decompressed."""
    rle = write_multiframe(tmp_path / "rle", frames=3, transfer_syntax=RLE, seed=33)
    await upload(orthanc, rle.paths)
    source = pydicom.dcmread(rle.paths[0])
    config = AeConfig(aet=orthanc.aet, host="127.0.0.1", port=orthanc.dicom_port)
    async with run_gateway(config) as running:
        await add_modality(orthanc, "rst", "RST", *running.dimse_address)
        async with httpx.AsyncClient(base_url=base(running), timeout=60) as http:
            [row] = (await http.get(f"/studies/{rle.study_uid}/metadata")).json()
            uri = row["7FE00010"]["BulkDataURI"]
            stored = await http.get(uri, headers={"Accept": OHIF.split(", ")[1]})
            default = await http.get(uri)
    frames = parts_of(stored)
    assert [part.data for part in frames] == list(
        generate_frames(source.PixelData, number_of_frames=3)
    )
    assert {part.content_type for part in frames} == {f"image/dicom-rle; transfer-syntax={RLE}"}
    [decompressed] = parts_of(default)
    assert decompressed.data == source.pixel_array.tobytes()
