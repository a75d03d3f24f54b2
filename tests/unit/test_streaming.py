"""start_stream and Coalesced: the response body side of a producer task."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trio
import trio.testing

from rst.errors import IncompleteRetrieve, RstError
from rst.http import request_scope, streaming
from rst.http.streaming import ByteBudget, Coalesced, StreamBrokenOff, start_stream
from tests.support.garbage import LARGE, cyclic_collection_paused, cyclic_garbage

Produce = Callable[[trio.MemorySendChannel[tuple[bytes, ...]]], Awaitable[None]]


async def body(produce: Produce, *, buffer: int, budget: int) -> AsyncIterator[bytes]:
    async with trio.open_nursery() as nursery:
        token = request_scope._nursery.set(nursery)
        try:
            stream = await start_stream(produce, prefetch=1, buffer=buffer)
            async for chunk in Coalesced(stream, budget=budget, tail=lambda: b"<end>"):
                yield chunk
        finally:
            request_scope._nursery.reset(token)


async def collect(produce: Produce, *, buffer: int = 4, budget: int = 100) -> list[bytes]:
    return [chunk async for chunk in body(produce, buffer=buffer, budget=budget)]


async def test_items_waiting_are_joined_up_to_the_budget(autojump_clock: trio.abc.Clock) -> None:
    async def produce(send: trio.MemorySendChannel[tuple[bytes, ...]]) -> None:
        await send.send((b"h", b"a" * 9))  # a part head with its instance
        for item in (b"b" * 40, b"c" * 40, b"d" * 40, b"e" * 10):
            await send.send((item,))

    async with trio.open_nursery() as nursery:
        token = request_scope._nursery.set(nursery)
        try:
            stream = await start_stream(produce, prefetch=1, buffer=8)
            await trio.testing.wait_all_tasks_blocked()  # the client is slow: all are waiting
            chunks = [c async for c in Coalesced(stream, budget=100, tail=lambda: b"<end>")]
        finally:
            request_scope._nursery.reset(token)

    # a..c stay under the budget (90), d takes the chunk past it; e comes next; then the tail
    assert chunks == [b"h" + b"a" * 9 + b"b" * 40 + b"c" * 40 + b"d" * 40, b"e" * 10, b"<end>"]


async def test_an_item_alone_is_sent_at_once(autojump_clock: trio.abc.Clock) -> None:
    # A producer that is slower than the client: nothing is held back to be joined.
    async def produce(send: trio.MemorySendChannel[tuple[bytes, ...]]) -> None:
        for item in (b"x", b"y", b"z"):
            await send.send((item,))
            await trio.sleep(1)

    start = trio.current_time()
    times: list[float] = []
    async for _ in body(produce, buffer=4, budget=100):
        times.append(trio.current_time() - start)

    assert times == [0, 1, 2, 3]  # x, y, z, then the tail after the producer returned


async def test_an_error_after_data_sends_the_data_then_breaks_off(
    autojump_clock: trio.abc.Clock,
) -> None:
    sent = trio.Event()

    async def produce(send: trio.MemorySendChannel[tuple[bytes, ...]]) -> None:
        await send.send((b"head",))
        await send.send((b"part",))
        sent.set()
        raise IncompleteRetrieve("the PACS went away")

    chunks: list[bytes] = []
    with pytest.RaisesGroup(StreamBrokenOff, allow_unwrapped=True, flatten_subgroups=True):
        async for chunk in body(produce, buffer=4, budget=100):
            await sent.wait()
            chunks.append(chunk)

    assert b"".join(chunks) == b"headpart"  # the data before the error; never the tail


async def test_an_error_before_any_data_is_raised_by_start_stream(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def produce(send: trio.MemorySendChannel[tuple[bytes, ...]]) -> None:
        raise IncompleteRetrieve("nothing")

    with pytest.RaisesGroup(IncompleteRetrieve, allow_unwrapped=True, flatten_subgroups=True):
        await collect(produce)


async def test_a_single_piece_is_sent_without_a_copy(autojump_clock: trio.abc.Clock) -> None:
    big = bytes(1000)

    async def produce(send: trio.MemorySendChannel[tuple[bytes, ...]]) -> None:
        await send.send((big,))

    chunks = await collect(produce, budget=100)

    assert chunks[0] is big


async def test_the_producer_stays_within_its_byte_budget(autojump_clock: trio.abc.Clock) -> None:
    # Items of 40 bytes against a budget of 100: at most two wait; a 500-byte item passes alone.
    budget = ByteBudget(100)
    most_waiting = 0

    async def produce(send: trio.MemorySendChannel[tuple[bytes, ...]]) -> None:
        nonlocal most_waiting
        for size in (40, 40, 40, 40, 500, 40):
            await budget.send(send, (bytes(size),))
            most_waiting = max(most_waiting, budget.pending)

    async with trio.open_nursery() as nursery:
        token = request_scope._nursery.set(nursery)
        try:
            stream = await start_stream(produce, prefetch=1, buffer=16)
            chunks = []
            async for chunk in Coalesced(stream, budget=1, sent=budget):
                await trio.sleep(1)  # a slow client
                chunks.append(len(chunk))
        finally:
            request_scope._nursery.reset(token)

    assert chunks == [40, 40, 40, 40, 500, 40]
    assert most_waiting == 500  # the large item alone; never 40 + 500 or three of 40
    assert budget.pending == 0


# -- no reference cycles (issue 8) ------------------------------------------------------------


async def fails_before_data(send: trio.MemorySendChannel[tuple[bytes, ...]]) -> None:
    held = bytes(LARGE)  # what a failed producer's frame holds
    raise IncompleteRetrieve(f"nothing of {len(held)} bytes")


async def fails_unexpectedly(send: trio.MemorySendChannel[tuple[bytes, ...]]) -> None:
    held = bytes(LARGE)
    raise ValueError(len(held))  # a bug: logged with its traceback, a 500


async def fails_after_data(send: trio.MemorySendChannel[tuple[bytes, ...]]) -> None:
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
            token = request_scope._nursery.set(nursery)
            try:
                stream = await start_stream(produce)
                async for _ in Coalesced(stream, budget=100):
                    pass
            finally:
                request_scope._nursery.reset(token)

    with cyclic_collection_paused():
        with contextlib.suppress(RstError, StreamBrokenOff, ExceptionGroup):
            await respond()
        garbage = cyclic_garbage()

    assert not garbage, garbage.describe()


async def test_a_producer_cancelled_in_its_own_nursery_leaves_no_reference_cycle(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Its group of cancellations passes through the producer's task (``_failure_of``).
    async def produce(send: trio.MemorySendChannel[tuple[bytes, ...]]) -> None:
        held = bytes(LARGE)
        await send.send((held[:1],))
        async with trio.open_nursery() as inner:
            inner.start_soon(trio.sleep_forever)
            await trio.sleep_forever()

    async def respond_then_client_gone() -> None:
        async with trio.open_nursery() as nursery:
            token = request_scope._nursery.set(nursery)
            try:
                await start_stream(produce)
                await trio.testing.wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()
            finally:
                request_scope._nursery.reset(token)

    with cyclic_collection_paused():
        await respond_then_client_gone()
        garbage = cyclic_garbage()

    assert not garbage, garbage.describe()
