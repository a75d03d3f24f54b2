"""Health and metrics of rst in front of a real Orthanc: a retrieve shows up as complete."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from rst.config import AeConfig
from rst.server import Running
from tests.support.gateway import run_gateway
from tests.support.orthanc import Orthanc, add_modality
from tests.support.sample import StudyFiles

pytestmark = pytest.mark.integration


@pytest.fixture(params=["move", "get"])
async def gateway(request: Any, orthanc_with_study: Orthanc) -> AsyncIterator[Running]:
    """rst in front of Orthanc, checking it in the background as in production."""
    orthanc = orthanc_with_study
    config = AeConfig(
        aet=orthanc.aet, host="127.0.0.1", port=orthanc.dicom_port, retrieve=request.param
    )
    async with run_gateway(config, health={"check_archives": True}) as running:
        await add_modality(orthanc, "rst", "RST", *running.dimse_address)
        yield running


async def scrape(client: httpx.AsyncClient) -> list[Sample]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    return [s for f in text_string_to_metric_families(response.text) for s in f.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float | None:
    found = [s.value for s in samples if s.name == name and s.labels == labels]
    return found[0] if found else None


async def test_a_retrieve_is_counted_complete_and_orthanc_makes_rst_ready(
    gateway: Running, ct_study: StudyFiles
) -> None:
    (aet,) = gateway.backends
    operation = gateway.backends[aet].config.retrieve  # type: ignore[attr-defined]
    assert gateway.health is not None
    await gateway.health.check_all()  # a C-ECHO to Orthanc
    async with httpx.AsyncClient(base_url=gateway.http_url, timeout=30) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["aets"][aet]["last_check"] == "answered"
        for _ in range(2):  # the second from the cache
            response = await client.get(f"/aets/{aet}/studies/{ct_study.study_uid}")
            assert response.status_code == 200
        samples = await scrape(client)

    assert value(samples, "rst_retrieves_total", aet=aet, outcome="complete") == 1
    assert value(samples, "rst_retrieved_instances_total", aet=aet) == len(ct_study.paths)
    assert value(samples, "rst_cache_lookups_total", aet=aet, result="miss") == 1
    assert value(samples, "rst_cache_lookups_total", aet=aet, result="hit") == 1
    assert (value(samples, "rst_cache_bytes") or 0) >= ct_study.total_bytes * 0.9
    associations = value(
        samples, "rst_dimse_association_duration_seconds_count", aet=aet, operation=operation
    )
    assert associations == 1
    assert value(samples, "rst_dimse_associations_open", aet=aet) == 0
    assert (
        value(samples, "rst_dimse_association_duration_seconds_count", aet=aet, operation="echo")
        or 0
    ) >= 1
    assert (
        value(
            samples,
            "rst_http_requests_total",
            route="/aets/{aet}/studies/{study}",
            method="GET",
            status="200",
        )
        == 2
    )
