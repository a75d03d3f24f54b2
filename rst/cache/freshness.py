"""Revalidation: a cached study or series is checked against the PACS before it is served.

A study or series in the cache is the set of instances the PACS sent when it was retrieved.
The PACS may have more since — a modality sent the rest of a series to it, another rst replica
stored into the study — and a retrieve served from the cache would leave them out without
anyone noticing. So a study or series level last *validated* more than ``[cache]
revalidate_seconds`` ago is first compared with what the PACS holds: one C-FIND at IMAGE level
under it, asking only for SOP Instance UIDs (the inner backend's ``search``, as a QIDO-RS
instance search). DIMSE has no "changed since"; that list is the cheapest honest answer.

- **Same set**: the level is fresh; when it was validated is recorded in the index (shared by
  worker processes, so one process's check counts for the others).
- **Instances added, none removed**, at most :data:`MAX_TOP_UP` of them: only those are
  retrieved (one instance-level retrieve each, written to the cache as they arrive), and the
  level is recorded again with them after the cached ones — a modality that adds images to a
  series, or a store through another replica, costs the new instances, not the whole series.
- **Any other change** (more added, any removed), or a top-up that fails: the level is
  forgotten, and the request is a miss — it retrieves the level again through the usual single
  flight.
- **No answer** (the C-FIND fails or takes longer than :data:`CHECK_TIMEOUT`): the cache is
  served as it is and one warning is logged; for :data:`RETRY_AFTER` seconds this archive's
  levels are then served without a check (a PACS that hangs must not make every cached study
  wait for it).

Instances need no check: a SOP Instance UID names one content, so an instance-level request
(frames, instance metadata, rendered) is served from the cache for ``ttl_seconds`` as before.
Concurrent requests for one level share one check because they share one flight
(:mod:`rst.cache.flight`): the check runs inside the lookup of the flight's leader.

The decisions (:func:`is_due`, :func:`compare`) are pure; :class:`Freshness` is the I/O around
them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

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
    "MAX_TOP_UP",
    "RETRY_AFTER",
    "Change",
    "Freshness",
    "compare",
    "instances_query",
]

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 10.0
"""Seconds a revalidation C-FIND may take before the cache is served unchecked."""
RETRY_AFTER = 30.0
"""Seconds after a failed revalidation during which the archive's levels are not checked."""
MAX_TOP_UP = 8
"""Most instances added to a cached level that are retrieved one by one; past it (one
association each) the whole level is retrieved again."""


def is_due(validated_at: float, now: float, every: float) -> bool:
    """Whether a level last validated at *validated_at* must be checked at *now*, when
    levels are checked *every* seconds (0: at every request)."""
    return now - validated_at >= every


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


class Freshness:
    """Revalidation of the levels of one archive (*archive* names it in *cache*, *inner*
    answers its C-FINDs) every *every* seconds. *metrics* counts checks by result."""

    def __init__(
        self,
        inner: Backend,
        cache: Cache,
        *,
        archive: str,
        every: float,
        metrics: Metrics | None = None,
    ) -> None:
        self.inner = inner
        self.cache = cache
        self.archive = archive
        self.every = every
        self.metrics = metrics
        self._quiet_until = float("-inf")
        """trio time until which a failed check keeps this archive's levels unchecked."""

    async def check(self, keys: RetrieveKeys, entries: list[Entry]) -> list[Entry] | None:
        """*entries*, the cached instances of the level *keys*, if they are still what the
        PACS holds (or the PACS could not say); ``None`` if they are not (the level is then
        forgotten: the request retrieves it)."""
        seen = await self.cache.validation(self.archive, keys)
        if seen is None:  # forgotten since it was read, or the index failed: as read
            return entries
        stored_at, validated_at = seen
        started = self.cache.now()
        if not is_due(validated_at, started, self.every):
            return entries
        if trio.current_time() < self._quiet_until:
            log.debug("cache: not revalidating %s %s (a check failed)", keys.level, keys.uid)
            return entries
        found = await self._find(keys)
        if found is None:
            self._count("failed")
            self._quiet_until = trio.current_time() + RETRY_AFTER
            return entries
        change = compare((entry.sop_uid for entry in entries), found)
        if change.fresh:
            self._count("fresh")
            await self.cache.validated(
                archive=self.archive, keys=keys, stored_at=stored_at, at=started
            )
            return entries
        self._count("changed")
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
        await self.cache.validated(archive=self.archive, keys=keys, stored_at=stored_at, at=started)
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

    async def _find(self, keys: RetrieveKeys) -> dict[str, str | None] | None:
        """The SOP Instance UIDs the PACS has under *keys*, each with its series UID if the
        PACS said; ``None`` if it did not answer."""
        found: dict[str, str | None] = {}
        try:
            with trio.fail_after(CHECK_TIMEOUT):
                async with self.inner.search(instances_query(keys)) as matches:
                    async for match in matches:
                        uid = match.get("SOPInstanceUID")
                        if uid:
                            series = match.get("SeriesInstanceUID")
                            found[str(uid)] = str(series) if series else None
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
        return found

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.cache_revalidations.labels(self.inner.name, result).inc()
