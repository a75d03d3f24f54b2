"""A body that is ready whole leaves the app as one ASGI body message that is also the last."""

from __future__ import annotations

from typing import Any, cast

import trio
from hypercorn.typing import HTTPScope
from quart import Response
from quart.wrappers.response import DataBody

from rst.config import Config
from rst.http.app import create_app
from rst.http.request_scope import RequestScopedConnection
from tests.support.scripted_backend import ScriptedBackend


async def asgi_messages(headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    """The messages the app sends for ``GET /aets`` (a JSON answer) with *headers*."""
    app = create_app(Config(), {"X": ScriptedBackend()})
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/aets",
        "raw_path": b"/aets",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"x"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
        "extensions": {},
    }
    sent: list[dict[str, Any]] = []
    asked = trio.Event()

    async def receive() -> dict[str, Any]:
        if not asked.is_set():
            asked.set()
            return {"type": "http.request", "body": b"", "more_body": False}
        await trio.sleep_forever()  # the client stays: no http.disconnect
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with trio.fail_after(10):
        await app(scope, receive, send)  # type: ignore[arg-type]
    return sent


async def test_a_ready_body_is_one_message() -> None:
    sent = await asgi_messages([])
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 200
    body = sent[1]["body"]
    assert sent[1]["more_body"] is False
    assert body == b"[]\n"  # no AE configured
    length = dict(sent[0]["headers"])[b"content-length"]
    assert int(length) == len(body)


async def test_a_range_of_a_ready_body_is_the_range() -> None:
    """A body cut to a range (quart's ``make_conditional``) goes out as that range."""
    app = create_app(Config(), {})
    connection = RequestScopedConnection(app, cast(HTTPScope, {"type": "http"}))
    response = Response(b"0123456789", content_type="application/octet-stream")
    body = response.response
    assert isinstance(body, DataBody)
    await body.make_conditional(2, 6)
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await connection._send_response(send, response)  # type: ignore[arg-type]
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[1]["body"] == b"2345"
    assert sent[1]["more_body"] is False
