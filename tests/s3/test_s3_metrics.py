"""S3 calls in ``GET /metrics`` through the real S3 path (moto in server mode): one count per
call by operation and outcome, one latency sample per call, no key or UID in any label."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator

import httpx
from prometheus_client.parser import text_string_to_metric_families

from rst.backends.s3.client import Listed
from rst.server import Running
from tests.support.sample import StudyFiles

from .conftest import AET
from .test_s3_backend import AS_STORED, backend_of, base, stow

Labels = tuple[tuple[str, str], ...]
GONE = "1.2.826.0.1.998"


async def scrape(running: Running) -> dict[str, dict[Labels, float]]:
    async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
        response = await http.get(f"{running.http_url}/metrics")
    assert response.status_code == 200
    samples: dict[str, dict[Labels, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[s.name][tuple(sorted(s.labels.items()))] = s.value
    return samples


def calls(samples: dict[str, dict[Labels, float]]) -> dict[tuple[str, str], float]:
    """``rst_s3_calls_total`` of the AE by (operation, outcome)."""
    found = {}
    for labels, value in samples["rst_s3_calls_total"].items():
        named = dict(labels)
        assert named["aet"] == AET
        found[named["operation"], named["outcome"]] = value
    return found


async def test_s3_calls_are_counted_and_timed_by_operation_and_outcome(
    s3_gateway: Running, study: StudyFiles
) -> None:
    before = calls(await scrape(s3_gateway))
    assert before == {}  # nothing asked of the bucket yet (no health checks in tests)

    assert (await stow(s3_gateway, study.paths)).status_code == 200
    async with httpx.AsyncClient(base_url=base(s3_gateway), timeout=60, trust_env=False) as http:
        whole = await http.get(f"/studies/{study.study_uid}", headers=AS_STORED)
        assert whole.status_code == 200
        missing = await http.get("/studies/1.2.826.0.1.999", headers=AS_STORED)
        assert missing.status_code == 404
        echo = await http.get(base(s3_gateway))  # GET /aets/S3: a HeadBucket
        assert echo.status_code == 200, echo.text
        # an object listed but gone by the time it is read: its GetObject finds nothing
        gone = Listed(f"{study.study_uid}/{study.instance_series[0]}/{GONE}.dcm", 10)
        client = backend_of(s3_gateway).client

        async def listing(prefix: str) -> AsyncIterator[Listed]:
            yield gone

        client.list_objects = listing  # type: ignore[method-assign]
        series = study.instance_series[0]
        try:
            vanished = await http.get(
                f"/studies/{study.study_uid}/series/{series}/instances/{GONE}", headers=AS_STORED
            )
        finally:
            del client.list_objects
        assert vanished.status_code == 502  # listed, then gone: an incomplete retrieve
    samples = await scrape(s3_gateway)
    counted = calls(samples)

    assert counted[("PutObject", "ok")] == len(study.paths)
    assert counted[("HeadBucket", "ok")] == 1
    assert counted[("GetObject", "not_found")] == 1
    # every instance of the study was read: whole, or by its head and ranges
    reads = counted.get(("GetObject", "ok"), 0) + counted.get(("GetObjectRange", "ok"), 0)
    assert reads >= len(study.paths)
    assert counted[("ListObjectsV2", "ok")] >= 2  # the retrieve's listing, the missing study's
    assert {outcome for _, outcome in counted} == {"ok", "not_found"}

    # one latency sample per call, by AE and operation
    durations = samples["rst_s3_call_duration_seconds_count"]
    sums = samples["rst_s3_call_duration_seconds_sum"]
    for operation in {operation for operation, _ in counted}:
        labels = (("aet", AET), ("operation", operation))
        made = sum(v for (op, _), v in counted.items() if op == operation)
        assert durations[labels] == made, operation
        assert sums[labels] > 0
    # bounded labels: operations and outcomes, never a key, a UID or the bucket
    values = {v for series in samples.values() for labels in series for _, v in labels}
    assert not [v for v in values if study.study_uid in v or ".dcm" in v]
