"""The limits on what a request may be, through the real listener: each a 4xx with a JSON body
that names the limit, before rst spends anything on the request, and the server serves on.

- a URL longer than ``http.max_url_bytes``: 414;
- a request head larger than ``http.max_header_bytes``: 431 (and one just under it is served,
  though it is larger than hypercorn's own default);
- a STOW-RS body whose Content-Length is over ``http.max_stow_bytes``: 413 from the head alone,
  without waiting for a body the client never sends;
- an Accept header with more media ranges than ``MAX_MEDIA_RANGES``: 400.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
from pydantic import ValidationError

from rst.auth import AuthConfig
from rst.config import Config, HttpConfig
from rst.dicom.accept import MAX_MEDIA_RANGES
from rst.http.app import create_app
from rst.http.listener import hypercorn_config, serve_http
from rst.services.protocols import Backend
from tests.support.scripted_backend import ScriptedBackend

MAX_URL = 2048
MAX_HEAD = 24 * 1024
"""Over hypercorn's default of 16 KiB: rst's setting is the one that holds."""


@asynccontextmanager
async def serving(
    backends: Mapping[str, Backend] | None = None, auth: AuthConfig | None = None, **http: Any
) -> AsyncIterator[httpx.AsyncClient]:
    limits = {"max_url_bytes": MAX_URL, "max_header_bytes": MAX_HEAD, **http}
    config = Config(http=HttpConfig(host="127.0.0.1", port=0, **limits), auth=auth)
    app = create_app(config, backends if backends is not None else {"X": ScriptedBackend()})
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve_http, app, config.http)
        async with httpx.AsyncClient(base_url=binds[0], timeout=10) as client:
            yield client
        nursery.cancel_scope.cancel()


async def raw_exchange(client: httpx.AsyncClient, head: bytes) -> tuple[bytes, dict[str, Any]]:
    """Send *head* (and nothing else) on a new connection; the status line and JSON body of the
    answer, which must come within 5 s."""
    host, port = client.base_url.host, client.base_url.port
    assert port is not None
    stream = await trio.open_tcp_stream(host, port)
    answer = b""
    async with stream:
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.send_all(head)
        with trio.fail_after(5):
            while b"\r\n\r\n" not in answer or not _whole(answer):
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in headers.lower(), answer[:300]
    return status_line, json.loads(body)


def _whole(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def assert_refused(response: httpx.Response, status: int, *names: str) -> None:
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["status"] == status
    for name in names:
        assert name in body["error"], body


async def test_a_url_over_the_limit_is_414_and_one_at_it_is_served() -> None:
    async with serving() as client:
        fields = ",".join(["StudyDescription"] * 100)
        query = await client.get("/aets/X/studies", params={"includefield": fields})
        assert query.status_code == 200, query.text[:300]
        # the query string counts
        fields = ",".join(["StudyDescription"] * 200)
        over = await client.get("/aets/X/studies", params={"includefield": fields})
        assert_refused(over, 414, "http.max_url_bytes")
        # to the byte; a path that matches no route is measured too, before it is looked up
        at_limit = "/" + "a" * (MAX_URL - 1)
        assert (await client.get(at_limit)).status_code == 404
        over = await client.get(at_limit + "a")
        assert_refused(over, 414, f"({MAX_URL + 1} bytes)", f"limit of {MAX_URL} bytes")
        assert (await client.get("/aets")).status_code == 200


async def test_the_limits_come_before_authentication() -> None:
    """An anonymous client gets the limit's answer, not a 401: measuring the head needs no
    credentials and tells nothing about the archives."""
    auth = AuthConfig.model_validate(
        {"tokens": [{"name": "t", "sha256": "0" * 64, "roles": ["reader"]}]}
    )
    async with serving(auth=auth) as client:
        assert (await client.get("/aets/X/studies")).status_code == 401
        assert_refused(await client.get("/" + "a" * MAX_URL), 414, "http.max_url_bytes")
        big = {"X-Big": "b" * MAX_HEAD}
        assert_refused(await client.get("/aets", headers=big), 431, "http.max_header_bytes")


async def test_a_head_over_the_limit_is_431_and_one_under_it_is_served() -> None:
    async with serving() as client:
        big = {"X-Padding": "p" * (MAX_HEAD - 1024)}  # > hypercorn's 16 KiB default
        assert (await client.get("/aets", headers=big)).status_code == 200
        head = b"GET /aets HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * MAX_HEAD + b"\r\n\r\n"
        status_line, body = await raw_exchange(client, head)
        assert status_line.startswith(b"HTTP/1.1 431"), status_line
        assert body["status"] == 431
        assert f"{MAX_HEAD} bytes (http.max_header_bytes)" in body["error"]
        assert (await client.get("/aets")).status_code == 200


async def test_a_stow_body_declared_too_large_is_413_before_any_byte_of_it() -> None:
    """The client sends the head only: an answer that waited for the body would never come."""
    async with serving(max_stow_bytes=1_000_000) as client:
        head = (
            b"POST /aets/X/studies HTTP/1.1\r\nHost: x\r\n"
            b'Content-Type: multipart/related; type="application/dicom"; boundary=b\r\n'
            b"Content-Length: 1000000001\r\n\r\n"
        )
        status_line, body = await raw_exchange(client, head)
        assert status_line.startswith(b"HTTP/1.1 413"), status_line
        assert body["status"] == 413
        assert "1000000001 bytes" in body["error"]
        assert "http.max_stow_bytes" in body["error"]
        assert (await client.get("/aets")).status_code == 200


async def test_an_accept_header_with_too_many_media_ranges_is_400() -> None:
    async with serving() as client:
        many = ", ".join(["application/dicom+json"] * (MAX_MEDIA_RANGES + 1))
        response = await client.get("/aets/X/studies", headers={"Accept": many})
        assert_refused(response, 400, "MAX_MEDIA_RANGES")
        enough = ", ".join(["application/dicom+json"] * MAX_MEDIA_RANGES)
        assert (await client.get("/aets/X/studies", headers={"Accept": enough})).status_code == 200


def test_the_head_limit_holds_the_url_limit() -> None:
    with pytest.raises(ValidationError, match="max_header_bytes must be at least max_url_bytes"):
        HttpConfig(max_url_bytes=64 * 1024, max_header_bytes=32 * 1024)
    assert HttpConfig().max_header_bytes >= HttpConfig().max_url_bytes
    parsers = hypercorn_config(HttpConfig(max_header_bytes=50_000))
    assert parsers.h11_max_incomplete_size == 50_000
    assert parsers.h2_max_header_list_size == 100_000  # room for h2's 32 bytes a header


async def test_the_limits_hold_over_http2() -> None:
    """h2c with prior knowledge: the same 414 and 431, each a JSON body, on a stream of a
    connection that goes on serving."""
    async with serving() as plain:
        base = str(plain.base_url)
        async with httpx.AsyncClient(base_url=base, http1=False, http2=True, timeout=10) as client:
            served = await client.get("/aets")
            assert served.http_version == "HTTP/2"
            assert_refused(await client.get("/" + "a" * MAX_URL), 414, "http.max_url_bytes")
            # just over the limit: rst's answer, not a reset from h2's own count
            padding = {f"x-pad-{n}": "p" * 1000 for n in range((MAX_HEAD - 1024) // 1010)}
            padding["x-last"] = "p" * 1500
            refused = await client.get("/aets", headers=padding)
            assert_refused(refused, 431, "http.max_header_bytes")
            assert refused.http_version == "HTTP/2"
            assert (await client.get("/aets")).status_code == 200
