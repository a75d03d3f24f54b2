"""What one audited request did: the accumulator its routes fill while it runs.

An :class:`AuditRecord` is made when a request arrives (:mod:`rst.audit.hooks`), kept on quart's
``g`` while the request context lives and held by the hooks until the last byte of the response
is out. The routes never touch it: :class:`AuditedBackend`, the archive as the request sees it
(:meth:`rst.http.context.RouteContext.backend_for`), counts what went through it — search
matches, retrieved instances, stored instances — so every service is covered in one place.

The same hook notes the patients (:mod:`rst.dicom.patient`) as the matches and instances pass
by: the Patient ID and name of each match, of each stored instance's header, and of each
retrieved instance, read in place from its first bytes. Nothing is held but the distinct
patients (at most :data:`MAX_PATIENTS`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

from pydicom import Dataset

from rst.auth.identity import Identity
from rst.dicom.part10 import Upload
from rst.dicom.patient import Patient, PatientReader, patient_in_dataset
from rst.dicom.query import QidoQuery
from rst.dicom.statuses import is_stored
from rst.services.protocols import Backend, Instance, RetrieveKeys, StoreResult, StoreSession

__all__ = ["MAX_PATIENTS", "AuditRecord", "AuditedBackend", "Service"]

Service = Literal["search", "worklist", "retrieve", "store"]

MAX_PATIENTS = 100
"""Distinct patients one event names at most (a search over a busy day can match thousands);
``patients_omitted`` says how many more there were."""


@dataclass
class AuditRecord:
    """One request, as the audit trail sees it."""

    started: float
    """Wall-clock time (seconds since the epoch) the request arrived."""
    client: str | None
    """The client's address (the TCP peer, not a header a client can set)."""
    request_id: str = ""
    method: str = ""
    path: str = ""
    service: Service | None = None
    """None: a request the trail does not record (``/aets``, health, metrics, a 404)."""
    resource: str = ""
    """The route's endpoint (``qido:studies``, ``metadata:series``, ``wado-uri``…)."""
    aet: str | None = None
    station: str | None = None
    """The archive's own AE title (a DIMSE entry's ``called_aet``), when it is not ``aet``."""
    level: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    sop_uid: str | None = None
    query: str | None = None
    query_truncated: bool = False
    identity: Identity | None = None
    auth_scheme: str | None = None
    """The scheme of the ``Authorization`` header (``Bearer``, ``Basic``), never its value."""
    matches: int = 0
    instances: int = 0
    """Instances retrieved from the archive for the request, or stored by it."""
    failed: int = 0
    """STOW-RS: instances the archive refused."""
    studies: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    """Study UID → (SOP Class UID, SOP Instance UID) of each instance transferred (retrieves
    and stores), in order."""

    patients: dict[str, str | None] = field(default_factory=dict)
    """Patient ID → Patient's Name (None: not known) of the matches or instances, in order."""
    patients_omitted: int = 0
    """Matches or instances whose patient is not listed: a new one past :data:`MAX_PATIENTS`."""

    def transferred(self, study_uid: str, sop_uid: str, sop_class: str) -> None:
        self.instances += 1
        self.studies.setdefault(study_uid, []).append((sop_class, sop_uid))

    def saw(self, patient: Patient | None) -> None:
        """Note *patient* (nothing when None: the data did not say)."""
        if patient is None:
            return
        if patient.id in self.patients:
            if self.patients[patient.id] is None:
                self.patients[patient.id] = patient.name
        elif len(self.patients) < MAX_PATIENTS:
            self.patients[patient.id] = patient.name
        else:
            self.patients_omitted += 1


class AuditedBackend:
    """*inner* as one request sees it, counting into *record*."""

    def __init__(self, inner: Backend, record: AuditRecord) -> None:
        self.inner = inner
        self.record = record
        self.name = inner.name

    async def echo(self) -> None:
        await self.inner.echo()

    @asynccontextmanager
    async def search(self, query: QidoQuery) -> AsyncIterator[AsyncIterator[Dataset]]:
        record = self.record

        async def counted(matches: AsyncIterator[Dataset]) -> AsyncGenerator[Dataset]:
            async for match in matches:
                record.matches += 1
                record.saw(patient_in_dataset(match))
                yield match

        async with self.inner.search(query) as matches, aclosing(counted(matches)) as rows:
            yield rows

    @asynccontextmanager
    async def retrieve(
        self, keys: RetrieveKeys, prefer: str | None = None
    ) -> AsyncIterator[AsyncIterator[Instance]]:
        record = self.record
        patient_of = PatientReader()

        async def counted(instances: AsyncIterator[Instance]) -> AsyncGenerator[Instance]:
            async for instance in instances:
                record.transferred(
                    keys.study_uid, instance.sop_instance_uid, instance.sop_class_uid
                )
                record.saw(patient_of(instance.data, instance.transfer_syntax))
                yield instance

        async with (
            self.inner.retrieve(keys, prefer) as instances,
            aclosing(counted(instances)) as found,
        ):
            yield found

    def store(self) -> AbstractAsyncContextManager[StoreSession]:
        return self._store()

    @asynccontextmanager
    async def _store(self) -> AsyncIterator[StoreSession]:
        async with self.inner.store() as session:
            yield _AuditedSession(session, self.record)


@dataclass
class _AuditedSession:
    inner: StoreSession
    record: AuditRecord

    async def store(self, upload: Upload) -> StoreResult:
        result = await self.inner.store(upload)
        if is_stored(result.status):
            self.record.transferred(upload.study_uid, upload.sop_instance_uid, upload.sop_class_uid)
            self.record.saw(patient_in_dataset(upload.header))
        else:
            self.record.failed += 1
        return result
