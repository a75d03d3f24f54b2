"""An in-memory :class:`~rst.services.protocols.Backend` that fails where a test says.

The seam of :mod:`rst.services.protocols`: serving it through the real app and listener tests
what rst does with a failure at each point of a request — without a PACS — including failures
that are not :class:`~rst.errors.RstError` (a bug, a library choking on a peer's data).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field

from pydicom import Dataset

from rst.dicom.part10 import Upload
from rst.dicom.query import QidoQuery
from rst.services.protocols import Instance, RetrieveKeys, StoreResult

__all__ = ["ScriptedBackend"]

EXPLICIT_LE = "1.2.840.10008.1.2.1"


@dataclass
class ScriptedBackend:
    """Searches return *matches*, retrieves *instances*; ``fail_*`` raise after that many items.

    ``error`` builds the exception raised (a fresh one per request)."""

    name: str = "SCRIPTED"
    matches: list[Dataset] = field(default_factory=list)
    instances: list[Instance] = field(default_factory=list)
    fail_search_after: int | None = None
    fail_retrieve_after: int | None = None
    fail_echo: bool = False
    error: Callable[[], BaseException] = lambda: ValueError("a bug that rst did not foresee")
    opened: int = 0
    closed: int = 0

    async def echo(self) -> None:
        if self.fail_echo:
            raise self.error()

    @asynccontextmanager
    async def search(self, query: QidoQuery) -> AsyncIterator[AsyncIterator[Dataset]]:
        async def rows() -> AsyncGenerator[Dataset]:
            for n, match in enumerate(self.matches):
                if n == self.fail_search_after:
                    raise self.error()
                yield match
            if self.fail_search_after is not None and self.fail_search_after >= len(self.matches):
                raise self.error()

        self.opened += 1
        try:
            async with aclosing(rows()) as found:
                yield found
        finally:
            self.closed += 1

    @asynccontextmanager
    async def retrieve(
        self, keys: RetrieveKeys, prefer: str | None = None
    ) -> AsyncIterator[AsyncIterator[Instance]]:
        async def parts() -> AsyncGenerator[Instance]:
            for n, instance in enumerate(self.instances):
                if n == self.fail_retrieve_after:
                    raise self.error()
                yield instance

        self.opened += 1
        try:
            async with aclosing(parts()) as found:
                yield found
        finally:
            self.closed += 1

    @asynccontextmanager
    async def store(self) -> AsyncIterator[_Session]:
        yield _Session(self)


@dataclass
class _Session:
    backend: ScriptedBackend

    async def store(self, upload: Upload) -> StoreResult:
        return StoreResult(0x0000)


def part10(
    sop_uid: str,
    *,
    size: int = 1024,
    patient_id: str | None = None,
    patient_name: str = "CONTAINMENT^TEST",
    charset: str | None = None,
    syntax: str = EXPLICIT_LE,
) -> Instance:
    """A small, valid Part 10 instance (Secondary Capture, Explicit VR LE unless *syntax*
    says otherwise); a Patient ID (and a sequence before it) only when *patient_id* is given."""
    from io import BytesIO

    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID

    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = "1.2.3.4"
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.PatientName = patient_name
    if patient_id is not None:
        ds.PatientID = patient_id
        ds.ReferencedStudySequence = [Dataset()]  # a sequence before the patient's elements
        ds.ReferencedStudySequence[0].ReferencedSOPInstanceUID = "1.2.3.99"
    ds.EncapsulatedDocument = b"x" * size
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return Instance(buffer.getvalue(), ds.SOPClassUID, sop_uid, syntax)
