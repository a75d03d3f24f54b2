"""rst.cache.files.read_entries: cached files in the page cache are read on trio's thread, the
others (and every large one) in one trip to a worker thread, with the same instances either
way."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from rst.bridge import run_sync
from rst.cache import files
from rst.cache.files import CHUNK, FileChunks, Gone, read_entries
from rst.cache.store import Entry, Store
from rst.services.protocols import Instance

R = TypeVar("R")
CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store.open(tmp_path / "cache", max_bytes=10_000, ttl=3600.0)
    yield store
    store.close()


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the trips read_entries makes to a worker thread."""
    made: list[int] = []

    async def counted(fn: Callable[[], R]) -> R:
        made.append(1)
        return await run_sync(fn)

    monkeypatch.setattr(files, "run_sync", counted)
    return made


def a_file(tmp_path: Path, name: str, size: int) -> tuple[Entry, bytes]:
    data = os.urandom(size)
    path = tmp_path / name
    path.write_bytes(data)
    return Entry(name, CT, EXPLICIT, path, size, 0.0), data


def close(instances: list[Instance]) -> None:
    for instance in instances:
        if isinstance(instance.rest, FileChunks):
            instance.rest.close()


async def test_small_files_in_the_page_cache_are_read_without_a_worker_thread(
    tmp_path: Path, store: Store, trips: list[int]
) -> None:
    made = [a_file(tmp_path, f"1.{n}", 600_000) for n in range(3)]
    found, gone = await read_entries([entry for entry, _ in made], store)
    assert gone is None
    assert [(i.sop_instance_uid, i.data, i.rest) for i in found] == [
        (entry.sop_uid, data, None) for entry, data in made
    ]
    assert isinstance(found[0].data, bytes)
    assert trips == []  # just written: the page cache holds them


async def test_without_rwf_nowait_every_file_is_read_on_a_worker_thread(
    tmp_path: Path, store: Store, trips: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files, "_NOWAIT", None)
    made = [a_file(tmp_path, f"1.{n}", 1000) for n in range(2)]
    found, gone = await read_entries([entry for entry, _ in made], store)
    assert gone is None
    assert [i.data for i in found] == [data for _, data in made]
    assert trips == [1]  # both in one trip


async def test_a_file_not_in_memory_and_those_after_it_go_to_a_worker_thread(
    tmp_path: Path, store: Store, trips: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    made = [a_file(tmp_path, f"1.{n}", 1000) for n in range(3)]
    real = os.preadv
    refused: list[str] = []

    def preadv(fd: int, buffers: list[bytearray], offset: int, flags: int = 0) -> int:
        if flags and os.fstat(fd).st_ino == made[1][0].path.stat().st_ino:
            refused.append("1.1")
            raise BlockingIOError(11, "Resource temporarily unavailable")
        return real(fd, buffers, offset, flags)

    monkeypatch.setattr(os, "preadv", preadv)
    found, gone = await read_entries([entry for entry, _ in made], store)
    assert gone is None
    assert [i.data for i in found] == [data for _, data in made]
    assert refused == ["1.1"]
    assert trips == [1]


async def test_a_large_file_is_read_by_chunks_as_before(
    tmp_path: Path, store: Store, trips: list[int]
) -> None:
    (small, small_data), (large, large_data) = (
        a_file(tmp_path, "1.1", 100),
        a_file(tmp_path, "1.2", CHUNK + 1000),
    )
    found, gone = await read_entries([small, large], store)
    try:
        assert gone is None
        assert found[0].data == small_data
        assert found[1].data == large_data[:CHUNK]
        assert isinstance(found[1].rest, FileChunks)
        assert b"".join([found[1].data] + [chunk async for chunk in found[1].rest]) == large_data
        assert trips == [1, 1]  # the large one's first chunk, then its rest
    finally:
        close(found)


@pytest.mark.parametrize("nowait", [True, False])
async def test_reading_stops_at_a_file_that_is_gone_or_changed(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch, nowait: bool
) -> None:
    if not nowait:
        monkeypatch.setattr(files, "_NOWAIT", None)
    first, first_data = a_file(tmp_path, "1.1", 100)
    changed, _ = a_file(tmp_path, "1.2", 100)
    changed.path.write_bytes(b"shorter")
    missing, _ = a_file(tmp_path, "1.3", 100)
    missing.path.unlink()
    found, gone = await read_entries([first, changed, missing], store)
    assert [i.data for i in found] == [first_data]
    assert isinstance(gone, Gone)
    assert "7 bytes instead of 100" in str(gone)
    found, gone = await read_entries([first, missing], store)
    assert [i.data for i in found] == [first_data]
    assert isinstance(gone, Gone)
    assert "1.3" in str(gone)
