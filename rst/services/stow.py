"""STOW-RS: a multipart body parsed as it arrives, each instance stored and its fate reported."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable
from dataclasses import dataclass, field
from typing import Any

from pydicom import Dataset

from rst.bridge import run_sync
from rst.dicom.multipart import MultipartReader, Part, stow_boundary
from rst.dicom.part10 import read_upload
from rst.errors import BadRequest, RstError
from rst.services.protocols import Backend, StoreSession

__all__ = ["StowOutcome", "store_instances"]

log = logging.getLogger(__name__)

# PS3.18 Table I.2-1 / PS3.4 C-STORE failure reasons
PROCESSING_FAILURE = 0x0110
OUT_OF_RESOURCES = 0xA700
STUDY_MISMATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
WARNING_STATUSES = range(0xB000, 0xC000)


@dataclass
class StowOutcome:
    """What happened to every instance of one STOW-RS request."""

    base: str
    study_uid: str | None
    referenced: list[Dataset] = field(default_factory=list)
    failed: list[Dataset] = field(default_factory=list)
    warnings: int = 0

    @property
    def http_status(self) -> int:
        if not self.referenced and not self.failed:
            return 400
        if not self.referenced:
            return 409
        if self.failed or self.warnings:
            return 202
        return 200

    def to_json(self) -> dict[str, Any]:
        ds = Dataset()
        if self.study_uid:
            ds.RetrieveURL = f"{self.base}/studies/{self.study_uid}"
        if self.referenced:
            ds.ReferencedSOPSequence = self.referenced
        if self.failed:
            ds.FailedSOPSequence = self.failed
        result: dict[str, Any] = ds.to_json_dict()
        return result

    def add_failure(self, sop_class: str | None, sop_instance: str | None, reason: int) -> None:
        item = Dataset()
        if sop_class:
            item.ReferencedSOPClassUID = sop_class
        if sop_instance:
            item.ReferencedSOPInstanceUID = sop_instance
        item.FailureReason = reason
        self.failed.append(item)


async def store_instances(
    backend: Backend,
    body: AsyncIterable[bytes],
    content_type: str | None,
    *,
    study_uid: str | None,
    base: str,
    max_bytes: int,
) -> StowOutcome:
    """Store every part of *body* through *backend*; report each instance's fate.

    An error reaching the archive before anything was stored is raised (502/504); after that,
    the remaining instances are reported as failed.
    """
    boundary = stow_boundary(content_type)
    reader = MultipartReader(boundary, max_part_bytes=max_bytes, max_total_bytes=max_bytes)
    outcome = StowOutcome(base, study_uid)
    broken: RstError | None = None

    async def handle(session: StoreSession, part: Part) -> None:
        nonlocal broken
        try:
            upload = await run_sync(lambda: read_upload(part.data))
        except BadRequest as exc:
            log.info("STOW part not stored: %s", exc.message)
            outcome.add_failure(None, None, CANNOT_UNDERSTAND)
            return
        sop_class = str(upload.header.get("SOPClassUID", "")) or None
        sop_instance = str(upload.header.get("SOPInstanceUID", "")) or None
        if not sop_class or not sop_instance:
            outcome.add_failure(sop_class, sop_instance, CANNOT_UNDERSTAND)
            return
        instance_study = str(upload.header.get("StudyInstanceUID", ""))
        if study_uid is not None and instance_study != study_uid:
            outcome.add_failure(sop_class, sop_instance, STUDY_MISMATCH)
            return
        if broken is not None:
            outcome.add_failure(sop_class, sop_instance, PROCESSING_FAILURE)
            return
        try:
            result = await session.store(upload)
        except RstError as exc:
            if not outcome.referenced and not outcome.failed:
                raise
            broken = exc
            outcome.add_failure(sop_class, sop_instance, PROCESSING_FAILURE)
            return
        if result.status == 0x0000 or result.status in WARNING_STATUSES:
            item = Dataset()
            item.ReferencedSOPClassUID = sop_class
            item.ReferencedSOPInstanceUID = sop_instance
            series = upload.header.get("SeriesInstanceUID", "")
            item.RetrieveURL = (
                f"{base}/studies/{instance_study}/series/{series}/instances/{sop_instance}"
            )
            if result.status != 0x0000:
                item.WarningReason = result.status
                outcome.warnings += 1
            outcome.referenced.append(item)
            if outcome.study_uid is None:
                outcome.study_uid = instance_study
        else:
            log.info("PACS refused %s with status 0x%04X", sop_instance, result.status)
            outcome.add_failure(sop_class, sop_instance, result.status)

    async with backend.store() as session:
        async for chunk in body:
            for part in reader.feed(chunk):
                await handle(session, part)
        for part in reader.finish():
            await handle(session, part)
    if not outcome.referenced and not outcome.failed:
        raise BadRequest("the STOW-RS request contained no instances")
    return outcome
