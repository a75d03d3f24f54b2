"""The contract between the DICOMweb services and the archives behind them.

One :class:`Backend` per configured AE; the DIMSE backend implements it with C-FIND, C-MOVE or
C-GET and C-STORE. A backend that lacks a capability raises :class:`~rst.errors.NotSupported`.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Literal, Protocol

from pydicom import Dataset

from rst.dicom.part10 import Upload
from rst.dicom.query import QidoQuery

__all__ = [
    "METADATA_ONLY",
    "Backend",
    "ByteRanges",
    "Instance",
    "RetrieveKeys",
    "Sidecars",
    "StoreResult",
    "StoreSession",
]


class Sidecars(Protocol):
    """What rst derived from one exact instance (its DICOM JSON, say), kept beside it so that it
    is computed once: the retrieve cache keeps these next to its files. Blocking: called on
    worker threads."""

    def peek(self, kind: str) -> bytes | None:
        """What is kept under *kind* if it is at hand in memory (not blocking: callable from
        trio's thread), else ``None`` (then :meth:`load` may still find it)."""

    def load(self, kind: str) -> bytes | None:
        """What was kept under *kind*, or ``None``."""

    def save(self, kind: str, data: bytes) -> None:
        """Keep *data* under *kind*; best effort (a failure is logged, never raised)."""

    @property
    def arriving(self) -> bool:
        """Whether the instance is still on its way into the store, all that is kept of it in
        memory (not blocking): then :meth:`peek` says what :meth:`load` would, and
        :meth:`keep_nowait` keeps more."""

    def keep_nowait(self, kind: str, data: bytes) -> bool:
        """:meth:`save` without blocking while :attr:`arriving`; ``False`` (nothing kept) once it
        is not — then :meth:`save` on a worker thread."""

    @property
    def ranges(self) -> ByteRanges | None:
        """Reads of the exact file the sidecars describe (``None``: not readable in parts):
        what a sidecar that says where things lie in it — the frame layout — is read with."""


class ByteRanges(Protocol):
    """Reads of any part of one stored instance without fetching the rest (an S3 object's
    ranged GETs): what lets metadata come from an object's head and a frame from its bytes."""

    @property
    def size(self) -> int:
        """The instance's size in bytes (the whole Part 10 file)."""
        ...

    async def read(self, start: int, length: int) -> bytes:
        """The *length* bytes from *start* (fewer only where the instance ends)."""
        ...


@dataclass(frozen=True, slots=True)
class Instance:
    """One instance as a DICOM Part 10 file, as the archive sent it.

    A large instance may be handed over while it is still arriving: then ``data`` is its
    beginning (at least the file meta and the first part of the data set) and ``rest`` yields
    the remaining bytes in order, raising :class:`~rst.errors.RstError` if the transfer breaks
    off. A consumer must read ``rest`` to its end before it takes the next instance.

    ``sidecars``, where the instance has a home that can keep them (the retrieve cache), holds
    what was derived from it before.

    ``ranges``, where the archive can read any part of the stored instance (S3), gives such
    reads; ``rest`` then fetches the remaining bytes only when it is read, and a consumer may
    leave it unread (:mod:`rst.services.ranged` reads the head and the frames asked for)."""

    data: bytes
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    rest: AsyncIterable[bytes] | None = field(default=None, compare=False)
    sidecars: Sidecars | None = field(default=None, compare=False)
    ranges: ByteRanges | None = field(default=None, compare=False)


METADATA_ONLY = "metadata-only"
"""The *prefer* of :meth:`Backend.retrieve` that is not a transfer syntax: the caller (WADO-RS
metadata) wants the instances' attributes only. A backend may then leave bulk data out (the
DIMSE backend's Composite Instance Retrieve Without Bulk Data,
:mod:`rst.backends.dimse.without_bulk_data`) or ignore the hint and send instances as stored."""


@dataclass(frozen=True, slots=True)
class RetrieveKeys:
    """What a WADO-RS instance resource names: a study, a series or one instance."""

    study_uid: str
    series_uid: str | None = None
    sop_uid: str | None = None

    @property
    def uid(self) -> str:
        """The UID of the named entity itself."""
        return self.sop_uid or self.series_uid or self.study_uid

    @property
    def level(self) -> Literal["STUDY", "SERIES", "IMAGE"]:
        if self.sop_uid is not None:
            return "IMAGE"
        if self.series_uid is not None:
            return "SERIES"
        return "STUDY"


@dataclass(frozen=True, slots=True)
class StoreResult:
    """The archive's answer to one stored instance: the DIMSE status and its meaning."""

    status: int
    comment: str = ""


class StoreSession(Protocol):
    async def store(self, upload: Upload) -> StoreResult:
        """Store one instance; a failure status is returned, not raised."""
        ...


class Backend(Protocol):
    """An archive behind one AE title."""

    name: str

    async def echo(self) -> None:
        """Check that the archive answers; raise an RstError if not."""
        ...

    def search(self, query: QidoQuery) -> AbstractAsyncContextManager[AsyncIterator[Dataset]]:
        """Matches for *query*, as they arrive. Leaving early cancels the search."""
        ...

    def retrieve(
        self, keys: RetrieveKeys, prefer: str | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[Instance]]:
        """The instances *keys* name, as they arrive; the iterator raises if the retrieve turns
        out incomplete, and :class:`~rst.errors.NotFound` if nothing matched. *prefer* is the
        transfer syntax the client wants (``None``: as stored), a hint the backend may use."""
        ...

    def store(self) -> AbstractAsyncContextManager[StoreSession]:
        """A session storing instances one after another (one association)."""
        ...
