"""Fixtures shared by the integration tests against a real Orthanc."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from rst.config import AeConfig
from rst.server import Running
from tests.support.gateway import run_gateway
from tests.support.orthanc import Orthanc, add_modality


@pytest.fixture(params=["move", "get"])
async def gateway(request: Any, orthanc_with_study: Orthanc) -> AsyncIterator[Running]:
    """rst in front of ``orthanc_with_study``, retrieving by C-MOVE and by C-GET."""
    orthanc = orthanc_with_study
    config = AeConfig(
        aet=orthanc.aet, host="127.0.0.1", port=orthanc.dicom_port, retrieve=request.param
    )
    async with run_gateway(config) as running:
        await add_modality(orthanc, "rst", "RST", *running.dimse_address)
        yield running
