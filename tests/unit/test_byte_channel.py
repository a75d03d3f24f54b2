"""open_byte_channel: bounded by items and bytes, coalescing, closing from either side."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from rst.errors import IncompleteRetrieve
from rst.http.byte_channel import open_byte_channel


async def test_items_waiting_are_joined_up_to_the_chunk_size() -> None:
    send, receive = open_byte_channel(8, 1000, chunk=100)
    await send.send((b"h", b"a" * 9))
    for item in (b"b" * 40, b"c" * 40, b"d" * 40, b"e" * 10):
        await send.send((item,))
    send.close()

    chunks = [chunk async for chunk in receive]

    # a..c stay under the chunk size (90), d takes the chunk past it; e comes next
    assert chunks == [b"h" + b"a" * 9 + b"b" * 40 + b"c" * 40 + b"d" * 40, b"e" * 10]


async def test_a_single_piece_is_received_without_a_copy() -> None:
    big = bytes(1000)
    send, receive = open_byte_channel(4, 100, chunk=10)
    await send.send((big,))

    assert await receive.receive() is big


async def test_an_item_alone_is_received_at_once(autojump_clock: trio.abc.Clock) -> None:
    # A producer slower than the consumer: nothing is held back to be joined.
    send, receive = open_byte_channel(4, 100, chunk=100)
    times: list[float] = []

    async def produce() -> None:
        async with send:
            for item in (b"x", b"y", b"z"):
                await send.send((item,))
                await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        async for _ in receive:
            times.append(trio.current_time())

    assert times == [0, 1, 2]


async def test_send_waits_while_the_items_are_full() -> None:
    send, receive = open_byte_channel(2, 1000, chunk=1)
    await send.send((b"a",))
    await send.send((b"b",))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send.send, (b"c",))
        await trio.testing.wait_all_tasks_blocked()
        assert send.buffered == 2  # c waits for room
        assert await receive.receive() == b"a"
    assert send.buffered == 2  # b and c


async def test_a_large_item_passes_alone_and_the_bytes_stay_bounded(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Items of 40 bytes against 100: at most two wait; a 500-byte item passes alone.
    send, receive = open_byte_channel(16, 100, chunk=1)
    most = 0

    async def produce() -> None:
        nonlocal most
        async with send:
            for size in (40, 40, 40, 40, 500, 40):
                await send.send((bytes(size),))
                most = max(most, send.buffered)

    sizes = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        async for chunk in receive:
            await trio.sleep(1)  # a slow client
            sizes.append(len(chunk))

    assert sizes == [40, 40, 40, 40, 500, 40]
    assert most == 500  # the large item alone; never 40 + 500 or three of 40
    assert send.buffered == 0


async def test_a_failure_comes_after_the_data_sent_before_it_then_the_end() -> None:
    send, receive = open_byte_channel(4, 100, chunk=1)
    await send.send((b"head",))
    send.fail(IncompleteRetrieve("the PACS went away"))

    assert await receive.receive() == b"head"
    with pytest.raises(IncompleteRetrieve):
        await receive.receive()
    with pytest.raises(trio.EndOfChannel):
        await receive.receive()


async def test_wait_ready_reports_data_end_or_failure_without_taking_data() -> None:
    send, receive = open_byte_channel(4, 100, chunk=100)
    await send.send((b"x",))
    assert await receive.wait_ready() is True
    assert await receive.receive() == b"x"
    send.close()
    assert await receive.wait_ready() is False

    send, receive = open_byte_channel(4, 100, chunk=100)
    send.fail(IncompleteRetrieve("nothing"))
    with pytest.raises(IncompleteRetrieve):
        await receive.wait_ready()


async def test_closing_the_receive_end_breaks_a_waiting_sender() -> None:
    send, receive = open_byte_channel(1, 100, chunk=100)
    await send.send((b"a",))
    with pytest.RaisesGroup(trio.BrokenResourceError, allow_unwrapped=True):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send.send, (b"b",))
            await trio.testing.wait_all_tasks_blocked()
            await receive.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await receive.receive()
    assert send.buffered == 0  # what waited is dropped


async def test_closing_the_send_end_wakes_a_waiting_receiver() -> None:
    send, receive = open_byte_channel(1, 100, chunk=100)
    with pytest.RaisesGroup(trio.EndOfChannel, allow_unwrapped=True):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive.receive)
            await trio.testing.wait_all_tasks_blocked()
            await send.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await send.send((b"late",))


async def test_cancelled_sends_and_receives_lose_nothing() -> None:
    send, receive = open_byte_channel(1, 100, chunk=100)
    await send.send((b"a",))
    with trio.CancelScope() as scope:
        scope.cancel()
        await send.send((b"b",))  # cancelled while full: not queued
    with trio.CancelScope() as scope:
        scope.cancel()
        await receive.receive()  # cancelled before taking: a stays
    send.close()
    assert [chunk async for chunk in receive] == [b"a"]  # b was not queued, a not lost


async def _lingering(
    items: list[tuple[float, int]], *, max_items: int = 64, max_bytes: int = 1000, chunk: int = 100
) -> list[tuple[float, int]]:
    """(time, size) of each chunk a lingering receiver (linger 0.5 s) takes while a producer
    sends an item of *size* bytes after each pause of the given seconds."""
    send, receive = open_byte_channel(max_items, max_bytes, chunk=chunk, linger=0.5)
    start = trio.current_time()

    async def produce() -> None:
        async with send:
            for pause, size in items:
                await trio.sleep(pause)
                await send.send((bytes(size),))

    chunks = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        async for taken in receive:
            chunks.append((round(trio.current_time() - start, 6), len(taken)))
    return chunks


async def test_a_lingering_receiver_waits_for_a_chunk_at_most_linger_after_its_first_byte(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Items of 10 bytes every 0.15 s: each chunk takes those of the 0.5 s after its first.
    chunks = await _lingering([(0.15, 10)] * 11)

    assert chunks == [(0.65, 40), (1.25, 40), (1.65, 30)]  # the last at the end, not at 1.85


async def test_a_lingering_receiver_takes_a_full_chunk_at_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    # 40-byte items: the third fills the 100-byte chunk; the fourth waits its 0.5 s; the last
    # goes out with the end of the channel.
    chunks = await _lingering([(0.1, 40)] * 4 + [(1, 40)])

    assert chunks == [(0.3, 120), (0.9, 40), (1.4, 40)]


async def test_a_lingering_receiver_does_not_hold_up_a_full_buffer(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Three items fill the channel by count; then by bytes (25 + 30 > 50) — each time the
    # receiver takes what waits at once, long before its linger, so the producer goes on.
    by_items = await _lingering([(0.1, 10)] * 4, max_items=3)
    by_bytes = await _lingering([(0.1, 25), (0.1, 20), (0.1, 30)], max_bytes=50)

    assert by_items == [(0.3, 30), (0.4, 10)]
    assert by_bytes == [(0.3, 45), (0.3, 30)]


async def test_a_lingering_receiver_stops_at_the_end_or_a_failure(
    autojump_clock: trio.abc.Clock,
) -> None:
    send, receive = open_byte_channel(8, 1000, chunk=100, linger=10)
    await send.send((b"a",))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send.send, (b"b",))
        await trio.testing.wait_all_tasks_blocked()
        send.fail(IncompleteRetrieve("the PACS went away"))
    start = trio.current_time()

    assert await receive.receive() == b"ab"
    with pytest.raises(IncompleteRetrieve):
        await receive.receive()
    assert trio.current_time() == start  # no linger once the send end is closed


async def test_a_lingering_receiver_closed_or_cancelled_loses_nothing_it_took(
    autojump_clock: trio.abc.Clock,
) -> None:
    send, receive = open_byte_channel(8, 1000, chunk=100, linger=10)
    await send.send((b"a",))
    with trio.move_on_after(1):
        await receive.receive()  # cancelled while lingering: a stays
    await send.send((b"b",))
    send.close()
    assert [chunk async for chunk in receive] == [b"ab"]

    send, receive = open_byte_channel(8, 1000, chunk=100, linger=10)
    await send.send((b"a",))
    with pytest.RaisesGroup(trio.ClosedResourceError, allow_unwrapped=True):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive.receive)
            await trio.testing.wait_all_tasks_blocked()
            receive.close()


def test_linger_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="negative"):
        open_byte_channel(1, 1, chunk=1, linger=-1)


@pytest.mark.parametrize(("max_items", "max_bytes", "chunk"), [(0, 1, 1), (1, 0, 1), (1, 1, 0)])
def test_bounds_must_be_positive(max_items: int, max_bytes: int, chunk: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        open_byte_channel(max_items, max_bytes, chunk=chunk)


items = st.lists(
    # pieces may be empty, an item never is (so that chunks map back onto items)
    st.lists(st.binary(min_size=0, max_size=300), max_size=3).map(lambda p: (*p, b"!")),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(
    items=items,
    max_items=st.integers(1, 6),
    max_bytes=st.integers(1, 500),
    chunk=st.integers(1, 700),
    pauses=st.lists(st.booleans(), max_size=40),
)
def test_bounds_order_and_completeness(
    items: list[tuple[bytes, ...]],
    max_items: int,
    max_bytes: int,
    chunk: int,
    pauses: list[bool],
) -> None:
    """Never more than max_items items, nor more than max_bytes bytes (or one larger item)
    buffered; the bytes come out in order, each once; chunks only join what the size allows."""
    largest = max((sum(map(len, item)) for item in items), default=0)

    async def main() -> list[bytes]:
        send, receive = open_byte_channel(max_items, max_bytes, chunk=chunk)
        state = send._state
        received: list[bytes] = []

        async def produce() -> None:
            async with send:
                for item in items:
                    await send.send(item)
                    assert len(state.items) <= max_items
                    assert state.size <= max(max_bytes, largest)
                    assert state.size == sum(size for _, size in state.items)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            for turn in range(len(items) + 1):
                if turn < len(pauses) and pauses[turn]:
                    await trio.testing.wait_all_tasks_blocked()  # a slow client: items pile up
                try:
                    chunk_bytes = await receive.receive()
                except trio.EndOfChannel:
                    break
                received.append(chunk_bytes)
            else:
                with pytest.raises(trio.EndOfChannel):
                    await receive.receive()
        return received

    chunks = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert b"".join(chunks) == b"".join(b"".join(item) for item in items)
    sizes = [sum(map(len, item)) for item in items]
    for received in chunks:  # each chunk is whole items: one, or more while under the chunk size
        taken = sizes.pop(0)
        while taken < len(received):
            assert taken < chunk
            taken += sizes.pop(0)
        assert taken == len(received)
    assert not sizes
