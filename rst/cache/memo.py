"""What one process remembers of the cache, so that a warm request does not ask the index and
read sidecar files each time: a bounded, per-process memory in front of the
:class:`~rst.cache.store.Store`.

A viewer sends a request per frame; each used to cost a trip to a worker thread for the index
(and a ``stat`` of the file), one to read the frame layout beside the file, and more. Here:

- **Entries** (instance → its cache entry, with its study and series) found in, or written
  to, the index by this process. One is used for at most :data:`RECHECK_AFTER` seconds, then
  looked up in the index again (which records its use for the eviction order, as every lookup
  did). A memory never makes a stale or partial file look whole: files never change (a new
  version is a new file), whoever deletes a row unlinks its file, and every read of a cached
  file opens it and checks its size first, so an entry another process has evicted, replaced or
  invalidated meanwhile is found gone — then it is forgotten here and the request falls back
  to the index or the archive (:class:`~rst.cache.backend.CachedBackend`). What this process
  deletes it forgets at once. Freshness (``ttl``) is checked on each use.
- **Sidecars** (file, kind → bytes): each file is immutable, so what was derived from it stays
  true as long as it exists; the memory is keyed by the file's path, which is never reused.

Both are bounded (:data:`MAX_ENTRIES`, :data:`MAX_SIDECAR_BYTES`), least recently used first
out. Thread-safe: sidecars are loaded and saved on worker threads.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rst.services.protocols import RetrieveKeys

if TYPE_CHECKING:  # the store holds a memo: no import cycle at run time
    from rst.cache.store import Entry

__all__ = ["MAX_ENTRIES", "MAX_SIDECAR_BYTES", "RECHECK_AFTER", "Memo"]

MAX_ENTRIES = 20_000
"""Entries remembered per process (a few hundred bytes each)."""
MAX_SIDECAR_BYTES = 32 << 20
"""Bytes of sidecars remembered per process (a CT image's metadata is a few KB, its frame
layout a few hundred bytes)."""
RECHECK_AFTER = 10.0
"""Seconds an entry is used from memory before it is looked up in the index again (as often as
a use is recorded there, :data:`~rst.cache.store.TOUCH_EVERY`)."""


@dataclass(frozen=True, slots=True)
class _Known:
    entry: Entry
    study_uid: str
    series_uid: str | None
    checked_at: float


class Memo:
    """The per-process memory of cache entries and sidecars (see the module docstring)."""

    def __init__(
        self, *, max_entries: int = MAX_ENTRIES, max_sidecar_bytes: int = MAX_SIDECAR_BYTES
    ) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], _Known] = OrderedDict()
        self._sidecars: OrderedDict[tuple[Path, str], bytes] = OrderedDict()
        self._sidecar_bytes = 0
        self._kinds: set[str] = set()
        self._max_entries = max_entries
        self._max_sidecar_bytes = max_sidecar_bytes

    # -- entries -------------------------------------------------------------------------------

    def instance(self, archive: str, keys: RetrieveKeys, now: float, ttl: float) -> Entry | None:
        """The remembered entry of the instance *keys* names, if it matches *keys*, is fresh
        and was checked against the index less than :data:`RECHECK_AFTER` seconds ago."""
        assert keys.sop_uid is not None
        with self._lock:
            known = self._entries.get((archive, keys.sop_uid))
            if known is None:
                return None
            age = now - known.checked_at
            if not 0 <= age < RECHECK_AFTER or now - known.entry.stored_at >= ttl:
                del self._entries[(archive, keys.sop_uid)]
                return None
            self._entries.move_to_end((archive, keys.sop_uid))
        if known.study_uid != keys.study_uid or (
            keys.series_uid is not None
            and known.series_uid is not None
            and known.series_uid != keys.series_uid
        ):
            return None
        return known.entry

    def remember(
        self, archive: str, entry: Entry, study_uid: str, series_uid: str | None, now: float
    ) -> None:
        """*entry* is in the index (found there or just written) as of *now*."""
        with self._lock:
            self._entries[(archive, entry.sop_uid)] = _Known(entry, study_uid, series_uid, now)
            self._entries.move_to_end((archive, entry.sop_uid))
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

    def forget(self, archive: str, sop_uid: str) -> None:
        """The instance's entry is not to be trusted any more (deleted, or found gone)."""
        with self._lock:
            self._entries.pop((archive, sop_uid), None)

    def forget_file(self, path: Path) -> None:
        """The file *path* is gone: its sidecars with it."""
        with self._lock:
            for kind in self._kinds:
                dropped = self._sidecars.pop((path, kind), None)
                if dropped is not None:
                    self._sidecar_bytes -= len(dropped)

    # -- sidecars ------------------------------------------------------------------------------

    def sidecar(self, path: Path, kind: str) -> bytes | None:
        with self._lock:
            data = self._sidecars.get((path, kind))
            if data is not None:
                self._sidecars.move_to_end((path, kind))
            return data

    def keep_sidecar(self, path: Path, kind: str, data: bytes) -> None:
        if len(data) > self._max_sidecar_bytes // 64:  # an odd giant: not worth the room
            return
        with self._lock:
            self._kinds.add(kind)
            old = self._sidecars.pop((path, kind), None)
            self._sidecar_bytes += len(data) - (len(old) if old is not None else 0)
            self._sidecars[(path, kind)] = data
            while self._sidecar_bytes > self._max_sidecar_bytes:
                _, dropped = self._sidecars.popitem(last=False)
                self._sidecar_bytes -= len(dropped)
