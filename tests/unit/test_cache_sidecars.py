"""rst.cache.files: the sidecars of cached instances and of instances on their way in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rst.cache.files import EntrySidecars, PendingSidecars
from rst.cache.store import Entry, Meta, Store, sidecar_path

KIND = "metadata.json"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store.open(tmp_path / "cache", max_bytes=10_000, ttl=3600.0)
    yield store
    store.close()


def cached(store: Store, sop: str = "1.1") -> Entry:
    pending = store.begin()
    pending.write(b"DICM" * 10)
    meta = Meta(
        "PACS@127.0.0.1:104",
        "1.2",
        "1.2.3",
        sop,
        "1.2.840.10008.5.1.4.1.1.2",
        "1.2.840.10008.1.2.1",
    )
    entry = store.commit(pending, meta)
    assert entry is not None
    return entry


def test_an_entry_keeps_what_is_saved_and_a_new_reader_finds_it(store: Store) -> None:
    entry = cached(store)
    assert EntrySidecars(entry.path).load(KIND) is None

    EntrySidecars(entry.path).save(KIND, b'{"a":1}')

    assert EntrySidecars(entry.path).load(KIND) == b'{"a":1}'


def test_what_is_saved_before_the_instance_is_cached_is_written_when_it_is(store: Store) -> None:
    sidecars = PendingSidecars()
    sidecars.save(KIND, b"early")
    assert sidecars.load(KIND) == b"early"
    entry = cached(store)
    assert not sidecar_path(entry.path, KIND).exists()

    sidecars.settle(entry)

    assert sidecar_path(entry.path, KIND).read_bytes() == b"early"
    assert EntrySidecars(entry.path).load(KIND) == b"early"


def test_what_is_saved_after_the_instance_is_cached_is_written_at_once(store: Store) -> None:
    sidecars = PendingSidecars()
    entry = cached(store)
    sidecars.settle(entry)

    sidecars.save(KIND, b"late")

    assert sidecar_path(entry.path, KIND).read_bytes() == b"late"


def test_an_instance_that_is_not_cached_keeps_nothing(store: Store) -> None:
    sidecars = PendingSidecars()
    sidecars.save(KIND, b"early")

    sidecars.settle(None)
    sidecars.save(KIND, b"late")

    assert sidecars.load(KIND) is None
    assert [p for p in store.folder.rglob("*") if p.is_file() and "sqlite" not in p.name] == []


def test_a_sidecar_that_cannot_be_written_is_only_a_warning(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    entry = cached(store)
    (store.folder / "tmp").rmdir()  # nowhere to write the temporary file

    EntrySidecars(entry.path).save(KIND, b"lost")

    assert EntrySidecars(entry.path).load(KIND) is None
    assert "cannot write the metadata.json" in caplog.text
