"""rst.cache.backend and rst.cache.flight: the cache in front of an in-memory archive.

The archive (:class:`FakeArchive`) counts its retrieves and can hold an instance back until a
test lets it go, so that requests provably overlap; nothing waits on time."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
import trio
import trio.testing
from pydicom import Dataset

from rst.cache import Cache, CachedBackend, Store, archive_key
from rst.cache.files import CHUNK, FileChunks
from rst.cache.flight import Flight, State
from rst.cache.store import Pending
from rst.config import AeConfig
from rst.dicom.accept import BulkChoice, BulkdataFormat
from rst.dicom.part10 import Upload
from rst.dicom.query import QidoQuery
from rst.dicom.render_params import PNG, Rendering
from rst.errors import ArchiveBusy, IncompleteRetrieve, NotFound, RstError
from rst.services.bulkdata import BulkPart, produce_bulkdata
from rst.services.protocols import Instance, RetrieveKeys, StoreResult
from rst.services.rendered import render_one
from rst.services.wado import whole
from tests.support.garbage import LARGE, cyclic_collection_paused, cyclic_garbage
from tests.support.sample import write_multiframe
from tests.support.scripted_backend import part10

STUDY = "1.2.3"
SERIES = "1.2.3.4"
SERIES_KEYS = RetrieveKeys(STUDY, SERIES)
UIDS = [f"1.2.3.4.{n}" for n in range(1, 6)]


class Chunks:
    """The ``rest`` of an instance still arriving: these chunks, then *error* if given."""

    def __init__(self, chunks: list[bytes], error: RstError | None = None) -> None:
        self._chunks = list(chunks)
        self._error = error

    def __aiter__(self) -> Chunks:
        return self

    async def __anext__(self) -> bytes:
        await trio.lowlevel.checkpoint()
        if self._chunks:
            return self._chunks.pop(0)
        if self._error is not None:
            raise self._error
        raise StopAsyncIteration


@dataclass
class FakeArchive:
    """One series of instances. ``hold[uid]`` keeps that instance back until set;
    ``fail_before[uid]`` raises instead of sending it; ``stream[uid]`` sends it in pieces."""

    instances: dict[str, bytes]
    name: str = "FAKE"
    hold: dict[str, trio.Event] = field(default_factory=dict)
    fail_before: dict[str, RstError] = field(default_factory=dict)
    stream: dict[str, int] = field(default_factory=dict)
    """uid → size of the pieces it arrives in."""
    broken: dict[str, RstError] = field(default_factory=dict)
    """uid → the error its ``rest`` ends with (after half of it)."""
    calls: list[RetrieveKeys] = field(default_factory=list)
    _call: trio.Event = field(default_factory=trio.Event)
    open_retrieves: int = 0
    stored: list[str] = field(default_factory=list)

    async def echo(self) -> None:
        pass

    @asynccontextmanager
    async def search(self, query: QidoQuery) -> AsyncIterator[AsyncIterator[Dataset]]:
        raise NotImplementedError
        yield

    @asynccontextmanager
    async def retrieve(
        self, keys: RetrieveKeys, prefer: str | None = None
    ) -> AsyncIterator[AsyncIterator[Instance]]:
        self.calls.append(keys)
        self._call.set()
        self._call = trio.Event()
        self.open_retrieves += 1
        try:
            async with aclosing(self._send(keys)) as instances:
                yield instances
        finally:
            self.open_retrieves -= 1

    async def called(self, times: int) -> None:
        """Wait until :meth:`retrieve` has been called *times* times."""
        while len(self.calls) < times:
            await self._call.wait()

    async def _send(self, keys: RetrieveKeys) -> AsyncGenerator[Instance]:
        wanted = [
            uid
            for uid in self.instances
            if keys.study_uid == STUDY
            and keys.series_uid in (None, SERIES)
            and keys.sop_uid in (None, uid)
        ]
        if not wanted:
            raise NotFound(f"no {keys.level.lower()} {keys.uid}")
        for uid in wanted:
            if uid in self.hold:
                await self.hold[uid].wait()
            if uid in self.fail_before:
                raise self.fail_before[uid]
            yield self._instance(uid)

    def _instance(self, uid: str) -> Instance:
        data = self.instances[uid]
        instance = Instance(data, "1.2.840.10008.5.1.4.1.1.7", uid, "1.2.840.10008.1.2.1")
        if uid in self.broken:
            half = len(data) // 2
            return Instance(
                data[:1000],
                instance.sop_class_uid,
                uid,
                instance.transfer_syntax,
                rest=Chunks([data[1000:half]], self.broken[uid]),
            )
        if uid in self.stream:
            size = self.stream[uid]
            pieces = [data[n : n + size] for n in range(0, len(data), size)]
            return Instance(
                pieces[0],
                instance.sop_class_uid,
                uid,
                instance.transfer_syntax,
                rest=Chunks(pieces[1:]),
            )
        return instance

    @asynccontextmanager
    async def store(self) -> AsyncIterator[FakeSession]:
        yield FakeSession(self)


@dataclass
class FakeSession:
    archive: FakeArchive

    async def store(self, upload: Upload) -> StoreResult:
        self.archive.stored.append(upload.sop_instance_uid)
        return StoreResult(0x0000)


@pytest.fixture
def archive() -> FakeArchive:
    return FakeArchive({uid: part10(uid, size=2000 + n).data for n, uid in enumerate(UIDS)})


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store.open(tmp_path / "cache", max_bytes=1 << 30, ttl=3600)
    yield store
    store.close()


@pytest.fixture
def cached(archive: FakeArchive, store: Store) -> CachedBackend:
    return CachedBackend(archive, Cache(store), archive="FAKE@127.0.0.1:104")


async def fetch(backend: CachedBackend, keys: RetrieveKeys) -> dict[str, bytes]:
    """What a WADO-RS request gets: every instance, read to its end."""
    got: dict[str, bytes] = {}
    async with backend.retrieve(keys) as instances:
        async for instance in instances:
            assert instance.sop_instance_uid not in got, "an instance was sent twice"
            got[instance.sop_instance_uid] = (await whole(instance)).data
    return got


def leftovers(store: Store) -> list[Path]:
    return list((store.folder / "tmp").iterdir())


# -- single flight -----------------------------------------------------------------------------


async def test_concurrent_retrieves_share_one_retrieve_from_the_archive(
    archive: FakeArchive, cached: CachedBackend
) -> None:
    archive.hold[UIDS[0]] = go = trio.Event()
    results: list[dict[str, bytes]] = []

    async def request() -> None:
        results.append(await fetch(cached, SERIES_KEYS))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(request)
            await trio.testing.wait_all_tasks_blocked()
            assert len(cached.flights) == 1  # all six on one flight, the archive holding it
            go.set()

    assert archive.calls == [SERIES_KEYS]
    assert results == [archive.instances] * 6


async def test_what_was_retrieved_is_then_served_from_the_cache(
    archive: FakeArchive, cached: CachedBackend
) -> None:
    await fetch(cached, SERIES_KEYS)

    assert await fetch(cached, SERIES_KEYS) == archive.instances
    one = RetrieveKeys(STUDY, SERIES, UIDS[2])
    assert await fetch(cached, one) == {UIDS[2]: archive.instances[UIDS[2]]}
    assert archive.calls == [SERIES_KEYS]

    await fetch(cached, RetrieveKeys(STUDY))  # the study is not known to be whole
    assert archive.calls == [SERIES_KEYS, RetrieveKeys(STUDY)]


async def test_an_instance_in_a_series_flight_waits_for_that_instance_only(
    archive: FakeArchive, cached: CachedBackend
) -> None:
    archive.hold[UIDS[2]] = third = trio.Event()
    archive.hold[UIDS[4]] = fifth = trio.Event()
    first_two = trio.Event()
    series: dict[str, bytes] = {}

    async def view_series() -> None:
        async with cached.retrieve(SERIES_KEYS) as instances:
            async for instance in instances:
                series[instance.sop_instance_uid] = (await whole(instance)).data
                if len(series) == 2:
                    first_two.set()

    async def frame(uid: str) -> dict[str, bytes]:
        return await fetch(cached, RetrieveKeys(STUDY, SERIES, uid))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(view_series)
            await first_two.wait()
            # arrived already: served while the series waits for the PACS
            assert await frame(UIDS[1]) == {UIDS[1]: archive.instances[UIDS[1]]}

            fourth: list[dict[str, bytes]] = []
            got_fourth = trio.Event()

            async def wait_for_fourth() -> None:
                fourth.append(await frame(UIDS[3]))
                got_fourth.set()

            nursery.start_soon(wait_for_fourth)
            await trio.testing.wait_all_tasks_blocked()
            assert not fourth
            third.set()  # the 3rd and 4th arrive; the 5th is still held back
            await got_fourth.wait()
            assert fourth == [{UIDS[3]: archive.instances[UIDS[3]]}]
            assert len(series) == 4
            fifth.set()

    assert archive.calls == [SERIES_KEYS]
    assert series == archive.instances


# -- failures ----------------------------------------------------------------------------------


async def test_followers_fail_with_the_archives_error_and_nothing_is_whole(
    archive: FakeArchive, cached: CachedBackend, store: Store
) -> None:
    archive.hold[UIDS[0]] = go = trio.Event()
    archive.fail_before[UIDS[3]] = IncompleteRetrieve("3 of 5 instances arrived")
    received: list[int] = []
    errors: list[BaseException] = []

    async def request() -> None:
        count = 0
        try:
            async with cached.retrieve(SERIES_KEYS) as instances:
                async for instance in instances:
                    await whole(instance)
                    count += 1
        except IncompleteRetrieve as exc:
            errors.append(exc)
        received.append(count)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(request)
            await trio.testing.wait_all_tasks_blocked()
            go.set()

    assert received == [3] * 4  # what arrived went out, then the error
    assert [str(e) for e in errors] == ["3 of 5 instances arrived"] * 4
    assert len({id(e) for e in errors}) == 4
    assert store.level("FAKE@127.0.0.1:104", SERIES_KEYS) is None
    del archive.fail_before[UIDS[3]]
    assert await fetch(cached, SERIES_KEYS) == archive.instances
    assert archive.calls == [SERIES_KEYS, SERIES_KEYS]


async def test_nothing_found_reaches_every_request(
    archive: FakeArchive, cached: CachedBackend
) -> None:
    missing = RetrieveKeys(STUDY, "9.9")
    outcomes: list[str] = []

    async def request() -> None:
        with pytest.raises(NotFound):
            await fetch(cached, missing)
        outcomes.append("404")

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(request)

    assert outcomes == ["404"] * 3
    assert archive.calls == [missing]


async def test_followers_carry_on_when_the_leader_goes_away(
    archive: FakeArchive, cached: CachedBackend
) -> None:
    """The flight belongs to the request that started it; when that request is cancelled,
    the others retrieve for themselves and send each instance once."""
    archive.hold[UIDS[2]] = third = trio.Event()
    leader_has_two, leave = trio.Event(), trio.Event()
    follower: list[dict[str, bytes]] = []

    async def leader() -> None:
        with trio.CancelScope() as scope:
            async with cached.retrieve(SERIES_KEYS) as instances:
                async for instance in instances:
                    await whole(instance)
                    if instance.sop_instance_uid == UIDS[1]:
                        leader_has_two.set()
                        await leave.wait()
                        scope.cancel()  # the client went away

    async def other() -> None:
        follower.append(await fetch(cached, SERIES_KEYS))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(leader)
            await leader_has_two.wait()
            nursery.start_soon(other)
            await trio.testing.wait_all_tasks_blocked()
            leave.set()
            await archive.called(2)  # the follower's own retrieve
            third.set()

    assert follower == [archive.instances]
    assert archive.calls == [SERIES_KEYS, SERIES_KEYS]
    assert archive.open_retrieves == 0


async def test_archive_busy_reaches_followers_with_its_retry_after() -> None:
    flight = Flight(SERIES_KEYS, 0.0)
    flight.fail(ArchiveBusy("all 8 associations busy", retry_after=15))

    copy = flight.error()

    assert isinstance(copy, ArchiveBusy)
    assert (copy.message, copy.retry_after, copy.status) == ("all 8 associations busy", 15, 503)
    assert copy is not flight.error()
    assert flight.state is State.FAILED


def test_a_failed_flight_keeps_no_reference_cycle() -> None:
    # The leader's error goes up through frames that hold the flight (issue 8).
    def lead(flight: Flight) -> None:
        held = bytes(LARGE)  # what the leader's frames hold
        try:
            raise IncompleteRetrieve(f"the PACS broke off after {len(held)} bytes")
        except RstError as error:
            flight.fail(error)
            raise

    with cyclic_collection_paused():
        with contextlib.suppress(IncompleteRetrieve):
            lead(Flight(SERIES_KEYS, 0.0))
        garbage = cyclic_garbage()

    assert not garbage, garbage.describe()


# -- large instances, partial instances --------------------------------------------------------


async def test_a_large_instance_streams_through_and_is_served_in_chunks(
    archive: FakeArchive, cached: CachedBackend
) -> None:
    big = part10(UIDS[0], size=CHUNK * 2 + 12345).data
    archive.instances = {UIDS[0]: big}
    archive.stream[UIDS[0]] = 100_000
    one = RetrieveKeys(STUDY, SERIES, UIDS[0])

    assert await fetch(cached, one) == {UIDS[0]: big}

    async with cached.retrieve(one) as instances:
        instance = await anext(instances)
        assert len(instance.data) == CHUNK
        assert isinstance(instance.rest, FileChunks)
        assert instance.data + b"".join([c async for c in instance.rest]) == big
    assert archive.calls == [one]


async def test_an_instance_broken_off_is_not_cached(
    archive: FakeArchive, cached: CachedBackend, store: Store
) -> None:
    archive.broken[UIDS[1]] = IncompleteRetrieve("the association was aborted")

    with pytest.raises(IncompleteRetrieve):
        await fetch(cached, SERIES_KEYS)

    assert store.instance(cached.archive, RetrieveKeys(STUDY, SERIES, UIDS[1])) is None
    assert store.instance(cached.archive, RetrieveKeys(STUDY, SERIES, UIDS[0])) is not None
    assert store.level(cached.archive, SERIES_KEYS) is None
    assert leftovers(store) == []


async def test_a_consumer_that_stops_mid_instance_leaves_no_partial_file(
    archive: FakeArchive, cached: CachedBackend, store: Store
) -> None:
    archive.stream[UIDS[0]] = 500

    async with cached.retrieve(SERIES_KEYS) as instances:
        instance = await anext(instances)
        assert instance.rest is not None
        await anext(aiter(instance.rest))

    assert leftovers(store) == []
    assert store.instance(cached.archive, RetrieveKeys(STUDY, SERIES, UIDS[0])) is None
    assert archive.open_retrieves == 0


# -- a cache that cannot write -----------------------------------------------------------------


async def test_a_cache_that_cannot_write_still_answers_every_request(
    archive: FakeArchive,
    cached: CachedBackend,
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def disk_full(self: Pending, data: bytes | memoryview) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Pending, "write", disk_full)
    archive.stream[UIDS[4]] = 700
    archive.hold[UIDS[0]] = go = trio.Event()
    results: list[dict[str, bytes]] = []

    async def request() -> None:
        results.append(await fetch(cached, SERIES_KEYS))

    with caplog.at_level(logging.WARNING, logger="rst.cache"), trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(request)
            await trio.testing.wait_all_tasks_blocked()
            go.set()

    assert results == [archive.instances] * 3
    assert "No space left on device" in caplog.text
    assert store.usage() == 0
    assert leftovers(store) == []
    assert len(archive.calls) >= 1


# -- stores ------------------------------------------------------------------------------------


async def test_a_store_makes_the_cache_forget_the_series(
    archive: FakeArchive, cached: CachedBackend
) -> None:
    await fetch(cached, SERIES_KEYS)
    upload = Upload(
        data=b"",
        header=Dataset(),
        transfer_syntax="1.2.840.10008.1.2.1",
        dataset_offset=0,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.7",
        sop_instance_uid="1.2.3.4.99",
        study_uid=STUDY,
        series_uid=SERIES,
    )

    async with cached.store() as session:
        assert (await session.store(upload)).status == 0x0000
    await fetch(cached, SERIES_KEYS)

    assert archive.stored == ["1.2.3.4.99"]
    assert archive.calls == [SERIES_KEYS, SERIES_KEYS]


def test_the_cache_knows_a_pacs_by_route_called_title_and_address() -> None:
    def key(**fields: str) -> str:
        return archive_key(AeConfig.model_validate({"host": "10.0.0.5", "port": 104, **fields}))

    assert key(aet="PACS") == "PACS@10.0.0.5:104"  # as before called_aet existed
    assert key(aet="PACS", called_aet="PACS") == key(aet="PACS")
    # two routes to one PACS never share (their calling AE titles may see other studies) ...
    assert key(aet="VIA_MOVE", called_aet="PACS") != key(aet="VIA_GET", called_aet="PACS")
    # ... and one route pointed at another AE on the same port starts afresh
    assert key(aet="ROUTE", called_aet="A") != key(aet="ROUTE", called_aet="B")


async def test_rendered_and_pixel_data_of_a_large_cached_file_read_its_parts(
    archive: FakeArchive, cached: CachedBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large cached multi-frame: a rendered frame reads the file's head and that frame (the
    frame path S3 objects take), the same image as from the archive's whole instance; its
    pixel data is the archive's too."""
    study = write_multiframe(tmp_path / "mf", frames=40, rows=128, columns=128, seed=9)
    big = study.paths[0].read_bytes()
    assert len(big) > CHUNK  # cached files larger than one chunk are read in parts
    archive.instances = {UIDS[0]: big}
    one = RetrieveKeys(STUDY, SERIES, UIDS[0])
    assert await fetch(cached, one) == {UIDS[0]: big}  # now cached

    read: list[int] = []
    pread = os.pread

    def counted(fd: int, length: int, start: int) -> bytes:
        read.append(length)
        return pread(fd, length, start)

    monkeypatch.setattr(os, "pread", counted)
    rendering = Rendering(PNG)
    from_cache = await render_one(cached, one, [35], rendering)
    # the first chunk (with the head), then frame 35 alone: not the rest of the file
    assert sum(read) <= CHUNK + 128 * 128 * 2, (read, len(big))
    monkeypatch.undo()
    assert from_cache == await render_one(archive, one, [35], rendering)

    parts: list[BulkPart] = []

    async def send(part: BulkPart) -> None:
        parts.append(part)

    fmt = BulkdataFormat((BulkChoice("application/octet-stream", "*"),))
    await produce_bulkdata(cached, one, "pixeldata", fmt, "", send)
    [part] = parts
    assert part.data == pydicom.dcmread(study.paths[0]).PixelData
