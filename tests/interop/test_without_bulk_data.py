"""Metadata without bulk data (PS3.4 Annex Z) against real PACS that do not offer it: Orthanc
and dcmtk's dcmqrscp refuse the Composite Instance Retrieve Without Bulk Data context, so rst
answers by the AE's full retrieve — the same metadata — and does not propose it again.

(The PACS that does offer it, pynetdicom's, is in ``tests/faults/test_without_bulk_data.py``.)"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from rst.services.metadata import instance_metadata
from rst.services.protocols import RetrieveKeys
from tests.interop.peers import Kind, open_archive, open_gateway
from tests.support.sample import StudyFiles

pytestmark = pytest.mark.integration

OPERATION = "C-GET without bulk data"


def journal_operations(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The operation of each association rst opened, from its log line."""
    fields = [record.__dict__.get("association") for record in caplog.records]
    return [str(f["operation"]) for f in fields if f and f["direction"] == "outgoing"]


def reference(study: StudyFiles, base: str) -> dict[str, dict[str, Any]]:
    """rst's metadata of each stored file, by SOP Instance UID."""
    found = {}
    for path, sop, series in zip(study.paths, study.sop_uids, study.instance_series, strict=True):
        keys = RetrieveKeys(study.study_uid, series)
        data = instance_metadata(path.read_bytes(), base=base, keys=keys, sop_uid=sop)
        found[sop] = json.loads(data)
    return found


@pytest.mark.parametrize("kind", ["orthanc", "dcmqrscp"])
@pytest.mark.parametrize("route", ["MOVE", "GET"])
async def test_a_pacs_without_the_class_answers_by_full_retrieve_and_is_not_asked_again(
    kind: Kind,
    route: str,
    tmp_path: Path,
    ct_study: StudyFiles,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with (
        open_archive(kind, tmp_path, ct_study.paths) as archive,
        open_gateway(archive, cache=False) as running,
    ):
        url = f"{running.http_url}/aets/{route}/studies/{ct_study.study_uid}/metadata"
        expected = reference(ct_study, f"{running.http_url}/aets/{route}")
        answers = []
        finds = []
        async with httpx.AsyncClient(timeout=60) as client:
            for _ in range(2):
                before = len(journal_operations(caplog))
                response = await client.get(url, headers={"Accept": "application/dicom+json"})
                assert response.status_code == 200, response.text
                answers.append({i["00080018"]["Value"][0]: i for i in response.json()})
                finds.append(journal_operations(caplog)[before:].count("C-FIND"))
        # the first request's C-FIND association proposed the Annex Z context, which the PACS
        # refused; the second does without it (the C-GET route's full retrieve has C-FINDs of
        # its own: SOP Classes in Study)
        assert finds[0] == finds[1] + 1
        assert OPERATION not in journal_operations(caplog)
        assert running.metrics is not None
        fallbacks = running.metrics.without_bulk_data_fallbacks
        assert fallbacks.labels(route, "refused")._value.get() == 1
        assert fallbacks.labels(route, "remembered")._value.get() == 1
    for answer in answers:
        assert answer.keys() == expected.keys()
        for uid, item in answer.items():
            assert item == expected[uid], uid
