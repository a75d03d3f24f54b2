"""The in-memory :class:`~rst.services.protocols.Backend`: rst's one fake archive.

The seam of :mod:`rst.services.protocols`. It holds matches and instances in memory, records
what it was asked (:attr:`ScriptedBackend.queries`, :attr:`~ScriptedBackend.retrieves`,
:attr:`~ScriptedBackend.sent`) and fails where a test says — including failures that are not
:class:`~rst.errors.RstError` (a bug, a library choking on a peer's data). The services are
unit-tested against it directly (``tests/unit/test_services.py``); served through the real app
and listener it tests what rst does with a failure at each point of a request, without a PACS.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from io import BytesIO

from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID

from rst.dicom.part10 import Upload
from rst.dicom.query import QidoQuery
from rst.dicom.statuses import SUCCESS
from rst.dicom.uids import EXPLICIT_VR_LITTLE_ENDIAN
from rst.errors import NotFound
from rst.services.protocols import Instance, RetrieveKeys, StoreResult

__all__ = ["ScriptedBackend", "named_by", "part10"]

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


@dataclass
class ScriptedBackend:
    """Searches return *matches*, retrieves *instances*; ``fail_*`` raise after that many items.

    ``error`` builds the exception raised (a fresh one per request). With ``by_keys`` a retrieve
    sends only the instances its keys name, and :class:`~rst.errors.NotFound` if there are none,
    as a real archive does; without it, every instance (the keys do not matter to the test).
    A stored instance is answered from ``answers`` by SOP Instance UID — a result, or an
    exception raised — and with success otherwise."""

    name: str = "SCRIPTED"
    matches: list[Dataset] = field(default_factory=list)
    instances: list[Instance] = field(default_factory=list)
    by_keys: bool = False
    fail_search_after: int | None = None
    fail_retrieve_after: int | None = None
    fail_echo: bool = False
    error: Callable[[], BaseException] = lambda: ValueError("a bug that rst did not foresee")
    answers: dict[str, StoreResult | BaseException] = field(default_factory=dict)
    queries: list[QidoQuery] = field(default_factory=list)
    """Every search's query, in order."""
    retrieves: list[tuple[RetrieveKeys, str | None]] = field(default_factory=list)
    """Every retrieve's keys and transfer syntax hint, in order."""
    sent: list[str] = field(default_factory=list)
    """The SOP Instance UID of every instance a store session was given, in order."""
    opened: int = 0
    closed: int = 0
    """Searches and retrieves opened and closed: a test sees that each one ended."""

    async def echo(self) -> None:
        if self.fail_echo:
            raise self.error()

    @asynccontextmanager
    async def search(self, query: QidoQuery) -> AsyncIterator[AsyncIterator[Dataset]]:
        self.queries.append(query)

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
        self.retrieves.append((keys, prefer))
        instances = self.instances
        if self.by_keys:
            instances = [instance for instance in instances if named_by(keys, instance)]
            if not instances:
                raise NotFound(f"the archive {self.name} has no {keys.level.lower()} {keys.uid}")

        async def parts() -> AsyncGenerator[Instance]:
            for n, instance in enumerate(instances):
                if n == self.fail_retrieve_after:
                    raise self.error()
                yield instance
            if self.fail_retrieve_after is not None and self.fail_retrieve_after >= len(instances):
                raise self.error()

        self.opened += 1
        try:
            async with aclosing(parts()) as found:
                yield found
        finally:
            self.closed += 1

    @asynccontextmanager
    async def store(self) -> AsyncIterator[ScriptedSession]:
        yield ScriptedSession(self)


@dataclass
class ScriptedSession:
    backend: ScriptedBackend

    async def store(self, upload: Upload) -> StoreResult:
        self.backend.sent.append(upload.sop_instance_uid)
        answer = self.backend.answers.get(upload.sop_instance_uid, StoreResult(SUCCESS))
        if isinstance(answer, BaseException):
            raise answer
        return answer


def named_by(keys: RetrieveKeys, instance: Instance) -> bool:
    """Whether *keys* name *instance* (its study, and its series and SOP instance if given)."""
    ds = dcmread(BytesIO(instance.data), stop_before_pixels=True)
    uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    wanted = (keys.study_uid, keys.series_uid, keys.sop_uid)
    return all(want is None or want == uid for want, uid in zip(wanted, uids, strict=True))


def part10(
    sop_uid: str,
    *,
    size: int = 1024,
    study: str = "1.2.3",
    series: str = "1.2.3.4",
    patient_id: str | None = None,
    patient_name: str = "CONTAINMENT^TEST",
    charset: str | None = None,
    syntax: str = EXPLICIT_VR_LITTLE_ENDIAN,
) -> Instance:
    """A small, valid Part 10 instance (Secondary Capture, Explicit VR LE unless *syntax*
    says otherwise); a Patient ID (and a sequence before it) only when *patient_id* is given."""
    ds = Dataset()
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
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
