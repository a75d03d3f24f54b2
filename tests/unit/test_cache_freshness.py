"""rst.cache.freshness: a cached study or series is checked with the PACS before it is served,
when last checked longer ago than ``revalidate_seconds``: by a C-FIND of its number of
instances, and by a C-FIND of its SOP Instance UIDs when the number differs, is not given, or
the level was last listed longer ago than ``relist_seconds``.

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
from pydicom import DataElement, Dataset

from rst.cache import Cache, CachedBackend, Store, with_cache
from rst.cache.freshness import (
    MAX_TOP_UP,
    NO_COUNT,
    RETRY_AFTER,
    Change,
    compare,
    count_query,
    due_check,
    instances_query,
    is_due,
    read_count,
)
from rst.config import CacheConfig, load_config
from rst.dicom.query import QidoQuery
from rst.errors import NotFound, PacsUnreachable
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
RELIST = 100.0
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


@pytest.mark.parametrize(
    ("validated_at", "listed_at", "now", "relist", "counts", "check"),
    [
        (100.0, 100.0, 105.0, 100.0, True, None),  # not due
        (100.0, 100.0, 110.0, 100.0, True, "count"),
        (100.0, 100.0, 110.0, 100.0, False, "list"),  # the PACS gives no counts
        (190.0, 100.0, 200.0, 100.0, True, "list"),  # last listed a relist interval ago
        (190.0, 100.0, 199.0, 100.0, True, None),  # due to relist, but not to check
        (100.0, 100.0, 110.0, 0.0, True, "list"),  # 0: every check lists
    ],
)
def test_a_due_check_counts_unless_the_pacs_gives_no_counts_or_a_listing_is_due(
    validated_at: float,
    listed_at: float,
    now: float,
    relist: float,
    counts: bool,
    check: str | None,
) -> None:
    assert (
        due_check(
            validated_at=validated_at,
            listed_at=listed_at,
            now=now,
            every=EVERY,
            relist=relist,
            counts=counts,
        )
        == check
    )


def count_match(keys: RetrieveKeys, count: object, **uids: str) -> Dataset:
    """A match of a count C-FIND; *count* as the PACS sent it (``None``: left out), whatever
    it is (a string that is not a number kept as the PACS sent it, as a C-FIND decodes it)."""
    match = Dataset()
    match.StudyInstanceUID = uids.get("study", keys.study_uid)
    if keys.series_uid is not None:
        match.SeriesInstanceUID = uids.get("series", keys.series_uid)
    if count is not None:
        keyword = "NumberOf" + ("Series" if keys.series_uid else "Study") + "RelatedInstances"
        match[keyword] = DataElement(keyword, "LO", str(count))
    return match


@pytest.mark.parametrize("keys", [SERIES_KEYS, STUDY_KEYS], ids=["series", "study"])
def test_a_count_is_read_from_one_match_of_the_level(keys: RetrieveKeys) -> None:
    assert read_count(keys, [count_match(keys, 5)]) == 5
    assert read_count(keys, [count_match(keys, "0")]) == 0
    for absent in (None, "", "five", -1):  # out, empty, not a number, not a count
        assert read_count(keys, [count_match(keys, absent)]) == NO_COUNT
    assert read_count(keys, []) == "no match"  # the level is gone: not "no count"
    assert read_count(keys, [count_match(keys, 5)] * 2) == "2 matches"
    other = count_match(keys, 5, study="9.9", series="9.9.9")
    assert read_count(keys, [other]) not in (5, NO_COUNT)


def test_a_match_without_uids_still_counts() -> None:
    match = Dataset()
    match.NumberOfSeriesRelatedInstances = 3
    assert read_count(SERIES_KEYS, [match]) == 3


def test_the_count_query_asks_the_level_itself_for_its_number_of_instances() -> None:
    series = count_query(SERIES_KEYS)
    assert series.level == "SERIES"
    assert series.identifier.QueryRetrieveLevel == "SERIES"
    assert series.identifier.SeriesInstanceUID == SERIES
    assert series.identifier.NumberOfSeriesRelatedInstances in ("", None)
    assert "NumberOfSeriesRelatedInstances" in series.identifier
    study = count_query(STUDY_KEYS)
    assert study.level == "STUDY"
    assert study.identifier.StudyInstanceUID == STUDY
    assert "NumberOfStudyRelatedInstances" in study.identifier
    assert "SeriesInstanceUID" not in study.identifier
    with pytest.raises(ValueError, match="not revalidated"):
        count_query(RetrieveKeys(STUDY, SERIES, UIDS[0]))


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
    counts: bool = True
    """Count C-FINDs (STUDY, SERIES level) are answered with the number of instances; else
    with the count left empty, as a PACS that does not compute it."""
    miscount: int = 0
    """Added to each count given (a PACS whose counts are wrong)."""
    count_delay: float = 0.0
    """Seconds a count C-FIND takes (a PACS slow to count)."""
    list_hold: trio.Event | None = None
    """Listing C-FINDs wait for it."""
    gone: bool = False
    """Count C-FINDs match nothing (the level deleted from the PACS)."""

    @property
    def asked(self) -> list[str]:
        """The level of every search, in order."""
        return [query.level for query in self.searches]

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
        if query.level == "IMAGE":
            if self.list_hold is not None:
                await self.list_hold.wait()
            async with super().search(query) as found:
                yield found
            return
        if self.fail_search_after is not None:
            raise self.error()
        await trio.sleep(self.count_delay)
        keys = RetrieveKeys(STUDY, SERIES if query.level == "SERIES" else None)
        count = len(self.matches) + self.miscount if self.counts else ""

        async def one() -> AsyncIterator[Dataset]:
            if not self.gone:
                yield count_match(keys, count)

        yield one()

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
        archive,
        Cache(store),
        archive=ARCHIVE,
        metrics=metrics,
        revalidate_seconds=EVERY,
        relist_seconds=RELIST,
    )


async def fetch(backend: CachedBackend, keys: RetrieveKeys) -> list[str]:
    """The SOP Instance UIDs a WADO-RS request gets, each instance read to its end."""
    got = []
    async with backend.retrieve(keys) as instances:
        async for instance in instances:
            await whole(instance)
            got.append(instance.sop_instance_uid)
    return got


def counted(metrics: Metrics, result: str, check: str | None = None) -> float:
    """Checks by result, decided by a count or a listing (*check*) or either."""
    total = 0.0
    for how in ("count", "list") if check is None else (check,):
        value = metrics.registry.get_sample_value(
            "rst_cache_revalidations_total", {"aet": "PACS", "check": how, "result": result}
        )
        total += 0.0 if value is None else value
    return total


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
    assert archive.asked == [level.level, "IMAGE"]  # the count differs: the listing
    assert counted(metrics, "changed", "list") == 1
    assert await fetch(cached, level) == [*UIDS, *added]  # cached with them, checked
    assert len(archive.retrieves) == 3
    clock.now += EVERY
    assert await fetch(cached, level) == [*UIDS, *added]
    assert archive.asked == [level.level, "IMAGE", level.level]  # counted: all there
    assert len(archive.retrieves) == 3
    assert counted(metrics, "fresh", "count") == 1


@pytest.mark.parametrize("level", [SERIES_KEYS, STUDY_KEYS], ids=["series", "study"])
async def test_an_unchanged_count_is_one_c_find_of_the_level_and_no_listing(
    cached: CachedBackend, archive: Archive, clock: Clock, metrics: Metrics, level: RetrieveKeys
) -> None:
    await fetch(cached, level)
    for n in range(1, 4):
        clock.now += EVERY
        assert await fetch(cached, level) == UIDS
        assert archive.asked == [level.level] * n
    assert len(archive.retrieves) == 1
    assert counted(metrics, "fresh", "count") == 3
    assert counted(metrics, "fresh", "list") == 0


async def test_a_pacs_that_gives_no_count_is_listed_and_not_asked_to_count_again(
    cached: CachedBackend,
    archive: Archive,
    clock: Clock,
    metrics: Metrics,
    caplog: pytest.LogCaptureFixture,
) -> None:
    archive.counts = False
    await fetch(cached, SERIES_KEYS)
    clock.now += EVERY
    with caplog.at_level(logging.INFO, logger="rst.cache.freshness"):
        assert await fetch(cached, SERIES_KEYS) == UIDS
    assert archive.asked == ["SERIES", "IMAGE"]
    assert any("NumberOfSeriesRelatedInstances" in r.getMessage() for r in caplog.records)
    archive.add("1.2.3.4.99")
    clock.now += EVERY
    assert await fetch(cached, SERIES_KEYS) == [*UIDS, "1.2.3.4.99"]
    assert archive.asked == ["SERIES", "IMAGE", "IMAGE"]  # straight to the listing
    assert counted(metrics, "fresh", "list") == 1
    assert counted(metrics, "changed", "list") == 1
    assert counted(metrics, "fresh", "count") == 0


async def test_a_pacs_is_remembered_without_counts_per_level(
    cached: CachedBackend, archive: Archive, clock: Clock
) -> None:
    await fetch(cached, SERIES_KEYS)
    await fetch(cached, STUDY_KEYS)
    archive.counts = False
    clock.now += EVERY
    await fetch(cached, SERIES_KEYS)
    assert cached.freshness is not None
    assert cached.freshness.uncounted == {"SERIES"}
    archive.counts = True  # say, a PACS that counts the instances of a study only
    assert await fetch(cached, STUDY_KEYS) == UIDS
    assert archive.asked == ["SERIES", "IMAGE", "STUDY"]


async def test_a_level_the_count_does_not_find_is_listed_and_counts_stay_in_use(
    cached: CachedBackend, archive: Archive, clock: Clock
) -> None:
    await fetch(cached, SERIES_KEYS)
    archive.gone = True  # no match: the series deleted from the PACS (the listing says)
    for uid in UIDS:
        archive.remove(uid)
    clock.now += EVERY
    with pytest.raises(NotFound):
        await fetch(cached, SERIES_KEYS)
    assert archive.asked == ["SERIES", "IMAGE"]
    assert cached.freshness is not None
    assert cached.freshness.uncounted == set()


async def test_a_slow_count_and_listing_share_one_timeout(
    cached: CachedBackend, archive: Archive, clock: Clock, autojump_clock: trio.testing.MockClock
) -> None:
    await fetch(cached, SERIES_KEYS)
    archive.count_delay = 6.0
    archive.miscount = 1  # then the listing, which never answers
    archive.list_hold = trio.Event()
    clock.now += EVERY
    started = trio.current_time()
    assert await fetch(cached, SERIES_KEYS) == UIDS
    assert trio.current_time() - started == pytest.approx(10.0)  # not 6 + 10
    assert archive.asked == ["SERIES", "IMAGE"]
    archive.count_delay = 20.0  # a count alone too slow
    clock.now += EVERY
    autojump_clock.jump(RETRY_AFTER)  # the archive is checked again
    started = trio.current_time()
    assert await fetch(cached, SERIES_KEYS) == UIDS
    assert trio.current_time() - started == pytest.approx(10.0)


async def test_a_count_its_listing_contradicts_is_not_asked_for_again(
    cached: CachedBackend, archive: Archive, clock: Clock
) -> None:
    archive.miscount = 1  # counts something the listing does not show
    await fetch(cached, SERIES_KEYS)
    for _ in range(2):
        clock.now += EVERY
        assert await fetch(cached, SERIES_KEYS) == UIDS
    assert archive.asked == ["SERIES", "IMAGE", "IMAGE"]
    assert len(archive.retrieves) == 1


async def test_a_level_last_listed_a_relist_interval_ago_is_listed_with_an_equal_count(
    cached: CachedBackend, archive: Archive, clock: Clock, metrics: Metrics
) -> None:
    await fetch(cached, SERIES_KEYS)  # the retrieve is a listing
    checks = int(RELIST // EVERY)
    for _ in range(checks - 1):
        clock.now += EVERY
        await fetch(cached, SERIES_KEYS)
    assert archive.asked == ["SERIES"] * (checks - 1)
    clock.now += EVERY  # RELIST since the retrieve
    assert await fetch(cached, SERIES_KEYS) == UIDS
    assert archive.asked[-1] == "IMAGE"
    assert counted(metrics, "fresh", "list") == 1
    clock.now += EVERY  # the listing recorded: counts again
    await fetch(cached, SERIES_KEYS)
    assert archive.asked[-2:] == ["IMAGE", "SERIES"]
    assert len(archive.retrieves) == 1


async def test_an_instance_deleted_and_another_sent_is_missed_until_the_relist(
    cached: CachedBackend, archive: Archive, clock: Clock, metrics: Metrics
) -> None:
    """The blind spot of a count, bounded by relist_seconds: documented in
    docs/discussion/cache.md."""
    await fetch(cached, SERIES_KEYS)
    archive.remove(UIDS[0])
    archive.add("1.2.3.4.99")  # the same number of instances
    swapped = [*UIDS[1:], "1.2.3.4.99"]
    clock.now += EVERY
    assert await fetch(cached, SERIES_KEYS) == UIDS  # counted: unchanged, as cached
    assert archive.asked == ["SERIES"]
    clock.now += RELIST - EVERY  # a relist interval since the retrieve
    assert await fetch(cached, SERIES_KEYS) == swapped
    assert archive.asked == ["SERIES", "IMAGE"]
    assert [keys for keys, _ in archive.retrieves] == [SERIES_KEYS, SERIES_KEYS]  # one removed
    assert counted(metrics, "changed", "list") == 1


async def test_a_failing_count_serves_the_cache(
    cached: CachedBackend, archive: Archive, clock: Clock, metrics: Metrics
) -> None:
    await fetch(cached, SERIES_KEYS)
    archive.fail_search_after = 0
    archive.error = lambda: PacsUnreachable("the PACS refused the association")
    clock.now += EVERY
    assert await fetch(cached, SERIES_KEYS) == UIDS
    assert archive.asked == ["SERIES"]
    assert counted(metrics, "failed", "count") == 1
    assert archive.opened == archive.closed


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
    assert len(archive.retrieves) == 2
    assert archive.asked == ["STUDY", "IMAGE"]


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
        db.execute("DROP TABLE listings")
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
    store.validated(archive=ARCHIVE, keys=SERIES_KEYS, stored_at=clock.now, at=clock.now + 40)
    # a count (not listed): validated, the retrieve the last listing
    assert store.validation(ARCHIVE, SERIES_KEYS) == (clock.now, clock.now + 40, clock.now)
    store.validated(
        archive=ARCHIVE, keys=SERIES_KEYS, stored_at=clock.now, at=clock.now + 50, listed=True
    )
    assert store.validation(ARCHIVE, SERIES_KEYS) == (clock.now, clock.now + 50, clock.now + 50)
    store.complete(archive=ARCHIVE, keys=SERIES_KEYS, started=clock.now + 20, sop_uids=UIDS)
    new = clock.now + 20
    assert store.validation(ARCHIVE, SERIES_KEYS) == (new, new, new)
    # a check of the old record, ending after the new retrieve, records nothing
    store.validated(
        archive=ARCHIVE, keys=SERIES_KEYS, stored_at=clock.now, at=clock.now + 60, listed=True
    )
    assert store.validation(ARCHIVE, SERIES_KEYS) == (new, new, new)
    store.outdated(archive=ARCHIVE, keys=SERIES_KEYS, stored_at=clock.now)  # nor forgets it
    assert store.validation(ARCHIVE, SERIES_KEYS) is not None
    store.outdated(archive=ARCHIVE, keys=SERIES_KEYS, stored_at=clock.now + 20)
    assert store.validation(ARCHIVE, SERIES_KEYS) is None


def test_a_listing_of_an_older_record_of_a_level_does_not_count(store: Store, clock: Clock) -> None:
    """As an older rst (which knows no listings) would leave it: a row for a record it replaced."""
    store.complete(archive=ARCHIVE, keys=SERIES_KEYS, started=clock.now, sop_uids=UIDS)
    with sqlite3.connect(store.folder / "index.sqlite3") as db:
        db.execute(
            "INSERT INTO listings VALUES (?, 'SERIES', ?, ?, ?)",
            (ARCHIVE, SERIES, clock.now - 100, clock.now + 500),
        )
    assert store.validation(ARCHIVE, SERIES_KEYS) == (clock.now, clock.now, clock.now)
    store.validated(
        archive=ARCHIVE, keys=SERIES_KEYS, stored_at=clock.now, at=clock.now + 5, listed=True
    )
    assert store.validation(ARCHIVE, SERIES_KEYS) == (clock.now, clock.now + 5, clock.now + 5)


# -- configuration -----------------------------------------------------------------------------


def test_revalidate_seconds_defaults_to_ten_and_takes_zero_not_less(tmp_path: Path) -> None:
    assert CacheConfig().revalidate_seconds == 10.0
    assert CacheConfig(revalidate_seconds=0).revalidate_seconds == 0.0
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        CacheConfig(revalidate_seconds=-1)


def test_relist_seconds_defaults_to_five_minutes_and_takes_zero_not_less() -> None:
    assert CacheConfig().relist_seconds == 300.0
    assert CacheConfig(relist_seconds=0).relist_seconds == 0.0
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        CacheConfig(relist_seconds=-1)


def test_the_served_archives_check_as_configured(tmp_path: Path) -> None:
    (tmp_path / "rst.toml").write_text(
        '[cache]\nrevalidate_seconds = 2.5\nrelist_seconds = 60\n\n[[aets]]\naet = "P"\n'
    )
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
    assert backend.freshness.relist == 60.0
