"""MWL-RS (``GET /aets/{aet}/modality-scheduled-procedure-steps``) against real worklist SCPs:
Orthanc's ModalityWorklists plugin and dcmtk's ``wlmscpfs``, serving worklist files the tests
write; httpx and curl as the clients. Also: a PACS without worklists (Orthanc without the
plugin), a called AE title the SCP does not know, an S3 archive.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from rst.config import AeConfig, Config, HttpConfig, S3AeConfig
from rst.http.app import create_app
from rst.http.listener import serve_http
from rst.server import Running
from tests.support.dcmtk import open_wlmscpfs
from tests.support.gateway import run_gateway
from tests.support.orthanc import open_orthanc, worklist_config
from tests.support.scripted_backend import ScriptedBackend
from tests.support.worklist import SAMPLE_STEPS, Step, write_worklist

pytestmark = pytest.mark.integration

PATH = "modality-scheduled-procedure-steps"
WLM_AET = "WLM"

# DICOM JSON tags of the rows
PATIENT_NAME, PATIENT_ID, ACCESSION = "00100010", "00100020", "00080050"
PATIENT_WEIGHT, SPECIFIC_CHARSET = "00101030", "00080005"
STUDY_UID, REQUESTED_PROCEDURE_ID, RETRIEVE_URL = "0020000D", "00401001", "00081190"
SPS, MODALITY, STATION, START_DATE, START_TIME, SPS_ID = (
    "00400100",
    "00080060",
    "00400001",
    "00400002",
    "00400003",
    "00400009",
)

STEPS = (
    SAMPLE_STEPS[0],
    Step("P-1", "Doe^Jane", "ACC2", "MR", "MR01", "20261201", "0930", "SPS2"),
    *SAMPLE_STEPS[2:],
)


class Worklist:
    """rst in front of one worklist SCP: ``get`` answers the MWL-RS query *params*."""

    def __init__(self, running: Running, aet: str, peer: str) -> None:
        self.running = running
        self.aet = aet
        self.peer = peer
        self.url = f"{running.http_url}/aets/{aet}/{PATH}"

    async def get(self, params: Any = None, **headers: str) -> httpx.Response:
        async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
            return await http.get(self.url, params=params, headers=headers)

    async def rows(self, params: Any = None) -> list[dict[str, Any]]:
        response = await self.get(params)
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"] == "application/dicom+json"
        rows: list[dict[str, Any]] = response.json()
        return rows


def value(row: dict[str, Any], *path: str) -> Any:
    """The first value at a path of tags (through the first item of each sequence)."""
    element: Any = row
    for n, tag in enumerate(path):
        element = element[tag]
        if n < len(path) - 1:
            element = element["Value"][0]
    return element.get("Value", [None])[0]


def accessions(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(value(row, ACCESSION) for row in rows)


def weighted(steps: tuple[Step, ...], folder: Path) -> None:
    """Write *steps*, each with a PatientWeight (not a default key) too."""
    write_worklist(folder, steps)
    import pydicom

    for path in sorted(folder.glob("*.wl")):
        ds = pydicom.dcmread(path)
        ds.PatientWeight = "70.5"
        ds.save_as(path, enforce_file_format=True)


@pytest.fixture(params=["orthanc", "wlmscpfs"])
async def worklist(request: Any, tmp_path: Path) -> AsyncIterator[Worklist]:
    if request.param == "orthanc":
        folder = tmp_path / "orthanc-worklists"
        weighted(STEPS, folder)
        async with (
            open_orthanc(
                tmp_path / "orthanc", extra_config=worklist_config(folder), fast_stop=True
            ) as orthanc,
            run_gateway(
                AeConfig(aet=orthanc.aet, host="127.0.0.1", port=orthanc.dicom_port)
            ) as running,
        ):
            yield Worklist(running, orthanc.aet, "orthanc")
    else:
        root = tmp_path / "wlmscpfs"
        weighted(STEPS, root / WLM_AET)
        async with (
            open_wlmscpfs(root) as port,
            run_gateway(AeConfig(aet=WLM_AET, host="127.0.0.1", port=port)) as running,
        ):
            yield Worklist(running, WLM_AET, "wlmscpfs")


# -- what comes back ------------------------------------------------------------------------------


async def test_every_step_with_the_keys_a_modality_needs(worklist: Worklist) -> None:
    rows = await worklist.rows()
    assert accessions(rows) == ["ACC1", "ACC2", "ACC3", "ACC4", "ACC5"]
    by_accession = {value(row, ACCESSION): row for row in rows}
    first = by_accession["ACC1"]
    assert value(first, PATIENT_ID) == "P-1"
    assert value(first, PATIENT_NAME) == {"Alphabetic": "Doe^Jane"}
    assert value(first, REQUESTED_PROCEDURE_ID) == "RP-ACC1"
    assert value(first, STUDY_UID)
    assert value(first, SPS, MODALITY) == "CT"
    assert value(first, SPS, STATION) == "CT01"
    assert value(first, SPS, START_DATE) == "20261130"
    assert value(first, SPS, START_TIME) == "0800"
    assert value(first, SPS, SPS_ID) == "SPS1"
    assert value(by_accession["ACC3"], PATIENT_NAME) == {"Alphabetic": "Müller^Jörg"}
    for row in rows:
        assert RETRIEVE_URL not in row  # an order, not a stored study
        assert PATIENT_WEIGHT not in row  # in the files, but not asked for


async def test_filter_by_modality_short_and_dotted(worklist: Worklist) -> None:
    short = await worklist.rows({"Modality": "CT"})
    dotted = await worklist.rows({"ScheduledProcedureStepSequence.Modality": "CT"})
    assert accessions(short) == accessions(dotted) == ["ACC1", "ACC3", "ACC4"]
    assert {value(row, SPS, MODALITY) for row in short} == {"CT"}


async def test_filter_by_station_and_date_range(worklist: Worklist) -> None:
    december = await worklist.rows({"ScheduledProcedureStepStartDate": "20261201-20261231"})
    assert accessions(december) == ["ACC2", "ACC3", "ACC4"]
    ct_in_december = await worklist.rows(
        {
            "ScheduledProcedureStepSequence.ScheduledStationAETitle": "CT01",
            "ScheduledProcedureStepSequence.ScheduledProcedureStepStartDate": "20261201-",
        }
    )
    assert accessions(ct_in_december) == ["ACC3"]
    until = await worklist.rows({"ScheduledProcedureStepStartDate": "-20261201"})
    assert accessions(until) == ["ACC1", "ACC2"]


async def test_filter_by_patient_and_accession(worklist: Worklist) -> None:
    assert accessions(await worklist.rows({"PatientID": "P-1"})) == ["ACC1", "ACC2"]
    assert accessions(await worklist.rows({"AccessionNumber": "ACC5"})) == ["ACC5"]
    assert accessions(await worklist.rows({"PatientName": "Doe*"})) == ["ACC1", "ACC2"]
    assert await worklist.rows({"PatientID": "NOBODY"}) == []


async def test_limit_and_offset_page_through_the_list(worklist: Worklist) -> None:
    first = await worklist.get({"limit": "2"})
    assert first.status_code == 200
    assert "additional results" in first.headers["Warning"]
    second = await worklist.get({"limit": "2", "offset": "2"})
    last = await worklist.get({"limit": "2", "offset": "4"})
    assert "Warning" not in last.headers
    pages = [first.json(), second.json(), last.json()]
    assert [len(page) for page in pages] == [2, 2, 1]
    assert accessions([row for page in pages for row in page]) == [s.accession for s in STEPS]


async def test_includefield_and_all(worklist: Worklist) -> None:
    rows = await worklist.rows({"includefield": "PatientWeight", "PatientID": "P-2"})
    assert [value(row, PATIENT_WEIGHT) for row in rows] == [70.5]
    everything = await worklist.rows({"includefield": "all", "PatientID": "P-2"})
    assert value(everything[0], PATIENT_WEIGHT) == 70.5


async def test_fuzzymatching_is_literal_with_a_warning(worklist: Worklist) -> None:
    response = await worklist.get({"fuzzymatching": "true", "PatientID": "P-4"})
    assert response.status_code == 200
    assert "fuzzymatching" in response.headers["Warning"]
    assert accessions(response.json()) == ["ACC5"]


async def test_a_bad_parameter_is_a_400_naming_it(worklist: Worklist) -> None:
    response = await worklist.get({"ScheduledProcedureStepStartDate": "2026-12"})
    assert response.status_code == 400
    assert "ScheduledProcedureStepStartDate" in response.json()["error"]


async def test_curl_as_the_client(worklist: Worklist) -> None:
    url = f"{worklist.url}?Modality=CT&ScheduledProcedureStepStartDate=20261201-20261231"
    done = await trio.run_process(
        ["curl", "-sS", "-g", "--fail", "-H", "Accept: application/dicom+json", url],
        capture_stdout=True,
        capture_stderr=True,
    )
    rows = json.loads(done.stdout)
    assert accessions(rows) == ["ACC3", "ACC4"]


# -- archives without worklists -------------------------------------------------------------------


async def test_a_pacs_without_worklists_is_a_501(tmp_path: Path) -> None:
    async with (
        open_orthanc(tmp_path / "orthanc", fast_stop=True) as orthanc,  # no plugin
        run_gateway(AeConfig(aet=orthanc.aet, host="127.0.0.1", port=orthanc.dicom_port)) as gw,
        httpx.AsyncClient(timeout=30, trust_env=False) as http,
    ):
        response = await http.get(f"{gw.http_url}/aets/{orthanc.aet}/{PATH}")
        studies = await http.get(f"{gw.http_url}/aets/{orthanc.aet}/studies")
    assert response.status_code == 501
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["status"] == 501
    assert "does not offer Modality Worklist" in body["error"]
    assert orthanc.aet in body["error"]
    assert studies.status_code == 200  # its QIDO-RS is untouched


async def test_an_ae_title_the_worklist_scp_does_not_know_is_a_502(tmp_path: Path) -> None:
    root = tmp_path / "wlmscpfs"
    write_worklist(root / WLM_AET)
    async with (
        open_wlmscpfs(root) as port,
        run_gateway(AeConfig(aet="ELSEWHERE", host="127.0.0.1", port=port)) as gw,
        httpx.AsyncClient(timeout=30, trust_env=False) as http,
    ):
        response = await http.get(f"{gw.http_url}/aets/ELSEWHERE/{PATH}")
    assert response.status_code == 502
    assert "ELSEWHERE" in response.json()["error"]


async def test_an_s3_archive_is_a_501() -> None:
    s3 = S3AeConfig(aet="BUCKET", backend="s3", bucket="rst-test")
    config = Config(http=HttpConfig(host="127.0.0.1", port=0), aets=(s3,))
    backend = ScriptedBackend(name="BUCKET")
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            serve_http, create_app(config, {"BUCKET": backend}), config.http
        )
        async with httpx.AsyncClient(base_url=binds[0], trust_env=False) as http:
            response = await http.get(f"/aets/BUCKET/{PATH}")
        nursery.cancel_scope.cancel()
    assert response.status_code == 501
    assert "S3" in response.json()["error"]
    assert backend.opened == 0
