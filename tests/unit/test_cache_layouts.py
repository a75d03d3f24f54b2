"""rst.cache.files: the frame layout of a whole instance is derived as it is written to the
cache, so that its first frame request reads only that frame — and only for the file written
from those bytes, never for a copy another retrieve cached first."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from rst.cache import Cache, CachedBackend, Store
from rst.cache.store import Meta
from rst.dicom.accept import negotiate_frames
from rst.dicom.frames import FrameSource
from rst.dicom.layout import FRAMES, FrameLayout
from rst.services.frames import retrieve_frames
from rst.services.protocols import RetrieveKeys
from tests.support.sample import write_multiframe
from tests.unit.test_cache_backend import SERIES, SERIES_KEYS, STUDY, UIDS, FakeArchive, fetch

ARCHIVE = "FAKE@127.0.0.1:104"
AS_STORED = negotiate_frames("multipart/related; type=application/octet-stream; transfer-syntax=*")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def store(folder: Path) -> Iterator[Store]:
    store = Store.open(folder, max_bytes=1 << 30, ttl=3600)
    yield store
    store.close()


def kept_layout(folder: Path, path: Path) -> bytes:
    """The frame layout kept for the file *path*, as another process finds it (empty: none)."""
    other = Store.open(folder, max_bytes=1 << 30, ttl=3600)
    try:
        return other.sidecar(path, FRAMES) or b""
    finally:
        other.close()


@pytest.fixture
def multiframe(tmp_path: Path) -> bytes:
    study = write_multiframe(tmp_path / "mf", frames=4, rows=32, columns=32, seed=3)
    return study.paths[0].read_bytes()


async def test_a_written_instance_has_its_layout_and_frames_are_read_without_parsing(
    folder: Path, store: Store, multiframe: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = FakeArchive({UIDS[0]: multiframe})
    backend = CachedBackend(archive, Cache(store), archive=ARCHIVE)
    await fetch(backend, SERIES_KEYS)
    entry = store.instance(ARCHIVE, RetrieveKeys(STUDY, SERIES, UIDS[0]))
    assert entry is not None
    layout = FrameLayout.from_json(kept_layout(folder, entry.path))
    assert layout is not None
    assert layout.number_of_frames == 4
    assert layout.size == entry.size
    expected = pydicom.dcmread(entry.path).pixel_array[2].tobytes()

    def no_parsing(self: FrameSource, data: bytes) -> None:
        raise AssertionError("the cached file was parsed for a frame")

    monkeypatch.setattr(FrameSource, "__init__", no_parsing)
    answer = await retrieve_frames(backend, RetrieveKeys(STUDY, SERIES, UIDS[0]), [3], AS_STORED)

    assert [frame.data for frame in answer.frames] == [expected]
    assert archive.calls == [SERIES_KEYS]


async def test_no_layout_is_kept_for_a_copy_another_retrieve_cached_first(
    folder: Path, store: Store, multiframe: bytes
) -> None:
    other = Store.open(folder, max_bytes=1 << 30, ttl=3600)  # another worker, first
    try:
        pending = other.begin()
        pending.write(multiframe)
        first = other.commit(
            pending,
            Meta(
                ARCHIVE,
                STUDY,
                SERIES,
                UIDS[0],
                "1.2.840.10008.5.1.4.1.1.2.1",
                "1.2.840.10008.1.2.1",
            ),
        )
    finally:
        other.close()
    assert first is not None
    archive = FakeArchive({UIDS[0]: multiframe})
    backend = CachedBackend(archive, Cache(store), archive=ARCHIVE)

    await fetch(backend, RetrieveKeys(STUDY))  # a study retrieve: nobody looks first

    entry = store.instance(ARCHIVE, RetrieveKeys(STUDY, SERIES, UIDS[0]))
    assert entry is not None
    assert entry.path == first.path
    assert kept_layout(folder, first.path) == b""
    assert archive.calls == [RetrieveKeys(STUDY)]


async def test_an_instance_without_frames_gets_no_layout(folder: Path, store: Store) -> None:
    archive = FakeArchive({UIDS[0]: b"not DICOM at all" * 100})
    backend = CachedBackend(archive, Cache(store), archive=ARCHIVE)

    await fetch(backend, SERIES_KEYS)

    entry = store.instance(ARCHIVE, RetrieveKeys(STUDY, SERIES, UIDS[0]))
    assert entry is not None
    assert kept_layout(folder, entry.path) == b""
