"""A request's failure stays in that request: whatever one request raises — before or after its
first byte, in rst or inside hypercorn — the gateway answers the next one.

The app is served by the real listener (hypercorn's protocol, rst's connection guard) in front
of a :class:`ScriptedBackend` that fails where each test says."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import httpx
import pytest
import trio
from pydicom import Dataset

from rst.backends.dimse.peer import Peer
from rst.config import AeConfig, Config, HttpConfig
from rst.errors import ArchiveBusy, BadRequest
from rst.http.app import create_app
from rst.http.listener import serve_http
from rst.services.protocols import Backend
from tests.support.scripted_backend import ScriptedBackend, part10

STUDY = "1.2.3"


@asynccontextmanager
async def serving(
    backends: Mapping[str, Backend], **http: object
) -> AsyncIterator[httpx.AsyncClient]:
    config = Config(http=HttpConfig(host="127.0.0.1", port=0, **http))  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve_http, create_app(config, backends), config.http)
        async with httpx.AsyncClient(base_url=binds[0], timeout=10) as client:
            yield client
        nursery.cancel_scope.cancel()


def study_match(n: int) -> Dataset:
    ds = Dataset()
    ds.StudyInstanceUID = f"{STUDY}.{n}"
    ds.PatientName = "CONTAINMENT"
    return ds


async def still_serving(client: httpx.AsyncClient) -> None:
    response = await client.get("/aets")
    assert response.status_code == 200


async def test_bug_before_the_first_byte_is_500_json() -> None:
    backend = ScriptedBackend(matches=[study_match(1)], fail_search_after=0)
    async with serving({"X": backend}) as client:
        response = await client.get("/aets/X/studies")
        assert response.status_code == 500
        assert "internal error" in response.json()["error"]
        await still_serving(client)
    assert backend.opened == backend.closed == 1


async def test_bug_after_the_first_byte_breaks_the_stream_only() -> None:
    instances = [part10(f"{STUDY}.1.{n}") for n in range(3)]
    backend = ScriptedBackend(instances=instances, fail_retrieve_after=2)
    async with serving({"X": backend}) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(f"/aets/X/studies/{STUDY}")
        await still_serving(client)
        backend.fail_retrieve_after = None
        whole = await client.get(f"/aets/X/studies/{STUDY}")
        assert whole.status_code == 200
        assert whole.content.count(b"Content-Type: application/dicom") == 3
    assert backend.opened == backend.closed == 2


async def test_search_failing_midway_breaks_the_json_array() -> None:
    backend = ScriptedBackend(matches=[study_match(n) for n in range(5)], fail_search_after=3)
    backend.error = lambda: BadRequest("raised after rows were sent")
    async with serving({"X": backend}) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get("/aets/X/studies")
        await still_serving(client)


async def test_health_check_bug_is_500_json() -> None:
    backend = ScriptedBackend(fail_echo=True)
    async with serving({"X": backend}) as client:
        response = await client.get("/aets/X")
        assert response.status_code == 500
        assert response.headers["content-type"] == "application/json"
        await still_serving(client)


async def test_body_shorter_than_content_length_with_connection_close() -> None:
    """Seen killing rst 7 times in 40: h11 fails on the extra bytes, hypercorn's error
    response then collides with another send — inside hypercorn, contained by the listener."""
    body = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + b"x" * 1000 + b"\r\n--b--\r\n"
    head = (
        b"POST /aets/X/studies HTTP/1.1\r\nHost: x\r\n"
        b'Content-Type: multipart/related; type="application/dicom"; boundary=b\r\n'
        b"Content-Length: 10\r\nConnection: close\r\n\r\n"
    )
    async with serving({"X": ScriptedBackend()}) as client:
        host, port = client.base_url.host, client.base_url.port
        assert port is not None
        with trio.fail_after(30):
            for _ in range(40):
                stream = await trio.open_tcp_stream(host, port)
                async with stream:
                    try:
                        await stream.send_all(head + body)
                        while await stream.receive_some(65536):
                            pass
                    except trio.BrokenResourceError:
                        pass  # rst closed the connection first: fine
        await still_serving(client)


async def test_connections_beyond_the_cap_wait_their_turn() -> None:
    async with serving({"X": ScriptedBackend()}, max_connections=2) as client:
        host, port = client.base_url.host, client.base_url.port
        assert port is not None
        idle = [await trio.open_tcp_stream(host, port) for _ in range(2)]
        async with httpx.AsyncClient(base_url=str(client.base_url), timeout=10) as third:
            answered = trio.Event()

            async def ask() -> None:
                response = await third.get("/aets")
                assert response.status_code == 200
                answered.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask)
                with trio.move_on_after(0.5):
                    await answered.wait()
                assert not answered.is_set(), "a third connection was served beyond the cap"
                await idle.pop().aclose()
                with trio.fail_after(5):
                    await answered.wait()
        for stream in idle:
            await stream.aclose()


async def test_a_client_that_stops_sending_its_body_gets_408() -> None:
    head = (
        b"POST /aets/X/studies HTTP/1.1\r\nHost: x\r\n"
        b'Content-Type: multipart/related; type="application/dicom"; boundary=b\r\n'
        b"Content-Length: 100000\r\n\r\n--b\r\nContent-Type: application/dicom\r\n\r\n"
    )
    async with serving({"X": ScriptedBackend()}, body_timeout=0.3) as client:
        host, port = client.base_url.host, client.base_url.port
        assert port is not None
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(head)
            answer = b""
            with trio.fail_after(10):
                while chunk := await stream.receive_some(65536):
                    answer += chunk
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"http.body_timeout" in answer
        await still_serving(client)


async def test_a_client_that_never_reads_is_dropped_and_its_retrieve_closed() -> None:
    instances = [part10(f"{STUDY}.1.{n}", size=1 << 20) for n in range(40)]
    backend = ScriptedBackend(instances=instances)
    async with serving({"X": backend}, send_timeout=0.3) as client:
        host, port = client.base_url.host, client.base_url.port
        assert port is not None
        stream = await trio.open_tcp_stream(host, port)
        stream.socket.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4096)
        async with stream:
            await stream.send_all(
                f"GET /aets/X/studies/{STUDY} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            )
            with trio.fail_after(20):
                while backend.closed < 1:  # noqa: ASYNC110 - the retrieve ends in another task
                    await trio.sleep(0.05)
        assert backend.opened == backend.closed == 1
        await still_serving(client)


async def test_unknown_route_is_404_json_and_wrong_method_405_with_allow() -> None:
    async with serving({"X": ScriptedBackend()}) as client:
        missing = await client.get(f"/aets/X/studies/{STUDY}/series/1.2/instances/1.3/frames/1/x")
        assert missing.status_code == 404
        assert missing.json()["status"] == 404
        wrong = await client.delete("/aets/X/studies")
        assert wrong.status_code == 405
        assert "POST" in wrong.headers["Allow"]
        assert wrong.json()["status"] == 405


async def test_connection_close_is_honoured() -> None:
    async with serving({"X": ScriptedBackend()}) as client:
        host, port = client.base_url.host, client.base_url.port
        assert port is not None
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(b"GET /aets HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = b""
            with trio.fail_after(5):  # rst closes the connection: the read ends
                while chunk := await stream.receive_some(65536):
                    answer += chunk
        assert answer.startswith(b"HTTP/1.1 200")


async def test_a_busy_archive_is_503_with_retry_after() -> None:
    backend = ScriptedBackend(matches=[study_match(1)], fail_search_after=0)
    backend.error = lambda: ArchiveBusy("all associations busy", retry_after=7)
    async with serving({"X": backend}) as client:
        response = await client.get("/aets/X/studies")
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "7"


async def test_association_slots_wait_at_most_the_queue_timeout() -> None:
    peer = Peer(
        AeConfig(aet="PACS", max_associations=1, queue_timeout=0.2), calling_aet="RST", max_pdu=0
    )
    async with peer.slot():
        with pytest.raises(ArchiveBusy) as busy:
            async with peer.slot():
                pass  # pragma: no cover - never entered
    assert busy.value.retry_after == 1
    async with peer.slot():  # freed again
        assert peer.open_associations == 1
    assert peer.open_associations == 0


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        (b"GET /aets HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
        (b"GET /aets HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", 431),
    ],
    ids=["malformed", "huge-head"],
)
async def test_requests_hypercorn_cannot_parse_get_a_json_error(
    request_head: bytes, status: int
) -> None:
    async with serving({"X": ScriptedBackend()}) as client:
        host, port = client.base_url.host, client.base_url.port
        assert port is not None
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(request_head)
            answer = b""
            with trio.fail_after(5):
                with contextlib.suppress(trio.BrokenResourceError):
                    while chunk := await stream.receive_some(65536):
                        answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 %d" % status), answer[:200]
        assert b"content-type: application/json" in head
        assert json.loads(body)["status"] == status
        await still_serving(client)
