"""The metrics: one registry per gateway, bounded labels, one outcome per retrieve."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rst.backends.metered import MeteredBackend, retrieve_outcome
from rst.errors import BackendTimeout, IncompleteRetrieve, NotFound, RstError
from rst.http.request_metrics import route_template
from rst.metrics import Metrics
from rst.services.protocols import RetrieveKeys
from tests.support.scripted_backend import ScriptedBackend, part10

KEYS = RetrieveKeys("1.2.3")


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    """The value of sample *name* with *labels*, as ``GET /metrics`` shows it."""
    body, _ = metrics.exposition(None)
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


def test_each_gateway_counts_in_its_own_registry() -> None:
    one, other = Metrics(), Metrics()
    one.retrieves.labels("PACS", "complete").inc()
    assert sample(one, "rst_retrieves_total", aet="PACS", outcome="complete") == 1
    assert sample(other, "rst_retrieves_total", aet="PACS", outcome="complete") is None


def test_the_exposition_has_the_process_and_the_version() -> None:
    metrics = Metrics()
    assert sample(metrics, "process_open_fds") is not None
    body, content_type = metrics.exposition("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


def test_several_workers_need_the_library_in_multiprocess_mode() -> None:
    with pytest.raises(RuntimeError, match="PROMETHEUS_MULTIPROC_DIR"):
        Metrics(multiprocess_dir="/nonexistent")


def test_cache_usage_is_read_when_scraped_and_dropped_when_unwatched() -> None:
    metrics = Metrics()
    used = [10]
    unwatch = metrics.watch_cache_usage(lambda: used[0])
    assert sample(metrics, "rst_cache_bytes") == 10
    used[0] = 25
    assert sample(metrics, "rst_cache_bytes") == 25
    unwatch()
    assert sample(metrics, "rst_cache_bytes") is None


@pytest.mark.parametrize(
    ("rule", "template"),
    [
        ("/aets", "/aets"),
        ("/aets/<aet>/studies/<study>", "/aets/{aet}/studies/{study}"),
        (
            "/aets/<aet>/studies/<study>/frames/<path:frames>",
            "/aets/{aet}/studies/{study}/frames/{frames}",
        ),
    ],
)
def test_route_templates_name_parameters_not_values(rule: str, template: str) -> None:
    assert route_template(rule) == template


@pytest.mark.parametrize(
    ("error", "received", "ended", "outcome"),
    [
        (None, 3, True, "complete"),
        (None, 1, False, "cancelled"),
        (NotFound("none"), 0, False, "not_found"),
        (IncompleteRetrieve("short"), 0, False, "partial"),
        (BackendTimeout("silent"), 2, False, "partial"),
        (BackendTimeout("silent"), 0, False, "failed"),
    ],
)
def test_retrieve_outcomes(
    error: RstError | None, received: int, ended: bool, outcome: str
) -> None:
    assert retrieve_outcome(error, received=received, ended=ended) == outcome


def scripted(fail_after: int | None, error: Callable[[], BaseException]) -> ScriptedBackend:
    backend = ScriptedBackend(instances=[part10(f"1.2.3.{n}") for n in range(3)])
    backend.fail_retrieve_after = fail_after
    backend.error = error
    return backend


async def read(backend: MeteredBackend, stop_after: int | None = None) -> None:
    async with backend.retrieve(KEYS) as instances:
        n = 0
        async for _ in instances:
            n += 1
            if n == stop_after:
                return


async def test_a_metered_backend_counts_one_outcome_per_retrieve() -> None:
    metrics = Metrics()

    def count(backend: ScriptedBackend) -> MeteredBackend:
        backend.name = "PACS"
        return MeteredBackend(backend, metrics)

    await read(count(scripted(None, lambda: AssertionError())))
    await read(count(scripted(None, lambda: AssertionError())), stop_after=1)
    for fail_after, error in [
        (2, lambda: IncompleteRetrieve("broke off")),
        (0, lambda: BackendTimeout("nothing came")),
        (0, lambda: NotFound("no such study")),
    ]:
        with pytest.raises(RstError):
            await read(count(scripted(fail_after, error)))

    def outcome(name: str) -> float | None:
        return sample(metrics, "rst_retrieves_total", aet="PACS", outcome=name)

    assert [outcome(o) for o in ("complete", "cancelled", "partial", "failed", "not_found")] == [
        1,
        1,
        1,
        1,
        1,
    ]
    assert sample(metrics, "rst_retrieved_instances_total", aet="PACS") == 3 + 1 + 2


async def test_an_error_of_the_reader_is_no_failure_of_the_archive() -> None:
    metrics = Metrics()
    backend = MeteredBackend(scripted(None, lambda: AssertionError()), metrics)

    async def ask_for_a_missing_frame() -> None:
        async with backend.retrieve(KEYS) as instances:
            await anext(instances)
            raise NotFound("the frame the client asked for")  # the service's own answer

    with pytest.raises(NotFound):
        await ask_for_a_missing_frame()
    assert sample(metrics, "rst_retrieves_total", aet="SCRIPTED", outcome="cancelled") == 1
