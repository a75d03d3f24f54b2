"""What the scale-out tests ask the replicas, and how they compare the answers.

Studies of their own per test (:func:`study_for`), STOW-RS, QIDO-RS and WADO-RS through one
replica, instances compared element by element (:func:`by_sop`), and how many instances a
replica's receiver took from the PACS (``/metrics``), which tells who did a C-MOVE.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import httpx
import pydicom
from prometheus_client.parser import text_string_to_metric_families
from pydicom.filebase import DicomBytesIO
from pydicom.uid import generate_uid

from rst.dicom.multipart import MultipartWriter
from tests.support.download import DEFAULT, Download
from tests.support.replicas import BASE_URL, DIMSE_AET, S3_AET, Replica
from tests.support.sample import StudyFiles, write_ct_study

ARCHIVES = (S3_AET, DIMSE_AET)
IMAGES = 6
FRAMES = 'multipart/related; type="application/octet-stream"'
TIMEOUT = 120.0  # every test's requests: bounded, generous for a loaded 2-CPU machine


def study_for(tmp_path: Path, name: str) -> StudyFiles:
    """A study of its own for *name* (UIDs no other test in the module uses)."""
    seed = zlib.crc32(name.encode())
    return write_ct_study(
        tmp_path / "study", images=IMAGES, series=2, seed=seed, patient_id=f"SCALE-{seed}"
    )


def one_more_in_series(study: StudyFiles, series: int, path: Path) -> Path:
    """A new instance of *study*'s series number *series* (a copy of its first instance under
    a new SOP Instance UID), written to *path*."""
    first = next(
        p
        for p, se in zip(study.paths, study.instance_series, strict=True)
        if se == study.series_uids[series]
    )
    ds = pydicom.dcmread(first)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(
        entropy_srcs=[study.study_uid, str(series), "one more"]
    )
    ds.InstanceNumber = len(study.paths) + 1
    ds.save_as(path, enforce_file_format=True)
    return path


def http() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=60.0, trust_env=False)


async def stow(client: httpx.AsyncClient, replica: Replica, aet: str, *files: Path) -> None:
    """STOW-RS *files* in one request to archive *aet* through *replica*; all must be stored."""
    writer = MultipartWriter()
    body = b"".join(writer.part_head("application/dicom") + f.read_bytes() for f in files)
    response = await client.post(
        f"{replica.archive(aet)}/studies",
        content=body + writer.close(),
        headers={"Content-Type": writer.content_type("application/dicom")},
    )
    assert response.status_code == 200, (replica.aet, response.text)
    stored = response.json()["00081199"]["Value"]
    assert len(stored) == len(files)
    for item in stored:  # the public URL, whichever replica answered
        assert item["00081190"]["Value"][0].startswith(f"{BASE_URL}/aets/{aet}/studies/")


async def instances_found(
    client: httpx.AsyncClient, replica: Replica, aet: str, study: str
) -> list[str]:
    """The SOP Instance UIDs QIDO-RS finds in *study* through *replica*, sorted."""
    response = await client.get(f"{replica.archive(aet)}/studies/{study}/instances")
    assert response.status_code == 200, (replica.aet, response.text)
    return sorted(item["00080018"]["Value"][0] for item in response.json())


async def retrieved(
    replica: Replica, aet: str, study: str, accept: str = DEFAULT, *, series: str | None = None
) -> list[bytes]:
    """The instances of a WADO-RS retrieve of *study* (or of its *series*) through *replica*:
    each part's bytes."""
    url = f"{replica.archive(aet)}/studies/{study}" + (f"/series/{series}" if series else "")
    download = Download(url, accept=accept)
    await download.run()
    assert download.status == 200, (replica.aet, bytes(download.body[:500]))
    return [data for _, data in download.parts()]


def elements(data: bytes | Path) -> dict[str, Any]:
    """A Part 10 instance's data set as {tag: (VR, value)}: what "the same instance" means
    whatever its file meta or the order it came in."""
    ds = pydicom.dcmread(DicomBytesIO(data) if isinstance(data, bytes) else data)
    return {str(elem.tag): (elem.VR, elem.value) for elem in ds}


def by_sop(instances: list[bytes] | list[Path]) -> dict[str, dict[str, Any]]:
    out = {}
    for data in instances:
        found = elements(data)
        out[found["(0008,0018)"][1]] = found
    return out


async def retrieved_instances(replica: Replica) -> float:
    """Instances the replica's receiver took from Orthanc for retrieves so far (/metrics)."""
    async with http() as client:
        response = await client.get(f"{replica.url}/metrics")
    assert response.status_code == 200
    return sum(
        sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == "rst_retrieved_instances_total" and sample.labels["aet"] == DIMSE_AET
    )
