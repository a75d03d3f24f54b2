"""The request body pushes back: rst stops reading from hypercorn while 1 MiB is unconsumed."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing

from rst.http.request_body import HIGH_WATER, FlowControlledBody
from rst.http.request_scope import RequestScopedConnection, request_nursery

CHUNK = HIGH_WATER // 4


class FakeRequest:
    def __init__(self) -> None:
        self.body = FlowControlledBody(None, None)


async def test_reading_stops_at_the_high_water_mark_and_resumes_when_consumed() -> None:
    received = 0

    async def receive() -> dict[str, Any]:
        nonlocal received
        if received == 12:
            await trio.sleep_forever()  # the whole body has been sent; the client waits
        received += 1
        return {"type": "http.request", "body": b"x" * CHUNK, "more_body": received < 12}

    request = FakeRequest()
    connection = RequestScopedConnection.__new__(RequestScopedConnection)
    connection.app = SimpleNamespace(config={"RST_BODY_TIMEOUT": 30.0})  # type: ignore[assignment]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(connection.handle_messages, nursery, request, receive)  # type: ignore[arg-type]
        await trio.testing.wait_all_tasks_blocked()
        assert received == HIGH_WATER // CHUNK  # stopped reading: nobody consumed the body
        total = len(await request.body.__anext__())
        await trio.testing.wait_all_tasks_blocked()
        assert received == 2 * HIGH_WATER // CHUNK  # room again: read up to the mark again
        async for data in request.body:
            total += len(data)
        nursery.cancel_scope.cancel()
    assert total == 12 * CHUNK


def test_a_request_not_served_in_its_own_scope_has_no_nursery() -> None:
    with pytest.raises(RuntimeError, match="no nursery"):
        request_nursery(FakeRequest())  # type: ignore[arg-type]
