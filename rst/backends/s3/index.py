"""The QIDO-RS index of an S3 archive: one SQL row per instance, matched by rst.dicom.matching.

Each row holds the object key, the UIDs and a few indexed columns (PatientID, StudyDate,
StudyTime, AccessionNumber, Modality, Series/InstanceNumber) and the header as DICOM JSON
without bulk data. A search narrows with SQL on the indexed columns (a superset of the
matches), loads the candidate studies' headers a few studies at a time and lets
:func:`rst.dicom.matching.find` decide, so the index matches exactly like the dev PACS.

The store is SQLite (a file, WAL mode; the default) or PostgreSQL (a ``postgresql://`` URL,
for several rst replicas sharing one index). One code path serves both: the SQL is portable
(``INSERT … ON CONFLICT (key) DO UPDATE``, ``CREATE … IF NOT EXISTS``, the header as TEXT) and
written with ``?`` placeholders; a small :class:`_Dialect` supplies what differs (the driver's
paramstyle, case-insensitive LIKE, byte-order text collation, the SQLite pragmas, a lock that
serialises schema creation between replicas). Every driver call runs in a worker thread through
:func:`rst.bridge.run_sync` on one connection per :class:`Index`, guarded by a lock; a PostgreSQL
connection that broke (server restart) is replaced on the next call.
"""

from __future__ import annotations

import functools
import json
import re
import sqlite3
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from pydicom.dataset import Dataset

from rst.bridge import run_sync
from rst.config import S3AeConfig
from rst.dicom.matching import (
    DEPTH,
    SERIES_COMPUTED,
    STUDY_COMPUTED,
    find,
    normalise,
    sort_key,
    values,
)
from rst.dicom.query import QidoQuery
from rst.errors import RstError

__all__ = ["Index", "IndexUnavailable"]

T = TypeVar("T")

# ``{text}``: the dialect's text type (PostgreSQL: byte-order collation, like SQLite's).
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS instances (
        key {text} PRIMARY KEY,
        study_uid {text} NOT NULL,
        series_uid {text} NOT NULL,
        sop_uid {text} NOT NULL,
        patient_id {text} NOT NULL,
        study_date {text} NOT NULL,
        study_time {text} NOT NULL,
        accession_number {text} NOT NULL,
        modality {text} NOT NULL,
        series_number INTEGER,
        instance_number INTEGER,
        header TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS instances_uids ON instances (study_uid, series_uid, sop_uid)",
    "CREATE INDEX IF NOT EXISTS instances_series ON instances (series_uid)",
    "CREATE INDEX IF NOT EXISTS instances_sop ON instances (sop_uid)",
    "CREATE INDEX IF NOT EXISTS instances_patient ON instances (patient_id)",
    "CREATE INDEX IF NOT EXISTS instances_date ON instances (study_date, study_time)",
    "CREATE INDEX IF NOT EXISTS instances_accession ON instances (accession_number)",
    "CREATE INDEX IF NOT EXISTS instances_modality ON instances (modality)",
)
_COLUMNS = (
    "key, study_uid, series_uid, sop_uid, patient_id, study_date, study_time, "
    "accession_number, modality, series_number, instance_number, header"
)
_UPSERT = (
    f"INSERT INTO instances ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET study_uid = excluded.study_uid, "
    "series_uid = excluded.series_uid, sop_uid = excluded.sop_uid, "
    "patient_id = excluded.patient_id, study_date = excluded.study_date, "
    "study_time = excluded.study_time, accession_number = excluded.accession_number, "
    "modality = excluded.modality, series_number = excluded.series_number, "
    "instance_number = excluded.instance_number, header = excluded.header"
)
# Columns a matching key narrows on: keyword -> (column, level of the attribute).
_NARROW: dict[str, tuple[str, str]] = {
    "StudyInstanceUID": ("study_uid", "STUDY"),
    "PatientID": ("patient_id", "STUDY"),
    "StudyDate": ("study_date", "STUDY"),
    "AccessionNumber": ("accession_number", "STUDY"),
    "SeriesInstanceUID": ("series_uid", "SERIES"),
    "Modality": ("modality", "SERIES"),
    "SOPInstanceUID": ("sop_uid", "IMAGE"),
}
_STUDY_CHUNK = 32  # studies whose headers one worker-thread call loads
_PIXEL_DATA = 0x7FE00010
_COMPACT = (",", ":")
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_DRIVER_ERRORS = (sqlite3.Error, psycopg.Error)
_CONNECT_TIMEOUT = 10  # seconds, PostgreSQL only
_SCHEMA_LOCK = 0x72737431  # pg_advisory_xact_lock key: replicas create the schema one at a time


class _Dialect:
    """What differs between SQLite and PostgreSQL; the SQL itself is shared."""

    name = "sqlite"
    text = "TEXT"  # SQLite compares TEXT byte-wise (BINARY collation)
    like = "LIKE"  # case-insensitive for ASCII in SQLite: a superset is all a search needs

    def sql(self, statement: str) -> str:
        """``statement`` (written with ``?`` placeholders and no other ``?`` or ``%``) in the
        driver's paramstyle."""
        return statement

    def connect(self, location: str) -> Any:
        Path(location).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(location, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout=10000")  # first: several workers may open it at once
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                db.execute(statement.format(text=self.text))
        except BaseException:
            db.close()
            raise
        return db

    def broken(self, db: Any) -> bool:
        return False


class _Postgres(_Dialect):
    name = "postgresql"
    text = 'TEXT COLLATE "C"'  # the same order as SQLite whatever the database's locale
    like = "ILIKE"  # no backslash in DICOM values (it separates them), so no escape clash

    def sql(self, statement: str) -> str:
        return statement.replace("?", "%s")

    def connect(self, location: str) -> Any:
        db = psycopg.connect(location, autocommit=True, connect_timeout=_CONNECT_TIMEOUT)
        try:
            # Replicas starting together: CREATE … IF NOT EXISTS alone can still collide.
            with db.transaction():
                db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                for statement in _SCHEMA:
                    db.execute(statement.format(text=self.text))
        except BaseException:
            db.close()
            raise
        return db

    def broken(self, db: Any) -> bool:
        return bool(db.closed or db.broken)


class _Connection:
    """One driver connection and its dialect: ``execute`` takes ``?`` SQL, returns all rows."""

    def __init__(self, dialect: _Dialect, location: str) -> None:
        self.dialect = dialect
        self.location = location
        self.raw: Any = None
        self.closed = False

    def open(self) -> None:
        self.raw = self.dialect.connect(self.location)

    def execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self.raw is None or self.dialect.broken(self.raw):
            if self.closed:
                raise IndexUnavailable(f"the QIDO-RS index {_redacted(self.location)!r} is closed")
            self.close_raw()
            self.open()  # reconnect after a lost PostgreSQL connection
        cursor = self.raw.execute(self.dialect.sql(sql), tuple(args))
        return [tuple(row) for row in cursor.fetchall()] if cursor.description else []

    def close_raw(self) -> None:
        raw, self.raw = self.raw, None
        if raw is not None:
            raw.close()

    def close(self) -> None:
        self.closed = True
        self.close_raw()


def _redacted(location: str) -> str:
    """``location`` without a password, for messages."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", location)


def index_location(config: S3AeConfig) -> str:
    """Where an S3 archive's index lives: ``[[aets]] index``, else ``{aet}.sqlite3`` here."""
    return config.index or f"{config.aet}.sqlite3"


class IndexUnavailable(RstError):
    """The QIDO-RS index cannot be read or written (its database failed)."""

    status = 503


class Index:
    """The QIDO-RS index of one S3 archive. Open with :meth:`open`, close with :meth:`close`.

    Cancelling a call waits for its (short) database statement to finish.
    """

    def __init__(self, connection: _Connection) -> None:
        self._db = connection
        self._lock = threading.Lock()
        self.location = connection.location
        self.dialect = connection.dialect.name  # "sqlite" or "postgresql"

    @classmethod
    async def open(cls, location: str) -> Index:
        """Open the index at ``location``: a SQLite file, or a ``postgresql://`` URL (several rst
        replicas may share that database); the schema is created if missing.

        :raises IndexUnavailable: the database cannot be reached, opened or initialised.
        """
        postgres = location.startswith(_POSTGRES_SCHEMES)
        connection = _Connection(_Postgres() if postgres else _Dialect(), location)
        try:
            await run_sync(connection.open)
        except (*_DRIVER_ERRORS, OSError) as exc:
            raise IndexUnavailable(
                f"cannot open the QIDO-RS index {_redacted(location)!r}: {exc}"
            ) from exc
        return cls(connection)

    async def _call(self, fn: Callable[[_Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                return fn(self._db)

        try:
            return await run_sync(locked)
        except (*_DRIVER_ERRORS, OSError) as exc:
            raise IndexUnavailable(
                f"the QIDO-RS index {_redacted(self.location)!r} failed: {exc}"
            ) from exc

    async def add(self, key: str, header: Dataset) -> None:
        """Index (or re-index) the instance stored at object ``key``.

        ``header`` holds the attributes before Pixel Data (file meta is ignored).
        :raises ValueError: the header lacks a Study, Series or SOP Instance UID.
        """
        row = _row(key, header)
        await self._call(lambda db: db.execute(_UPSERT, row))

    async def remove(self, key: str) -> None:
        """Forget the instance at ``key`` (nothing happens if it is not indexed)."""
        await self._call(lambda db: db.execute("DELETE FROM instances WHERE key = ?", (key,)))

    async def clear(self) -> None:
        """Forget every instance."""
        await self._call(lambda db: db.execute("DELETE FROM instances"))

    async def keys(
        self, study: str, series: str | None = None, sop: str | None = None
    ) -> list[str]:
        """The object keys of a study, series or instance, in series/instance number order."""
        sql = "SELECT key FROM instances WHERE study_uid = ?"
        args: list[Any] = [study]
        if series is not None:
            sql += " AND series_uid = ?"
            args.append(series)
        if sop is not None:
            sql += " AND sop_uid = ?"
            args.append(sop)
        sql += (  # NULLS FIRST: SQLite's order, not PostgreSQL's default
            " ORDER BY series_number NULLS FIRST, series_uid, instance_number NULLS FIRST,"
            " sop_uid, key"
        )
        rows = await self._call(lambda db: db.execute(sql, args))
        return [str(row[0]) for row in rows]

    def search(self, query: QidoQuery) -> AbstractAsyncContextManager[AsyncIterator[Dataset]]:
        """Rows shaped like C-FIND responses at ``query.level`` (the identifier's return keys
        filled from the stored headers, aggregates computed), in a stable order: study date,
        time and UID, then series number, then instance number. ``offset``/``limit`` are the
        caller's. Rows are read a few studies at a time; writes between two batches may show.
        """
        return self._search(query)

    @asynccontextmanager
    async def _search(self, query: QidoQuery) -> AsyncIterator[AsyncIterator[Dataset]]:
        rows = self._rows(query)
        try:
            yield rows
        finally:
            await rows.aclose()

    async def _rows(self, query: QidoQuery) -> AsyncGenerator[Dataset, None]:
        identifier = query.identifier
        plan = _Plan.of(query, self._db.dialect)
        studies = await self._call(plan.studies)
        for start in range(0, len(studies), _STUDY_CHUNK):
            chunk = studies[start : start + _STUDY_CHUNK]
            headers = await self._call(functools.partial(plan.headers, studies=chunk))
            for study in chunk:
                group = sorted(headers.get(study, ()), key=sort_key)
                for row in find(identifier, group):
                    yield row

    async def close(self) -> None:
        """Close the database connection (a second close does nothing)."""
        await self._call(lambda db: db.close())


class _Plan:
    """The SQL of one search: which studies may match, and which of their rows to load.

    Conditions on attributes above the aggregate scope (the study when study-level counts are
    asked for, the series for series counts) narrow the rows loaded; deeper ones narrow only
    the studies, so that the counts see whole studies and series.
    """

    def __init__(self, conditions: list[tuple[str, str, list[Any]]], scope: str) -> None:
        self.conditions = conditions  # (level, sql, args)
        self.scope = scope

    @classmethod
    def of(cls, query: QidoQuery, dialect: _Dialect) -> _Plan:
        identifier = query.identifier
        asked = {elem.keyword for elem in identifier}
        scope = query.level
        if asked & SERIES_COMPUTED and DEPTH[scope] > DEPTH["SERIES"]:
            scope = "SERIES"
        if asked & STUDY_COMPUTED:
            scope = "STUDY"
        conditions: list[tuple[str, str, list[Any]]] = []
        for elem in identifier:
            if elem.keyword in _NARROW:
                column, level = _NARROW[elem.keyword]
                condition = _condition(column, elem.VR, values(elem), dialect.like)
                if condition is not None:
                    conditions.append((level, *condition))
            elif elem.keyword == "ModalitiesInStudy":
                condition = _condition("modality", "CS", values(elem), dialect.like)
                if condition is not None:
                    sql, args = condition
                    subquery = f"study_uid IN (SELECT study_uid FROM instances WHERE {sql})"
                    conditions.append(("STUDY", subquery, args))
        return cls(conditions, scope)

    def _where(self, conditions: Sequence[tuple[str, str, list[Any]]]) -> tuple[str, list[Any]]:
        if not conditions:
            return "", []
        sql = " AND ".join(f"({c[1]})" for c in conditions)
        return sql, [arg for c in conditions for arg in c[2]]

    def studies(self, db: _Connection) -> list[str]:
        """The candidate studies, in date, time and UID order."""
        where, args = self._where(self.conditions)
        sql = (
            "SELECT study_uid FROM instances"
            + (f" WHERE {where}" if where else "")
            + " GROUP BY study_uid ORDER BY MIN(study_date), MIN(study_time), study_uid"
        )
        return [str(row[0]) for row in db.execute(sql, args)]

    def headers(self, db: _Connection, studies: Sequence[str]) -> dict[str, list[Dataset]]:
        """The headers to match of ``studies``, by study UID."""
        shallow = [c for c in self.conditions if DEPTH[c[0]] <= DEPTH[self.scope]]
        where, args = self._where(shallow)
        marks = ", ".join("?" for _ in studies)
        sql = f"SELECT study_uid, header FROM instances WHERE study_uid IN ({marks})"
        if where:
            sql += f" AND {where}"
        out: dict[str, list[Dataset]] = {}
        for study, header in db.execute(sql, [*studies, *args]):
            out.setdefault(str(study), []).append(Dataset.from_json(header))
        return out


def _condition(
    column: str, vr: str, wanted: list[str], like: str = "LIKE"
) -> tuple[str, list[Any]] | None:
    """SQL selecting a superset of the rows whose ``column`` matches the key's values."""
    if not wanted:
        return None  # universal matching
    if column == "study_date":
        if len(wanted) == 1 and "-" in wanted[0]:
            low, _, high = wanted[0].partition("-")
            parts, args = ["study_date <> ''"], []
            if low.strip():
                parts.append("study_date >= ?")
                args.append(normalise("DA", low, upper=False))
            if high.strip():
                parts.append("study_date <= ?")
                args.append(normalise("DA", high, upper=True))
            return " AND ".join(parts), args
        wanted = [normalise("DA", w, upper=False) for w in wanted]
    if any("*" in w or "?" in w for w in wanted):
        if len(wanted) != 1 or vr == "UI":
            return None  # several patterns: leave it to the matcher
        pattern = wanted[0].replace("*", "%").replace("?", "_")
        return f"{column} {like} ?", [pattern]  # `%`/`_` in the value only widen the superset
    marks = ", ".join("?" for _ in wanted)
    return f"{column} IN ({marks})", list(wanted)


def _row(key: str, header: Dataset) -> tuple[Any, ...]:
    def text(keyword: str) -> str:
        return str(header.get(keyword, "") or "").replace("\x00", "").strip()  # PostgreSQL: no NUL

    def number(keyword: str) -> int | None:
        try:
            return int(str(header.get(keyword, "")))
        except ValueError:
            return None

    uids = [text(k) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")]
    if not all(uids):
        raise ValueError(f"{key}: the header lacks a Study, Series or SOP Instance UID")
    study_date = text("StudyDate")
    return (
        key,
        *uids,
        text("PatientID"),
        normalise("DA", study_date, upper=False) if study_date else "",
        text("StudyTime"),
        text("AccessionNumber"),
        text("Modality"),
        number("SeriesNumber"),
        number("InstanceNumber"),
        json.dumps(
            _stripped(header).to_json_dict(suppress_invalid_tags=True), separators=(",", ":")
        ),
    )


def _stripped(ds: Dataset) -> Dataset:
    """A copy of ``ds`` without Pixel Data and what follows, file meta, or binary values."""
    out = Dataset()
    for elem in _elements(ds):
        if elem.VR == "SQ":
            copied = Dataset()
            copied.add_new(elem.tag, "SQ", [_stripped(item) for item in elem.value])
            out.add(copied[elem.tag])
        else:
            out.add(elem)
    return out


def _elements(ds: Dataset) -> Iterator[Any]:
    for elem in ds:
        if elem.tag >= _PIXEL_DATA or elem.tag >> 16 == 0x0002 or elem.VR in _BINARY_VRS:
            continue
        yield elem
