"""Revalidation: a cached study or series is checked against the PACS before it is served.

A study or series in the cache is the set of instances the PACS sent when it was retrieved.
The PACS may have more since — a modality sent the rest of a series to it, another rst replica
stored into the study — and a retrieve served from the cache would leave them out without
anyone noticing. So a study or series level last *validated* more than ``[cache]
revalidate_seconds`` ago is first compared with what the PACS holds. DIMSE has no "changed
since"; rst asks in two steps, the cheap one first:

1. **Count** (:func:`count_query`): one C-FIND at the level's own level (SERIES or STUDY) for
   its Number of Series/Study Related Instances — one match, counted by the PACS. The same
   number as the instances cached: the level is fresh. A different number, or none (the PACS
   left it empty or out, or answered no single match of the level): step 2.
2. **List** (:func:`instances_query`): one C-FIND at IMAGE level under the level, asking only
   for SOP Instance UIDs (the inner backend's ``search``, as a QIDO-RS instance search) —
   one match per instance, each decoded: for a 200-instance series from Orthanc, about ten
   times the count's cost (docs/discussion/cache.md), and growing with the series.

A count cannot see an instance deleted and another sent in its place (a QC "delete and
re-send"): the same number. So a level last *listed* (its retrieve counts as a listing) more
than ``[cache] relist_seconds`` ago is listed even when its count is due; that bounds how long
such a swap is missed. A PACS that answers a count C-FIND without the count, or whose count
disagrees with its own listing, is remembered (per archive and level, in memory, per process)
as not giving counts: its levels are listed from then on, without a count C-FIND first.
:func:`due_check` decides which check, if any; :func:`read_count` reads the count's answer.

What the listing finds:

- **Same set**: the level is fresh; when it was validated (and listed) is recorded in the
  index (shared by worker processes, so one process's check counts for the others).
- **Instances added, none removed**, at most :data:`MAX_TOP_UP` of them: only those are
  retrieved (one instance-level retrieve each, written to the cache as they arrive), and the
  level is recorded again with them after the cached ones — a modality that adds images to a
  series, or a store through another replica, costs the new instances, not the whole series.
- **Any other change** (more added, any removed), or a top-up that fails: the level is
  forgotten, and the request is a miss — it retrieves the level again through the usual single
  flight.
- **No answer** (either C-FIND fails, or the check takes longer than :data:`CHECK_TIMEOUT`):
  the cache is served as it is and one warning is logged; for :data:`RETRY_AFTER` seconds this
  archive's levels are then served without a check (a PACS that hangs must not make every
  cached study wait for it).

Instances need no check: a SOP Instance UID names one content, so an instance-level request
(frames, instance metadata, rendered) is served from the cache for ``ttl_seconds`` as before.
Concurrent requests for one level share one check because they share one flight
(:mod:`rst.cache.flight`): the check runs inside the lookup of the flight's leader.

The decisions (:func:`is_due`, :func:`due_check`, :func:`read_count`, :func:`compare`) are
pure; :class:`Freshness` is the I/O around them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import trio
from pydicom import Dataset

from rst.cache.cache import Cache
from rst.cache.files import Recording
from rst.cache.store import Entry
from rst.dicom.query import QidoQuery
from rst.errors import RstError
from rst.metrics import Metrics
from rst.services.protocols import Backend, Instance, RetrieveKeys

__all__ = [
    "CHECK_TIMEOUT",
    "COUNT_KEYS",
    "MAX_TOP_UP",
    "NO_COUNT",
    "RETRY_AFTER",
    "Change",
    "Check",
    "Freshness",
    "compare",
    "count_query",
    "due_check",
    "instances_query",
    "read_count",
]

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 10.0
"""Seconds a revalidation (its count and listing C-FINDs together) may take before the cache
is served unchecked."""
RETRY_AFTER = 30.0
"""Seconds after a failed revalidation during which the archive's levels are not checked."""
MAX_TOP_UP = 8
"""Most instances added to a cached level that are retrieved one by one; past it (one
association each) the whole level is retrieved again."""
COUNT_KEYS = {
    "STUDY": "NumberOfStudyRelatedInstances",
    "SERIES": "NumberOfSeriesRelatedInstances",
}
"""The attribute a PACS counts the instances of a level in (PS3.4 C.3.4, optional keys)."""
NO_COUNT = "no count"
""":func:`read_count`'s reason when the PACS answered the level but did not count it."""

Check = Literal["count", "list"]
"""How a level is checked: by a count of its instances, or by a list of them."""


def is_due(validated_at: float, now: float, every: float) -> bool:
    """Whether a level last validated at *validated_at* must be checked at *now*, when
    levels are checked *every* seconds (0: at every request)."""
    return now - validated_at >= every


def due_check(
    *,
    validated_at: float,
    listed_at: float,
    now: float,
    every: float,
    relist: float,
    counts: bool,
) -> Check | None:
    """Which check a level last validated at *validated_at* and last listed at *listed_at*
    needs at *now* (``None``: none yet), when levels are checked *every* seconds and listed
    at least every *relist* seconds (0: always), and *counts* is whether the PACS is known
    to count instances (not known not to)."""
    if not is_due(validated_at, now, every):
        return None
    if not counts or is_due(listed_at, now, relist):
        return "list"
    return "count"


def read_count(keys: RetrieveKeys, matches: Sequence[Dataset]) -> int | str:
    """The number of instances the PACS counted under the level *keys* in its *matches* to
    :func:`count_query`, or why they hold none: :data:`NO_COUNT` when it answered the level
    (one match) without a count — left empty or out, or not a number — as a PACS that does not
    compute it does; another reason when the answer is not the level's (none, several, another
    UID: the level may be gone from the PACS)."""
    if len(matches) != 1:
        return "no match" if not matches else f"{len(matches)} matches"
    match = matches[0]
    for name, uid in (("StudyInstanceUID", keys.study_uid), ("SeriesInstanceUID", keys.series_uid)):
        said = match.get(name)
        if uid is not None and said and str(said) != uid:
            return f"a match of another {name}"
    value = match.get(COUNT_KEYS[keys.level])
    if value is None or value == "":
        return NO_COUNT
    try:
        number = int(value)
    except (TypeError, ValueError):
        return NO_COUNT
    return number if number >= 0 else NO_COUNT


@dataclass(frozen=True, slots=True)
class Change:
    """How the PACS's instances of a level differ from the cache's."""

    added: frozenset[str]
    removed: frozenset[str]

    @property
    def fresh(self) -> bool:
        return not self.added and not self.removed

    @property
    def top_up(self) -> bool:
        """Whether retrieving only the added instances brings the level up to date."""
        return not self.removed and 0 < len(self.added) <= MAX_TOP_UP


def compare(cached: Iterable[str], found: Iterable[str]) -> Change:
    """The difference between the SOP Instance UIDs *cached* and those the PACS *found*
    (order and repeats do not matter: a C-FIND's order is the PACS's own)."""
    have, now = frozenset(cached), frozenset(found)
    return Change(added=now - have, removed=have - now)


def instances_query(keys: RetrieveKeys) -> QidoQuery:
    """The C-FIND of the SOP Instance UIDs of the study or series *keys*."""
    if keys.sop_uid is not None:
        raise ValueError("an instance is not revalidated")
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "IMAGE"
    identifier.StudyInstanceUID = keys.study_uid
    identifier.SeriesInstanceUID = keys.series_uid or ""
    identifier.SOPInstanceUID = ""
    return QidoQuery(
        level="IMAGE",
        identifier=identifier,
        limit=None,
        offset=0,
        fuzzymatching=False,
        include_all=False,
    )


def count_query(keys: RetrieveKeys) -> QidoQuery:
    """The C-FIND of the number of instances of the study or series *keys*."""
    if keys.sop_uid is not None:
        raise ValueError("an instance is not revalidated")
    identifier = Dataset()
    identifier.QueryRetrieveLevel = keys.level
    identifier.StudyInstanceUID = keys.study_uid
    if keys.series_uid is not None:
        identifier.SeriesInstanceUID = keys.series_uid
    setattr(identifier, COUNT_KEYS[keys.level], "")
    return QidoQuery(
        level=keys.level,
        identifier=identifier,
        limit=None,
        offset=0,
        fuzzymatching=False,
        include_all=False,
    )


class Freshness:
    """Revalidation of the levels of one archive (*archive* names it in *cache*, *inner*
    answers its C-FINDs) every *every* seconds, by a list of their instances at least every
    *relist* seconds (0: at every check). *metrics* counts checks by the C-FIND that decided
    and result."""

    def __init__(
        self,
        inner: Backend,
        cache: Cache,
        *,
        archive: str,
        every: float,
        relist: float = 0.0,
        metrics: Metrics | None = None,
    ) -> None:
        self.inner = inner
        self.cache = cache
        self.archive = archive
        self.every = every
        self.relist = relist
        self.metrics = metrics
        self.uncounted: set[str] = set()
        """The levels (STUDY, SERIES) this archive does not count instances of: checked by a
        listing at once."""
        self._quiet_until = float("-inf")
        """trio time until which a failed check keeps this archive's levels unchecked."""

    async def check(self, keys: RetrieveKeys, entries: list[Entry]) -> list[Entry] | None:
        """*entries*, the cached instances of the level *keys*, if they are still what the
        PACS holds (or the PACS could not say); ``None`` if they are not (the level is then
        forgotten: the request retrieves it)."""
        seen = await self.cache.validation(self.archive, keys)
        if seen is None:  # forgotten since it was read, or the index failed: as read
            return entries
        stored_at, validated_at, listed_at = seen
        started = self.cache.now()
        how = due_check(
            validated_at=validated_at,
            listed_at=listed_at,
            now=started,
            every=self.every,
            relist=self.relist,
            counts=keys.level not in self.uncounted,
        )
        if how is None:
            return entries
        if trio.current_time() < self._quiet_until:
            log.debug("cache: not revalidating %s %s (a check failed)", keys.level, keys.uid)
            return entries
        counted: int | str | None = None
        deadline = trio.current_time() + CHECK_TIMEOUT
        if how == "count":
            counted = await self._count_instances(keys, deadline)
            if counted is None:
                return self._failed("count", entries)
            if counted == len({entry.sop_uid for entry in entries}):
                self._count("count", "fresh")
                await self.cache.validated(
                    archive=self.archive, keys=keys, stored_at=stored_at, at=started
                )
                return entries
            if counted == NO_COUNT:
                self._uncount(keys, "not given")
        found = await self._find(keys, deadline)
        if found is None:
            return self._failed("list", entries)
        change = compare((entry.sop_uid for entry in entries), found)
        if change.fresh:
            if isinstance(counted, int):  # a count that its own listing contradicts
                self._uncount(keys, f"{counted} counted, {len(found)} listed")
            self._count("list", "fresh")
            await self.cache.validated(
                archive=self.archive, keys=keys, stored_at=stored_at, at=started, listed=True
            )
            return entries
        self._count("list", "changed")
        log.info(
            "cache: %s %s changed on %s (%d instances added, %d removed); retrieving %s",
            keys.level.lower(),
            keys.uid,
            self.inner.name,
            len(change.added),
            len(change.removed),
            "the added ones" if change.top_up else "it again",
        )
        if change.top_up:
            added = [(uid, found[uid]) for uid in sorted(change.added)]
            topped = await self._top_up(keys, entries, added, stored_at, started)
            if topped is not None:
                return topped
        await self.cache.outdated(archive=self.archive, keys=keys, stored_at=stored_at)
        return None

    def _failed(self, how: Check, entries: list[Entry]) -> list[Entry]:
        """*entries*, served unchecked: the PACS did not answer the *how* C-FIND (warned)."""
        self._count(how, "failed")
        self._quiet_until = trio.current_time() + RETRY_AFTER
        return entries

    def _uncount(self, keys: RetrieveKeys, why: str) -> None:
        """Remember that the archive's counts of *keys*' level are not to be had or trusted."""
        self.uncounted.add(keys.level)
        log.info(
            "cache: %s's %s cannot be used (%s, for %s %s); its %s are checked by a list of "
            "their instances from now on",
            self.inner.name,
            COUNT_KEYS[keys.level],
            why,
            keys.level.lower(),
            keys.uid,
            "studies" if keys.level == "STUDY" else "series",
        )

    async def _top_up(
        self,
        keys: RetrieveKeys,
        entries: list[Entry],
        added: list[tuple[str, str | None]],
        stored_at: float,
        started: float,
    ) -> list[Entry] | None:
        """*entries* and the *added* instances (SOP Instance UID, series UID if the C-FIND
        said), each from the cache or else retrieved and cached; the level recorded so.
        ``None`` if any of them could not be had (the whole level is then retrieved)."""
        more = []
        for sop_uid, series_uid in added:
            series = keys.series_uid or series_uid
            if not series:
                return None
            one = RetrieveKeys(keys.study_uid, series, sop_uid)
            entry = await self.cache.instance(self.archive, one) or await self._retrieve(one)
            if entry is None:
                return None
            more.append(entry)
        whole = [*entries, *more]
        await self.cache.complete(
            archive=self.archive,
            keys=keys,
            started=stored_at,
            sop_uids=[entry.sop_uid for entry in whole],
        )
        await self.cache.validated(
            archive=self.archive, keys=keys, stored_at=stored_at, at=started, listed=True
        )
        return whole

    async def _retrieve(self, keys: RetrieveKeys) -> Entry | None:
        """Retrieve the one instance *keys* from the archive into the cache; its entry, or
        ``None`` if it could not be retrieved (logged) or cached."""
        entry = None
        try:
            async with self.inner.retrieve(keys) as instances:
                async for instance in instances:
                    if instance.sop_instance_uid != keys.sop_uid or entry is not None:
                        return None
                    entry = await self._write(keys, instance)
                    if entry is None:
                        return None
        except RstError as exc:
            log.info("cache: cannot retrieve instance %s alone (%s)", keys.sop_uid, exc)
            return None
        return entry

    async def _write(self, keys: RetrieveKeys, instance: Instance) -> Entry | None:
        """Cache *instance*, its ``rest`` read to its end as it arrives (never all of it in
        memory); its entry, or ``None`` if it could not be cached."""
        recording = Recording(
            self.cache, await self.cache.begin(instance.data), self.archive, keys, instance
        )
        try:
            if instance.rest is not None:
                async for chunk in instance.rest:
                    await recording.append(chunk)
            return await recording.finish()
        finally:
            recording.discard()  # unless finished

    async def _count_instances(self, keys: RetrieveKeys, deadline: float) -> int | str | None:
        """The number of instances the PACS counts under *keys*, or why it gave none
        (:func:`read_count`); ``None`` if it did not answer by *deadline*."""
        matches = await self._ask(keys, count_query(keys), deadline)
        return None if matches is None else read_count(keys, matches)

    async def _find(self, keys: RetrieveKeys, deadline: float) -> dict[str, str | None] | None:
        """The SOP Instance UIDs the PACS has under *keys*, each with its series UID if the
        PACS said; ``None`` if it did not answer by *deadline*."""
        matches = await self._ask(keys, instances_query(keys), deadline)
        if matches is None:
            return None
        found: dict[str, str | None] = {}
        for match in matches:
            uid = match.get("SOPInstanceUID")
            if uid:
                series = match.get("SeriesInstanceUID")
                found[str(uid)] = str(series) if series else None
        return found

    async def _ask(
        self, keys: RetrieveKeys, query: QidoQuery, deadline: float
    ) -> list[Dataset] | None:
        """The matches of the C-FIND *query* about the level *keys*; ``None`` (warned) if the
        PACS did not answer it by *deadline* (trio time)."""
        try:
            with trio.fail_at(deadline):
                async with self.inner.search(query) as matches:
                    return [match async for match in matches]
        except (RstError, OSError, trio.TooSlowError) as exc:
            what = "no answer" if isinstance(exc, trio.TooSlowError) else exc
            log.warning(
                "cache: cannot revalidate %s %s with %s (%s); serving it from the cache as it "
                "is, without checks for %.0f s",
                keys.level.lower(),
                keys.uid,
                self.inner.name,
                what,
                RETRY_AFTER,
            )
            return None

    def _count(self, how: Check, result: str) -> None:
        if self.metrics is not None:
            self.metrics.cache_revalidations.labels(self.inner.name, how, result).inc()
