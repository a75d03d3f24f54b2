"""rst.cache.files: the sidecars of cached instances (rows of the index) and of instances on
their way in."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from rst.cache.files import EntrySidecars, PendingSidecars
from rst.cache.store import Entry, Meta, Store

KIND = "metadata.json"
ARCHIVE = "PACS@127.0.0.1:104"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store.open(tmp_path / "cache", max_bytes=10_000, ttl=3600.0)
    yield store
    store.close()


def cached(store: Store, sop: str = "1.1") -> Entry:
    pending = store.begin()
    pending.write(b"DICM" * 10)
    meta = Meta(
        ARCHIVE,
        "1.2",
        "1.2.3",
        sop,
        "1.2.840.10008.5.1.4.1.1.2",
        "1.2.840.10008.1.2.1",
    )
    entry = store.commit(pending, meta)
    assert entry is not None
    return entry


def fresh_process(store: Store) -> Store:
    """The same cache folder opened anew (another worker, or after a restart)."""
    return Store.open(store.folder, max_bytes=10_000, ttl=3600.0)


def test_an_entry_keeps_what_is_saved_and_a_new_reader_finds_it(store: Store) -> None:
    entry = cached(store)
    assert EntrySidecars(store, entry.path).load(KIND) is None

    EntrySidecars(store, entry.path).save(KIND, b'{"a":1}')

    assert EntrySidecars(store, entry.path).peek(KIND) == b'{"a":1}'  # remembered
    other = fresh_process(store)
    try:
        assert EntrySidecars(other, entry.path).peek(KIND) is None
        assert EntrySidecars(other, entry.path).load(KIND) == b'{"a":1}'  # from the index
    finally:
        other.close()


def kept(store: Store, entry: Entry) -> bytes | None:
    """What another process finds kept for *entry*."""
    other = fresh_process(store)
    try:
        return other.sidecar(entry.path, KIND)
    finally:
        other.close()


def test_what_is_saved_before_the_instance_is_cached_is_written_when_it_is(store: Store) -> None:
    sidecars = PendingSidecars()
    sidecars.save(KIND, b"early")
    assert sidecars.load(KIND) == b"early"
    entry = cached(store)
    assert kept(store, entry) is None

    sidecars.settle(entry, store)

    assert kept(store, entry) == b"early"
    assert EntrySidecars(store, entry.path).load(KIND) == b"early"


def test_what_is_saved_after_the_instance_is_cached_is_written_at_once(store: Store) -> None:
    sidecars = PendingSidecars()
    entry = cached(store)
    sidecars.settle(entry, store)

    sidecars.save(KIND, b"late")

    assert kept(store, entry) == b"late"


def test_a_sidecar_goes_with_its_instance_and_never_outlives_it(store: Store) -> None:
    entry = cached(store)
    EntrySidecars(store, entry.path).save(KIND, b"{}")

    store.invalidate(archive=ARCHIVE, study_uid="1.2", series_uid="1.2.3", sop_uid="1.1")
    EntrySidecars(store, entry.path).save("frames.json", b"late")  # after its eviction

    other = fresh_process(store)
    try:
        assert other.sidecar(entry.path, KIND) is None
        assert other.sidecar(entry.path, "frames.json") is None
    finally:
        other.close()
    assert EntrySidecars(store, entry.path).peek("frames.json") is None


def test_an_instance_that_is_not_cached_keeps_nothing(store: Store) -> None:
    sidecars = PendingSidecars()
    sidecars.save(KIND, b"early")

    sidecars.settle(None, store)
    sidecars.save(KIND, b"late")

    assert sidecars.load(KIND) is None
    assert [p for p in store.folder.rglob("*") if p.is_file() and "sqlite" not in p.name] == []


def test_a_sidecar_that_cannot_be_written_is_only_a_warning(
    store: Store, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = cached(store)

    def locked(sidecars: object) -> None:  # another process held the index past its timeout
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(store, "save_sidecars", locked)
    EntrySidecars(store, entry.path).save(KIND, b"lost")
    monkeypatch.undo()

    assert EntrySidecars(store, entry.path).load(KIND) is None
    assert "cannot keep what was derived" in caplog.text
