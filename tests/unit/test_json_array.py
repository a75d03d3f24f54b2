"""json_array over start_stream: QIDO-RS rows already waiting go out as one chunk, a row alone
goes out at once, chunks are bounded by bytes, and a failure after rows breaks the array off."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

from rst.errors import IncompleteRetrieve
from rst.http.streaming import ITEMS_AHEAD, StreamBrokenOff, start_stream
from rst.services.qido import CHUNK_BYTES, MORE, json_array

Produce = Callable[[trio.MemorySendChannel[Any]], Awaitable[None]]


def row(n: int, pad: int = 0) -> dict[str, Any]:
    value = f"1.2.{n}" + "9" * pad
    return {"00080018": {"vr": "UI", "Value": [value]}}


async def chunks_of(produce: Produce, *, prefetch: int = 1) -> AsyncIterator[bytes]:
    async with trio.open_nursery() as nursery:
        stream = await start_stream(nursery, produce, prefetch=prefetch, buffer=ITEMS_AHEAD)
        await trio.testing.wait_all_tasks_blocked()  # a slow client: what can wait, waits
        async for chunk in json_array(stream):
            yield chunk


async def test_rows_already_waiting_go_out_as_one_chunk(autojump_clock: trio.abc.Clock) -> None:
    rows = [row(n) for n in range(10)]

    async def produce(send: trio.MemorySendChannel[Any]) -> None:
        for item in rows:
            await send.send(item)

    chunks = [chunk async for chunk in chunks_of(produce)]

    assert len(chunks) == 1  # the rows, the brackets: one gzip flush, one send
    assert json.loads(chunks[0]) == rows


async def test_a_row_alone_goes_out_at_once(autojump_clock: trio.abc.Clock) -> None:
    more = trio.Event()

    async def produce(send: trio.MemorySendChannel[Any]) -> None:
        await send.send(row(0))
        await more.wait()  # the PACS has sent nothing else yet
        await send.send(row(1))

    async with trio.open_nursery() as nursery:
        stream = await start_stream(nursery, produce, buffer=ITEMS_AHEAD)
        body = json_array(stream)
        with trio.fail_after(10):  # the clock jumps here if the body waited for more
            first = await body.__anext__()
        assert first == b"[" + json.dumps(row(0), separators=(",", ":")).encode()
        more.set()
        rest = [chunk async for chunk in body]

    assert json.loads(first + b"".join(rest)) == [row(0), row(1)]


async def test_chunks_are_bounded_by_bytes(autojump_clock: trio.abc.Clock) -> None:
    pad = CHUNK_BYTES // 5
    rows = [row(n, pad) for n in range(12)]

    async def produce(send: trio.MemorySendChannel[Any]) -> None:
        for item in rows:
            await send.send(item)

    chunks = [chunk async for chunk in chunks_of(produce)]

    assert json.loads(b"".join(chunks)) == rows
    assert len(chunks) > 1
    # a chunk stops at the first row that takes it to the bound
    assert all(len(chunk) < CHUNK_BYTES + pad + 100 for chunk in chunks)
    assert all(len(chunk) >= CHUNK_BYTES for chunk in chunks[:-1])


async def test_a_page_and_its_more_marker_end_the_array(autojump_clock: trio.abc.Clock) -> None:
    rows = [row(n) for n in range(3)]

    async def produce(send: trio.MemorySendChannel[Any]) -> None:
        for item in rows:
            await send.send(item)
        await send.send(MORE)

    chunks = [chunk async for chunk in chunks_of(produce, prefetch=4)]

    assert chunks == [json.dumps(rows, separators=(",", ":")).encode()]


async def test_no_rows_is_an_empty_array(autojump_clock: trio.abc.Clock) -> None:
    async def produce(send: trio.MemorySendChannel[Any]) -> None:
        return

    assert [chunk async for chunk in chunks_of(produce)] == [b"[]"]


async def test_rows_before_a_failure_go_out_then_the_array_breaks_off(
    autojump_clock: trio.abc.Clock,
) -> None:
    rows = [row(n) for n in range(3)]

    async def produce(send: trio.MemorySendChannel[Any]) -> None:
        for item in rows:
            await send.send(item)
        raise IncompleteRetrieve("the PACS went away")

    chunks: list[bytes] = []
    with pytest.RaisesGroup(StreamBrokenOff, allow_unwrapped=True, flatten_subgroups=True):
        async for chunk in chunks_of(produce):
            chunks.append(chunk)

    assert chunks == [b"[" + b",".join(json.dumps(r, separators=(",", ":")).encode() for r in rows)]
