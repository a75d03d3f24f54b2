"""``/livez``, ``/readyz`` and ``/metrics`` through the real listener and app."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing, asynccontextmanager

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from rst.backends.metered import metered
from rst.config import AeConfig, Config, HttpConfig
from rst.errors import IncompleteRetrieve
from rst.http.app import create_app
from rst.http.listener import serve_http
from rst.logs import RequestIdFilter
from rst.metrics import Metrics
from rst.services.protocols import Backend, Instance, RetrieveKeys
from tests.support.gateway import run_gateway
from tests.support.hostile_pacs import HostilePacs
from tests.support.scripted_backend import ScriptedBackend, part10
from tests.support.stow import multipart

STUDY = "1.2.3"
RETRIEVE = "/aets/{aet}/studies/{study}"


@asynccontextmanager
async def serving(
    backends: Mapping[str, Backend], metrics: Metrics
) -> AsyncIterator[httpx.AsyncClient]:
    """The app as the server builds it: archives metered, one registry for everything."""
    config = Config(http=HttpConfig(host="127.0.0.1", port=0))
    app = create_app(config, metered(dict(backends), metrics), metrics=metrics)
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve_http, app, config.http)
        async with httpx.AsyncClient(base_url=binds[0], timeout=10) as client:
            yield client
        nursery.cancel_scope.cancel()


async def scrape(client: httpx.AsyncClient) -> list[Sample]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    families = text_string_to_metric_families(response.text)
    return [sample for family in families for sample in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(found) == 1, f"{name}{labels}: {found}"
    return found[0]


async def test_livez_answers_without_asking_anything() -> None:
    backend = ScriptedBackend(fail_echo=True)
    async with serving({"X": backend}, Metrics()) as client:
        response = await client.get("/livez")
    assert response.status_code == 200
    assert response.json() == {"status": "alive"}
    assert response.headers["Cache-Control"] == "no-store"


async def test_an_app_whose_health_nobody_checks_is_not_ready() -> None:
    async with serving({"X": ScriptedBackend()}, Metrics()) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["aets"]["X"]["reason"] == "not checked yet"


def refused_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_readyz_names_the_pacs_that_does_not_answer() -> None:
    good = HostilePacs("GOOD")
    async with trio.open_nursery() as nursery:
        port = await nursery.start(good.serve)
        async with run_gateway(
            AeConfig(aet="GOOD", port=port),
            AeConfig(aet="GONE", port=refused_port()),
            health={"check_archives": True},
        ) as running:
            assert running.health is not None
            await running.health.check_all()  # one round, whatever the server's own did
            async with httpx.AsyncClient(base_url=running.http_url) as client:
                response = await client.get("/readyz")
            assert response.status_code == 503
            body = response.json()
            assert body["status"] == "unready"
            assert body["failing"] == ["GONE"]
            assert body["receiver"]["listening"] is True
            assert body["aets"]["GOOD"]["ready"] is True
            assert "cannot connect" in body["aets"]["GONE"]["reason"]
            samples = await scrape_url(running.http_url)
            assert value(samples, "rst_archive_up", aet="GOOD") == 1
            assert value(samples, "rst_archive_up", aet="GONE") == 0
            assert (
                value(
                    samples,
                    "rst_dimse_association_failures_total",
                    aet="GONE",
                    operation="echo",
                    kind="unreachable",
                )
                >= 1
            )
            assert (
                value(
                    samples,
                    "rst_dimse_association_duration_seconds_count",
                    aet="GOOD",
                    operation="echo",
                )
                >= 1
            )
        nursery.cancel_scope.cancel()


async def test_readyz_is_ready_when_every_pacs_answers() -> None:
    good = HostilePacs("GOOD")
    async with trio.open_nursery() as nursery:
        port = await nursery.start(good.serve)
        async with run_gateway(
            AeConfig(aet="GOOD", port=port), health={"check_archives": True}
        ) as running:
            assert running.health is not None
            await running.health.check_all()
            async with httpx.AsyncClient(base_url=running.http_url) as client:
                response = await client.get("/readyz")
            assert response.status_code == 200, response.text
            assert response.json()["status"] == "ready"
        nursery.cancel_scope.cancel()


async def scrape_url(url: str) -> list[Sample]:
    async with httpx.AsyncClient(base_url=url) as client:
        return await scrape(client)


async def test_metrics_count_requests_by_route_retrieves_by_outcome_and_stow(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.handler.addFilter(RequestIdFilter())
    caplog.set_level(logging.INFO)
    backend = ScriptedBackend(instances=[part10(f"{STUDY}.1"), part10(f"{STUDY}.2")])
    backend.error = lambda: IncompleteRetrieve("the PACS broke off")
    async with serving({"X": backend}, Metrics()) as client:
        assert (await client.get("/aets")).status_code == 200
        whole = await client.get(f"/aets/X/studies/{STUDY}")
        assert whole.status_code == 200
        backend.fail_retrieve_after = 1
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(f"/aets/X/studies/{STUDY}", headers={"X-Request-ID": "broken-1"})
        assert (await client.get("/aets/NOPE/studies")).status_code == 404
        assert (await client.get(f"/no/such/{STUDY}")).status_code == 404
        headers, body = multipart(part10(f"{STUDY}.9").data)
        assert (await client.post("/aets/X/studies", headers=headers, content=body)).is_success
        samples = await scrape(client)

    def requests(route: str, status: str, method: str = "GET") -> float:
        return value(samples, "rst_http_requests_total", route=route, method=method, status=status)

    assert requests("/aets", "200") == 1
    assert requests(RETRIEVE, "200") == 2  # the broken one had started as a 200
    assert requests("/aets/{aet}/studies", "404") == 1
    assert requests("unmatched", "404") == 1
    assert requests("/aets/{aet}/studies", "200", method="POST") == 1
    route = {"route": RETRIEVE, "method": "GET"}
    assert value(samples, "rst_http_request_duration_seconds_count", **route) == 2
    assert value(samples, "rst_http_responses_broken_total", route=RETRIEVE) == 1
    assert value(samples, "rst_http_response_bytes_total", route=RETRIEVE) > len(whole.content)
    assert value(samples, "rst_http_request_bytes_total", route="/aets/{aet}/studies") == len(body)
    assert value(samples, "rst_http_requests_in_progress") == 1  # the scrape itself
    # time to first byte: the broken retrieve had sent its first part; plain answers count too
    first_byte = "rst_http_time_to_first_byte_seconds"
    assert value(samples, f"{first_byte}_count", route=RETRIEVE) == 2
    assert value(samples, f"{first_byte}_count", route="/aets") == 1
    assert value(samples, f"{first_byte}_count", route="unmatched") == 1
    assert value(samples, f"{first_byte}_sum", route=RETRIEVE) <= value(
        samples, "rst_http_request_duration_seconds_sum", **route
    )
    assert value(samples, "rst_http_errors_total", kind="UnknownAE") == 1
    assert value(samples, "rst_retrieves_total", aet="X", outcome="complete") == 1
    assert value(samples, "rst_retrieves_total", aet="X", outcome="partial") == 1
    assert value(samples, "rst_retrieved_instances_total", aet="X") == 3
    assert value(samples, "rst_stow_instances_total", aet="X", outcome="stored") == 1
    # bounded labels: no UID, no unknown AE title, no path ever becomes one
    labels = {v for sample in samples for v in sample.labels.values()}
    assert not [v for v in labels if STUDY in v or "NOPE" in v or "/no/" in v]

    broken = [r for r in caplog.records if getattr(r, "request_id", None) == "broken-1"]
    assert broken, "the broken retrieve was not logged"
    assert all(getattr(r, "aet", None) == "X" for r in broken)


class HeldBackend(ScriptedBackend):
    """Sends its first instance, then holds the rest until :attr:`go` is set."""

    def __init__(self, instances: list[Instance]) -> None:
        super().__init__(instances=instances)
        self.go = trio.Event()

    @asynccontextmanager
    async def retrieve(
        self, keys: RetrieveKeys, prefer: str | None = None
    ) -> AsyncIterator[AsyncIterator[Instance]]:
        async def parts() -> AsyncGenerator[Instance]:
            first, *rest = self.instances
            yield first
            await self.go.wait()
            for instance in rest:
                yield instance

        async with aclosing(parts()) as found:
            yield found


async def test_time_to_first_byte_is_taken_when_a_streamed_body_starts() -> None:
    backend = HeldBackend([part10(f"{STUDY}.1"), part10(f"{STUDY}.2")])
    first_byte = "rst_http_time_to_first_byte_seconds_count"
    async with (
        serving({"X": backend}, Metrics()) as client,
        client.stream("GET", f"/aets/X/studies/{STUDY}") as response,
    ):
        assert response.status_code == 200
        chunks = response.aiter_bytes()
        assert await anext(chunks)  # the first part: the rest waits on the backend
        samples = await scrape(client)
        assert value(samples, first_byte, route=RETRIEVE) == 1
        # the response is not over: no duration yet, but its first byte is counted
        assert not [
            s
            for s in samples
            if s.name == "rst_http_request_duration_seconds_count"
            and s.labels.get("route") == RETRIEVE
        ]
        backend.go.set()
        async for _ in chunks:
            pass
        samples = await scrape(client)
    assert value(samples, first_byte, route=RETRIEVE) == 1  # once per response
    route = {"route": RETRIEVE, "method": "GET"}
    assert value(samples, "rst_http_request_duration_seconds_count", **route) == 1
