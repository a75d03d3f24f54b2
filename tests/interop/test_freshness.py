"""The retrieve cache's check of a cached study or series (:mod:`rst.cache.freshness`: a C-FIND
of its number of instances, then one at IMAGE level of its SOP Instance UIDs if the number is
not given or differs) against each of the three PACS: every one answers it, at study and at
series level, with the instances it holds — so the check finds a warm study fresh (no C-MOVE)
rather than failing (served unchecked, with a warning). Orthanc and the pynetdicom PACS count;
dcmqrscp does not, is remembered as such, and its levels are listed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from rst.cache import CachedBackend
from rst.metrics import Metrics
from rst.server import Running
from rst.services.protocols import RetrieveKeys
from rst.services.wado import whole
from tests.interop.peers import KINDS, Archive, open_archive, open_gateway
from tests.support.sample import StudyFiles

pytestmark = pytest.mark.integration


@pytest.fixture(params=KINDS)
async def archive(request: Any, tmp_path: Path, ct_study: StudyFiles) -> AsyncIterator[Archive]:
    async with open_archive(request.param, tmp_path, ct_study.paths) as started:
        yield started


@pytest.fixture
async def gateway(archive: Archive) -> AsyncIterator[Running]:
    async with open_gateway(archive) as running:
        yield running


async def fetch(backend: CachedBackend, keys: RetrieveKeys) -> list[str]:
    got = []
    async with backend.retrieve(keys) as instances:
        async for instance in instances:
            await whole(instance)
            got.append(instance.sop_instance_uid)
    return sorted(got)


@pytest.mark.parametrize("route", ["MOVE", "GET"])
async def test_every_pacs_answers_the_check_of_a_cached_study_and_series(
    gateway: Running, archive: Archive, ct_study: StudyFiles, route: str
) -> None:
    assert gateway.cache is not None
    metrics = Metrics()
    inner = gateway.backends[route]
    cached = CachedBackend(
        inner,
        gateway.cache,
        archive=f"freshness-{route}",
        metrics=metrics,
        revalidate_seconds=0,
        relist_seconds=3600,
    )
    series = ct_study.series_uids[0]
    levels = {
        RetrieveKeys(ct_study.study_uid): sorted(ct_study.sop_uids),
        RetrieveKeys(ct_study.study_uid, series): sorted(
            sop
            for sop, of in zip(ct_study.sop_uids, ct_study.instance_series, strict=True)
            if of == series
        ),
    }
    for keys, expected in levels.items():
        for _ in range(3):  # the second and third from the cache, checked
            assert await fetch(cached, keys) == expected

    def count(name: str, result: str, **labels: str) -> float:
        value = metrics.registry.get_sample_value(
            name, {"aet": inner.name, "result": result, **labels}
        )
        return 0.0 if value is None else value

    def checks(result: str, check: str) -> float:
        return count("rst_cache_revalidations_total", result, check=check)

    assert cached.freshness is not None
    uncounted = cached.freshness.uncounted
    # Orthanc and rst's development PACS count; dcmqrscp leaves both counts out
    assert uncounted == ({"STUDY", "SERIES"} if archive.kind == "dcmqrscp" else set())
    # a level whose count is given is counted at each check; one without, listed
    assert checks("fresh", "count") == 2 * (2 - len(uncounted))
    assert checks("fresh", "list") == 2 * len(uncounted)
    for result in ("failed", "changed"):
        assert checks(result, "count") + checks(result, "list") == 0
    assert (count("rst_cache_lookups_total", "miss"), count("rst_cache_lookups_total", "hit")) == (
        2,
        4,
    )
