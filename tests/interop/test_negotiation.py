"""Association cases real PACS produce, against real peers (:mod:`tests.interop.peers`).

- the PACS's maximum PDU length: unlimited (0, pynetdicom) and the smallest there is (4 KiB:
  Orthanc, dcmqrscp, pynetdicom): search, retrieve by C-MOVE and C-GET, and store all work,
  with every instance as stored;
- a PACS that accepts only some presentation contexts: dcmqrscp without C-GET, a PACS that
  refuses Verification (the health check), a C-GET whose storage context is refused;
- SCP/SCU role selection for C-GET: a PACS that does not grant rst the Storage SCP role.

Where the PACS cannot do what rst asks, the answer is a 502 (503 for the health check) whose
message says what the PACS refused, and the routes that do not need it keep working.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydicom.uid import CTImageStorage

from rst.dicom import uids
from tests.interop.peers import Kind, open_archive, open_gateway
from tests.support.compare import differences, originals, retrieved
from tests.support.dcmtk import run_tool
from tests.support.sample import StudyFiles, write_ct_study
from tests.support.stow import fates, multipart

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("kind", "max_pdu"),
    [("pynetdicom", 0), ("pynetdicom", 4096), ("dcmqrscp", 4096), ("orthanc", 4096)],
)
async def test_every_operation_with_the_pacs_max_pdu(
    kind: Kind, max_pdu: int, tmp_path: Path, ct_study: StudyFiles
) -> None:
    study = ct_study.study_uid
    stow = write_ct_study(tmp_path / "stow", images=2, seed=11)
    headers, body = multipart(*(p.read_bytes() for p in stow.paths))
    async with (
        open_archive(kind, tmp_path, ct_study.paths, max_pdu=max_pdu) as archive,
        open_gateway(archive) as gateway,
        httpx.AsyncClient(base_url=gateway.http_url, timeout=60) as http,
    ):
        # the PACS really offers that length (the last line: the A-ASSOCIATE-AC's)
        echo = await run_tool("echoscu", "-d", "-aec", archive.aet, archive.host, str(archive.port))
        offered = [line for line in echo.output.splitlines() if "Their Max PDU" in line]
        found = await http.get(f"/aets/MOVE/studies/{study}/instances")
        moved = await http.get(f"/aets/MOVE/studies/{study}")
        got = await http.get(f"/aets/GET/studies/{study}")
        stored = await http.post("/aets/MOVE/studies", content=body, headers=headers)
        held = await archive.stored()

    assert offered[-1].split(":")[-1].strip() == str(max_pdu), echo.output
    assert found.status_code == 200, found.text
    assert sorted(row["00080018"]["Value"][0] for row in found.json()) == sorted(ct_study.sop_uids)
    expected = originals(ct_study.paths)
    for response in (moved, got):
        assert response.status_code == 200, response.text
        instances = retrieved(response)
        assert sorted(instances) == sorted(expected)
        for uid, original in expected.items():
            assert differences(original, instances[uid]) == [], uid
    assert stored.status_code == 200, stored.text
    assert sorted(fates(stored).referenced) == sorted(stow.sop_uids)
    for uid, original in originals(stow.paths).items():
        assert differences(original, held[uid]) == [], uid


async def test_a_pacs_without_c_get(tmp_path: Path, ct_study: StudyFiles) -> None:
    study = ct_study.study_uid
    async with (
        open_archive("dcmqrscp", tmp_path, ct_study.paths, options=["--disable-get"]) as archive,
        open_gateway(archive) as gateway,
        httpx.AsyncClient(base_url=gateway.http_url, timeout=60) as http,
    ):
        got = await http.get(f"/aets/GET/studies/{study}")
        moved = await http.get(f"/aets/MOVE/studies/{study}")

    assert got.status_code == 502, got.text
    assert (
        f"did not accept the presentation context for {uids.STUDY_ROOT_GET}"
        in (got.json()["error"])
    )
    assert moved.status_code == 200, moved.text
    assert sorted(retrieved(moved)) == sorted(ct_study.sop_uids)


async def test_a_pacs_refusing_verification(tmp_path: Path, ct_study: StudyFiles) -> None:
    async with (
        open_archive("pynetdicom", tmp_path, ct_study.paths) as archive,
        open_gateway(archive) as gateway,
        httpx.AsyncClient(base_url=gateway.http_url, timeout=60) as http,
    ):
        assert archive.devpacs is not None
        archive.devpacs.faults.refuse_sop_classes = frozenset({uids.VERIFICATION})
        health = await http.get("/aets/MOVE")
        found = await http.get("/aets/MOVE/studies")

    assert health.status_code == 503, health.text
    assert health.json()["status"] == "unavailable"
    assert "accepted none of the presentation contexts" in health.json()["error"]
    assert found.status_code == 200, found.text
    assert [row["0020000D"]["Value"][0] for row in found.json()] == [ct_study.study_uid]


async def test_a_c_get_the_pacs_cannot_send_one_class_on(
    tmp_path: Path, ct_study: StudyFiles
) -> None:
    # The PACS names the study's one class (SOP Classes in Study), rst proposes it, the PACS
    # refuses it on the C-GET association: nothing could arrive, so rst does not send the
    # C-GET and says which classes were refused.
    study = ct_study.study_uid
    async with (
        open_archive("pynetdicom", tmp_path, ct_study.paths) as archive,
        open_gateway(archive) as gateway,
        httpx.AsyncClient(base_url=gateway.http_url, timeout=60) as http,
    ):
        assert archive.devpacs is not None
        archive.devpacs.faults.refuse_sop_classes = frozenset({CTImageStorage})
        got = await http.get(f"/aets/GET/studies/{study}")
        gets = archive.devpacs.events.count("get")
        archive.devpacs.faults.refuse_sop_classes = frozenset()
        moved = await http.get(f"/aets/MOVE/studies/{study}")

    assert got.status_code == 502, got.text
    error = got.json()["error"]
    assert f"refused each of the 1 storage classes rst proposed ({CTImageStorage})" in error
    assert 'retrieve = "move"' in error
    assert gets == 0  # the C-GET was not sent
    assert moved.status_code == 200, moved.text


async def test_a_pacs_that_does_not_grant_the_storage_scp_role(
    tmp_path: Path, ct_study: StudyFiles
) -> None:
    # It accepts the storage contexts but answers no role selection item with the SCP role:
    # rst stays SCU only (the default roles) and could receive nothing. rst does not send the
    # C-GET; it says why and what to do.
    study = ct_study.study_uid
    async with open_archive("pynetdicom", tmp_path, ct_study.paths) as archive:
        pacs = archive.devpacs
        assert pacs is not None
        for context in pacs.ae.supported_contexts:
            if context.scp_role:
                pacs.ae.add_supported_context(
                    context.abstract_syntax, [], scu_role=True, scp_role=False
                )
        async with (
            open_gateway(archive) as gateway,
            httpx.AsyncClient(base_url=gateway.http_url, timeout=60) as http,
        ):
            got = await http.get(f"/aets/GET/studies/{study}")
            moved = await http.get(f"/aets/MOVE/studies/{study}")
        gets = pacs.events.count("get")

    assert got.status_code == 502, got.text
    error = got.json()["error"]
    assert "cannot send instances on a C-GET association" in error
    assert "SCP/SCU role selection" in error
    assert 'retrieve = "move"' in error
    assert gets == 0  # the C-GET was not sent
    assert moved.status_code == 200, moved.text
    assert sorted(retrieved(moved)) == sorted(ct_study.sop_uids)


async def test_a_c_get_from_a_pacs_without_c_find(tmp_path: Path, ct_study: StudyFiles) -> None:
    # rst asks for the study's SOP classes before a C-GET; a PACS that refuses the C-FIND model
    # (but accepts the association for its C-GET model) gets the broad proposal and serves the
    # C-GET all the same.
    study = ct_study.study_uid
    async with (
        open_archive("pynetdicom", tmp_path, ct_study.paths) as archive,
        open_gateway(archive, cache=False) as gateway,
        httpx.AsyncClient(base_url=gateway.http_url, timeout=60) as http,
    ):
        pacs = archive.devpacs
        assert pacs is not None
        pacs.faults.refuse_sop_classes = frozenset({uids.STUDY_ROOT_FIND})
        before = len(pacs.events)
        got = await http.get(f"/aets/GET/studies/{study}")
        events = pacs.events[before:]

    assert got.status_code == 200, got.text
    assert sorted(retrieved(got)) == sorted(ct_study.sop_uids)
    assert (events.count("find"), events.count("get")) == (0, 1)
    assert events.count("accept") == 2  # the refused C-FIND's association, then the C-GET's
