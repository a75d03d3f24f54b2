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
- **Another set** (instances added or removed): the level is forgotten, and the request is a
  miss — it retrieves the level again through the usual single flight.
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
from rst.cache.store import Entry
from rst.dicom.query import QidoQuery
from rst.errors import RstError
from rst.metrics import Metrics
from rst.services.protocols import Backend, RetrieveKeys

__all__ = ["CHECK_TIMEOUT", "RETRY_AFTER", "Change", "Freshness", "compare", "instances_query"]

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 10.0
"""Seconds a revalidation C-FIND may take before the cache is served unchecked."""
RETRY_AFTER = 30.0
"""Seconds after a failed revalidation during which the archive's levels are not checked."""


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
            "cache: %s %s changed on %s (%d instances added, %d removed); retrieving it again",
            keys.level.lower(),
            keys.uid,
            self.inner.name,
            len(change.added),
            len(change.removed),
        )
        await self.cache.outdated(archive=self.archive, keys=keys, stored_at=stored_at)
        return None

    async def _find(self, keys: RetrieveKeys) -> set[str] | None:
        """The SOP Instance UIDs the PACS has under *keys*; ``None`` if it did not say."""
        found: set[str] = set()
        try:
            with trio.fail_after(CHECK_TIMEOUT):
                async with self.inner.search(instances_query(keys)) as matches:
                    async for match in matches:
                        uid = match.get("SOPInstanceUID")
                        if uid:
                            found.add(str(uid))
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
