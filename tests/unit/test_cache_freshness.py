"""rst.cache.freshness: a cached study or series is checked with the PACS (a C-FIND of its SOP
Instance UIDs) before it is served, when last checked longer ago than ``revalidate_seconds``.

The archive is :class:`~tests.support.scripted_backend.ScriptedBackend`, which counts its
searches (C-FINDs) and retrieves; the cache's clock is a number the tests move."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
import trio.testing
from pydantic import ValidationError
from pydicom import Dataset

from rst.cache import Cache, CachedBackend, Store, with_cache
from rst.cache.freshness import MAX_TOP_UP, Change, compare, instances_query, is_due
from rst.config import CacheConfig, load_config
from rst.dicom.query import QidoQuery
from rst.errors import PacsUnreachable
from rst.metrics import Metrics
from rst.services.protocols import Instance, RetrieveKeys
from rst.services.wado import whole
from tests.support.scripted_backend import ScriptedBackend, part10

STUDY = "1.2.3"
SERIES = "1.2.3.4"
SERIES_KEYS = RetrieveKeys(STUDY, SERIES)
STUDY_KEYS = RetrieveKeys(STUDY)
UIDS = [f"1.2.3.4.{n}" for n in range(1, 6)]
EVERY = 10.0
ARCHIVE = "PACS@127.0.0.1:104"


# -- the pure decisions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("validated_at", "now", "every", "due"),
    [
        (100.0, 105.0, 10.0, False),
        (100.0, 110.0, 10.0, True),
        (100.0, 200.0, 10.0, True),
        (100.0, 100.0, 0.0, True),
        (100.0, 99.0, 10.0, False),  # another process's clock a little ahead
    ],
)
def test_a_level_is_due_once_its_last_check_is_older_than_the_interval(
    validated_at: float, now: float, every: float, due: bool
) -> None:
    assert is_due(validated_at, now, every) is due


def test_the_comparison_is_of_sets() -> None:
    assert compare(["a", "b"], ["b", "a", "a"]).fresh
    assert compare(["a", "b"], ["a", "b", "c"]) == Change(frozenset({"c"}), frozenset())
    assert compare(["a", "b"], ["a"]) == Change(frozenset(), frozenset({"b"}))
    assert not compare(["a"], []).fresh
    assert compare(["a"], ["a", "b"]).top_up
    assert not compare(["a"], ["b"]).top_up  # one removed: the whole level again
    assert not compare([], [str(n) for n in range(MAX_TOP_UP + 1)]).top_up
    assert compare([], [str(n) for n in range(MAX_TOP_UP)]).top_up


def test_the_query_asks_for_the_instance_uids_under_the_level() -> None:
    series = instances_query(SERIES_KEYS)
    assert series.level == "IMAGE"
    assert series.identifier.QueryRetrieveLevel == "IMAGE"
    assert series.identifier.StudyInstanceUID == STUDY
    assert series.identifier.SeriesInstanceUID == SERIES
    assert series.identifier.SOPInstanceUID == ""
    assert instances_query(STUDY_KEYS).identifier.SeriesInstanceUID == ""
    with pytest.raises(ValueError, match="not revalidated"):
        instances_query(RetrieveKeys(STUDY, SERIES, UIDS[0]))


# -- against a scripted archive ----------------------------------------------------------------


@dataclass
class Clock:
    now: float = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Archive(ScriptedBackend):
    """A scripted archive whose searches can be held until a test lets them go."""

    hold: trio.Event | None = None
    fail_instances: bool = False
    """Retrieves of one instance fail (an archive that moves whole series only)."""
    searching: int = 0
    searched: trio.Event = field(default_factory=trio.Event)
    searches: list[QidoQuery] = field(default_factory=list)

    def add(self, uid: str) -> None:
        self.instances.append(part10(uid, study=STUDY, series=SERIES))
        match = Dataset()
        match.SeriesInstanceUID = SERIES
        match.SOPInstanceUID = uid
        self.matches.append(match)

    def remove(self, uid: str) -> None:
        self.instances = [i for i in self.instances if i.sop_instance_uid != uid]
        self.matches = [m for m in self.matches if m.SOPInstanceUID != uid]

    @asynccontextmanager
    async def search(self, query: QidoQuery) -> AsyncIterator[AsyncIterator[Dataset]]:
        self.searches.append(query)
        self.searching += 1
        self.searched.set()
        if self.hold is not None:
            await self.hold.wait()
        async with super().search(query) as found:
            yield found

    @asynccontextmanager
    async def retrieve(
        self, keys: RetrieveKeys, prefer: str | None = None
    ) -> AsyncIterator[AsyncIterator[Instance]]:
        if self.fail_instances and keys.sop_uid is not None:
            self.retrieves.append((keys, prefer))
            raise PacsUnreachable("no instance-level retrieves here")
        async with super().retrieve(keys, prefer) as instances:
            yield instances


@pytest.fixture
def archive() -> Archive:
    archive = Archive(name="PACS", by_keys=True)
    for uid in UIDS:
        archive.add(uid)
    return archive


@pytest.fixture
def clock() -> Clock:
    return Clock()


def open_store(folder: Path, clock: Clock) -> Store:
    return Store.open(folder, max_bytes=1 << 30, ttl=3600, clock=clock)


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[Store]:
    store = open_store(tmp_path / "cache", clock)
    yield store
    store.close()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def cached(archive: Archive, store: Store, metrics: Metrics) -> CachedBackend:
    return CachedBackend(
        archive, Cache(store), archive=ARCHIVE, metrics=metrics, revalidate_seconds=EVERY
    )


async def fetch(backend: CachedBackend, keys: RetrieveKeys) -> list[str]:
    """The SOP Instance UIDs a WADO-RS request gets, each instance read to its end."""
    got = []
    async with backend.retrieve(keys) as instances:
        async for instance in instances:
            await whole(instance)
            got.append(instance.sop_instance_uid)
    return got


def counted(metrics: Metrics, result: str) -> float:
    value = metrics.registry.get_sample_value(
        "rst_cache_revalidations_total", {"aet": "PACS", "result": result}
    )
    return 0.0 if value is None else value


async def test_a_warm_series_is_not_checked_within_the_interval_and_checked_once_after(
    cached: CachedBackend, archive: Archive, clock: Clock, metrics: Metrics
) -> None:
    assert await fetch(cached, SERIES_KEYS) == UIDS
    clock.now += EVERY - 1
    assert await fetch(cached, SERIES_KEYS) == UIDS
    assert (len(archive.retrieves), len(archive.searches)) == (1, 0)

    clock.now += 2
    assert await fetch(cached, SERIES_KEYS) == UIDS
    assert (len(archive.retrieves), len(archive.searches)) == (1, 1)
    assert await fetch(cached, SERIES_KEYS) == UIDS  # the check is recorded: not due again
    assert (len(archive.retrieves), len(archive.searches)) == (1, 1)
    assert counted(metrics, "fresh") == 1

    clock.now += EVERY
    assert await fetch(cached, SERIES_KEYS) == UIDS
    assert (len(archive.retrieves), len(archive.searches)) == (1, 2)


async def test_an_instance_is_never_checked(
    cached: CachedBackend, archive: Archive, clock: Clock
) -> None:
    await fetch(cached, SERIES_KEYS)
    clock.now += 10 * EVERY
    assert await fetch(cached, RetrieveKeys(STUDY, SERIES, UIDS[2])) == [UIDS[2]]
    assert (len(archive.retrieves), len(archive.searches)) == (1, 0)


async def test_concurrent_requests_share_one_check(
    cached: CachedBackend, archive: Archive, clock: Clock
) -> None:
    await fetch(cached, SERIES_KEYS)
    clock.now += EVERY
    archive.hold = trio.Event()
    results: list[list[str]] = []

    async def one() -> None:
        results.append(await fetch(cached, SERIES_KEYS))

    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(one)
        await archive.searched.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert archive.searching == 1  # the others wait for that check, not for their own
        archive.hold.set()
    assert results == [UIDS] * 10
    assert (len(archive.retrieves), len(archive.searches)) == (1, 1)


@pytest.mark.parametrize("level", [SERIES_KEYS, STUDY_KEYS], ids=["series", "study"])
async def test_instances_added_on_the_pacs_are_retrieved_alone_once_due(
    cached: CachedBackend, archive: Archive, clock: Clock, metrics: Metrics, level: RetrieveKeys
) -> None:
    await fetch(cached, level)
    added = ["1.2.3.4.98", "1.2.3.4.99"]
    for uid in added:
        archive.add(uid)
    assert await fetch(cached, level) == UIDS  # within the interval: as cached
    clock.now += EVERY
    assert await fetch(cached, level) == [*UIDS, *added]
    assert [keys for keys, _ in archive.retrieves] == [
        level,
        *(RetrieveKeys(STUDY, SERIES, uid) for uid in added),  # the series from the C-FIND
    ]
    assert counted(metrics, "changed") == 1
    assert await fetch(cached, level) == [*UIDS, *added]  # cached with them, checked
    assert (len(archive.retrieves), len(archive.searches)) == (3, 1)
    clock.now += EVERY
    assert await fetch(cached, level) == [*UIDS, *added]
    assert (len(archive.retrieves), len(archive.searches)) == (3, 2)
    assert counted(metrics, "fresh") == 1


async def test_many_instances_added_retrieve_the_whole_level_again(
    cached: CachedBackend, archive: Archive, clock: Clock
) -> None:
    await fetch(cached, SERIES_KEYS)
    added = [f"1.2.3.4.{100 + n}" for n in range(MAX_TOP_UP + 1)]
    for uid in added:
        archive.add(uid)
    clock.now += EVERY
    assert await fetch(cached, SERIES_KEYS) == [*UIDS, *added]
    assert [keys for keys, _ in archive.retrieves] == [SERIES_KEYS, SERIES_KEYS]


async def test_an_added_instance_that_cannot_be_retrieved_alone_retrieves_the_level(
    cached: CachedBackend, archive: Archive, clock: Clock
) -> None:
    await fetch(cached, SERIES_KEYS)
    archive.add("1.2.3.4.99")
    archive.fail_instances = True
    clock.now += EVERY
    assert await fetch(cached, SERIES_KEYS) == [*UIDS, "1.2.3.4.99"]
    assert [keys for keys, _ in archive.retrieves] == [
        SERIES_KEYS,
        RetrieveKeys(STUDY, SERIES, "1.2.3.4.99"),
        SERIES_KEYS,
    ]


async def test_an_instance_removed_on_the_pacs_is_gone_once_due(
    cached: CachedBackend, archive: Archive, clock: Clock
) -> None:
    await fetch(cached, STUDY_KEYS)
    archive.remove(UIDS[0])
    clock.now += EVERY
    assert await fetch(cached, STUDY_KEYS) == UIDS[1:]
    assert (len(archive.retrieves), len(archive.searches)) == (2, 1)


async def test_every_request_is_checked_with_zero(
    archive: Archive, store: Store, clock: Clock
) -> None:
    cached = CachedBackend(archive, Cache(store), archive=ARCHIVE, revalidate_seconds=0)
    for n in range(3):
        assert await fetch(cached, SERIES_KEYS) == UIDS
        assert (len(archive.retrieves), len(archive.searches)) == (1, n)


async def test_a_failing_check_serves_the_cache_and_warns_once(
    cached: CachedBackend,
    archive: Archive,
    clock: Clock,
    metrics: Metrics,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await fetch(cached, SERIES_KEYS)
    archive.fail_search_after = 0
    archive.error = lambda: PacsUnreachable("the PACS refused the association")
    clock.now += EVERY
    with caplog.at_level(logging.WARNING, logger="rst.cache.freshness"):
        assert await fetch(cached, SERIES_KEYS) == UIDS
        clock.now += EVERY
        assert await fetch(cached, SERIES_KEYS) == UIDS  # not asked again at once
    assert (len(archive.retrieves), len(archive.searches)) == (1, 1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "cannot revalidate series" in warnings[0]
    assert "refused" in warnings[0]
    assert counted(metrics, "failed") == 1


async def test_a_check_without_answer_gives_up_and_serves_the_cache(
    cached: CachedBackend, archive: Archive, clock: Clock, autojump_clock: trio.testing.MockClock
) -> None:
    await fetch(cached, SERIES_KEYS)
    archive.hold = trio.Event()  # never set: the PACS does not answer
    clock.now += EVERY
    started = trio.current_time()
    assert await fetch(cached, SERIES_KEYS) == UIDS
    assert trio.current_time() - started == pytest.approx(10.0)
    assert (len(archive.retrieves), len(archive.searches)) == (1, 1)


async def test_a_check_made_by_one_process_counts_for_another(
    archive: Archive, store: Store, clock: Clock
) -> None:
    other_store = open_store(store.folder, clock)  # another worker: the same folder
    try:
        one = CachedBackend(archive, Cache(store), archive=ARCHIVE, revalidate_seconds=EVERY)
        other = CachedBackend(
            archive, Cache(other_store), archive=ARCHIVE, revalidate_seconds=EVERY
        )
        await fetch(one, SERIES_KEYS)
        clock.now += EVERY
        assert await fetch(one, SERIES_KEYS) == UIDS
        assert await fetch(other, SERIES_KEYS) == UIDS
        assert (len(archive.retrieves), len(archive.searches)) == (1, 1)
    finally:
        other_store.close()


async def test_a_cache_made_before_revalidation_opens_and_is_checked(
    tmp_path: Path, archive: Archive, clock: Clock
) -> None:
    folder = tmp_path / "old"
    old = open_store(folder, clock)
    old.close()
    with sqlite3.connect(folder / "index.sqlite3") as db:  # as the previous version left it
        db.execute("DROP TABLE validations")
    store = open_store(folder, clock)
    try:
        cached = CachedBackend(archive, Cache(store), archive=ARCHIVE, revalidate_seconds=EVERY)
        await fetch(cached, SERIES_KEYS)
        clock.now += EVERY
        assert await fetch(cached, SERIES_KEYS) == UIDS
        assert await fetch(cached, SERIES_KEYS) == UIDS
        assert (len(archive.retrieves), len(archive.searches)) == (1, 1)
    finally:
        store.close()


def test_a_new_retrieve_of_a_level_drops_its_old_check(store: Store, clock: Clock) -> None:
    store.complete(archive=ARCHIVE, keys=SERIES_KEYS, started=clock.now, sop_uids=UIDS)
    store.validated(archive=ARCHIVE, keys=SERIES_KEYS, stored_at=clock.now, at=clock.now + 50)
    assert store.validation(ARCHIVE, SERIES_KEYS) == (clock.now, clock.now + 50)
    store.complete(archive=ARCHIVE, keys=SERIES_KEYS, started=clock.now + 20, sop_uids=UIDS)
    assert store.validation(ARCHIVE, SERIES_KEYS) == (clock.now + 20, clock.now + 20)
    # a check of the old record, ending after the new retrieve, records nothing
    store.validated(archive=ARCHIVE, keys=SERIES_KEYS, stored_at=clock.now, at=clock.now + 60)
    assert store.validation(ARCHIVE, SERIES_KEYS) == (clock.now + 20, clock.now + 20)
    store.outdated(archive=ARCHIVE, keys=SERIES_KEYS, stored_at=clock.now)  # nor forgets it
    assert store.validation(ARCHIVE, SERIES_KEYS) is not None
    store.outdated(archive=ARCHIVE, keys=SERIES_KEYS, stored_at=clock.now + 20)
    assert store.validation(ARCHIVE, SERIES_KEYS) is None


# -- configuration -----------------------------------------------------------------------------


def test_revalidate_seconds_defaults_to_ten_and_takes_zero_not_less(tmp_path: Path) -> None:
    assert CacheConfig().revalidate_seconds == 10.0
    assert CacheConfig(revalidate_seconds=0).revalidate_seconds == 0.0
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        CacheConfig(revalidate_seconds=-1)


def test_the_served_archives_check_as_configured(tmp_path: Path) -> None:
    (tmp_path / "rst.toml").write_text('[cache]\nrevalidate_seconds = 2.5\n\n[[aets]]\naet = "P"\n')
    config = load_config(tmp_path / "rst.toml", environ={})
    store = open_store(tmp_path / "cache", Clock())
    try:
        served = with_cache(config, {"P": ScriptedBackend(name="P")}, Cache(store))
    finally:
        store.close()
    backend = served["P"]
    assert isinstance(backend, CachedBackend)
    assert backend.freshness is not None
    assert backend.freshness.every == 2.5
