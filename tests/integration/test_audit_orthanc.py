"""The audit trail in front of a real Orthanc: the Patient participant object of a search (from
Orthanc's C-FIND matches), a retrieve (read from the first bytes of the instances rst's receiver
got by C-MOVE, and by C-GET) and a store (STOW-RS into Orthanc), in the file the writer wrote."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from rst.audit import AuditConfig
from rst.config import AeConfig
from tests.support.gateway import run_gateway, wait_until
from tests.support.orthanc import Orthanc, add_modality
from tests.support.sample import StudyFiles, write_ct_study

pytestmark = pytest.mark.integration

PATIENT_NUMBER = {"csd-code": "2", "codeSystemName": "RFC-3881", "originalText": "Patient Number"}


def patients(event: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [
        (o["ParticipantObjectID"], o.get("ParticipantObjectName"))
        for o in event["ParticipantObjectIdentification"]
        if o["ParticipantObjectIDTypeCode"] == PATIENT_NUMBER
        and o["ParticipantObjectTypeCode"] == "1"
        and o["ParticipantObjectTypeCodeRole"] == "1"
    ]


@pytest.mark.parametrize("retrieve", ["move", "get"])
async def test_the_trail_names_the_patients_of_what_passed(
    orthanc_with_study: Orthanc,
    ct_study: StudyFiles,
    tmp_path: Path,
    retrieve: Literal["move", "get"],
) -> None:
    orthanc = orthanc_with_study
    trail = tmp_path / "audit.jsonl"
    other = write_ct_study(
        tmp_path / "other", images=2, patient_id="RST-OTHER", patient_name="OTHER^PATIENT"
    )
    stow = b"".join(
        b"--b\r\nContent-Type: application/dicom\r\n\r\n" + path.read_bytes() + b"\r\n"
        for path in other.paths
    )
    ae = AeConfig(aet=orthanc.aet, port=orthanc.dicom_port, retrieve=retrieve)
    async with run_gateway(ae, audit=AuditConfig(path=str(trail))) as running:
        await add_modality(orthanc, "rst", "RST", *running.dimse_address)
        base = f"{running.http_url}/aets/{orthanc.aet}"
        async with httpx.AsyncClient(timeout=60) as http:
            search = await http.get(f"{base}/studies", params={"PatientID": "RST-TEST"})
            study = await http.get(f"{base}/studies/{ct_study.study_uid}")
            store = await http.post(
                f"{base}/studies",
                content=stow + b"--b--\r\n",
                headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'},
            )
        # the writer appends on its own task: the file is all there is to wait on
        await wait_until(
            lambda: trail.exists() and trail.read_text().count("\n") == 3,
            within=10,
            what="the audit writer to write three events",
        )
    assert (search.status_code, study.status_code, store.status_code) == (200, 200, 200)
    events = [json.loads(line) for line in trail.read_text().splitlines()]
    assert [e["rst"]["service"] for e in events] == ["search", "retrieve", "store"]
    searched, retrieved, stored = events
    assert patients(searched) == [("RST-TEST", "TEST^PATIENT")]
    assert patients(retrieved) == [("RST-TEST", "TEST^PATIENT")]
    assert retrieved["rst"]["instances"] == len(ct_study.paths)
    assert patients(stored) == [("RST-OTHER", "OTHER^PATIENT")]
    assert stored["rst"]["patients"] == [{"id": "RST-OTHER", "name": "OTHER^PATIENT"}]
