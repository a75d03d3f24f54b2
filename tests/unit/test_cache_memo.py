"""rst.cache.memo: what one process remembers of the cache index and the sidecars, and how a
remembered entry whose file another process removed is noticed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rst.cache import Cache, CachedBackend, Store
from rst.cache.memo import RECHECK_AFTER, Memo
from rst.cache.store import Entry
from rst.services.protocols import RetrieveKeys
from tests.unit.test_cache_backend import SERIES, SERIES_KEYS, STUDY, UIDS, FakeArchive, fetch

ARCHIVE = "FAKE@127.0.0.1:104"
TTL = 3600.0


def entry(sop: str, stored_at: float = 0.0, path: str = "objects/ab/x.dcm") -> Entry:
    return Entry(sop, "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.1.2.1", Path(path), 10, stored_at)


def keys(sop: str, series: str | None = SERIES) -> RetrieveKeys:
    return RetrieveKeys(STUDY, series, sop)


def test_an_entry_is_remembered_until_it_must_be_checked_again() -> None:
    memo = Memo()
    memo.remember(ARCHIVE, entry("1"), STUDY, SERIES, now=100.0)

    assert memo.instance(ARCHIVE, keys("1"), now=100.0 + RECHECK_AFTER / 2, ttl=TTL) == entry("1")
    assert memo.instance(ARCHIVE, keys("1"), now=100.0 + RECHECK_AFTER, ttl=TTL) is None
    assert memo.instance(ARCHIVE, keys("1"), now=100.0, ttl=TTL) is None  # dropped since


def test_an_entry_is_not_served_past_its_ttl_nor_for_other_keys() -> None:
    memo = Memo()
    memo.remember(ARCHIVE, entry("1", stored_at=0.0), STUDY, SERIES, now=TTL - 1)

    assert memo.instance(ARCHIVE, RetrieveKeys("9.9", SERIES, "1"), now=TTL - 1, ttl=TTL) is None
    assert memo.instance(ARCHIVE, keys("1", series="9.9"), now=TTL - 1, ttl=TTL) is None
    assert memo.instance(ARCHIVE, keys("1", series=None), now=TTL - 1, ttl=TTL) == entry("1")
    assert memo.instance("OTHER@h:1", keys("1"), now=TTL - 1, ttl=TTL) is None
    assert memo.instance(ARCHIVE, keys("1"), now=TTL, ttl=TTL) is None


def test_entries_and_sidecars_are_bounded_least_recently_used_first_out() -> None:
    memo = Memo(max_entries=2, max_sidecar_bytes=64 * 10)
    for sop in ("1", "2"):
        memo.remember(ARCHIVE, entry(sop), STUDY, SERIES, now=0.0)
    assert memo.instance(ARCHIVE, keys("1"), now=0.0, ttl=TTL) is not None  # used: kept
    memo.remember(ARCHIVE, entry("3"), STUDY, SERIES, now=0.0)
    assert [memo.instance(ARCHIVE, keys(s), now=0.0, ttl=TTL) is not None for s in "123"] == [
        True,
        False,
        True,
    ]

    for n in range(70):
        memo.keep_sidecar(Path(f"f{n}"), "frames.json", b"x" * 10)
    assert memo.sidecar(Path("f0"), "frames.json") is None
    assert memo.sidecar(Path("f69"), "frames.json") == b"x" * 10
    memo.keep_sidecar(Path("big"), "frames.json", b"x" * 11)  # over 1/64 of the room
    assert memo.sidecar(Path("big"), "frames.json") is None


def test_a_file_forgotten_takes_its_sidecars_along() -> None:
    memo = Memo()
    memo.keep_sidecar(Path("a"), "frames.json", b"1")
    memo.keep_sidecar(Path("a"), "metadata.json", b"2")
    memo.keep_sidecar(Path("b"), "frames.json", b"3")

    memo.forget_file(Path("a"))

    assert memo.sidecar(Path("a"), "frames.json") is None
    assert memo.sidecar(Path("a"), "metadata.json") is None
    assert memo.sidecar(Path("b"), "frames.json") == b"3"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def store(folder: Path) -> Iterator[Store]:
    store = Store.open(folder, max_bytes=1 << 30, ttl=TTL)
    yield store
    store.close()


async def test_a_remembered_entry_whose_file_another_process_removed_is_fetched_again(
    folder: Path, store: Store
) -> None:
    archive = FakeArchive({uid: bytes([n]) * (3000 + n) for n, uid in enumerate(UIDS)})
    backend = CachedBackend(archive, Cache(store), archive=ARCHIVE)
    await fetch(backend, SERIES_KEYS)
    one = keys(UIDS[1])
    remembered = store.memo.instance(ARCHIVE, one, store.clock(), TTL)
    assert remembered is not None

    other = Store.open(folder, max_bytes=1 << 30, ttl=TTL)  # another worker process
    try:
        other.invalidate(archive=ARCHIVE, study_uid=STUDY, series_uid=SERIES, sop_uid=UIDS[1])
    finally:
        other.close()
    assert not remembered.path.exists()

    assert await fetch(backend, one) == {UIDS[1]: archive.instances[UIDS[1]]}
    assert archive.calls == [SERIES_KEYS, one]
    assert await fetch(backend, one) == {UIDS[1]: archive.instances[UIDS[1]]}
    assert archive.calls == [SERIES_KEYS, one]  # cached again, served from there


async def test_what_this_process_deletes_it_forgets_at_once(store: Store) -> None:
    archive = FakeArchive({uid: bytes([n]) * (3000 + n) for n, uid in enumerate(UIDS)})
    backend = CachedBackend(archive, Cache(store), archive=ARCHIVE)
    await fetch(backend, SERIES_KEYS)

    store.invalidate(archive=ARCHIVE, study_uid=STUDY, series_uid=SERIES, sop_uid=UIDS[0])

    assert store.memo.instance(ARCHIVE, keys(UIDS[0]), store.clock(), TTL) is None
    assert store.memo.instance(ARCHIVE, keys(UIDS[1]), store.clock(), TTL) is not None
