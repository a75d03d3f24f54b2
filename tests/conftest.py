"""Shared fixtures.

- ``orthanc``: a fresh Orthanc (DICOMweb plugin on, C-GET allowed) on free 127.0.0.1 ports, data in
  ``tmp_path``; killed on teardown (SIGKILL: its data folder is thrown away anyway).
- ``ct_study``: a small synthetic CT study on disk (6 images of 64x64 in 2 series).
- ``orthanc_with_study``: ``orthanc`` with ``ct_study`` uploaded.
- ``store_destination``: a dcmtk storescp (AE "DEST") declared to ``orthanc`` as modality "dest".

Tests marked ``integration`` are never skipped: when Orthanc, its DICOMweb plugin, dcmtk or gcc is
missing they fail, telling to run scripts/install-deps.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # so ``tests.support`` imports without an installed package
    sys.path.insert(0, str(_ROOT))

from tests.support.dcmtk import (  # noqa: E402
    DcmtkError,
    StoreDestination,
    open_store_destination,
    require_dcmtk,
)
from tests.support.orthanc import (  # noqa: E402
    Orthanc,
    OrthancError,
    add_modality,
    open_orthanc,
    require_orthanc,
    upload,
)
from tests.support.sample import StudyFiles, write_ct_study  # noqa: E402


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("integration") is None:
        return
    problem = None
    try:
        require_orthanc()
        require_dcmtk()
    except (OrthancError, DcmtkError) as exc:
        problem = str(exc)
    if problem is not None:
        pytest.fail(f"integration prerequisites missing: {problem}", pytrace=False)


@pytest.fixture
async def orthanc(tmp_path: Path) -> AsyncIterator[Orthanc]:
    async with open_orthanc(tmp_path / "orthanc", fast_stop=True) as server:
        yield server


@pytest.fixture
def ct_study(tmp_path: Path) -> StudyFiles:
    return write_ct_study(tmp_path / "ct-study", images=6, series=2)


@pytest.fixture
async def orthanc_with_study(orthanc: Orthanc, ct_study: StudyFiles) -> Orthanc:
    await upload(orthanc, ct_study.paths)
    return orthanc


@pytest.fixture
async def store_destination(orthanc: Orthanc, tmp_path: Path) -> AsyncIterator[StoreDestination]:
    async with open_store_destination(tmp_path / "received", "DEST") as destination:
        await add_modality(orthanc, "dest", destination.aet, destination.host, destination.port)
        yield destination
