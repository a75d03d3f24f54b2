"""Every DIMSE operation rst uses, through its HTTP API, against three independent PACS.

One case per operation x PACS (:mod:`tests.interop.peers`: Orthanc, dcmtk's dcmqrscp,
pynetdicom):

- ``echo``: ``GET /aets/{aet}``, C-ECHO; ``readyz``: the readiness check's C-ECHO to each
  route, then ``GET /readyz``;
- ``find-study``, ``find-series``, ``find-image``: QIDO-RS at each level, C-FIND;
- ``move-study``, ``move-series``, ``move-instance``: WADO-RS on the ``MOVE`` route, C-MOVE and
  the PACS's C-STOREs into rst's receiver (which lets in only the PACS's AE title);
- ``get-study``, ``get-series``, ``get-instance``: WADO-RS on the ``GET`` route, C-GET with its
  C-STOREs on rst's association (SCP role negotiated for the storage class);
- ``store``: STOW-RS, C-STORE with rst as the SCU.

Every operation works on every PACS here; a PACS that lacks one (dcmqrscp started without
C-GET) is in ``test_negotiation.py``, with the error rst answers. Search results are compared
attribute by attribute with the stored files, retrieved instances element by element (pixel
data included), and what STOW-RS stored is read back from the PACS's own storage and compared
the same way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.dataset import Dataset

from rst.server import Running
from tests.interop.peers import KINDS, Archive, Kind, open_archive, open_gateway
from tests.support.compare import differences, originals, retrieved
from tests.support.gateway import settled
from tests.support.sample import StudyFiles, write_ct_study
from tests.support.stow import fates, multipart

pytestmark = pytest.mark.integration

FIND_LEVELS = ("study", "series", "image")
RETRIEVE_LEVELS = ("study", "series", "instance")
OPERATIONS = (
    "echo",
    "readyz",
    *(f"find-{level}" for level in FIND_LEVELS),
    *(f"move-{level}" for level in RETRIEVE_LEVELS),
    *(f"get-{level}" for level in RETRIEVE_LEVELS),
    "store",
)

REQUIRED_KEYS = {
    "study": ("StudyInstanceUID", "PatientID", "PatientName", "StudyDate", "StudyID"),
    "series": ("StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesNumber"),
    "image": ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"),
}
"""Attributes every PACS must return, equal to the stored ones, at each level."""
NOT_RETURNED: dict[tuple[Kind, str], set[str]] = {("dcmqrscp", "image"): {"SOPClassUID"}}
"""Required attributes a PACS leaves out (dcmqrscp's index does not hold the SOP Class UID)."""
UNIQUE_KEY = {"study": "StudyInstanceUID", "series": "SeriesInstanceUID", "image": "SOPInstanceUID"}


@pytest.fixture(params=KINDS)
async def archive(request: Any, tmp_path: Path, ct_study: StudyFiles) -> AsyncIterator[Archive]:
    async with open_archive(request.param, tmp_path, ct_study.paths) as started:
        yield started


@pytest.fixture
async def gateway(request: Any, archive: Archive) -> AsyncIterator[Running]:
    # the readiness checks only where they are the operation under test: elsewhere their
    # C-ECHOs would run beside it
    checks = request.node.callspec.params.get("operation") == "readyz"
    async with open_gateway(archive, health={"check_archives": checks}) as running:
        yield running


@pytest.mark.parametrize("operation", OPERATIONS)
async def test_operation(
    operation: str,
    archive: Archive,
    gateway: Running,
    ct_study: StudyFiles,
    tmp_path: Path,
) -> None:
    kind, _, level = operation.partition("-")
    async with httpx.AsyncClient(base_url=gateway.http_url, timeout=60) as http:
        if kind == "echo":
            response = await http.get("/aets/MOVE")
        elif kind == "readyz":
            assert gateway.health is not None
            await gateway.health.check_all()
            response = await http.get("/readyz")
        elif kind == "find":
            response = await http.get(find_path(ct_study, level))
        elif kind in ("move", "get"):
            response = await http.get(retrieve_path(kind, ct_study, level))
        else:
            stow = write_ct_study(tmp_path / "stow", images=2, seed=7)
            headers, body = multipart(*(p.read_bytes() for p in stow.paths))
            response = await http.post("/aets/MOVE/studies", content=body, headers=headers)

    assert response.status_code == 200, response.text
    for route in ("MOVE", "GET"):  # every association released, every subscription gone
        await settled(gateway, route)
    if kind == "echo":
        assert response.json()["status"] == "ok"
    elif kind == "readyz":
        checks = response.json()["aets"]
        assert {route: checks[route]["last_check"] for route in ("MOVE", "GET")} == {
            "MOVE": "answered",
            "GET": "answered",
        }
    elif kind == "find":
        gaps = NOT_RETURNED.get((archive.kind, level), set())
        check_matches(response.json(), expected_find(ct_study, level), level, gaps)
    elif kind in ("move", "get"):
        check_instances(retrieved(response), expected_retrieve(ct_study, level))
    else:
        assert sorted(fates(response).referenced) == sorted(stow.sop_uids)
        check_instances(await archive.stored(), originals(stow.paths), subset=True)


# -- requests ------------------------------------------------------------------------------------


def find_path(study: StudyFiles, level: str) -> str:
    if level == "study":
        return "/aets/MOVE/studies"
    if level == "series":
        return f"/aets/MOVE/studies/{study.study_uid}/series"
    return f"/aets/MOVE/studies/{study.study_uid}/series/{study.series_uids[0]}/instances"


def retrieve_path(kind: str, study: StudyFiles, level: str) -> str:
    route = f"/aets/{kind.upper()}/studies/{study.study_uid}"
    if level == "study":
        return route
    route += f"/series/{study.series_uids[0]}"
    if level == "series":
        return route
    return route + f"/instances/{study.sop_uids[0]}"


# -- what must come back -------------------------------------------------------------------------


def expected_retrieve(study: StudyFiles, level: str) -> dict[str, Dataset]:
    stored = originals(study.paths)
    if level == "study":
        return stored
    if level == "series":
        return originals(study.series_paths(study.series_uids[0]))
    return {study.sop_uids[0]: stored[study.sop_uids[0]]}


def expected_find(study: StudyFiles, level: str) -> dict[str, Dataset]:
    """One stored instance standing for each row that must be found, by its unique key."""
    if level == "image":
        return originals(study.series_paths(study.series_uids[0]))
    key = UNIQUE_KEY[level]
    rows: dict[str, Dataset] = {}
    for ds in originals(study.paths).values():
        rows.setdefault(str(ds[key].value), ds)
    return rows


def check_instances(
    got: dict[str, Dataset], expected: dict[str, Dataset], *, subset: bool = False
) -> None:
    if subset:
        assert set(expected) <= set(got), f"missing {sorted(set(expected) - set(got))}"
    else:
        assert sorted(got) == sorted(expected)
    for uid, original in expected.items():
        assert differences(original, got[uid]) == [], uid


def check_matches(
    rows: list[dict[str, Any]], expected: dict[str, Dataset], level: str, gaps: set[str]
) -> None:
    """Every row one of *expected*; every attribute it has that the stored instance has too
    equal to the stored value; the required ones present (but the PACS's known *gaps*)."""
    key = UNIQUE_KEY[level]
    found = {}
    for row in rows:
        ds = Dataset.from_json(row)
        found[str(ds[key].value)] = ds
    assert sorted(found) == sorted(expected)
    for uid, ds in found.items():
        original = expected[uid]
        for keyword in set(REQUIRED_KEYS[level]) - gaps:
            assert ds.get(keyword) not in (None, ""), f"{uid}: no {keyword} in {ds}"
        wrong = [
            f"{elem.keyword}: {elem.value!r} instead of {original[elem.tag].value!r}"
            for elem in ds
            if elem.tag in original
            and elem.value not in (None, "")
            and _text(elem.value) != _text(original[elem.tag].value)
        ]
        assert wrong == [], uid


def _text(value: object) -> str:
    """A search result's value as its stored form (DICOM JSON turns numbers into numbers)."""
    return str(value).strip()
