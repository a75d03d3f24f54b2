"""rst.http.exchange: what one request's ASGI messages tell, and its first byte told once."""

from __future__ import annotations

from hypercorn.typing import ASGIReceiveEvent, ASGISendEvent

from rst.http.exchange import Exchange


async def test_counts_the_messages_and_tells_the_first_body_byte_once() -> None:
    sent: list[ASGISendEvent] = []
    told: list[int] = []

    async def receive() -> ASGIReceiveEvent:
        return {"type": "http.request", "body": b"abc", "more_body": False}

    async def send(message: ASGISendEvent) -> None:
        sent.append(message)

    exchange = Exchange(receive, send, lambda: told.append(len(sent)))
    await exchange.receive()
    await exchange.send({"type": "http.response.start", "status": 200, "headers": []})
    await exchange.send({"type": "http.response.body", "body": b"", "more_body": True})
    assert told == []  # an empty body message is no first byte
    await exchange.send({"type": "http.response.body", "body": b"12", "more_body": True})
    assert told == [3]  # after the message went out
    await exchange.send({"type": "http.response.body", "body": b"345", "more_body": False})
    assert told == [3]
    assert (exchange.status, exchange.received, exchange.sent) == (200, 3, 5)
    assert exchange.complete
    assert not exchange.broken
    assert len(sent) == 4


async def test_a_response_begun_and_not_finished_is_broken() -> None:
    async def receive() -> ASGIReceiveEvent:
        return {"type": "http.disconnect"}

    async def send(message: ASGISendEvent) -> None:
        pass

    exchange = Exchange(receive, send)
    await exchange.send({"type": "http.response.start", "status": 200, "headers": []})
    await exchange.send({"type": "http.response.body", "body": b"1", "more_body": True})
    await exchange.receive()
    assert exchange.client_gone
    assert exchange.broken
