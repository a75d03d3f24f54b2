"""InstanceSink: a bounded FIFO that spills to an anonymous spool file.

Tests that never read a spooled entry run on the autojump clock and assert exact virtual times.
Reading a spooled entry goes through a real worker thread (``rst.bridge.run_sync``), which the
fake clock would take for idleness, so those tests run on the real clock.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import trio
import trio.testing

from rst.backends.dimse.sink import Instance, InstanceSink, SinkClosed, SpoolFull
from tests.support.garbage import LARGE, cyclic_collection_paused, cyclic_garbage

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def instance(n: int, size: int = 16) -> Instance:
    data = bytes([n % 256]) * size
    return Instance(data, CT, f"1.2.3.{n}", EXPLICIT_LE)


def open_fds() -> list[str]:
    """The targets of this process's open file descriptors."""
    targets = []
    for name in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{name}"))
        except FileNotFoundError:  # the descriptor listdir itself used
            continue
    return targets


def fds_in(directory: Path) -> int:
    # The spool is anonymous (O_TMPFILE): its link reads "<dir>/#<inode> (deleted)".
    return sum(1 for target in open_fds() if target.startswith(f"{directory}/"))


async def drain(sink: InstanceSink) -> list[Instance]:
    received = []
    while (item := await sink.receive()) is not None:
        received.append(item)
    return received


# -- in memory --------------------------------------------------------------------------------


async def test_order_is_preserved_in_memory(autojump_clock: trio.abc.Clock) -> None:
    sink = InstanceSink(capacity=4, stall_timeout=4.0)
    sent = [instance(n) for n in range(4)]
    for item in sent:
        assert await sink.offer(item)
    sink.finish()

    assert await drain(sink) == sent


async def test_offer_with_room_returns_at_once(autojump_clock: trio.abc.Clock) -> None:
    sink = InstanceSink(capacity=1, stall_timeout=4.0)
    start = trio.current_time()

    assert await sink.offer(instance(1))
    assert trio.current_time() == start


async def test_ready_says_whether_receive_has_an_instance_at_hand(
    autojump_clock: trio.abc.Clock,
) -> None:
    sink = InstanceSink(capacity=2, stall_timeout=4.0)
    assert not sink.ready
    assert await sink.offer(instance(1))
    assert sink.ready
    assert (await sink.receive()) == instance(1)
    assert not sink.ready
    sink.finish()
    assert not sink.ready  # finished and drained: receive returns None
    assert await sink.receive() is None


async def test_offer_gives_up_after_stall_timeout_when_full(
    autojump_clock: trio.abc.Clock,
) -> None:
    sink = InstanceSink(capacity=2, stall_timeout=4.0)
    assert await sink.offer(instance(1))
    assert await sink.offer(instance(2))
    start = trio.current_time()

    assert not await sink.offer(instance(3))

    assert trio.current_time() - start == pytest.approx(4.0)
    assert sink.delivered == 2
    assert sink.seen == {"1.2.3.1", "1.2.3.2"}


async def test_full_offer_proceeds_as_soon_as_the_consumer_reads(
    autojump_clock: trio.abc.Clock,
) -> None:
    sink = InstanceSink(capacity=1, stall_timeout=4.0)
    assert await sink.offer(instance(1))
    start = trio.current_time()
    received: list[Instance | None] = []

    async def slow_consumer() -> None:
        await trio.sleep(1.5)
        received.append(await sink.receive())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow_consumer)
        assert await sink.offer(instance(2))
        assert trio.current_time() - start == pytest.approx(1.5)

    assert received == [instance(1)]
    sink.finish()
    assert await drain(sink) == [instance(2)]


async def test_receive_waits_for_an_offer(autojump_clock: trio.abc.Clock) -> None:
    sink = InstanceSink(capacity=1, stall_timeout=4.0)
    start = trio.current_time()

    async def late_producer() -> None:
        await trio.sleep(2.0)
        await sink.offer(instance(7))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(late_producer)
        assert await sink.receive() == instance(7)
        assert trio.current_time() - start == pytest.approx(2.0)


# -- finish ---------------------------------------------------------------------------------


async def test_finish_lets_receive_drain_then_return_none(autojump_clock: trio.abc.Clock) -> None:
    sink = InstanceSink(capacity=4, stall_timeout=4.0)
    await sink.offer(instance(1))
    await sink.offer(instance(2))
    sink.finish()

    assert await sink.receive() == instance(1)
    assert await sink.receive() == instance(2)
    assert await sink.receive() is None
    assert await sink.receive() is None


async def test_finish_wakes_a_waiting_receiver(autojump_clock: trio.abc.Clock) -> None:
    sink = InstanceSink(capacity=4, stall_timeout=4.0)
    start = trio.current_time()

    async def finish_later() -> None:
        await trio.sleep(3.0)
        sink.finish()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(finish_later)
        assert await sink.receive() is None
        assert trio.current_time() - start == pytest.approx(3.0)


async def test_finish_with_error_raises_it_after_draining(autojump_clock: trio.abc.Clock) -> None:
    sink = InstanceSink(capacity=4, stall_timeout=4.0)
    await sink.offer(instance(1))
    error = RuntimeError("the PACS broke off")
    sink.finish(error)

    assert await sink.receive() == instance(1)
    with pytest.raises(RuntimeError) as info:
        await sink.receive()
    assert info.value is error
    with pytest.raises(RuntimeError, match="the PACS broke off") as again:
        await sink.receive()
    assert again.value is not error  # a copy: see below


async def test_an_error_raised_keeps_no_reference_cycle(autojump_clock: trio.abc.Clock) -> None:
    # The error's traceback holds the frame that raised it, and that frame the sink (issue 8).
    async def consume(sink: InstanceSink) -> None:
        held = bytes(LARGE)  # what the consumer's frames hold
        sink.finish(RuntimeError(f"the PACS broke off, {len(held)} bytes in"))
        with contextlib.suppress(RuntimeError):
            await sink.receive()
        with contextlib.suppress(RuntimeError):
            await sink.receive()

    with cyclic_collection_paused():
        await consume(InstanceSink(capacity=4, stall_timeout=4.0))
        garbage = cyclic_garbage()

    assert not garbage, garbage.describe()


async def test_only_the_first_finish_counts(autojump_clock: trio.abc.Clock) -> None:
    sink = InstanceSink(capacity=4, stall_timeout=4.0)
    sink.finish()
    sink.finish(RuntimeError("too late"))

    assert await sink.receive() is None


# -- close ----------------------------------------------------------------------------------


async def test_offer_on_closed_sink_raises(autojump_clock: trio.abc.Clock) -> None:
    sink = InstanceSink(capacity=4, stall_timeout=4.0)
    sink.close()

    with pytest.raises(SinkClosed):
        await sink.offer(instance(1))


async def test_close_wakes_a_blocked_offer_with_sink_closed(
    autojump_clock: trio.abc.Clock,
) -> None:
    sink = InstanceSink(capacity=1, stall_timeout=4.0)
    await sink.offer(instance(1))
    start = trio.current_time()

    async def close_later() -> None:
        await trio.sleep(1.0)
        sink.close()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(close_later)
        with pytest.raises(SinkClosed):
            await sink.offer(instance(2))
        assert trio.current_time() - start == pytest.approx(1.0)


async def test_close_wakes_a_waiting_receiver_with_sink_closed(
    autojump_clock: trio.abc.Clock,
) -> None:
    sink = InstanceSink(capacity=1, stall_timeout=4.0)

    async def close_later() -> None:
        await trio.sleep(1.0)
        sink.close()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(close_later)
        with pytest.raises(SinkClosed):
            await sink.receive()


async def test_close_discards_queued_instances(autojump_clock: trio.abc.Clock) -> None:
    sink = InstanceSink(capacity=4, stall_timeout=4.0)
    await sink.offer(instance(1))
    sink.close()

    with pytest.raises(SinkClosed):
        await sink.receive()


async def test_spool_and_put_spooled_on_closed_sink_raise(tmp_path: Path) -> None:
    sink = InstanceSink(capacity=1, stall_timeout=4.0, spool_dir=str(tmp_path))
    entry = sink.spool(instance(1))
    sink.close()

    with pytest.raises(SinkClosed):
        sink.spool(instance(2))
    with pytest.raises(SinkClosed):
        await sink.put_spooled(entry)
    assert sink.delivered == 0


# -- spool ----------------------------------------------------------------------------------


async def test_spooled_instance_comes_back_byte_for_byte(tmp_path: Path) -> None:
    sink = InstanceSink(capacity=1, stall_timeout=4.0, spool_dir=str(tmp_path))
    sent = Instance(os.urandom(5000), CT, "1.2.3.99", "1.2.840.10008.1.2.4.50")
    try:
        await sink.put_spooled(sink.spool(sent))
        sink.finish()

        assert await drain(sink) == [sent]
    finally:
        sink.close()


async def test_spooled_and_memory_entries_keep_arrival_order(tmp_path: Path) -> None:
    sink = InstanceSink(capacity=4, stall_timeout=30.0, spool_dir=str(tmp_path))
    first, spooled, later = instance(1), instance(2, size=300), instance(3)
    try:
        assert await sink.offer(first)
        await sink.put_spooled(sink.spool(spooled))
        # There is room in memory, but ``later`` may not overtake the spooled entry.
        assert not await sink.offer(later)
        await sink.put_spooled(sink.spool(later))
        sink.finish()
        assert sink.delivered == 3
        assert await drain(sink) == [first, spooled, later]
    finally:
        sink.close()


async def test_offer_behind_a_spooled_entry_spools_without_waiting(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    # Once the client has fallen behind far enough to spool, the PACS is not held again
    # for every later instance: they go to the spool at once.
    sink = InstanceSink(capacity=4, stall_timeout=4.0, spool_dir=str(tmp_path))
    try:
        await sink.put_spooled(sink.spool(instance(1)))
        start = trio.current_time()

        assert not await sink.offer(instance(2))
        assert trio.current_time() == start
    finally:
        sink.close()


async def test_memory_is_used_again_once_the_spool_has_drained(tmp_path: Path) -> None:
    sink = InstanceSink(capacity=4, stall_timeout=4.0, spool_dir=str(tmp_path))
    try:
        await sink.put_spooled(sink.spool(instance(1)))
        assert await sink.receive() == instance(1)
        assert await sink.offer(instance(2))
        assert sink.spooled == 1
    finally:
        sink.close()


async def test_many_spooled_entries_come_back_in_order(tmp_path: Path) -> None:
    sink = InstanceSink(capacity=1, stall_timeout=4.0, spool_dir=str(tmp_path))
    sent = [instance(n, size=100 + n) for n in range(5)]
    try:
        for item in sent:
            await sink.put_spooled(sink.spool(item))
        sink.finish()

        assert await drain(sink) == sent
    finally:
        sink.close()


async def test_spool_limit_raises_spool_full(tmp_path: Path) -> None:
    sink = InstanceSink(capacity=1, stall_timeout=4.0, spool_dir=str(tmp_path), spool_max_bytes=10)
    try:
        sink.spool(instance(1, size=6))
        with pytest.raises(SpoolFull, match="spool limit of 10 bytes"):
            sink.spool(instance(2, size=5))
        sink.spool(instance(3, size=4))  # exactly fills the spool
        with pytest.raises(SpoolFull):
            sink.spool(instance(4, size=1))
    finally:
        sink.close()


def test_spool_file_is_anonymous_in_spool_dir(tmp_path: Path) -> None:
    sink = InstanceSink(capacity=1, stall_timeout=4.0, spool_dir=str(tmp_path))
    try:
        sink.spool(instance(1))

        assert list(tmp_path.iterdir()) == []
        assert fds_in(tmp_path) == 1
    finally:
        sink.close()


def test_close_closes_the_spool_descriptor(tmp_path: Path) -> None:
    before = len(open_fds())
    sink = InstanceSink(capacity=1, stall_timeout=4.0, spool_dir=str(tmp_path))
    sink.spool(instance(1))
    sink.spool(instance(2))  # the second write reuses the descriptor
    assert len(open_fds()) == before + 1

    sink.close()

    assert len(open_fds()) == before
    assert fds_in(tmp_path) == 0
    sink.close()  # closing twice is harmless


async def test_no_spool_file_without_spooling(tmp_path: Path) -> None:
    sink = InstanceSink(capacity=1, stall_timeout=4.0, spool_dir=str(tmp_path))
    await sink.offer(instance(1))

    assert fds_in(tmp_path) == 0
    sink.close()


# -- counters -------------------------------------------------------------------------------


async def test_counters_count_memory_and_spooled_instances(tmp_path: Path) -> None:
    sink = InstanceSink(capacity=4, stall_timeout=4.0, spool_dir=str(tmp_path))
    try:
        assert (sink.delivered, sink.spooled, sink.seen) == (0, 0, set())
        await sink.offer(instance(1))
        entry = sink.spool(instance(2))
        assert (sink.delivered, sink.spooled) == (1, 0)  # written, not yet accepted
        await sink.put_spooled(entry)

        assert (sink.delivered, sink.spooled) == (2, 1)
        assert sink.seen == {"1.2.3.1", "1.2.3.2"}

        sink.finish()
        await drain(sink)
        assert (sink.delivered, sink.spooled) == (2, 1)  # reading does not change them
    finally:
        sink.close()
