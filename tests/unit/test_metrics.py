"""The metrics: one registry per gateway, bounded labels, one outcome per retrieve, the spool
gauge back to 0 when retrieves end, one count per S3 call."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from prometheus_client.parser import text_string_to_metric_families

from rst.backends.dimse.sink import InstanceSink
from rst.backends.metered import MeteredBackend, retrieve_outcome
from rst.backends.s3.client import RANGED_GET, S3Client, call_outcome
from rst.config import S3AeConfig
from rst.errors import (
    BackendTimeout,
    IncompleteRetrieve,
    NotFound,
    RstError,
    StorageAccessError,
    StorageError,
    StorageUnreachable,
)
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


# -- the spool gauge ------------------------------------------------------------------------


def spooled(metrics: Metrics, aet: str) -> float | None:
    return sample(metrics, "rst_spool_bytes", aet=aet)


async def test_the_spool_gauge_holds_the_bytes_on_disk_until_the_retrieve_ends(
    tmp_path: Path,
) -> None:
    metrics = Metrics()
    held = metrics.spool_held.labels("PACS")

    def new_sink() -> InstanceSink:
        return InstanceSink(capacity=1, stall_timeout=4.0, spool_dir=str(tmp_path), spool_held=held)

    one, other = new_sink(), new_sink()
    try:
        await one.offer(part10("1.2.3.1"))  # in memory: nothing on disk
        assert spooled(metrics, "PACS") == 0
        second, third = part10("1.2.3.2"), part10("1.2.3.3")
        await one.put_spooled(one.spool(second))
        await other.put_spooled(other.spool(third))
        fragments = one.open_body("1.2.3.4")
        fragments.spool(b"x" * 1000)  # the rest of a large instance shares the spool
        on_disk = len(second.data) + len(third.data) + 1000
        assert spooled(metrics, "PACS") == on_disk == one.spooled_bytes + other.spooled_bytes

        assert await one.receive() is not None
        assert await one.receive() is not None  # read back: still in the file
        assert spooled(metrics, "PACS") == on_disk
    finally:
        one.close()  # the request ended (or was abandoned): its file is gone
    assert spooled(metrics, "PACS") == len(third.data)
    one.close()  # twice: no second subtraction
    other.close()
    assert spooled(metrics, "PACS") == 0
    assert spooled(metrics, "OTHER") is None


# -- S3 calls -------------------------------------------------------------------------------


def s3_client(metrics: Metrics | None) -> S3Client:
    return S3Client(None, S3AeConfig(aet="BUCKET", backend="s3", bucket="rst-test"), metrics)


def client_error(code: str, status: int) -> ClientError:
    response: Any = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "GetObject")


@pytest.mark.parametrize(
    ("failure", "outcome"),
    [
        (None, "ok"),
        (client_error("NoSuchKey", 404), "not_found"),
        (client_error("AccessDenied", 403), "denied"),
        (client_error("SlowDown", 503), "error"),
        (ReadTimeoutError(endpoint_url="http://s3"), "timeout"),
        (EndpointConnectionError(endpoint_url="http://s3"), "unreachable"),
        (KeyError("a bug"), "error"),
        (GeneratorExit(), "cancelled"),
    ],
    ids=lambda value: getattr(value, "__name__", type(value).__name__),
)
def test_each_s3_call_is_counted_once_with_its_outcome(
    failure: BaseException | None, outcome: str
) -> None:
    metrics = Metrics()
    client = s3_client(metrics)
    with contextlib.suppress(BaseException), client._call("GetObject", key="a/b"):
        if failure is not None:
            raise failure
    counted = {
        s.labels["outcome"]: s.value
        for family in text_string_to_metric_families(metrics.exposition(None)[0].decode())
        for s in family.samples
        if s.name == "rst_s3_calls_total"
    }
    assert counted == {outcome: 1}
    assert (
        sample(metrics, "rst_s3_calls_total", aet="BUCKET", operation="GetObject", outcome=outcome)
        == 1
    )
    duration = "rst_s3_call_duration_seconds_count"
    assert sample(metrics, duration, aet="BUCKET", operation="GetObject") == 1


def test_s3_calls_are_counted_by_operation_and_only_when_made() -> None:
    metrics = Metrics()
    client = s3_client(metrics)
    with client._call("GetObject", key="k", counted_as=RANGED_GET):
        pass
    with client._call("ListObjectsV2", bucket_call=True) as call:
        call.made = False  # the end of a listing: no request went out
    with client._call("HeadBucket", bucket_call=True):
        pass
    operations = {
        s.labels["operation"]
        for family in text_string_to_metric_families(metrics.exposition(None)[0].decode())
        for s in family.samples
        if s.name == "rst_s3_calls_total"
    }
    assert operations == {"GetObjectRange", "HeadBucket"}
    assert (
        sample(
            metrics, "rst_s3_call_duration_seconds_count", aet="BUCKET", operation="ListObjectsV2"
        )
        is None
    )
    with s3_client(None)._call("PutObject", key="k"):  # no metrics (the CLI's reindex)
        pass


def test_s3_outcomes_name_the_rst_error() -> None:
    assert call_outcome(None) == "ok"
    assert call_outcome(NotFound("no object")) == "not_found"
    assert call_outcome(StorageAccessError("no bucket")) == "denied"
    assert call_outcome(StorageUnreachable("no endpoint")) == "unreachable"
    assert call_outcome(BackendTimeout("silent")) == "timeout"
    assert call_outcome(StorageError("broke off")) == "error"
    assert call_outcome(trio.TooSlowError()) == "error"
    assert call_outcome(KeyboardInterrupt()) == "cancelled"
