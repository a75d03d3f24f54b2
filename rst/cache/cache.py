"""The retrieve cache as trio sees it: the :class:`~rst.cache.store.Store` on worker threads.

The one rule of this module: **a failing cache never fails a request.** A write that fails
(disk full, permissions, an index locked for longer than its busy timeout, a damaged index) is
logged and the instance simply is not cached; a lookup that fails is a miss. The request goes
on as if there were no cache.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import trio

from rst.bridge import run_sync
from rst.cache.locks import Held, Locks
from rst.cache.store import (
    CacheUnavailable,
    Entry,
    Meta,
    Pending,
    Sidecar,
    Store,
    default_folder,
)
from rst.config import CacheConfig
from rst.metrics import Metrics
from rst.services.protocols import Instance, RetrieveKeys

__all__ = ["Cache", "open_cache"]

log = logging.getLogger(__name__)

T = TypeVar("T")

COMPLAIN_EVERY = 60.0
"""Seconds between two warnings about a failing cache (the others are logged at DEBUG)."""


class Cache:
    """Lookups and writes of the retrieve cache, from trio."""

    def __init__(self, store: Store, locks: Locks | None = None) -> None:
        self.store = store
        self.locks = locks if locks is not None else Locks(store.folder)
        self._complained_at = float("-inf")
        self._quiet = 0

    @property
    def folder(self) -> Path:
        return self.store.folder

    def now(self) -> float:
        """The cache's clock (wall-clock seconds, shared by processes and restarts)."""
        return self.store.clock()

    # -- lookups: a failure is a miss -----------------------------------------------------------

    async def instance(self, archive: str, keys: RetrieveKeys) -> Entry | None:
        """The fresh, whole instance *keys* names: from this process's memory of the index
        (:mod:`rst.cache.memo`, no trip to a worker thread), else from the index."""
        known = self.store.memo.instance(archive, keys, self.now(), self.store.ttl)
        if known is not None:
            return known
        return await self._attempt("look up", lambda: self.store.instance(archive, keys))

    def forget(self, archive: str, entry: Entry) -> None:
        """*entry*'s file was found gone (evicted or replaced by another process): look it
        up in the index next time."""
        self.store.memo.forget(archive, entry.sop_uid)

    async def level(self, archive: str, keys: RetrieveKeys) -> list[Entry] | None:
        return await self._attempt("look up", lambda: self.store.level(archive, keys))

    # -- single flight across processes: a failure is a lock held -------------------------------

    async def hold(self, archive: str, keys: RetrieveKeys) -> Held | None:
        """The cross-process lock of *keys* (see :mod:`rst.cache.locks`); ``None`` while
        another process holds it. A lock that cannot be taken (the folder is gone, say) is
        as if held: this process retrieves anyway, as without the cache."""
        try:
            return await run_sync(lambda: self.locks.hold(archive, keys))
        except OSError as exc:
            self._complain("lock", exc)
            return Held(self.locks.path(archive, keys), None)

    async def held_elsewhere(self, archive: str, keys: RetrieveKeys) -> bool:
        try:
            return await run_sync(lambda: self.locks.held_elsewhere(archive, keys))
        except OSError as exc:
            self._complain("lock", exc)
            return False

    # -- writes: a failure is an instance not cached --------------------------------------------

    async def put(
        self,
        *,
        archive: str,
        keys: RetrieveKeys,
        instances: Sequence[Instance],
        derive: Callable[[Instance], list[tuple[str, bytes]]] | None = None,
        then: Callable[[list[tuple[Entry | None, bool]]], list[Sidecar]] | None = None,
    ) -> list[Entry | None]:
        """Cache whole instances (in one trip to a worker thread, one index transaction); the
        entry of each, ``None`` for those not cached. *derive* gives the sidecars (kind, data)
        of an instance's bytes, made before the transaction and kept with the instance where
        its entry is the file just written (not a copy another retrieve cached first). *then*
        is called inside the transaction with each one's entry and whether it is the file
        just written; the sidecars it returns are kept in the same transaction. Neither may
        raise."""

        def put() -> list[Entry | None]:
            written = []
            try:
                for instance in instances:
                    pending = self.store.begin()
                    written.append((pending, _meta(archive, keys, instance)))
                    pending.write(instance.data)
            except BaseException:
                for pending, _ in written:
                    pending.discard()
                raise
            derived = [derive(instance) if derive is not None else [] for instance in instances]

            def sidecars(results: list[tuple[Entry | None, bool]]) -> list[Sidecar]:
                found = [
                    (entry.path, kind, data)
                    for (entry, ours), made in zip(results, derived, strict=True)
                    if entry is not None and ours
                    for kind, data in made
                ]
                return found + (then(results) if then is not None else [])

            return self.store.commit_many(written, sidecars)

        return await self._attempt("write", put) or [None] * len(instances)

    async def begin(self, head: bytes) -> Pending | None:
        """A temporary file for an instance still arriving, holding *head* so far."""

        def begin() -> Pending:
            pending = self.store.begin()
            try:
                pending.write(head)
            except BaseException:
                pending.discard()
                raise
            return pending

        return await self._attempt("write", begin)

    async def append(self, pending: Pending, data: bytes) -> bool:
        """Append *data*; ``False`` if that failed (*pending* is then discarded)."""

        def append() -> bool:
            try:
                pending.write(data)
            except BaseException:
                pending.discard()
                raise
            return True

        return await self._attempt("write", append) is not None

    async def commit(
        self, pending: Pending, *, archive: str, keys: RetrieveKeys, instance: Instance
    ) -> Entry | None:
        """Cache the instance written to *pending*."""
        meta = _meta(archive, keys, instance)
        return await self._attempt("write", lambda: self.store.commit(pending, meta))

    async def complete(
        self, *, archive: str, keys: RetrieveKeys, started: float, sop_uids: list[str]
    ) -> None:
        await self._attempt(
            "write",
            lambda: self.store.complete(
                archive=archive, keys=keys, started=started, sop_uids=sop_uids
            ),
        )

    async def invalidate(
        self, *, archive: str, study_uid: str, series_uid: str, sop_uid: str
    ) -> None:
        await self._attempt(
            "update",
            lambda: self.store.invalidate(
                archive=archive, study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid
            ),
        )

    # -- freshness (rst.cache.freshness): a failure is a level not revalidated -----------------

    async def validation(
        self, archive: str, keys: RetrieveKeys
    ) -> tuple[float, float, float] | None:
        return await self._attempt("look up", lambda: self.store.validation(archive, keys))

    async def validated(
        self,
        *,
        archive: str,
        keys: RetrieveKeys,
        stored_at: float,
        at: float,
        listed: bool = False,
    ) -> None:
        await self._attempt(
            "update",
            lambda: self.store.validated(
                archive=archive, keys=keys, stored_at=stored_at, at=at, listed=listed
            ),
        )

    async def outdated(self, *, archive: str, keys: RetrieveKeys, stored_at: float) -> None:
        await self._attempt(
            "update", lambda: self.store.outdated(archive=archive, keys=keys, stored_at=stored_at)
        )

    # -- internals ------------------------------------------------------------------------------

    async def _attempt(self, what: str, call: Callable[[], T]) -> T | None:
        try:
            return await run_sync(call)
        except (OSError, sqlite3.Error) as exc:
            self._complain(what, exc)
            return None

    def _complain(self, what: str, exc: BaseException) -> None:
        now = trio.current_time()
        if now - self._complained_at < COMPLAIN_EVERY:
            self._quiet += 1
            log.debug("cache: cannot %s in %s: %s", what, self.folder, exc)
            return
        more = f" ({self._quiet} more since the last warning)" if self._quiet else ""
        log.warning(
            "cache: cannot %s in %s: %s; serving without the cache%s", what, self.folder, exc, more
        )
        self._complained_at = now
        self._quiet = 0


def _meta(archive: str, keys: RetrieveKeys, instance: Instance) -> Meta:
    return Meta(
        archive=archive,
        study_uid=keys.study_uid,
        series_uid=keys.series_uid,
        sop_uid=instance.sop_instance_uid,
        sop_class_uid=instance.sop_class_uid,
        transfer_syntax=instance.transfer_syntax,
    )


@asynccontextmanager
async def open_cache(config: CacheConfig, metrics: Metrics | None = None) -> AsyncIterator[Cache]:
    """Open the cache folder of *config* (raises :class:`~rst.cache.store.CacheUnavailable`);
    closed on exit. *metrics*: where evictions and the bytes in use are counted."""
    folder = Path(config.path) if config.path is not None else default_folder()

    def evicted(instances: int, size: int) -> None:
        if metrics is not None:
            metrics.cache_evicted_instances.inc(instances)
            metrics.cache_evicted_bytes.inc(size)

    def open_store() -> tuple[Store, Locks, int]:
        store = Store.open(
            folder,
            max_bytes=config.max_bytes,
            ttl=config.ttl_seconds,
            private=config.path is None,
            on_evict=evicted,
        )
        try:
            locks = Locks(folder)
        except OSError as exc:
            store.close()
            raise CacheUnavailable(f"cannot make the lock folder in {folder}: {exc}") from exc
        return store, locks, store.usage()

    store, locks, used = await run_sync(open_store)
    unwatch = metrics.watch_cache_usage(store.usage) if metrics is not None else None
    log.info("retrieve cache in %s (%d of %d bytes used)", folder, used, config.max_bytes)
    try:
        yield Cache(store, locks)
    finally:
        if unwatch is not None:
            unwatch()
        with trio.CancelScope(shield=True):
            await run_sync(store.close)
