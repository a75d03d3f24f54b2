"""rst.cache.files.Writer: instances arriving one by one are written to the cache in batches
(one worker-thread trip and one index transaction each), never held longer than asked."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from rst.cache import Cache, Store
from rst.cache.files import WRITE_AHEAD, PendingSidecars, Writer
from rst.cache.store import Entry
from rst.services.protocols import Instance, RetrieveKeys

ARCHIVE = "PACS@127.0.0.1:104"
KEYS = RetrieveKeys("1.2", "1.2.3")
CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
FOREVER = 3600.0
"""A window no test waits out: what writes the batch must be something else."""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store.open(tmp_path / "cache", max_bytes=1 << 30, ttl=3600.0)
    yield store
    store.close()


class CountingCache(Cache):
    """A cache that records the instances of each write (each is one trip, one transaction)."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.batches: list[list[str]] = []

    async def put(self, *, instances: Sequence[Instance], **kwargs: Any) -> list[Entry | None]:
        self.batches.append([i.sop_instance_uid for i in instances])
        return await super().put(instances=instances, **kwargs)


def instance(n: int, size: int = 1000) -> Instance:
    return Instance(bytes([n % 256]) * size, CT, f"1.2.3.{n}", EXPLICIT, sidecars=PendingSidecars())


class Announced:
    """The writer's *written*: what it was told, and a way to wait for a count of them."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry | None] = {}
        self._changed = trio.Event()

    def __call__(self, sop_uid: str, entry: Entry | None) -> None:
        self.entries[sop_uid] = entry
        self._changed.set()
        self._changed = trio.Event()

    async def until(self, count: int) -> None:
        with trio.fail_after(30):
            while len(self.entries) < count:
                await self._changed.wait()


async def test_instances_arriving_one_by_one_are_written_in_one_batch(store: Store) -> None:
    cache, announced = CountingCache(store), Announced()
    writer = Writer(cache, archive=ARCHIVE, keys=KEYS, written=announced, window=0.05)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        for n in range(3):
            await writer.put(instance(n))
            await trio.testing.wait_all_tasks_blocked()  # the writer has seen it, and waits
        await announced.until(3)
        writer.close()
    assert cache.batches == [["1.2.3.0", "1.2.3.1", "1.2.3.2"]]
    for n in range(3):
        entry = announced.entries[f"1.2.3.{n}"]
        assert entry is not None
        assert entry.path.read_bytes() == instance(n).data


async def test_the_window_bounds_how_long_an_instance_waits(store: Store) -> None:
    cache, announced = CountingCache(store), Announced()
    writer = Writer(cache, archive=ARCHIVE, keys=KEYS, written=announced, window=0.01)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        await writer.put(instance(1))
        await announced.until(1)  # no flush, no more instances: the window ends the wait
        await writer.put(instance(2))
        await announced.until(2)
        writer.close()
    assert cache.batches == [["1.2.3.1"], ["1.2.3.2"]]


async def test_a_flush_writes_what_is_queued_at_once(store: Store) -> None:
    cache, announced = CountingCache(store), Announced()
    writer = Writer(cache, archive=ARCHIVE, keys=KEYS, written=announced, window=FOREVER)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        await writer.put(instance(1))
        await writer.put(instance(2))
        with trio.fail_after(30):
            await writer.flush()
        assert set(announced.entries) == {"1.2.3.1", "1.2.3.2"}
        writer.close()
    assert cache.batches == [["1.2.3.1", "1.2.3.2"]]


async def test_close_writes_what_is_queued(store: Store) -> None:
    cache, announced = CountingCache(store), Announced()
    writer = Writer(cache, archive=ARCHIVE, keys=KEYS, written=announced, window=FOREVER)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            await writer.put(instance(1))
            await trio.testing.wait_all_tasks_blocked()
            writer.close()
    assert list(announced.entries) == ["1.2.3.1"]
    assert announced.entries["1.2.3.1"] is not None


async def test_a_full_batch_is_written_without_waiting_for_the_window(store: Store) -> None:
    cache, announced = CountingCache(store), Announced()
    writer = Writer(
        cache, archive=ARCHIVE, keys=KEYS, written=announced, batch=2500, window=FOREVER
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        for n in range(3):  # 1000 bytes each: the third makes the batch
            await writer.put(instance(n))
            await trio.testing.wait_all_tasks_blocked()
        await announced.until(3)
        writer.close()
    assert cache.batches == [["1.2.3.0", "1.2.3.1", "1.2.3.2"]]


async def test_a_full_queue_is_written_for_the_next_put(store: Store) -> None:
    cache, announced = CountingCache(store), Announced()
    writer = Writer(
        cache, archive=ARCHIVE, keys=KEYS, written=announced, batch=1 << 40, window=FOREVER
    )
    size = WRITE_AHEAD // 2
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        with trio.fail_after(30):
            for n in range(3):  # the third does not fit: the two before are written first
                await writer.put(instance(n, size))
        assert list(announced.entries) == ["1.2.3.0", "1.2.3.1"]
        writer.close()
    assert cache.batches == [["1.2.3.0", "1.2.3.1"], ["1.2.3.2"]]
