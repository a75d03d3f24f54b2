"""Metadata and bulk data of an S3 AE (moto): the same service code as for a PACS, so the same
answers — pydicom's own JSON of the stored files, and BulkDataURIs that give their bytes."""

from __future__ import annotations

from pathlib import Path

import httpx
import pydicom
from dicomweb_client.api import DICOMwebClient

from rst.server import Running
from tests.integration.test_gateway_orthanc import in_thread
from tests.integration.test_metadata_orthanc import (
    OHIF,
    assert_is_the_source,
    bulk_uris,
    enrich,
    parts_of,
)
from tests.support.sample import StudyFiles, write_multiframe

from .test_s3_backend import base, stow


def dicomweb(running: Running) -> DICOMwebClient:
    client = DICOMwebClient(url=base(running))
    client.host = f"{client.host}:{client.port}"  # see tests/integration/test_metadata_orthanc
    return client


async def test_metadata_and_bulk_data_from_s3(
    s3_gateway: Running, study: StudyFiles, tmp_path: Path
) -> None:
    enrich(study.paths[2])
    multiframe = write_multiframe(tmp_path / "mf", frames=3, study_uid=study.study_uid, seed=41)
    paths = [*study.paths, *multiframe.paths]
    stored = await stow(s3_gateway, paths)
    assert stored.status_code == 200, stored.text
    by_sop = {pydicom.dcmread(p).SOPInstanceUID: p for p in paths}

    client = dicomweb(s3_gateway)
    rows = await in_thread(client.retrieve_study_metadata, study.study_uid)
    assert sorted(row["00080018"]["Value"][0] for row in rows) == sorted(by_sop)
    series_uid = study.instance_series[2]
    series = await in_thread(client.retrieve_series_metadata, study.study_uid, series_uid)
    assert len(series) == len(study.series_paths(series_uid))
    one = await in_thread(
        client.retrieve_instance_metadata, study.study_uid, series_uid, study.sop_uids[2]
    )
    assert "00880200/0/7FE00010" in bulk_uris(one)
    seen: set[str] = set()
    for row in rows:
        bulk = {}
        for tag_path, uri in bulk_uris(row).items():
            [bulk[tag_path]] = await in_thread(client.retrieve_bulkdata, uri)
            seen.add(tag_path)
        assert_is_the_source(row, by_sop[row["00080018"]["Value"][0]], bulk)
    assert {"7FE00010", "60003000", "00880200/0/7FE00010"} <= seen

    async with httpx.AsyncClient(base_url=base(s3_gateway), timeout=60, trust_env=False) as http:
        ohif = await http.get(f"/studies/{study.study_uid}/metadata", headers={"Accept": OHIF})
        pixels = await http.get(f"/studies/{study.study_uid}/series/{series_uid}/pixeldata")
        missing = await http.get(f"/studies/{study.study_uid}/series/1.2.3/metadata")
    assert ohif.status_code == 200
    assert ohif.headers["Content-Type"] == "application/dicom+json"
    assert len(ohif.json()) == len(paths)
    expected = sorted(pydicom.dcmread(p).PixelData for p in study.series_paths(series_uid))
    assert sorted(part.data for part in parts_of(pixels)) == expected
    assert missing.status_code == 404
