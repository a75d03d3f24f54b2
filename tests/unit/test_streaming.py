"""start_body and start_stream: the response body side of a producer task."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trio
import trio.testing

from rst.errors import IncompleteRetrieve, RstError
from rst.http import streaming
from rst.http.byte_channel import ByteSendChannel
from rst.http.streaming import CHUNK, StreamBrokenOff, start_body, start_stream
from tests.support.garbage import LARGE, cyclic_collection_paused, cyclic_garbage

Produce = Callable[[ByteSendChannel], Awaitable[None]]


async def body(produce: Produce, *, items: int) -> AsyncIterator[bytes]:
    async with trio.open_nursery() as nursery:
        async for chunk in await start_body(nursery, produce, items=items, tail=lambda: b"<end>"):
            yield chunk


async def collect(produce: Produce, *, items: int = 4) -> list[bytes]:
    return [chunk async for chunk in body(produce, items=items)]


async def test_items_waiting_are_joined_up_to_the_chunk_size(
    autojump_clock: trio.abc.Clock,
) -> None:
    third = CHUNK * 4 // 10

    async def produce(send: ByteSendChannel) -> None:
        await send.send((b"h", b"a" * 9))  # a part head with its instance
        for item in (b"b" * third, b"c" * third, b"d" * third, b"e" * 10):
            await send.send((item,))

    async with trio.open_nursery() as nursery:
        response = await start_body(nursery, produce, ahead=4 * CHUNK, tail=lambda: b"<end>")
        await trio.testing.wait_all_tasks_blocked()  # the client is slow: all are waiting
        chunks = [c async for c in response]

    # a..c stay under the chunk size, d takes the chunk past it; e comes next; then the tail
    head = b"h" + b"a" * 9 + b"b" * third + b"c" * third + b"d" * third
    assert chunks == [head, b"e" * 10, b"<end>"]


async def test_an_item_alone_is_sent_at_once(autojump_clock: trio.abc.Clock) -> None:
    # A producer that is slower than the client: nothing is held back to be joined.
    async def produce(send: ByteSendChannel) -> None:
        for item in (b"x", b"y", b"z"):
            await send.send((item,))
            await trio.sleep(1)

    start = trio.current_time()
    times: list[float] = []
    async for _ in body(produce, items=4):
        times.append(trio.current_time() - start)

    assert times == [0, 1, 2, 3]  # x, y, z, then the tail after the producer returned


async def test_an_error_after_data_sends_the_data_then_breaks_off(
    autojump_clock: trio.abc.Clock,
) -> None:
    sent = trio.Event()

    async def produce(send: ByteSendChannel) -> None:
        await send.send((b"head",))
        await send.send((b"part",))
        sent.set()
        raise IncompleteRetrieve("the PACS went away")

    chunks: list[bytes] = []
    with pytest.RaisesGroup(StreamBrokenOff, allow_unwrapped=True, flatten_subgroups=True):
        async for chunk in body(produce, items=4):
            await sent.wait()
            chunks.append(chunk)

    assert b"".join(chunks) == b"headpart"  # the data before the error; never the tail


async def test_an_error_before_any_data_is_raised_by_start_stream(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def produce(send: ByteSendChannel) -> None:
        raise IncompleteRetrieve("nothing")

    with pytest.RaisesGroup(IncompleteRetrieve, allow_unwrapped=True, flatten_subgroups=True):
        await collect(produce)


async def test_a_single_piece_is_sent_without_a_copy(autojump_clock: trio.abc.Clock) -> None:
    big = bytes(1000)

    async def produce(send: ByteSendChannel) -> None:
        await send.send((big,))

    chunks = await collect(produce)

    assert chunks[0] is big


async def test_the_producer_stays_within_its_byte_budget(autojump_clock: trio.abc.Clock) -> None:
    # Items of 40 bytes against a budget of 100: at most two wait; a 500-byte item passes alone.
    most_waiting = 0

    async def produce(send: ByteSendChannel) -> None:
        nonlocal most_waiting
        for size in (40, 40, 40, 40, 500, 40):
            await send.send((bytes(size),))
            most_waiting = max(most_waiting, send.buffered)

    async with trio.open_nursery() as nursery:
        response = await start_body(nursery, produce, items=16, ahead=100, chunk=1)
        chunks = []
        async for chunk in response:
            await trio.sleep(1)  # a slow client
            chunks.append(len(chunk))

    assert chunks == [40, 40, 40, 40, 500, 40]
    assert most_waiting == 500  # the large item alone; never 40 + 500 or three of 40


async def test_rows_are_prefetched_then_streamed(autojump_clock: trio.abc.Clock) -> None:
    async def produce(send: trio.MemorySendChannel[int]) -> None:
        for row in range(5):
            await send.send(row)

    async with trio.open_nursery() as nursery:
        stream = await start_stream(nursery, produce, prefetch=3)
        assert stream.prefetched == [0, 1, 2]
        assert [row async for row in stream] == [0, 1, 2, 3, 4]


async def test_rows_after_an_error_break_the_stream_off(autojump_clock: trio.abc.Clock) -> None:
    async def produce(send: trio.MemorySendChannel[int]) -> None:
        await send.send(1)
        raise IncompleteRetrieve("the PACS went away")

    rows = []
    with pytest.RaisesGroup(StreamBrokenOff, allow_unwrapped=True, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            async for row in await start_stream(nursery, produce):
                rows.append(row)
    assert rows == [1]


# -- no reference cycles (issue 8) ------------------------------------------------------------


async def fails_before_data(send: ByteSendChannel) -> None:
    held = bytes(LARGE)  # what a failed producer's frame holds
    raise IncompleteRetrieve(f"nothing of {len(held)} bytes")


async def fails_unexpectedly(send: ByteSendChannel) -> None:
    held = bytes(LARGE)
    raise ValueError(len(held))  # a bug: logged with its traceback, a 500


async def fails_after_data(send: ByteSendChannel) -> None:
    held = bytes(LARGE)
    await send.send((b"head",))
    raise IncompleteRetrieve(f"broke off after {len(held)} bytes")


@pytest.mark.parametrize("produce", [fails_before_data, fails_unexpectedly, fails_after_data])
async def test_a_failed_producer_leaves_no_reference_cycle(
    autojump_clock: trio.abc.Clock, produce: Produce, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not logged here: a captured log record would keep the error (and its frames) alive.
    monkeypatch.setattr(streaming.log, "disabled", True)

    async def respond() -> None:
        async with trio.open_nursery() as nursery:
            async for _ in await start_body(nursery, produce):
                pass

    with cyclic_collection_paused():
        with contextlib.suppress(RstError, StreamBrokenOff, ExceptionGroup):
            await respond()
        garbage = cyclic_garbage()

    assert not garbage, garbage.describe()


async def test_a_producer_cancelled_in_its_own_nursery_leaves_no_reference_cycle(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Its group of cancellations passes through the producer's task (``_failure_of``).
    async def produce(send: ByteSendChannel) -> None:
        held = bytes(LARGE)
        await send.send((held[:1],))
        async with trio.open_nursery() as inner:
            inner.start_soon(trio.sleep_forever)
            await trio.sleep_forever()

    async def respond_then_client_gone() -> None:
        async with trio.open_nursery() as nursery:
            await start_body(nursery, produce)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()

    with cyclic_collection_paused():
        await respond_then_client_gone()
        garbage = cyclic_garbage()

    assert not garbage, garbage.describe()
