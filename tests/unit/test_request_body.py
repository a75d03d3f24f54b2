"""The request body pushes back: rst stops reading from hypercorn while 1 MiB is unconsumed."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing

from rst.errors import RequestTimeout
from rst.http.request_body import HIGH_WATER, FlowControlledBody
from rst.http.request_scope import RequestScopedConnection, request_nursery

CHUNK = HIGH_WATER // 4


async def test_reading_stops_at_the_high_water_mark_and_resumes_when_consumed() -> None:
    received = 0

    async def receive() -> dict[str, Any]:
        nonlocal received
        if received == 12:
            await trio.sleep_forever()  # the whole body has been sent; the client waits
        received += 1
        return {"type": "http.request", "body": b"x" * CHUNK, "more_body": received < 12}

    body = FlowControlledBody(None, None)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: body.receive_from(receive, stall=30.0, what="POST /"))  # type: ignore[arg-type]
        await trio.testing.wait_all_tasks_blocked()
        assert received == HIGH_WATER // CHUNK  # stopped reading: nobody consumed the body
        total = len(await body.__anext__())
        await trio.testing.wait_all_tasks_blocked()
        assert received == 2 * HIGH_WATER // CHUNK  # room again: read up to the mark again
        async for data in body:
            total += len(data)
        nursery.cancel_scope.cancel()
    assert total == 12 * CHUNK


async def test_a_stalled_upload_fails_its_reader_after_the_bytes_sent(
    autojump_clock: trio.abc.Clock,
) -> None:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await trio.sleep_forever()  # the client stops sending, but stays connected
        sent = True
        return {"type": "http.request", "body": b"part", "more_body": True}

    body = FlowControlledBody(None, None)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: body.receive_from(receive, stall=5.0, what="POST /"))  # type: ignore[arg-type]
        assert await body.__anext__() == b"part"
        start = trio.current_time()
        with pytest.raises(RequestTimeout, match="5 s"):
            await body.__anext__()
        assert trio.current_time() - start == pytest.approx(5.0)
        nursery.cancel_scope.cancel()


async def test_the_connection_hands_its_messages_to_the_body() -> None:
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"c", "more_body": False},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    request = SimpleNamespace(body=FlowControlledBody(None, None), method="POST", path="/")
    connection = RequestScopedConnection.__new__(RequestScopedConnection)
    connection.app = SimpleNamespace(config={"RST_BODY_TIMEOUT": 30.0})  # type: ignore[assignment]
    async with trio.open_nursery() as nursery:
        await connection.handle_messages(nursery, request, receive)  # type: ignore[arg-type]
        assert nursery.cancel_scope.cancel_called  # the client left: the request ends
    assert b"".join([data async for data in request.body]) == b"abc"


def test_a_request_not_served_in_its_own_scope_has_no_nursery() -> None:
    with pytest.raises(RuntimeError, match="no nursery"):
        request_nursery(SimpleNamespace(body=None))  # type: ignore[arg-type]
