"""A :class:`~rst.services.protocols.Backend` with the retrieve cache in front of it.

Every service that retrieves (instances, metadata, frames, bulk data, rendered) goes through
``backend.retrieve``; wrapping the DIMSE backend here gives them all the cache without their
knowing. A retrieve is served, in this order:

1. by following a flight of the same study, series or instance already under way in this
   process (:mod:`rst.cache.flight`): the instances are read from the cache files as they
   arrive;
2. from the cache, if it holds the whole level fresh — a study or series still what the PACS
   holds (:mod:`rst.cache.freshness`); for an instance, also when it is on its way in a flight
   of its series or study (the request waits for that instance only);
3. from the cache once another process has retrieved it: while another worker retrieves the
   same level (or, for an instance, its series or study), the request waits for it
   (:mod:`rst.cache.locks`; an instance as soon as that worker has cached it);
4. from the archive, leading a new flight, holding the level's lock: each instance passes
   through to this request as it arrives (a large one fragment by fragment) and is written
   to the cache on the way.

A follower whose flight is abandoned (its leader went away), or which meets an instance that
could not be cached, falls back to a retrieve of its own, skipping the instances it has already
sent; after :data:`MAX_ATTEMPTS` it retrieves from the archive without looking anywhere else.
Searches and stores go to the archive; a store forgets what the cache knows of the instance's
study and series (they have changed).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager, nullcontext
from dataclasses import replace
from functools import partial

import trio
from pydicom import Dataset

from rst.cache.cache import Cache
from rst.cache.files import (
    FileChunks,
    PendingSidecars,
    Recording,
    Tee,
    Writer,
    batch,
    read_entries,
)
from rst.cache.flight import Arrival, Flight, Flights, State
from rst.cache.freshness import Freshness
from rst.cache.locks import Held
from rst.cache.store import Entry, Store
from rst.config import AeConfig, Config
from rst.dicom.part10 import Upload
from rst.dicom.query import QidoQuery
from rst.errors import RstError
from rst.groups import collapse
from rst.metrics import Metrics
from rst.services.protocols import Backend, Instance, RetrieveKeys, StoreResult, StoreSession

__all__ = ["MAX_ATTEMPTS", "CachedBackend", "archive_key", "with_cache"]

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
"""Sources a retrieve tries (flights, the cache) before it goes to the archive regardless."""
READ_RUN = 64
"""Arrivals looked at for one batch of reads (see :func:`~rst.cache.files.batch`)."""
LOCK_POLL = 0.05
"""Seconds between two looks while another process retrieves what a request needs (a lock
held elsewhere cannot be waited for on trio's thread: see :mod:`rst.cache.locks`)."""


class _FallBack(Exception):
    """A follower cannot be served by its flight any more; it retrieves on its own."""


class CachedBackend:
    """*inner* with the retrieve cache in front; *archive* names it in the cache. *metrics*
    counts where each retrieve was served from (hit, joined, miss). A study or series served
    from the cache is first checked with the PACS when last checked more than
    *revalidate_seconds* ago, by a list of its instances if last listed more than
    *relist_seconds* ago (0: always; :mod:`rst.cache.freshness`); ``None``: never."""

    def __init__(
        self,
        inner: Backend,
        cache: Cache,
        *,
        archive: str,
        metrics: Metrics | None = None,
        revalidate_seconds: float | None = None,
        relist_seconds: float = 0.0,
    ) -> None:
        self.inner = inner
        self.cache = cache
        self.archive = archive
        self.name = inner.name
        self.flights = Flights()
        self.metrics = metrics
        self.freshness = (
            None
            if revalidate_seconds is None
            else Freshness(
                inner,
                cache,
                archive=archive,
                every=revalidate_seconds,
                relist=relist_seconds,
                metrics=metrics,
            )
        )

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.cache_lookups.labels(self.name, result).inc()

    async def echo(self) -> None:
        await self.inner.echo()

    def search(self, query: QidoQuery) -> AbstractAsyncContextManager[AsyncIterator[Dataset]]:
        return self.inner.search(query)

    def store(self) -> AbstractAsyncContextManager[StoreSession]:
        return self._store()

    def retrieve(
        self, keys: RetrieveKeys, prefer: str | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[Instance]]:
        """The instances of *keys*: as the inner backend's ``retrieve``, with the cache.

        *prefer* reaches the archive only when this request retrieves from it; cached
        instances are served in the transfer syntax they arrived in (the services convert)."""
        return self._retrieve(keys, prefer)

    # -- retrieve ------------------------------------------------------------------------------

    @asynccontextmanager
    async def _retrieve(
        self, keys: RetrieveKeys, prefer: str | None
    ) -> AsyncIterator[AsyncIterator[Instance]]:
        """The nursery holds this request's cache writer, if it leads a flight."""
        with collapse():
            async with trio.open_nursery() as nursery:
                try:
                    async with aclosing(self._instances(keys, prefer, nursery)) as instances:
                        yield instances
                finally:
                    if nursery.child_tasks:  # a writer still running; else nothing to stop
                        nursery.cancel_scope.cancel()

    async def _instances(
        self, keys: RetrieveKeys, prefer: str | None, nursery: trio.Nursery
    ) -> AsyncGenerator[Instance]:
        delivered: set[str] = set()
        """SOP Instance UIDs this request has sent: a fallback skips them."""
        followed: list[Flight] = []
        for attempt in range(MAX_ATTEMPTS):
            last = attempt == MAX_ATTEMPTS - 1
            flight = None if last else self.flights.get(keys)
            if flight is not None and flight not in followed:
                followed.append(flight)
                self._count("joined")
                source = self._follow(flight, delivered)
            else:  # a flight that failed this request once is not joined again
                source = self._lead(keys, prefer, delivered, nursery, look=not last)
            try:
                async with aclosing(source) as instances:
                    async for instance in instances:
                        yield instance
                return
            except _FallBack as reason:
                log.info(
                    "cache: %s; retrieving %s %s again (%d instances sent)",
                    reason,
                    keys.level.lower(),
                    keys.uid,
                    len(delivered),
                )
        raise AssertionError("the last attempt retrieves from the archive, which never falls back")

    async def _follow(self, flight: Flight, delivered: set[str]) -> AsyncGenerator[Instance]:
        """The instances of *flight*, read from the cache as they arrive; then its end."""
        seen = 0
        current: Instance | None = None
        try:
            while True:
                while seen < len(flight.arrivals):
                    arrival = flight.arrivals[seen]
                    if arrival.sop_uid in delivered:
                        seen += 1
                        continue
                    if arrival.entry is None:
                        raise _FallBack(f"instance {arrival.sop_uid} could not be cached")
                    entries = []
                    for later in itertools.islice(flight.arrivals, seen, seen + READ_RUN):
                        if later.entry is None or later.sop_uid in delivered:
                            break
                        entries.append(later.entry)
                    instances, gone = await read_entries(
                        entries[: batch(entries)], self.cache.store
                    )
                    for current in instances:
                        seen += 1
                        if current.sop_instance_uid not in delivered:
                            delivered.add(current.sop_instance_uid)
                            yield current
                        _close(current)
                    current = None
                    if gone is not None:
                        self.cache.forget(self.archive, entries[len(instances)])
                        raise _FallBack(f"a cached instance is gone ({gone})")
                if flight.state is State.DONE:
                    return
                if flight.state is State.FAILED:
                    raise flight.error()
                if flight.state is State.ABANDONED:
                    raise _FallBack("the retrieve this request waited on was cancelled")
                await flight.changed()
        finally:
            if current is not None:
                _close(current)

    async def _lead(
        self,
        keys: RetrieveKeys,
        prefer: str | None,
        delivered: set[str],
        nursery: trio.Nursery,
        *,
        look: bool,
    ) -> AsyncGenerator[Instance]:
        """Start a flight (joinable unless another one of *keys* is): from the cache if *look*
        finds it there, else from the archive."""
        flight = Flight(keys, self.cache.now())
        joinable = self.flights.get(keys) is None
        held: Held | None = None
        with self.flights.flying(flight) if joinable else nullcontext(flight):
            try:
                found = await self._cached(keys) if look else None
                if found is None and look:
                    try:
                        found, held, waited = await self._claim(flight)
                    finally:
                        flight.elsewhere = False
                    self._count("joined" if waited and found is not None else "miss")
                else:
                    self._count("miss" if found is None else "hit")
                if found is not None:
                    for entry in found:
                        flight.arrive(Arrival(entry.sop_uid, entry))
                    flight.succeed()
                    source = self._follow(flight, delivered)
                else:
                    source = self._from_archive(flight, prefer, delivered, nursery)
                async with aclosing(source) as instances:
                    async for instance in instances:
                        yield instance
            finally:
                flight.abandon()  # unless it has ended already
                if held is not None:
                    held.release()

    async def _cached(self, keys: RetrieveKeys) -> list[Entry] | None:
        """The whole of *keys* from the cache (a level still what the PACS holds), or from
        a flight of its series or study."""
        if keys.sop_uid is None:
            found = await self.cache.level(self.archive, keys)
            if found is None or self.freshness is None:
                return found
            return await self.freshness.check(keys, found)
        covering = self.flights.covering(keys)
        arrival = None if covering is None else covering.arrival(keys.sop_uid)
        if arrival is not None and arrival.entry is not None:
            return [arrival.entry]
        entry = await self.cache.instance(self.archive, keys)
        covering = self.flights.covering(keys)
        if entry is None and covering is not None and not covering.elsewhere:
            entry = await covering.wait_for(keys.sop_uid)
        return None if entry is None else [entry]

    async def _claim(self, flight: Flight) -> tuple[list[Entry] | None, Held | None, bool]:
        """Single flight across processes (:mod:`rst.cache.locks`): the lock of *keys*, held
        for this request to retrieve them from the archive — or, while another process
        retrieves them (or, for an instance, its series or study), a wait for it to end and
        what it cached (meanwhile *flight* is marked as waiting elsewhere). The third value:
        whether this request waited."""
        keys = flight.keys
        waited = False
        while True:
            if keys.sop_uid is not None:
                entry = await self._while_covered(keys)
                if entry is not None:
                    return [entry], None, True
            held = await self.cache.hold(self.archive, keys)
            if held is not None:
                found = await self._look(keys)  # cached by another process just before?
                if found is None:
                    return None, held, waited
                held.release()
                return found, None, waited
            if not waited:
                log.info(
                    "cache: another process is retrieving %s %s; waiting for it",
                    keys.level.lower(),
                    keys.uid,
                )
            waited = flight.elsewhere = True
            while await self.cache.held_elsewhere(self.archive, keys):
                if (
                    keys.sop_uid is not None
                    and (entry := await self.cache.instance(self.archive, keys)) is not None
                ):
                    return [entry], None, True
                await trio.sleep(LOCK_POLL)
            found = await self._look(keys)
            if found is not None:
                return found, None, True

    async def _while_covered(self, keys: RetrieveKeys) -> Entry | None:
        """For an instance whose series or study another process is retrieving: its entry as
        soon as that process has cached it; ``None`` once no such retrieve runs."""
        covers = [RetrieveKeys(keys.study_uid)]
        if keys.series_uid is not None:
            covers.insert(0, RetrieveKeys(keys.study_uid, keys.series_uid))
        for cover in covers:
            logged = False
            while await self.cache.held_elsewhere(self.archive, cover):
                if not logged:
                    log.info(
                        "cache: another process is retrieving %s %s; waiting for instance %s",
                        cover.level.lower(),
                        cover.uid,
                        keys.sop_uid,
                    )
                    logged = True
                entry = await self.cache.instance(self.archive, keys)
                if entry is not None:
                    return entry
                await trio.sleep(LOCK_POLL)
            if logged and (entry := await self.cache.instance(self.archive, keys)) is not None:
                return entry
        return None

    async def _look(self, keys: RetrieveKeys) -> list[Entry] | None:
        """The whole of *keys* from the cache alone."""
        if keys.sop_uid is None:
            return await self.cache.level(self.archive, keys)
        entry = await self.cache.instance(self.archive, keys)
        return None if entry is None else [entry]

    async def _from_archive(
        self, flight: Flight, prefer: str | None, delivered: set[str], nursery: trio.Nursery
    ) -> AsyncGenerator[Instance]:
        """The archive's instances, each written to the cache as it passes and announced to
        *flight*; the level recorded as whole once the archive has sent all of it."""
        keys = flight.keys
        writer = Writer(
            self.cache, archive=self.archive, keys=keys, written=partial(_arrive, flight)
        )
        nursery.start_soon(writer.run)
        tee: Tee | None = None
        try:
            async with self.inner.retrieve(keys, prefer) as instances:
                while True:
                    try:
                        instance = await anext(instances)
                    except StopAsyncIteration:
                        break
                    except RstError as error:
                        await writer.flush()  # followers get what arrived before, too
                        flight.fail(error)
                        raise
                    uid = instance.sop_instance_uid
                    wanted = uid not in delivered
                    delivered.add(uid)
                    sidecars = PendingSidecars()  # settled once the instance is cached
                    instance = replace(instance, sidecars=sidecars)
                    if instance.rest is None:
                        await writer.put(instance)
                        if wanted:
                            yield instance
                        continue
                    await writer.flush()  # the flight's instances arrive in the archive's order
                    pending = await self.cache.begin(instance.data)
                    tee = Tee(
                        instance.rest,
                        Recording(self.cache, pending, self.archive, keys, instance),
                        on_end=partial(_recorded, flight, uid, sidecars, self.cache.store),
                        on_error=flight.fail,
                    )
                    if wanted:
                        yield replace(instance, rest=tee)
                    await tee.drain()  # normally read to its end by the consumer already
                    tee = None
            await writer.flush()
            whole = all(arrival.entry is not None for arrival in flight.arrivals)
            if keys.level != "IMAGE" and flight.arrivals and whole:
                await self.cache.complete(
                    archive=self.archive,
                    keys=keys,
                    started=flight.started,
                    sop_uids=[arrival.sop_uid for arrival in flight.arrivals],
                )
            flight.succeed()
        finally:
            writer.close()
            if tee is not None:
                tee.close()

    # -- store ---------------------------------------------------------------------------------

    @asynccontextmanager
    async def _store(self) -> AsyncIterator[StoreSession]:
        async with self.inner.store() as session:
            yield _Forgetting(session, self)


class _Forgetting:
    """A store session that makes the cache forget the study and series it changes."""

    def __init__(self, session: StoreSession, backend: CachedBackend) -> None:
        self._session = session
        self._backend = backend

    async def store(self, upload: Upload) -> StoreResult:
        try:
            return await self._session.store(upload)
        finally:
            await self._backend.cache.invalidate(
                archive=self._backend.archive,
                study_uid=upload.study_uid,
                series_uid=upload.series_uid,
                sop_uid=upload.sop_instance_uid,
            )


def _arrive(flight: Flight, sop_uid: str, entry: Entry | None) -> None:
    flight.arrive(Arrival(sop_uid, entry))


def _recorded(
    flight: Flight, sop_uid: str, sidecars: PendingSidecars, store: Store, entry: Entry | None
) -> None:
    """A streamed instance has its entry. Its consumer has had only its beginning so far and
    has saved no sidecar yet: settling writes nothing (no blocking on the trio thread)."""
    sidecars.settle(entry, store)
    _arrive(flight, sop_uid, entry)


def _close(instance: Instance) -> None:
    """Close the file behind a cached instance whose consumer stopped reading it early."""
    if isinstance(instance.rest, FileChunks):
        instance.rest.close()


def archive_key(ae: AeConfig) -> str:
    """What names a PACS in the cache: the route, the AE title rst calls and the address. An AE
    title moved to another PACS does not inherit the old one's instances, and two routes never
    share any, even to one PACS: each may call it with its own calling AE title, to which the
    PACS may show other studies."""
    called = "" if ae.called_aet == ae.aet else f"/{ae.called_aet}"
    return f"{ae.aet}{called}@{ae.host}:{ae.port}"


def with_cache(
    config: Config,
    backends: Mapping[str, Backend],
    cache: Cache | None,
    metrics: Metrics | None = None,
) -> dict[str, Backend]:
    """*backends* with the cache in front of each DIMSE archive that has ``cache = true``."""
    if cache is None:
        return dict(backends)
    wrapped: dict[str, Backend] = {}
    for name, backend in backends.items():
        ae = config.ae(name)
        if isinstance(ae, AeConfig) and ae.cache:
            wrapped[name] = CachedBackend(
                backend,
                cache,
                archive=archive_key(ae),
                metrics=metrics,
                revalidate_seconds=config.cache.revalidate_seconds,
                relist_seconds=config.cache.relist_seconds,
            )
        else:
            wrapped[name] = backend
    return wrapped
