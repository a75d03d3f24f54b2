"""``called_aet``: one Orthanc behind two route names, once by C-MOVE and once by C-GET.

Orthanc checks the called AE title here (``DicomCheckCalledAet``): a route whose name were sent
as the called AE title would be rejected, as the control route shows. The receiver accepts
only the AE titles of ``[[aets]]`` (``accept_unknown_callers = false``): Orthanc's C-STOREs,
which come with its own title, get in only because that title is the route's ``called_aet``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import httpx
import pytest

from rst.config import AeConfig
from rst.server import Running
from tests.support.compare import differences, originals, retrieved
from tests.support.gateway import run_gateway
from tests.support.orthanc import Orthanc, add_modality, open_orthanc, upload
from tests.support.sample import StudyFiles

pytestmark = pytest.mark.integration

ROUTES = ("VIA_MOVE", "VIA_GET")


@pytest.fixture
async def checking_orthanc(tmp_path: Path, ct_study: StudyFiles) -> AsyncIterator[Orthanc]:
    async with open_orthanc(
        tmp_path / "orthanc", fast_stop=True, extra_config={"DicomCheckCalledAet": True}
    ) as orthanc:
        await upload(orthanc, ct_study.paths)
        yield orthanc


@pytest.fixture
async def two_routes(checking_orthanc: Orthanc) -> AsyncIterator[Running]:
    orthanc = checking_orthanc

    def route(name: str, retrieve: Literal["move", "get"]) -> AeConfig:
        return AeConfig(
            aet=name,
            called_aet=orthanc.aet,
            host="127.0.0.1",
            port=orthanc.dicom_port,
            retrieve=retrieve,
        )

    async with run_gateway(
        route("VIA_MOVE", "move"),
        route("VIA_GET", "get"),
        AeConfig(aet="UNCALLED", host="127.0.0.1", port=orthanc.dicom_port),
        dimse={"accept_unknown_callers": False},
    ) as running:
        await add_modality(orthanc, "rst", "RST", *running.dimse_address)
        yield running


@pytest.mark.parametrize("route", ROUTES)
async def test_each_route_answers_echo_qido_and_wado(
    two_routes: Running, ct_study: StudyFiles, route: str
) -> None:
    base = f"{two_routes.http_url}/aets/{route}"
    async with httpx.AsyncClient(timeout=60) as http:
        health = await http.get(base)
        studies = await http.get(f"{base}/studies")
        instances = await http.get(f"{base}/studies/{ct_study.study_uid}/instances")
        study = await http.get(f"{base}/studies/{ct_study.study_uid}")

    assert health.status_code == 200, health.text
    assert studies.status_code == 200, studies.text
    [row] = studies.json()
    assert row["0020000D"]["Value"] == [ct_study.study_uid]
    assert row["00081190"]["Value"] == [f"{base}/studies/{ct_study.study_uid}"]
    assert sorted(r["00080018"]["Value"][0] for r in instances.json()) == sorted(ct_study.sop_uids)
    assert study.status_code == 200, study.text
    got, stored = retrieved(study), originals(ct_study.paths)
    assert sorted(got) == sorted(stored)
    for uid, original in stored.items():
        assert differences(original, got[uid]) == [], uid


async def test_routes_are_listed_with_the_title_they_call(
    two_routes: Running, checking_orthanc: Orthanc
) -> None:
    async with httpx.AsyncClient() as http:
        listed = (await http.get(f"{two_routes.http_url}/aets")).json()
    assert [(ae["aet"], ae["called_aet"], ae["retrieve"]) for ae in listed] == [
        ("VIA_MOVE", checking_orthanc.aet, "move"),
        ("VIA_GET", checking_orthanc.aet, "get"),
        ("UNCALLED", "UNCALLED", "move"),
    ]


async def test_a_route_calling_its_own_name_is_rejected_by_orthanc(two_routes: Running) -> None:
    # The control: without called_aet the route name is the called AE title, which Orthanc
    # refuses; rst says so with a 502 naming the title it called.
    async with httpx.AsyncClient(timeout=60) as http:
        response = await http.get(f"{two_routes.http_url}/aets/UNCALLED/studies")
    assert response.status_code == 502
    assert "called AE title 'UNCALLED'" in response.json()["error"]
