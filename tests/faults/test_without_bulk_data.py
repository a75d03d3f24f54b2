"""WADO-RS metadata by Composite Instance Retrieve Without Bulk Data (PS3.4 Annex Z), through
the real server, in front of the development PACS (pynetdicom's Q/R SCP, which removes the bulk
data itself and logs each C-GET it serves by SOP class): used where the PACS accepts it and the
cache is off, with the full retrieve as fallback when the PACS refuses or fails it."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest

from rst.config import AeConfig
from rst.devpacs import DevPacs, Faults, FolderArchive, write_sample_study
from rst.server import Running
from rst.services.metadata import instance_metadata
from rst.services.protocols import RetrieveKeys
from tests.support.frames import parts
from tests.support.gateway import run_gateway

JSON = {"Accept": "application/dicom+json"}
PIXELS = {"Accept": 'multipart/related; type="application/octet-stream"'}
OPERATION = "C-GET without bulk data"


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("nobulk-study")
    write_sample_study(folder, images=6, rows=32, columns=24, series=2)
    return folder


def ae(pacs: DevPacs, **kw: Any) -> AeConfig:
    return AeConfig(aet="PACS", host="127.0.0.1", port=pacs.port, **kw)


def full_retrieves(pacs: DevPacs) -> int:
    return pacs.events.count("move") + pacs.events.count("get")


def reference(pacs: DevPacs, base: str) -> dict[str, dict[str, Any]]:
    """rst's metadata of each whole instance as the PACS stores it (what a full retrieve
    answers), by SOP Instance UID."""
    found = {}
    for stored in pacs.archive.instances():
        data = stored.path.read_bytes()
        keys = RetrieveKeys(str(stored.study_uid), str(stored.series_uid))
        uid = str(stored.sop_instance_uid)
        found[uid] = json.loads(instance_metadata(data, base=base, keys=keys, sop_uid=uid))
    return found


def by_uid(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["00080018"]["Value"][0]: item for item in items}


async def metadata_of(running: Running, url: str) -> dict[str, dict[str, Any]]:
    async with httpx.AsyncClient(timeout=60) as client:
        response = await client.get(f"{running.http_url}{url}/metadata", headers=JSON)
    assert response.status_code == 200, response.text
    return by_uid(response.json())


def study_url(pacs: DevPacs) -> str:
    return f"/aets/PACS/studies/{pacs.archive.instances()[0].study_uid}"


def journal_operations(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The operation of each association rst opened, from its log line."""
    fields = [record.__dict__.get("association") for record in caplog.records]
    return [str(f["operation"]) for f in fields if f and f["direction"] == "outgoing"]


@pytest.mark.parametrize("retrieve", ["move", "get"])
async def test_metadata_comes_without_bulk_data_and_frames_through_its_uris(
    study: Path, retrieve: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Cache off: the Annex Z C-GET alone (no full retrieve) answers the metadata of a study,
    equal element by element to the metadata of the whole instances (PixelData a BulkDataURI
    either way); the pixel data behind that URI comes by a full retrieve and is the stored."""
    caplog.set_level(logging.INFO)
    with DevPacs(FolderArchive(study), aet="PACS", port=0, without_bulk_data=True) as pacs:
        async with run_gateway(ae(pacs, cache=False, retrieve=retrieve)) as running:
            pacs.add_destination("RST", *running.dimse_address)
            got = await metadata_of(running, study_url(pacs))
            assert pacs.events.count("get-without-bulk-data") == 1  # both series in one
            assert full_retrieves(pacs) == 0
            expected = reference(pacs, f"{running.http_url}/aets/PACS")
            assert got.keys() == expected.keys()
            for uid, item in got.items():
                assert item == expected[uid], uid
                assert item["7FE00010"]["vr"] == "OW"
            stored = pacs.archive.instances()[0]
            uri = got[str(stored.sop_instance_uid)]["7FE00010"]["BulkDataURI"]
            async with httpx.AsyncClient(timeout=60) as client:
                response = await client.get(uri, headers=PIXELS)
            assert response.status_code == 200, response.text
            [(_, pixels)] = parts(response)
            assert pixels == pydicom.dcmread(stored.path).PixelData
            assert full_retrieves(pacs) == 1
    assert OPERATION in journal_operations(caplog)


async def test_series_and_instance_metadata_without_bulk_data(study: Path) -> None:
    with DevPacs(FolderArchive(study), aet="PACS", port=0, without_bulk_data=True) as pacs:
        async with run_gateway(ae(pacs, cache=False)) as running:
            pacs.add_destination("RST", *running.dimse_address)
            expected = reference(pacs, f"{running.http_url}/aets/PACS")
            first = pacs.archive.instances()[0]
            series = f"{study_url(pacs)}/series/{first.series_uid}"
            instance = f"{series}/instances/{first.sop_instance_uid}"
            of_series = await metadata_of(running, series)
            of_instance = await metadata_of(running, instance)
            assert pacs.events.count("get-without-bulk-data") == 2
            assert full_retrieves(pacs) == 0
    in_series = [i for i in pacs.archive.instances() if i.series_uid == first.series_uid]
    assert sorted(of_series) == sorted(str(i.sop_instance_uid) for i in in_series)
    assert all(item == expected[uid] for uid, item in of_series.items())
    assert of_instance == {str(first.sop_instance_uid): expected[str(first.sop_instance_uid)]}


async def test_a_pacs_that_fails_the_c_get_is_answered_by_a_full_retrieve_and_remembered(
    study: Path,
) -> None:
    faults = Faults(fail_without_bulk_data_after=0)
    with DevPacs(
        FolderArchive(study), aet="PACS", port=0, without_bulk_data=True, faults=faults
    ) as pacs:
        async with run_gateway(ae(pacs, cache=False)) as running:
            pacs.add_destination("RST", *running.dimse_address)
            expected = reference(pacs, f"{running.http_url}/aets/PACS")
            first = await metadata_of(running, study_url(pacs))
            assert pacs.events.count("get-without-bulk-data") == 1
            assert pacs.events.count("move") == 1
            second = await metadata_of(running, study_url(pacs))
            assert pacs.events.count("get-without-bulk-data") == 1  # not asked again
            assert pacs.events.count("move") == 2
            assert running.metrics is not None
            fallbacks = running.metrics.without_bulk_data_fallbacks
            assert fallbacks.labels("PACS", "failed")._value.get() == 1
            assert fallbacks.labels("PACS", "remembered")._value.get() == 1
    assert first == second == expected


async def test_a_pacs_without_the_class_is_not_asked_again(
    study: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """pynetdicom without the class refuses its context on the first association (rst's
    C-FINDs do not run): the full retrieve answers, and the next request does not propose it
    again (one association fewer, the C-MOVE alone)."""
    caplog.set_level(logging.INFO)
    with DevPacs(FolderArchive(study), aet="PACS", port=0) as pacs:
        async with run_gateway(ae(pacs, cache=False)) as running:
            pacs.add_destination("RST", *running.dimse_address)
            expected = reference(pacs, f"{running.http_url}/aets/PACS")
            assert await metadata_of(running, study_url(pacs)) == expected
            assert journal_operations(caplog) == ["C-FIND", "C-MOVE"]
            assert await metadata_of(running, study_url(pacs)) == expected
            assert journal_operations(caplog) == ["C-FIND", "C-MOVE", "C-MOVE"]
            assert pacs.events.count("move") == 2
            assert pacs.events.count("find") == 0
            assert OPERATION not in journal_operations(caplog)
            assert running.metrics is not None
            fallbacks = running.metrics.without_bulk_data_fallbacks
            assert fallbacks.labels("PACS", "refused")._value.get() == 1


async def test_with_the_cache_on_metadata_retrieves_in_full(study: Path) -> None:
    """``auto`` with the cache on (the default): the full retrieve fills the cache, and the
    next metadata and frames come from it."""
    with DevPacs(FolderArchive(study), aet="PACS", port=0, without_bulk_data=True) as pacs:
        async with run_gateway(ae(pacs)) as running:
            pacs.add_destination("RST", *running.dimse_address)
            expected = reference(pacs, f"{running.http_url}/aets/PACS")
            assert await metadata_of(running, study_url(pacs)) == expected
            assert await metadata_of(running, study_url(pacs)) == expected
            assert pacs.events.count("get-without-bulk-data") == 0
            assert pacs.events.count("move") == 1


async def test_without_bulk_data_chosen_with_the_cache_on_goes_round_the_cache(
    study: Path,
) -> None:
    """``metadata = "without-bulk-data"`` with the cache on: metadata never enters the cache
    (each request asks the PACS again), the frames still go through it."""
    with DevPacs(FolderArchive(study), aet="PACS", port=0, without_bulk_data=True) as pacs:
        route = ae(pacs, metadata="without-bulk-data")
        async with run_gateway(route) as running:
            pacs.add_destination("RST", *running.dimse_address)
            expected = reference(pacs, f"{running.http_url}/aets/PACS")
            assert await metadata_of(running, study_url(pacs)) == expected
            assert await metadata_of(running, study_url(pacs)) == expected
            assert pacs.events.count("get-without-bulk-data") == 2
            assert full_retrieves(pacs) == 0
            async with httpx.AsyncClient(timeout=60) as client:
                for _ in range(2):
                    response = await client.get(
                        f"{running.http_url}{study_url(pacs)}/pixeldata", headers=PIXELS
                    )
                    assert response.status_code == 200, response.text
                    assert len(parts(response)) == 6
            assert pacs.events.count("move") == 1  # then from the cache


async def test_a_c_get_that_fails_midway_is_completed_by_a_full_retrieve(study: Path) -> None:
    """Two instances came without bulk data, then the PACS failed: the full retrieve sends the
    other four (the two are not sent twice)."""
    faults = Faults(fail_without_bulk_data_after=2)
    with DevPacs(
        FolderArchive(study), aet="PACS", port=0, without_bulk_data=True, faults=faults
    ) as pacs:
        async with run_gateway(ae(pacs, cache=False, retrieve="get")) as running:
            expected = reference(pacs, f"{running.http_url}/aets/PACS")
            async with httpx.AsyncClient(timeout=60) as client:
                url = f"{running.http_url}{study_url(pacs)}/metadata"
                response = await client.get(url, headers=JSON)
            assert response.status_code == 200, response.text
            assert pacs.events.count("get-without-bulk-data") == 1
            assert pacs.events.count("get") == 1
    items = response.json()
    assert len(items) == len(expected)
    assert by_uid(items) == expected


async def test_an_unknown_study_is_a_404(study: Path) -> None:
    """The C-FINDs list nothing: the full retrieve gives the answer."""
    with DevPacs(FolderArchive(study), aet="PACS", port=0, without_bulk_data=True) as pacs:
        async with run_gateway(ae(pacs, cache=False, retrieve="get")) as running:
            async with httpx.AsyncClient(timeout=60) as client:
                url = f"{running.http_url}/aets/PACS/studies/1.2.3.4/metadata"
                response = await client.get(url, headers=JSON)
            assert pacs.events.count("get-without-bulk-data") == 0
    assert response.status_code == 404, response.text
    assert response.json()["status"] == 404
    assert "no instances" in response.json()["error"]
