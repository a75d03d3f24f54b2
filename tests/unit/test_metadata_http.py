"""The metadata and bulk data routes through the real app and listener, in front of in-memory
archives: negotiation, streaming, statuses, and BulkDataURIs that resolve."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
import trio

from rst.dicom.multipart import MultipartReader, Part, parse_content_type
from rst.errors import NotFound
from rst.http import metadata_routes
from rst.http.streaming import start_body
from rst.services.protocols import Instance, RetrieveKeys
from tests.gateway.test_containment import serving
from tests.support.sample import StudyFiles, write_ct_study, write_multiframe
from tests.support.scripted_backend import ScriptedBackend

OHIF = "application/dicom+json, multipart/related; type=application/octet-stream; transfer-syntax=*"
OCTET = "application/octet-stream"


def instance(path: Path) -> Instance:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    syntax = ds.file_meta.TransferSyntaxUID
    return Instance(path.read_bytes(), ds.SOPClassUID, ds.SOPInstanceUID, syntax)


def parts_of(response: httpx.Response) -> list[Part]:
    _, params = parse_content_type(response.headers["Content-Type"])
    reader = MultipartReader(params["boundary"], max_part_bytes=1 << 30, max_total_bytes=1 << 30)
    return reader.feed(response.content) + reader.finish()


@pytest.fixture
def study(tmp_path: Path) -> StudyFiles:
    return write_ct_study(tmp_path / "ct", images=3)


@pytest.fixture
def backend(study: StudyFiles) -> ScriptedBackend:
    return ScriptedBackend(instances=[instance(p) for p in study.paths], by_keys=True)


def instance_url(study: StudyFiles, index: int) -> str:
    series, sop = study.instance_series[index], study.sop_uids[index]
    return f"/aets/X/studies/{study.study_uid}/series/{series}/instances/{sop}"


async def test_metadata_for_ohifs_accept_header(
    backend: ScriptedBackend, study: StudyFiles
) -> None:
    url = f"/aets/X/studies/{study.study_uid}/metadata"
    async with serving({"X": backend}) as client:
        ohif = await client.get(url, headers={"Accept": OHIF})
        plain = await client.get(url, headers={"Accept": "application/json"})
        anything = await client.get(url, headers={"Accept": "*/*"})
        param = await client.get(url, params={"accept": "application/json"})
        refused = await client.get(url, headers={"Accept": "multipart/related; type=image/jpeg"})
    assert ohif.status_code == 200
    assert ohif.headers["Content-Type"] == "application/dicom+json"
    assert [row["00080018"]["Value"][0] for row in ohif.json()] == study.sop_uids
    assert plain.headers["Content-Type"] == param.headers["Content-Type"] == "application/json"
    assert anything.headers["Content-Type"] == "application/dicom+json"
    assert plain.json() == ohif.json() == anything.json()
    assert refused.status_code == 406
    assert "application/dicom+json" in refused.json()["error"]


async def test_every_bulkdata_uri_resolves(backend: ScriptedBackend, study: StudyFiles) -> None:
    source = pydicom.dcmread(study.paths[1])
    async with serving({"X": backend}) as client:
        [row] = (await client.get(f"{instance_url(study, 1)}/metadata")).json()
        uri = row["7FE00010"]["BulkDataURI"]
        assert uri == f"{client.base_url}{instance_url(study, 1)}/pixeldata"
        multipart = await client.get(uri)
        single = await client.get(uri, headers={"Accept": OCTET})
        by_tag = await client.get(f"{instance_url(study, 1)}/bulkdata/7FE00010")
    assert multipart.headers["Content-Type"].startswith(
        'multipart/related; type="application/octet-stream"; boundary='
    )
    [part] = parts_of(multipart)
    assert part.data == source.PixelData
    assert part.content_type == f"{OCTET}; transfer-syntax=1.2.840.10008.1.2.1"
    assert ("Content-Location", uri) in part.headers
    assert single.content == source.PixelData
    assert single.headers["Content-Type"].startswith(OCTET)
    assert [p.data for p in parts_of(by_tag)] == [source.PixelData]


async def test_pixeldata_and_bulkdata_of_a_study(
    backend: ScriptedBackend, study: StudyFiles
) -> None:
    async with serving({"X": backend}) as client:
        pixels = await client.get(f"/aets/X/studies/{study.study_uid}/pixeldata")
        bulk = await client.get(f"/aets/X/studies/{study.study_uid}/bulkdata")
        single = await client.get(
            f"/aets/X/studies/{study.study_uid}/pixeldata", headers={"Accept": OCTET}
        )
    expected = [pydicom.dcmread(p).PixelData for p in study.paths]
    assert [p.data for p in parts_of(pixels)] == [p.data for p in parts_of(bulk)] == expected
    locations = [dict(p.headers)["Content-Location"] for p in parts_of(pixels)]
    assert [loc.split("/instances/")[1] for loc in locations] == [
        f"{sop}/pixeldata" for sop in study.sop_uids
    ]
    assert single.status_code == 406
    assert "several values" in single.json()["error"]


async def test_compressed_pixel_data_as_stored_or_decompressed(tmp_path: Path) -> None:
    rle = write_multiframe(tmp_path, frames=3, transfer_syntax="1.2.840.10008.1.2.5")
    source = pydicom.dcmread(rle.paths[0])
    backend = ScriptedBackend(instances=[instance(rle.paths[0])])
    url = f"/aets/X/studies/{rle.study_uid}/series/{rle.series_uids[0]}/instances/"
    url += f"{rle.sop_uids[0]}/pixeldata"
    async with serving({"X": backend}) as client:
        stored = await client.get(url, headers={"Accept": OHIF})
        default = await client.get(url)
    frames = parts_of(stored)
    assert len(frames) == 3
    assert {p.content_type for p in frames} == {
        "image/dicom-rle; transfer-syntax=1.2.840.10008.1.2.5"
    }
    assert dict(frames[2].headers)["Content-Location"].endswith(f"{rle.sop_uids[0]}/frames/3")
    assert stored.headers["Content-Type"].startswith('multipart/related; type="image/dicom-rle"')
    [decompressed] = parts_of(default)
    assert decompressed.data == source.pixel_array.tobytes()


async def test_request_errors(backend: ScriptedBackend, study: StudyFiles) -> None:
    base = instance_url(study, 0)
    async with serving({"X": backend}) as client:
        bad_path = await client.get(f"{base}/bulkdata/7FE0001")
        not_bulk = await client.get(f"{base}/bulkdata/00100010")
        missing = await client.get(f"{base}/bulkdata/60003000")
        bad_uid = await client.get("/aets/X/studies/1.2.x/metadata")
        unknown = await client.get(f"/aets/NOPE/studies/{study.study_uid}/metadata")
        unacceptable = await client.get(
            f"{base}/bulkdata/7FE00010", headers={"Accept": "text/html"}
        )
    assert bad_path.status_code == 400
    assert "8 hex digits" in bad_path.json()["error"]
    assert not_bulk.status_code == 404
    assert "PN, not bulk data" in not_bulk.json()["error"]
    assert missing.status_code == 404
    assert "no element 60003000" in missing.json()["error"]
    assert bad_uid.status_code == 400
    assert unknown.status_code == 404
    assert unacceptable.status_code == 406
    assert backend.opened == 3  # the 400s and the unknown AE never reached the archive


async def test_failure_before_the_first_instance_is_a_status(study: StudyFiles) -> None:
    backend = ScriptedBackend(
        instances=[instance(p) for p in study.paths],
        fail_retrieve_after=0,
        error=lambda: NotFound("no such study in the archive"),
    )
    async with serving({"X": backend}) as client:
        response = await client.get(f"/aets/X/studies/{study.study_uid}/metadata")
    assert response.status_code == 404
    assert response.json()["error"] == "no such study in the archive"


async def test_failure_after_the_first_instance_breaks_the_array_off(study: StudyFiles) -> None:
    backend = ScriptedBackend(
        instances=[instance(p) for p in study.paths],
        fail_retrieve_after=2,
        error=lambda: NotFound("gone"),
    )
    async with serving({"X": backend}) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(f"/aets/X/studies/{study.study_uid}/metadata")


class GatedBackend(ScriptedBackend):
    """Sends its first instance, then waits for ``gate`` before the others."""

    gate: trio.Event

    @asynccontextmanager
    async def retrieve(
        self, keys: RetrieveKeys, prefer: str | None = None
    ) -> AsyncIterator[AsyncIterator[Instance]]:
        async def instances() -> AsyncGenerator[Instance]:
            first, *rest = self.instances
            yield first
            await self.gate.wait()
            for later in rest:
                yield later

        async with aclosing(instances()) as found:
            yield found


async def test_metadata_streams_while_the_archive_still_sends(study: StudyFiles) -> None:
    backend = GatedBackend(instances=[instance(p) for p in study.paths])
    backend.gate = trio.Event()
    async with (
        serving({"X": backend}) as client,
        client.stream("GET", f"/aets/X/studies/{study.study_uid}/metadata") as response,
    ):
        chunks = response.aiter_bytes()  # gunzipped as it comes, when rst gzips
        with trio.fail_after(10):  # without streaming, nothing comes before the gate opens
            first = await anext(chunks)
        assert first.startswith(b"[{")
        first_object = json.loads(first[1:])
        assert first_object["00080018"]["Value"] == [study.sop_uids[0]]
        backend.gate.set()
        rest = b"".join([chunk async for chunk in chunks])
    rows = json.loads(first + rest)
    assert [row["00080018"]["Value"][0] for row in rows] == study.sop_uids


async def test_metadata_objects_go_out_in_few_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The objects of instances that come faster than the linger share HTTP chunks (each chunk
    # costs a gzip flush and a round of quart, hypercorn and h11).
    study = write_ct_study(tmp_path / "ct", images=12)
    backend = ScriptedBackend(instances=[instance(p) for p in study.paths])
    chunks: list[int] = []

    async def counting_start_body(*args: Any, **kwargs: Any) -> AsyncIterator[bytes]:
        body = await start_body(*args, **kwargs)

        async def counted() -> AsyncIterator[bytes]:
            async for chunk in body:
                chunks.append(len(chunk))
                yield chunk

        return counted()

    monkeypatch.setattr(metadata_routes, "start_body", counting_start_body)
    async with serving({"X": backend}) as client:
        response = await client.get(f"/aets/X/studies/{study.study_uid}/metadata")
    rows = response.json()
    assert [row["00080018"]["Value"][0] for row in rows] == study.sop_uids
    assert 1 <= len(chunks) < len(rows) / 2  # one chunk per object without the linger
