"""rst.cache.store: the files and the SQLite index, without trio (the store blocks).

Time is a :class:`Clock` the tests move by hand; sizes are a few hundred bytes with
``max_bytes`` to match."""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rst.cache.store import (
    EXPIRED_GRACE,
    TOUCH_EVERY,
    CacheUnavailable,
    Entry,
    Meta,
    Pending,
    Sidecar,
    Store,
)
from rst.services.protocols import RetrieveKeys

ARCHIVE = "PACS@127.0.0.1:104"
STUDY = "1.2.3"
SERIES = "1.2.3.4"
TTL = 3600.0
CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


@dataclass
class Clock:
    now: float = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[Store]:
    store = Store.open(tmp_path / "cache", max_bytes=10_000, ttl=TTL, clock=clock)
    yield store
    store.close()


def image(sop: str, series: str | None = SERIES) -> RetrieveKeys:
    return RetrieveKeys(STUDY, series, sop)


def put(
    store: Store,
    sop: str,
    data: bytes | None = None,
    *,
    archive: str = ARCHIVE,
    series: str | None = SERIES,
) -> Entry | None:
    pending = store.begin()
    pending.write(data if data is not None else sop.encode() * 100)
    return store.commit(pending, meta(sop, archive=archive, series=series))


def meta(sop: str, *, archive: str = ARCHIVE, series: str | None = SERIES) -> Meta:
    return Meta(archive, STUDY, series, sop, CT, EXPLICIT_LE)


def files(store: Store, sub: str) -> list[Path]:
    return sorted(p for p in (store.folder / sub).rglob("*") if p.is_file())


# -- instances ---------------------------------------------------------------------------------


def test_a_committed_instance_is_found_with_its_bytes(store: Store) -> None:
    put(store, "1.1", b"DICM" * 50)

    entry = store.instance(ARCHIVE, image("1.1"))

    assert entry is not None
    assert entry.path.read_bytes() == b"DICM" * 50
    assert (entry.size, entry.sop_class_uid, entry.transfer_syntax) == (200, CT, EXPLICIT_LE)
    assert store.usage() == 200
    assert files(store, "tmp") == []


def test_an_instance_being_written_is_not_visible(store: Store) -> None:
    pending = store.begin()
    pending.write(b"half of an instance")

    assert store.instance(ARCHIVE, image("1.1")) is None
    assert files(store, "objects") == []
    pending.discard()
    assert files(store, "tmp") == []
    assert store.usage() == 0


def test_instances_are_kept_apart_by_archive(store: Store) -> None:
    put(store, "1.1", b"from A", archive="A@h:104")
    put(store, "1.1", b"from B", archive="B@h:104")

    a, b = store.instance("A@h:104", image("1.1")), store.instance("B@h:104", image("1.1"))

    assert a is not None
    assert a.path.read_bytes() == b"from A"
    assert b is not None
    assert b.path.read_bytes() == b"from B"
    assert store.instance("C@h:104", image("1.1")) is None


def test_an_instance_of_another_study_or_series_is_not_served(store: Store) -> None:
    put(store, "1.1")

    assert store.instance(ARCHIVE, RetrieveKeys("9.9", SERIES, "1.1")) is None
    assert store.instance(ARCHIVE, RetrieveKeys(STUDY, "9.9", "1.1")) is None
    assert store.instance(ARCHIVE, RetrieveKeys(STUDY, SERIES, "1.1")) is not None


def test_an_instance_cached_by_a_study_retrieve_serves_any_series_url(store: Store) -> None:
    put(store, "1.1", series=None)  # a study retrieve does not know each instance's series

    assert store.instance(ARCHIVE, image("1.1", series="1.2.3.4")) is not None


def test_a_fresh_entry_is_kept_when_another_retrieve_brings_the_instance_again(
    store: Store,
) -> None:
    """Two retrieves (two worker processes, say) bring the same instance: the first entry may
    have been handed to readers already, so its file stays and the second copy goes."""
    first = put(store, "1.1", b"first" * 10, series=None)
    second = put(store, "1.1", b"again" * 10)

    assert first is not None
    assert second == first
    assert files(store, "objects") == [first.path]
    assert store.usage() == 50
    assert store.instance(ARCHIVE, RetrieveKeys(STUDY, "9.9", "1.1")) is None  # series learnt


def test_an_expired_entry_is_replaced_and_its_file_removed(store: Store, clock: Clock) -> None:
    put(store, "1.1", b"old" * 10)
    clock.advance(TTL)
    put(store, "1.1", b"new" * 20)

    entry = store.instance(ARCHIVE, image("1.1"))

    assert entry is not None
    assert entry.path.read_bytes() == b"new" * 20
    assert files(store, "objects") == [entry.path]
    assert store.usage() == 60


def test_a_file_lost_or_cut_short_is_a_miss_and_forgotten(store: Store) -> None:
    lost, cut = put(store, "1.1"), put(store, "1.2")
    assert lost is not None
    assert cut is not None
    lost.path.unlink()
    cut.path.write_bytes(b"short")

    assert store.instance(ARCHIVE, image("1.1")) is None
    assert store.instance(ARCHIVE, image("1.2")) is None
    assert store.usage() == 0
    assert files(store, "objects") == []


def test_an_instance_larger_than_the_cache_is_not_kept(store: Store) -> None:
    assert put(store, "1.1", b"x" * 10_001) is None

    assert store.instance(ARCHIVE, image("1.1")) is None
    assert files(store, "objects") == files(store, "tmp") == []


# -- levels ------------------------------------------------------------------------------------


def test_a_complete_level_is_served_in_the_order_it_arrived(store: Store, clock: Clock) -> None:
    for sop in ("1.3", "1.1", "1.2"):
        put(store, sop)
    series = RetrieveKeys(STUDY, SERIES)

    assert store.level(ARCHIVE, series) is None  # not recorded as whole: never served
    store.complete(archive=ARCHIVE, keys=series, started=clock(), sop_uids=["1.3", "1.1", "1.2"])
    entries = store.level(ARCHIVE, series)

    assert entries is not None
    assert [e.sop_uid for e in entries] == ["1.3", "1.1", "1.2"]
    assert store.level(ARCHIVE, RetrieveKeys(STUDY)) is None  # another level
    assert store.level(ARCHIVE, RetrieveKeys("9.9", SERIES)) is None  # another study's URL


def test_a_level_with_a_member_missing_is_not_served(store: Store, clock: Clock) -> None:
    put(store, "1.1")
    study = RetrieveKeys(STUDY)

    store.complete(archive=ARCHIVE, keys=study, started=clock(), sop_uids=["1.1", "1.2"])

    assert store.level(ARCHIVE, study) is None


def test_a_level_with_a_member_file_lost_is_not_served(store: Store, clock: Clock) -> None:
    first, _ = put(store, "1.1"), put(store, "1.2")
    study = RetrieveKeys(STUDY)
    store.complete(archive=ARCHIVE, keys=study, started=clock(), sop_uids=["1.1", "1.2"])
    assert first is not None
    first.path.unlink()

    assert store.level(ARCHIVE, study) is None


def test_storing_an_instance_forgets_its_study_and_series(store: Store, clock: Clock) -> None:
    put(store, "1.1")
    for keys in (RetrieveKeys(STUDY), RetrieveKeys(STUDY, SERIES)):
        store.complete(archive=ARCHIVE, keys=keys, started=clock(), sop_uids=["1.1"])

    store.invalidate(archive=ARCHIVE, study_uid=STUDY, series_uid=SERIES, sop_uid="1.1")

    assert store.level(ARCHIVE, RetrieveKeys(STUDY)) is None
    assert store.level(ARCHIVE, RetrieveKeys(STUDY, SERIES)) is None
    assert store.instance(ARCHIVE, image("1.1")) is None
    assert files(store, "objects") == []


# -- eviction ----------------------------------------------------------------------------------


def test_least_recently_used_instances_go_past_max_bytes(store: Store, clock: Clock) -> None:
    for n in range(4):  # 4 x 3000 bytes, max_bytes 10_000
        put(store, f"1.{n}", bytes(3000))
        clock.advance(TOUCH_EVERY + 1)
        if n == 2:
            assert store.instance(ARCHIVE, image("1.0")) is not None  # 1.0 used again
    kept = [sop for sop in ("1.0", "1.1", "1.2", "1.3") if store.instance(ARCHIVE, image(sop))]

    assert kept == ["1.0", "1.2", "1.3"]
    assert store.usage() == 9000
    assert len(files(store, "objects")) == 3


def test_eviction_frees_down_to_the_low_water_mark(store: Store, clock: Clock) -> None:
    for n in range(10):
        put(store, f"1.{n}", bytes(1000))
        clock.advance(1)
    put(store, "1.10", bytes(1000))  # 11_000 > 10_000: down to 9_000

    assert store.usage() == 9000
    assert store.instance(ARCHIVE, image("1.0")) is None
    assert store.instance(ARCHIVE, image("1.1")) is None
    assert store.instance(ARCHIVE, image("1.10")) is not None


def test_expired_entries_are_not_served_then_deleted(store: Store, clock: Clock) -> None:
    put(store, "1.1")
    study = RetrieveKeys(STUDY)
    store.complete(archive=ARCHIVE, keys=study, started=clock(), sop_uids=["1.1"])

    clock.advance(TTL + 1)
    assert store.instance(ARCHIVE, image("1.1")) is None
    assert store.level(ARCHIVE, study) is None
    assert len(files(store, "objects")) == 1  # kept a little: a reader may have it open

    clock.advance(EXPIRED_GRACE)
    store.sweep()
    assert files(store, "objects") == []
    assert store.usage() == 0


def test_expired_entries_are_evicted_before_used_ones(store: Store, clock: Clock) -> None:
    put(store, "1.old", bytes(4000))
    clock.advance(TTL + 1)
    put(store, "1.a", bytes(4000))
    put(store, "1.b", bytes(4000))  # over max_bytes: the expired one goes, not 1.a

    assert store.instance(ARCHIVE, image("1.a")) is not None
    assert store.usage() == 8000


# -- restarts, processes, failures -------------------------------------------------------------


def test_reopening_keeps_the_entries(tmp_path: Path, clock: Clock) -> None:
    store = Store.open(tmp_path / "cache", max_bytes=10_000, ttl=TTL, clock=clock)
    put(store, "1.1", b"kept")
    store.complete(archive=ARCHIVE, keys=RetrieveKeys(STUDY), started=clock(), sop_uids=["1.1"])
    store.close()

    reopened = Store.open(tmp_path / "cache", max_bytes=10_000, ttl=TTL, clock=clock)
    try:
        entries = reopened.level(ARCHIVE, RetrieveKeys(STUDY))
        assert entries is not None
        assert entries[0].path.read_bytes() == b"kept"
        assert reopened.usage() == 4
    finally:
        reopened.close()


def test_two_stores_on_one_folder_see_each_others_entries(tmp_path: Path, clock: Clock) -> None:
    """What several worker processes do: one index, each its own connection."""
    one = Store.open(tmp_path / "cache", max_bytes=10_000, ttl=TTL, clock=clock)
    two = Store.open(tmp_path / "cache", max_bytes=10_000, ttl=TTL, clock=clock)
    try:
        put(one, "1.1", bytes(6000))
        put(two, "1.2", bytes(6000))  # over max_bytes together: two evicts one's entry
        assert one.instance(ARCHIVE, image("1.1")) is None
        assert one.instance(ARCHIVE, image("1.2")) is not None
        assert one.usage() == two.usage() == 6000
        mode = one._db.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
    finally:
        one.close()
        two.close()


def test_a_temporary_file_left_by_a_dead_writer_is_removed_at_open(
    tmp_path: Path, clock: Clock
) -> None:
    store = Store.open(tmp_path / "cache", max_bytes=10_000, ttl=TTL, clock=clock)
    stale, fresh = store.begin(), store.begin()
    stale.close()
    fresh.close()
    os.utime(stale.path, (0, 0))
    store.close()

    Store.open(tmp_path / "cache", max_bytes=10_000, ttl=TTL, clock=clock).close()

    assert not stale.path.exists()
    assert fresh.path.exists()  # may be another process's instance being written


def test_a_failed_write_leaves_nothing(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    pending = store.begin()

    def full(self: Pending, data: bytes | memoryview) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Pending, "write", full)
    with pytest.raises(OSError, match="No space"):
        pending.write(b"x")
    pending.discard()

    assert files(store, "tmp") == files(store, "objects") == []


def test_an_index_that_cannot_be_written_leaves_no_file(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    pending = store.begin()
    pending.write(b"whole")

    def locked() -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(store, "_write", locked)
    with pytest.raises(sqlite3.OperationalError):
        store.commit(pending, meta("1.1"))

    assert files(store, "tmp") == files(store, "objects") == []


def test_several_instances_are_committed_together_or_not_at_all(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = []
    for sop in ("1.1", "1.2", "1.3"):
        pending = store.begin()
        pending.write(sop.encode() * 10)
        written.append((pending, meta(sop)))
    real = os.replace
    calls = 0

    def third_fails(source: str, target: str) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise OSError(errno.EIO, "Input/output error")
        real(source, target)

    monkeypatch.setattr(os, "replace", third_fails)
    with pytest.raises(OSError, match="Input/output"):
        store.commit_many(written)

    assert files(store, "tmp") == files(store, "objects") == []
    assert store.usage() == 0
    monkeypatch.setattr(os, "replace", real)
    again = []
    for sop in ("1.1", "1.2"):
        pending = store.begin()
        pending.write(b"x" * 20_000 if sop == "1.2" else b"ok")
        again.append((pending, meta(sop)))
    entries = store.commit_many(again)
    assert entries[0] is not None
    assert entries[1] is None  # larger than the cache
    assert [e.sop_uid for e in filter(None, entries)] == ["1.1"]


def test_an_index_of_another_schema_is_refused(tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    with sqlite3.connect(tmp_path / "cache" / "index.sqlite3") as db:
        db.execute("PRAGMA user_version = 99")
    db.close()

    with pytest.raises(CacheUnavailable, match="another version of rst"):
        Store.open(tmp_path / "cache", max_bytes=1, ttl=1)


def test_a_folder_that_cannot_be_made_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")

    with pytest.raises(CacheUnavailable, match="cannot open the cache folder"):
        Store.open(tmp_path / "file" / "cache", max_bytes=1, ttl=1)


# -- sidecars ----------------------------------------------------------------------------------


def sidecar_rows(store: Store) -> list[tuple[str, str]]:
    with sqlite3.connect(store.folder / "index.sqlite3") as db:
        return sorted(db.execute("SELECT file, kind FROM sidecars").fetchall())


def test_a_sidecar_is_kept_in_the_index_and_goes_with_its_file(store: Store, clock: Clock) -> None:
    old = put(store, "1.1", b"old" * 10)
    assert old is not None
    store.save_sidecars([(old.path, "metadata.json", b"{}")])
    assert store.sidecar(old.path, "metadata.json") == b"{}"
    assert files(store, "tmp") == []

    clock.advance(TTL)
    new = put(store, "1.1", b"new" * 10)  # replaces the expired entry, and removes its file

    assert new is not None
    assert files(store, "objects") == [new.path]
    assert sidecar_rows(store) == []
    assert store.sidecar(old.path, "metadata.json") is None


def test_a_sidecar_of_a_file_already_evicted_is_not_left_behind(store: Store) -> None:
    entry = put(store, "1.1")
    assert entry is not None
    store.invalidate(archive=ARCHIVE, study_uid=STUDY, series_uid=SERIES, sop_uid="1.1")

    store.save_sidecars([(entry.path, "metadata.json", b"{}")])

    assert files(store, "objects") == []
    assert sidecar_rows(store) == []
    assert store.sidecar(entry.path, "metadata.json") is None


def test_only_known_sidecar_kinds_are_kept(store: Store) -> None:
    entry = put(store, "1.1")
    assert entry is not None
    with pytest.raises(ValueError, match="unknown sidecar"):
        store.save_sidecars([(entry.path, "../../escape", b"")])


def test_an_index_of_the_previous_version_is_upgraded_and_its_sidecar_files_removed(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "old"
    store = Store.open(folder, max_bytes=10_000, ttl=TTL)
    entry = put(store, "1.1")
    store.close()
    assert entry is not None
    with sqlite3.connect(folder / "index.sqlite3") as db:  # what rst of schema 1 left
        db.execute("DROP TABLE sidecars")
        db.execute("PRAGMA user_version = 1")
    legacy = entry.path.with_name(f"{entry.path.name}.metadata.json")
    legacy.write_bytes(b"{}")

    store = Store.open(folder, max_bytes=10_000, ttl=TTL)
    try:
        assert store.sidecar(entry.path, "metadata.json") is None
        store.invalidate(archive=ARCHIVE, study_uid=STUDY, series_uid=SERIES, sop_uid="1.1")
    finally:
        store.close()
    assert not legacy.exists()
    assert not entry.path.exists()


def test_sidecars_of_a_batch_are_kept_in_its_commit_for_the_files_just_written(
    store: Store,
) -> None:
    first = put(store, "1.1", b"first" * 10)  # cached before: a new copy of it is dropped
    assert first is not None
    written = []
    for sop in ("1.1", "1.2"):
        pending = store.begin()
        pending.write(sop.encode() * 10)
        written.append((pending, meta(sop)))
    told: list[tuple[Entry | None, bool]] = []

    def sidecars(results: list[tuple[Entry | None, bool]]) -> list[Sidecar]:
        told.extend(results)
        assert sidecar_rows(store) == []  # not committed yet: the same transaction
        return [(e.path, "frames.json", b"{}") for e, ours in results if e is not None and ours]

    entries = store.commit_many(written, sidecars)

    assert [(e.sop_uid if e else None, ours) for e, ours in told] == [("1.1", False), ("1.2", True)]
    assert entries[0] == first
    second = entries[1]
    assert second is not None
    assert sidecar_rows(store) == [(str(second.path.relative_to(store.folder)), "frames.json")]
    assert store.memo.sidecar(second.path, "frames.json") == b"{}"


def test_a_batch_whose_sidecars_cannot_be_kept_is_not_cached(store: Store) -> None:
    pending = store.begin()
    pending.write(b"x" * 10)

    def wrong(results: list[tuple[Entry | None, bool]]) -> list[Sidecar]:
        return [(e.path, "../../escape", b"") for e, _ in results if e is not None]

    with pytest.raises(ValueError, match="unknown sidecar kind"):
        store.commit_many([(pending, meta("1.1"))], wrong)

    assert files(store, "objects") == files(store, "tmp") == []
    assert sidecar_rows(store) == []
    assert store.usage() == 0


# -- buckets and batches -----------------------------------------------------------------------


def test_the_buckets_are_made_when_the_cache_is_opened(store: Store) -> None:
    made = sorted(p.name for p in (store.folder / "objects").iterdir() if p.is_dir())
    assert made == [f"{n:02x}" for n in range(256)]


def test_an_instance_is_committed_though_its_bucket_was_removed(store: Store) -> None:
    for bucket in (store.folder / "objects").iterdir():
        bucket.rmdir()  # a cleaner emptied the folder while rst ran
    entry = put(store, "1.1", b"DICM" * 50)
    assert entry is not None
    assert entry.path.read_bytes() == b"DICM" * 50
    assert store.instance(ARCHIVE, image("1.1")) == entry


def test_a_batch_counts_the_bytes_of_each_instance_once(store: Store) -> None:
    put(store, "1.1", b"x" * 1000)  # cached first: the batch's copy of it is dropped
    written = []
    for sop, size in (("1.1", 300), ("1.2", 200), ("1.3", 100)):
        pending = store.begin()
        pending.write(b"y" * size)
        written.append((pending, meta(sop)))
    entries = store.commit_many(written)
    assert [e.size if e is not None else None for e in entries] == [1000, 200, 100]
    assert store.usage() == 1300
