"""The retrieve cache on disk: one file per instance, a SQLite index beside them.

Blocking code, no trio: :class:`~rst.cache.cache.Cache` runs it on worker threads, the unit
tests call it directly. The folder::

    index.sqlite3            the index (WAL: several processes read and write it at once),
                             with what rst derived from each file (its sidecars, see
                             SIDECARS: rows kept while its instance's row exists, deleted
                             with it, not counted in ``max_bytes``)
    tmp/…​.part               instances being written (never served)
    objects/ab/abcd…-x.dcm   instances, whole; named by a hash of (archive, SOP Instance UID),
                             in one of 256 buckets made when the folder is opened

**Nothing incomplete looks complete.** An instance is written to a file in ``tmp/`` and moved
into ``objects/`` (an atomic rename) only once all its bytes have arrived; its index row is
written after the rename, so a row always names a whole file. A study or series is recorded as
a *level* — with the list of its SOP Instance UIDs — only after its retrieve has succeeded, and
it is served only while that record and every instance on the list are there and fresh.

**Several processes** (``http.workers > 1``) share the folder: SQLite serialises the writers
(``busy_timeout``), renames are atomic, and each version of an instance has a file of its own
(the hash plus a random suffix), so replacing or evicting an entry never touches a file another
process is reading: it unlinks the old version, which readers that have it open keep reading.

**Bounds.** ``max_bytes`` caps the bytes of the instances in the index: past it, expired entries
go first, then the least recently used, down to :data:`LOW_WATER` of the limit (so that
eviction does not run on every write). An entry older than ``ttl`` is not served; its row and
file are removed a little later (:data:`EXPIRED_GRACE`: a reader that found a level fresh just
before it expired can still open its files). Lookups check that each file is there with its
size (a file lost or cut short by a crash, or removed by a temp-folder cleaner, is a miss).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rst.cache.memo import Memo
from rst.services.protocols import RetrieveKeys

__all__ = [
    "SIDECARS",
    "CacheUnavailable",
    "Entry",
    "Meta",
    "Pending",
    "Sidecar",
    "Store",
    "default_folder",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
"""2: sidecars in the index (1 kept them in files beside each instance; an index of version 1
is upgraded in place, its sidecar files are removed with their instances)."""
BUSY_TIMEOUT = 10.0
"""Seconds a process waits for another one's write transaction on the index."""
LOW_WATER = 0.9
"""Eviction frees space down to this fraction of ``max_bytes``."""
EXPIRED_GRACE = 300.0
"""Seconds past their ``ttl`` after which expired entries are deleted (they are not served)."""
SWEEP_EVERY = 60.0
"""Seconds between two deletions of expired entries (done while writing)."""
STALE_TEMP = 600.0
"""A temporary file untouched for this long belongs to a writer that died: removed at open."""
SIDECARS = ("metadata.json", "frames.json")
"""The kinds of sidecar an instance file may have (see :class:`~rst.services.protocols.Sidecars`):
rows of the ``sidecars`` table, deleted with their instance's row. Each file is immutable (a
new version of an instance is a new file), so a sidecar is valid as long as its file exists."""
Sidecar = tuple[Path, str, bytes]
"""A sidecar to keep: the instance file it belongs to, its kind, its data."""
BUCKETS = tuple(f"{n:02x}" for n in range(256))
"""The folders of ``objects/`` (the first two hex digits of a file's hash), all made when the
cache is opened: making each as its first instance arrived cost a directory creation (a
quarter of a millisecond of kernel time here) per instance of a cold cache's first studies."""
TOUCH_EVERY = 10.0
"""An entry's last use is recorded at most this often (each record is a write transaction)."""
EVICT_BATCH = 256

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    archive TEXT NOT NULL,
    sop_uid TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    series_uid TEXT,
    sop_class_uid TEXT NOT NULL,
    transfer_syntax TEXT NOT NULL,
    file TEXT NOT NULL,
    size INTEGER NOT NULL,
    stored_at REAL NOT NULL,
    used_at REAL NOT NULL,
    PRIMARY KEY (archive, sop_uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS instances_by_use ON instances (used_at);
CREATE INDEX IF NOT EXISTS instances_by_file ON instances (file);
CREATE INDEX IF NOT EXISTS instances_by_age ON instances (stored_at);
CREATE TABLE IF NOT EXISTS levels (
    archive TEXT NOT NULL,
    level TEXT NOT NULL,
    uid TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    stored_at REAL NOT NULL,
    PRIMARY KEY (archive, level, uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS levels_by_age ON levels (stored_at);
CREATE TABLE IF NOT EXISTS members (
    archive TEXT NOT NULL,
    level TEXT NOT NULL,
    uid TEXT NOT NULL,
    position INTEGER NOT NULL,
    sop_uid TEXT NOT NULL,
    PRIMARY KEY (archive, level, uid, position)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS validations (
    archive TEXT NOT NULL,
    level TEXT NOT NULL,
    uid TEXT NOT NULL,
    validated_at REAL NOT NULL,
    PRIMARY KEY (archive, level, uid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS listings (
    archive TEXT NOT NULL,
    level TEXT NOT NULL,
    uid TEXT NOT NULL,
    stored_at REAL NOT NULL,
    listed_at REAL NOT NULL,
    PRIMARY KEY (archive, level, uid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sidecars (
    file TEXT NOT NULL,
    kind TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (file, kind)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS usage (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    bytes INTEGER NOT NULL
);
INSERT OR IGNORE INTO usage VALUES (0, 0);
"""

_ENTRY_COLUMNS = "sop_uid, sop_class_uid, transfer_syntax, file, size, stored_at"
_UPSERT = (
    "INSERT INTO instances VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (archive, sop_uid) DO UPDATE SET "
    "study_uid = excluded.study_uid, series_uid = coalesce(excluded.series_uid, series_uid), "
    "sop_class_uid = excluded.sop_class_uid, transfer_syntax = excluded.transfer_syntax, "
    "file = excluded.file, size = excluded.size, stored_at = excluded.stored_at, "
    "used_at = excluded.used_at"
)


class CacheUnavailable(OSError):
    """The cache folder or its index cannot be used (at start-up)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One cached instance: where its whole Part 10 file lies, and what it is."""

    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str
    path: Path
    size: int
    stored_at: float


@dataclass(frozen=True, slots=True)
class Meta:
    """What the index records of an instance besides its file: whose it is, what it is."""

    archive: str
    study_uid: str
    series_uid: str | None
    """``None`` when it came with a study (a study retrieve does not say each one's series)."""
    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str

    def row(self, file: str, size: int) -> tuple[str | int | None, ...]:
        """The first columns of its ``instances`` row."""
        return (
            self.archive,
            self.sop_uid,
            self.study_uid,
            self.series_uid,
            self.sop_class_uid,
            self.transfer_syntax,
            file,
            size,
        )


class Pending:
    """An instance being written to a temporary file; :meth:`Store.commit` or :meth:`discard`."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        """Append *data* (raises OSError: disk full, …)."""
        if self._fd is None:
            raise ValueError("the pending file is closed")
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
            self.size += written

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def discard(self) -> None:
        """Close and remove the temporary file (again: nothing happens)."""
        self.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def default_folder() -> Path:
    """``rst-cache-{uid}`` in the system temporary folder: private to the user rst runs as."""
    return Path(tempfile.gettempdir()) / f"rst-cache-{os.getuid()}"


class Store:
    """The cache folder and its index. Thread-safe; every method blocks."""

    def __init__(
        self,
        folder: Path,
        connection: sqlite3.Connection,
        *,
        max_bytes: int,
        ttl: float,
        clock: Callable[[], float],
        on_evict: Callable[[int, int], None] | None = None,
    ) -> None:
        self.folder = folder
        self._tmp = os.fspath(folder / "tmp")
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.clock = clock
        self.on_evict = on_evict
        """Told the instances and bytes of each eviction (for metrics)."""
        self._db = connection
        self._lock = threading.Lock()
        self._swept_at = float("-inf")
        self.memo = Memo()
        """What this process remembers of the index and the sidecars (:mod:`rst.cache.memo`)."""

    @classmethod
    def open(
        cls,
        folder: Path,
        *,
        max_bytes: int,
        ttl: float,
        private: bool = False,
        clock: Callable[[], float] = time.time,
        on_evict: Callable[[int, int], None] | None = None,
    ) -> Store:
        """Open (creating if needed) the cache in *folder*. *private*: the folder must belong
        to this user (a folder in a shared temporary directory that someone else made could
        feed rst instances of their choosing). Raises :class:`CacheUnavailable`."""
        try:
            for sub in ("", "objects", "tmp"):
                (folder / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
            if private and folder.stat().st_uid != os.getuid():
                raise CacheUnavailable(
                    f"the cache folder {folder} belongs to another user; set [cache] path"
                )
            _make_buckets(folder / "objects")
            connection = sqlite3.connect(
                folder / "index.sqlite3",
                timeout=BUSY_TIMEOUT,
                isolation_level=None,
                check_same_thread=False,
            )
        except (OSError, sqlite3.Error) as exc:
            if isinstance(exc, CacheUnavailable):
                raise
            raise CacheUnavailable(f"cannot open the cache folder {folder}: {exc}") from exc
        store = cls(
            folder, connection, max_bytes=max_bytes, ttl=ttl, clock=clock, on_evict=on_evict
        )
        try:
            store._prepare()
            store._remove_stale_temporaries()
            store.sweep()
        except (OSError, sqlite3.Error) as exc:
            connection.close()
            if isinstance(exc, CacheUnavailable):
                raise
            raise CacheUnavailable(f"cannot open the cache index in {folder}: {exc}") from exc
        return store

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writing -------------------------------------------------------------------------------

    def begin(self) -> Pending:
        """A new temporary file for one instance (raises OSError), private to rst's user. Its
        random name goes on into the committed file's (:func:`_file_name`): two copies of one
        instance never share a file. (``tempfile.mkstemp`` does the same at several times the
        cost, a cold cache making one per instance.)"""
        while True:
            name = f"{self._tmp}/{secrets.token_hex(8)}.part"
            try:
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:  # 2**64 names: not again
                continue
            return Pending(fd, Path(name))

    def commit(self, pending: Pending, meta: Meta) -> Entry | None:
        """Move the whole instance written to *pending* into the cache and index it.

        ``None`` if it is larger than the whole cache (it is discarded). Raises OSError or
        sqlite3.Error (*pending* is then discarded)."""
        return self.commit_many([(pending, meta)])[0]

    def commit_many(
        self,
        written: Sequence[tuple[Pending, Meta]],
        sidecars: Callable[[list[tuple[Entry | None, bool]]], Sequence[Sidecar]] | None = None,
    ) -> list[Entry | None]:
        """:meth:`commit` for several instances, indexed in one transaction. If anything fails,
        nothing of them is cached (every file is removed) and the error is raised.

        *sidecars*, if given, is called inside that transaction with each instance's entry and
        whether it is the file just written (not a copy another retrieve cached first); the
        sidecars it returns are kept in the same transaction (:meth:`save_sidecars`: one trip
        to the index for a batch of instances and all that was derived from them)."""
        moved: list[tuple[int, str, Path, int, Meta]] = []
        ours: set[int] = set()
        kept: list[Sidecar] = []
        try:
            for n, (pending, meta) in enumerate(written):
                pending.close()
                if pending.size > self.max_bytes:
                    pending.discard()
                    continue
                relative = _file_name(meta, pending)
                final = self.folder / relative
                try:
                    os.replace(pending.path, final)
                except FileNotFoundError:  # its bucket was removed since the cache was opened
                    final.parent.mkdir(mode=0o700, exist_ok=True)
                    os.replace(pending.path, final)
                moved.append((n, relative, final, pending.size, meta))
            now = self.clock()
            entries: list[Entry | None] = [None] * len(written)
            fresh: list[tuple[Meta, Entry | None]] = []
            with self._write() as db:
                doomed = []
                usage = 0
                for n, relative, final, size, meta in moved:
                    old = db.execute(
                        f"SELECT {_ENTRY_COLUMNS} FROM instances WHERE archive = ? AND sop_uid = ?",
                        (meta.archive, meta.sop_uid),
                    ).fetchone()
                    if old is not None and self._fresh(old[5], now):
                        # Another retrieve (maybe in another process) cached it first and may
                        # have handed out its file: keep that one, drop this copy.
                        entries[n] = self._entry(old)
                        doomed.append(relative)
                        if meta.series_uid is not None:
                            db.execute(
                                "UPDATE instances SET series_uid = ? WHERE archive = ? "
                                "AND sop_uid = ? AND series_uid IS NULL",
                                (meta.series_uid, meta.archive, meta.sop_uid),
                            )
                        continue
                    db.execute(_UPSERT, (*meta.row(relative, size), now, now))
                    usage += size - (old[4] if old else 0)
                    if old:  # replaced: its file goes, and what was derived from it
                        doomed.append(old[3])
                        db.execute("DELETE FROM sidecars WHERE file = ?", (old[3],))
                    entries[n] = Entry(
                        meta.sop_uid, meta.sop_class_uid, meta.transfer_syntax, final, size, now
                    )
                    fresh.append((meta, entries[n]))
                    ours.add(n)
                if usage:
                    self._add_usage(db, usage)  # once for the batch: one row every write updates
                doomed += self._evict(db, now)
                doomed += self._sweep_if_due(db, now)
                if sidecars is not None:
                    found = sidecars([(entry, n in ours) for n, entry in enumerate(entries)])
                    kept = self._insert_sidecars(db, found)
        except BaseException:
            for pending, _ in written:
                pending.discard()
            self._unlink([relative for _, relative, _, _, _ in moved])
            raise
        for meta, entry in fresh:
            if entry is not None:
                self.memo.remember(meta.archive, entry, meta.study_uid, meta.series_uid, now)
        for path, kind, data in kept:
            self.memo.keep_sidecar(path, kind, data)
        self._unlink(doomed)
        return entries

    def complete(
        self, *, archive: str, keys: RetrieveKeys, started: float, sop_uids: Sequence[str]
    ) -> None:
        """Record the study or series *keys* as whole in the cache: these instances, in this
        order, as the archive sent them from time *started* on."""
        level, uid = _level_of(keys)
        with self._write() as db:
            self._forget_level(db, archive, level, uid)
            db.execute(
                "INSERT INTO levels VALUES (?, ?, ?, ?, ?)",
                (archive, level, uid, keys.study_uid, started),
            )
            db.executemany(
                "INSERT INTO members VALUES (?, ?, ?, ?, ?)",
                ((archive, level, uid, n, sop) for n, sop in enumerate(sop_uids)),
            )

    def invalidate(self, *, archive: str, study_uid: str, series_uid: str, sop_uid: str) -> None:
        """The archive's content changed (an instance was stored through rst): its study and
        series are not whole in the cache any more, and its old version is gone."""
        with self._write() as db:
            self._forget_level(db, archive, "STUDY", study_uid)
            self._forget_level(db, archive, "SERIES", series_uid)
            doomed = self._delete_instances(
                db,
                db.execute(
                    "SELECT archive, sop_uid, file, size FROM instances "
                    "WHERE archive = ? AND sop_uid = ?",
                    (archive, sop_uid),
                ).fetchall(),
            )
        self._unlink(doomed)

    def sweep(self) -> None:
        """Delete the entries expired for longer than :data:`EXPIRED_GRACE`, and levels past
        their ttl."""
        now = self.clock()
        with self._write() as db:
            doomed = self._sweep(db, now)
        self._unlink(doomed)

    def save_sidecars(self, sidecars: Sequence[Sidecar]) -> None:
        """Keep each (instance file, kind, data), in one transaction; not for a file no longer
        in the index (evicted meanwhile, maybe by another process: a sidecar never outlives
        its file). Raises sqlite3.Error."""
        with self._write() as db:
            kept = self._insert_sidecars(db, sidecars)
        for path, kind, data in kept:
            self.memo.keep_sidecar(path, kind, data)

    def _insert_sidecars(
        self, db: sqlite3.Connection, sidecars: Sequence[Sidecar]
    ) -> list[Sidecar]:
        """Insert *sidecars* in the transaction of *db*; those kept (their file is indexed)."""
        kept = []
        for sidecar in sidecars:
            if sidecar[1] not in SIDECARS:
                raise ValueError(f"unknown sidecar kind {sidecar[1]!r}")
            file = str(sidecar[0].relative_to(self.folder))
            cursor = db.execute(
                "INSERT OR REPLACE INTO sidecars SELECT ?, ?, ? "
                "WHERE EXISTS (SELECT 1 FROM instances WHERE file = ?)",
                (file, sidecar[1], sidecar[2], file),
            )
            if cursor.rowcount > 0:
                kept.append(sidecar)
        return kept

    # -- reading -------------------------------------------------------------------------------

    def sidecar(self, path: Path, kind: str) -> bytes | None:
        """The sidecar *kind* of the instance file *path*, or ``None``."""
        if (known := self.memo.sidecar(path, kind)) is not None:
            return known
        with self._lock:
            row = self._db.execute(
                "SELECT data FROM sidecars WHERE file = ? AND kind = ?",
                (str(path.relative_to(self.folder)), kind),
            ).fetchone()
        if row is None:
            return None
        data = bytes(row[0])
        self.memo.keep_sidecar(path, kind, data)
        return data

    def instance(self, archive: str, keys: RetrieveKeys) -> Entry | None:
        """The fresh, whole instance *keys* names (an IMAGE-level key), or ``None``."""
        assert keys.sop_uid is not None
        now = self.clock()
        with self._lock:
            row = self._db.execute(
                f"SELECT {_ENTRY_COLUMNS}, study_uid, series_uid, used_at FROM instances "
                "WHERE archive = ? AND sop_uid = ?",
                (archive, keys.sop_uid),
            ).fetchone()
        if row is None:
            return None
        entry = self._entry(row)
        study, series, used_at = row[6:]
        if study != keys.study_uid or (
            keys.series_uid is not None and series is not None and series != keys.series_uid
        ):
            return None
        if not self._fresh(entry.stored_at, now) or not self._intact(archive, [entry]):
            return None
        if used_at < now - TOUCH_EVERY:
            with self._write() as db:
                db.execute(
                    "UPDATE instances SET used_at = ? WHERE archive = ? AND sop_uid = ?",
                    (now, archive, keys.sop_uid),
                )
        self.memo.remember(archive, entry, study, series, now)
        return entry

    def level(self, archive: str, keys: RetrieveKeys) -> list[Entry] | None:
        """The instances of the study or series *keys*, in the order the archive sent them,
        if the cache holds the whole level and it is fresh; else ``None``."""
        level, uid = _level_of(keys)
        now = self.clock()
        with self._lock:
            found = self._db.execute(
                "SELECT study_uid, stored_at FROM levels "
                "WHERE archive = ? AND level = ? AND uid = ?",
                (archive, level, uid),
            ).fetchone()
            if found is None or found[0] != keys.study_uid or not self._fresh(found[1], now):
                return None
            rows = self._db.execute(
                f"SELECT {', '.join('i.' + c for c in _ENTRY_COLUMNS.split(', '))} "
                "FROM members m LEFT JOIN instances i "
                "ON i.archive = m.archive AND i.sop_uid = m.sop_uid "
                "WHERE m.archive = ? AND m.level = ? AND m.uid = ? ORDER BY m.position",
                (archive, level, uid),
            ).fetchall()
        if not rows or any(row[0] is None for row in rows):
            return None
        entries = [self._entry(row) for row in rows]
        if not all(self._fresh(e.stored_at, now) for e in entries):
            return None
        if not self._intact(archive, entries):
            return None
        with self._write() as db:
            db.execute(
                "UPDATE instances SET used_at = ? WHERE archive = ? AND used_at < ? AND sop_uid "
                "IN (SELECT sop_uid FROM members WHERE archive = ? AND level = ? AND uid = ?)",
                (now, archive, now - TOUCH_EVERY, archive, level, uid),
            )
        for entry in entries:
            self.memo.remember(archive, entry, keys.study_uid, keys.series_uid, now)
        return entries

    # -- freshness (see rst.cache.freshness) ----------------------------------------------------

    def validation(self, archive: str, keys: RetrieveKeys) -> tuple[float, float, float] | None:
        """When the record of the study or series *keys* was made (its retrieve began), when
        its set of instances was last found to be the archive's, and when by a list of its
        instances (not a count: see :mod:`rst.cache.freshness`); ``None`` without one."""
        level, uid = _level_of(keys)
        with self._lock:
            row = self._db.execute(
                "SELECT l.stored_at, max(l.stored_at, coalesce(v.validated_at, l.stored_at)), "
                "max(l.stored_at, coalesce(s.listed_at, l.stored_at)) "
                "FROM levels l LEFT JOIN validations v "
                "ON v.archive = l.archive AND v.level = l.level AND v.uid = l.uid "
                "LEFT JOIN listings s ON s.archive = l.archive AND s.level = l.level "
                "AND s.uid = l.uid AND s.stored_at = l.stored_at "
                "WHERE l.archive = ? AND l.level = ? AND l.uid = ?",
                (archive, level, uid),
            ).fetchone()
        return None if row is None else (float(row[0]), float(row[1]), float(row[2]))

    def validated(
        self,
        *,
        archive: str,
        keys: RetrieveKeys,
        stored_at: float,
        at: float,
        listed: bool = False,
    ) -> None:
        """Record that the level *keys* recorded at *stored_at* was still the archive's at
        *at*, found so by a list of its instances if *listed* (nothing if that record has been
        replaced or forgotten meanwhile)."""
        level, uid = _level_of(keys)
        with self._write() as db:
            db.execute(
                "INSERT INTO validations SELECT archive, level, uid, ? FROM levels "
                "WHERE archive = ? AND level = ? AND uid = ? AND stored_at = ? "
                "ON CONFLICT (archive, level, uid) DO UPDATE SET "
                "validated_at = max(validated_at, excluded.validated_at)",
                (at, archive, level, uid, stored_at),
            )
            if listed:  # a row of an older record of the level (stored_at) is replaced
                db.execute(
                    "INSERT INTO listings SELECT archive, level, uid, stored_at, ? FROM levels "
                    "WHERE archive = ? AND level = ? AND uid = ? AND stored_at = ? "
                    "ON CONFLICT (archive, level, uid) DO UPDATE SET "
                    "listed_at = CASE WHEN stored_at = excluded.stored_at "
                    "THEN max(listed_at, excluded.listed_at) ELSE excluded.listed_at END, "
                    "stored_at = excluded.stored_at",
                    (at, archive, level, uid, stored_at),
                )

    def outdated(self, *, archive: str, keys: RetrieveKeys, stored_at: float) -> None:
        """Forget the level *keys* recorded at *stored_at*: the archive's set of instances
        differs (a record made since by another retrieve stays)."""
        level, uid = _level_of(keys)
        with self._write() as db:
            found = db.execute(
                "SELECT stored_at FROM levels WHERE archive = ? AND level = ? AND uid = ?",
                (archive, level, uid),
            ).fetchone()
            if found is not None and found[0] == stored_at:
                self._forget_level(db, archive, level, uid)

    def usage(self) -> int:
        """Bytes of the instances in the index."""
        with self._lock:
            row = self._db.execute("SELECT bytes FROM usage").fetchone()
        return int(row[0])

    # -- internals -----------------------------------------------------------------------------

    def _prepare(self) -> None:
        db = self._db
        with self._lock:
            db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("BEGIN IMMEDIATE")
            try:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version not in (0, 1, SCHEMA_VERSION):  # 1: upgraded by the schema below
                    raise CacheUnavailable(
                        f"the cache index in {self.folder} was made by another version of rst "
                        f"(schema {version}, this one uses {SCHEMA_VERSION}); remove the folder"
                    )
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (taken at once: no deadlock between two upgrading readers)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _entry(self, row: Sequence[Any]) -> Entry:
        sop_uid, sop_class_uid, transfer_syntax, file, size, stored_at = row[:6]
        return Entry(sop_uid, sop_class_uid, transfer_syntax, self.folder / file, size, stored_at)

    def _fresh(self, stored_at: float, now: float) -> bool:
        return now - stored_at < self.ttl

    def _intact(self, archive: str, entries: list[Entry]) -> bool:
        """Whether each entry's file is there with its size; rows of those that are not are
        deleted (only if unchanged since read: another process may just have replaced them)."""
        broken = []
        for entry in entries:
            try:
                if os.stat(entry.path).st_size == entry.size:
                    continue
            except FileNotFoundError:
                pass
            broken.append(entry)
        if not broken:
            return True
        log.warning(
            "cache: %d file(s) missing or cut short, e.g. %s; fetching again",
            len(broken),
            broken[0].path,
        )
        doomed = []
        with self._write() as db:
            for entry in broken:
                rows = db.execute(
                    "SELECT archive, sop_uid, file, size FROM instances "
                    "WHERE archive = ? AND sop_uid = ? AND file = ?",
                    (archive, entry.sop_uid, str(entry.path.relative_to(self.folder))),
                ).fetchall()
                doomed += self._delete_instances(db, rows)
        self._unlink(doomed)
        return False

    def _add_usage(self, db: sqlite3.Connection, delta: int) -> None:
        db.execute("UPDATE usage SET bytes = bytes + ?", (delta,))

    def _delete_instances(self, db: sqlite3.Connection, rows: list[Any]) -> list[str]:
        """Delete these (archive, sop_uid, file, size) rows; their files, to unlink after the
        transaction."""
        db.executemany(
            "DELETE FROM instances WHERE archive = ? AND sop_uid = ?",
            ((archive, sop) for archive, sop, _, _ in rows),
        )
        db.executemany("DELETE FROM sidecars WHERE file = ?", ((file,) for _, _, file, _ in rows))
        for archive, sop, _, _ in rows:
            self.memo.forget(archive, sop)
        self._add_usage(db, -sum(int(size) for *_, size in rows))
        return [file for _, _, file, _ in rows]

    def _evict(self, db: sqlite3.Connection, now: float) -> list[str]:
        """Down to :data:`LOW_WATER` of ``max_bytes`` if above ``max_bytes``: expired entries
        first, then the least recently used."""
        used = int(db.execute("SELECT bytes FROM usage").fetchone()[0])
        if used <= self.max_bytes:
            return []
        target = int(self.max_bytes * LOW_WATER)
        doomed: list[str] = []
        for query, args in (
            (
                "SELECT archive, sop_uid, file, size FROM instances WHERE stored_at <= ? "
                "ORDER BY stored_at LIMIT ?",
                (now - self.ttl,),
            ),
            (
                "SELECT archive, sop_uid, file, size FROM instances ORDER BY used_at LIMIT ?",
                (),
            ),
        ):
            while used > target:
                rows = db.execute(query, (*args, EVICT_BATCH)).fetchall()
                if not rows:
                    break
                chosen = []
                for row in rows:
                    if used <= target:
                        break
                    chosen.append(row)
                    used -= int(row[3])
                doomed += self._delete_instances(db, chosen)
                if self.on_evict is not None:
                    self.on_evict(len(chosen), sum(int(row[3]) for row in chosen))
        return doomed

    def _sweep_if_due(self, db: sqlite3.Connection, now: float) -> list[str]:
        if now - self._swept_at < SWEEP_EVERY:
            return []
        return self._sweep(db, now)

    def _sweep(self, db: sqlite3.Connection, now: float) -> list[str]:
        self._swept_at = now
        expired = db.execute(
            "SELECT archive, level, uid FROM levels WHERE stored_at <= ?", (now - self.ttl,)
        ).fetchall()
        for archive, level, uid in expired:
            self._forget_level(db, archive, level, uid)
        rows = db.execute(
            "SELECT archive, sop_uid, file, size FROM instances WHERE stored_at <= ?",
            (now - self.ttl - EXPIRED_GRACE,),
        ).fetchall()
        return self._delete_instances(db, rows)

    @staticmethod
    def _forget_level(db: sqlite3.Connection, archive: str, level: str, uid: str) -> None:
        for table in ("levels", "members", "validations", "listings"):
            db.execute(
                f"DELETE FROM {table} WHERE archive = ? AND level = ? AND uid = ?",
                (archive, level, uid),
            )

    def _unlink(self, files: list[str]) -> None:
        for file in files:
            path = self.folder / file
            self.memo.forget_file(path)
            for doomed in (path, *_legacy_sidecars(path)):
                try:
                    os.unlink(doomed)
                except FileNotFoundError:
                    pass
                except OSError as exc:  # the row is gone: the file is only wasted space
                    log.warning("cache: cannot remove %s: %s", doomed, exc)

    def _remove_stale_temporaries(self) -> None:
        limit = time.time() - STALE_TEMP  # file times are wall-clock times
        for path in (self.folder / "tmp").glob("*.part"):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < limit:
                    path.unlink()


def _make_buckets(objects: Path) -> None:
    """Make the :data:`BUCKETS` of *objects* that are missing."""
    present = set(os.listdir(objects))
    for bucket in BUCKETS:
        if bucket not in present:
            with contextlib.suppress(FileExistsError):  # another process, just now
                os.mkdir(objects / bucket, 0o700)


def _legacy_sidecars(path: Path) -> list[Path]:
    """The sidecar files an index of version 1 kept beside the instance file *path*."""
    return [path.with_name(f"{path.name}.{kind}") for kind in SIDECARS]


def _file_name(meta: Meta, pending: Pending) -> str:
    """Where, relative to the folder, the instance written to *pending* is committed."""
    digest = _digest(meta.archive, meta.sop_uid)
    return f"objects/{digest[:2]}/{digest}-{pending.path.stem}.dcm"


def _digest(archive: str, sop_uid: str) -> str:
    return hashlib.sha256(f"{archive}\0{sop_uid}".encode()).hexdigest()[:40]


def _level_of(keys: RetrieveKeys) -> tuple[str, str]:
    if keys.level == "IMAGE":
        raise ValueError("an instance is not a level")
    return keys.level, keys.uid
