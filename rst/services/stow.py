"""STOW-RS: a multipart body parsed as it arrives, each instance stored and its fate reported.

Each part's fate is its own, and the response says what it was (PS3.18 10.5.3):

- A part rst cannot send as it is — not DICOM, a data set cut short, a missing or malformed
  SOP Class / SOP Instance / Study / Series Instance UID — fails with 0xC000 and is never sent;
  an instance of another study than the URL names fails with 0xA900.
- Otherwise the archive's answer decides: success or a warning puts the instance in
  ``ReferencedSOPSequence``, a failure status (0x0122 for a SOP class the PACS does not take,
  0xC122 for a transfer syntax, ...) in ``FailedSOPSequence``.
- A part whose association breaks (the PACS aborts, breaks the protocol) fails with 0x0110; the
  next part opens a new association.
- When the archive cannot be used at all (unreachable, rejects rst, stops answering), the
  request fails with that error (502/504) if nothing was stored yet; otherwise that part and
  every later one fail with 0x0110 without being sent, and the body is still read to name them.
- An error that ends the body (malformed multipart, a size or part-count limit, the upload
  breaking off) fails the request (400/413) if nothing was stored yet; otherwise the response
  lists what was stored and an ``OtherFailuresSequence`` item for the rest (0xA700 for a limit,
  0xC000 for a malformed body, 0x0110 otherwise).
- Anything unforeseen while handling one part fails that part (0x0110, logged with its
  traceback) and the next part is handled.

HTTP status: 200 all stored, 202 some stored, 409 none stored.

A failed part costs little, so that a body of thousands of empty or junk parts (the chaos run
sent 12,000) is answered in about a second, not half a minute: a part of at most
:data:`INLINE_PART_BYTES` is read in the request's own task (a hop to a worker thread costs more
than reading it), and failures are logged once per request, with their count by reason and the
first few causes (each part's at DEBUG).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import trio
from pydicom import Dataset

from rst.bridge import run_sync
from rst.dicom.multipart import MultipartReader, Part, stow_boundary
from rst.dicom.part10 import BadUpload, Upload, read_upload
from rst.dicom.statuses import (
    CANNOT_UNDERSTAND,
    DOES_NOT_MATCH_SOP_CLASS,
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    SUCCESS,
    is_stored,
)
from rst.errors import BadRequest, PayloadTooLarge, RstError
from rst.groups import copy_of
from rst.services.protocols import Backend, StoreSession

__all__ = ["INLINE_PART_BYTES", "MAX_STOW_PARTS", "StowOutcome", "store_instances"]

log = logging.getLogger(__name__)

MAX_STOW_PARTS = 10_000
"""Most parts one STOW-RS request may have (413 beyond)."""
INLINE_PART_BYTES = 4096
"""Parts up to this size are read without a worker thread: reading one takes well under a
millisecond (at most ~500 elements), less than the hop; larger ones are read in a thread."""
_LOGGED_CAUSES = 3
"""How many failed parts of one request have their cause in its log line (all at DEBUG)."""


@dataclass
class StowOutcome:
    """What happened to every instance of one STOW-RS request."""

    base: str
    study_uid: str | None
    referenced: list[Dataset] = field(default_factory=list)
    failed: list[Dataset] = field(default_factory=list)
    other_failures: list[Dataset] = field(default_factory=list)
    """Failures no instance can be named for: the rest of a body that could not be read."""
    warnings: int = 0

    @property
    def http_status(self) -> int:
        if not self.referenced and not self.failed and not self.other_failures:
            return 400
        if not self.referenced:
            return 409
        if self.failed or self.other_failures or self.warnings:
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
        if self.other_failures:
            ds.OtherFailuresSequence = self.other_failures
        result: dict[str, Any] = ds.to_json_dict()
        return result

    def add_stored(self, upload: Upload, status: int = SUCCESS) -> None:
        item = Dataset()
        item.ReferencedSOPClassUID = upload.sop_class_uid
        item.ReferencedSOPInstanceUID = upload.sop_instance_uid
        item.RetrieveURL = (
            f"{self.base}/studies/{upload.study_uid}/series/{upload.series_uid}"
            f"/instances/{upload.sop_instance_uid}"
        )
        if status != SUCCESS:
            item.WarningReason = status
            self.warnings += 1
        self.referenced.append(item)
        if self.study_uid is None:
            self.study_uid = upload.study_uid

    def add_failure(self, sop_class: str | None, sop_instance: str | None, reason: int) -> None:
        """A failed instance; UIDs that could not be read (or are not valid UIDs) are left out."""
        item = Dataset()
        if sop_class:
            item.ReferencedSOPClassUID = sop_class
        if sop_instance:
            item.ReferencedSOPInstanceUID = sop_instance
        item.FailureReason = reason
        self.failed.append(item)

    def add_other_failure(self, reason: int) -> None:
        item = Dataset()
        item.FailureReason = reason
        self.other_failures.append(item)


async def store_instances(
    backend: Backend,
    body: AsyncIterable[bytes],
    content_type: str | None,
    *,
    study_uid: str | None,
    base: str,
    max_bytes: int,
    max_parts: int = MAX_STOW_PARTS,
) -> StowOutcome:
    """Store every part of *body* through *backend*; report each instance's fate.

    Raises only when nothing was stored: a body that cannot be read (400, 413, 415), an archive
    that cannot be used (502, 504), a body without parts (400).
    """
    boundary = stow_boundary(content_type)
    reader = MultipartReader(
        boundary, max_part_bytes=max_bytes, max_total_bytes=max_bytes, max_parts=max_parts
    )
    outcome = StowOutcome(base, study_uid)
    async with backend.store() as session:
        parts = _Parts(session, outcome, study_uid)
        try:
            await _store_parts(body, reader, parts)
        finally:
            parts.log_failures()
    if not outcome.referenced and not outcome.failed:
        raise BadRequest("the STOW-RS request contained no instances")
    return outcome


async def _store_parts(body: AsyncIterable[bytes], reader: MultipartReader, parts: _Parts) -> None:
    outcome = parts.outcome
    chunks = aiter(body)
    while True:
        try:
            done, ended = await _next_parts(chunks, reader)
        except Exception as exc:  # the body cannot be read on: what was stored still counts
            if not outcome.referenced:
                raise
            outcome.add_other_failure(_body_failure(exc))
            log.warning(
                "STOW-RS body unreadable after part %d (%d instances stored): %s",
                reader.part_count,
                len(outcome.referenced),
                exc.message if isinstance(exc, RstError) else repr(exc),
            )
            return
        for part in done:
            await parts.store(part)
        if ended:
            return


async def _next_parts(
    chunks: AsyncIterator[bytes], reader: MultipartReader
) -> tuple[list[Part], bool]:
    """The parts the next chunk of the body completes, and whether the body has ended."""
    try:
        chunk = await anext(chunks)
    except StopAsyncIteration:
        return reader.finish(), True
    return reader.feed(chunk), False


def _body_failure(error: Exception) -> int:
    if isinstance(error, PayloadTooLarge):
        return OUT_OF_RESOURCES
    if isinstance(error, BadRequest):
        return CANNOT_UNDERSTAND
    return PROCESSING_FAILURE


class _Parts:
    """Stores the parts of one request one after another, each failing alone."""

    def __init__(self, session: StoreSession, outcome: StowOutcome, study_uid: str | None):
        self.session = session
        self.outcome = outcome
        self.study_uid = study_uid
        self.count = 0
        self.unusable: RstError | None = None
        """Set once the archive could not be used after something was stored."""
        self._names: tuple[str | None, str | None] = (None, None)
        self.failures: Counter[int] = Counter()
        """How many parts failed, by reason."""
        self._causes: list[str] = []
        """Why the first :data:`_LOGGED_CAUSES` failed parts failed."""

    async def store(self, part: Part) -> None:
        self.count += 1
        self._names = (None, None)
        try:
            await self._store(part)
        except RstError:
            raise  # the archive cannot be used and nothing was stored: the request's error
        except Exception:
            log.exception("STOW-RS part %d: unexpected error", self.count)
            self._fail(PROCESSING_FAILURE, "unexpected error (see the traceback)")

    async def _store(self, part: Part) -> None:
        try:
            upload = await _read(part.data)
        except BadUpload as exc:
            self._names = (exc.sop_class_uid, exc.sop_instance_uid)
            self._fail(CANNOT_UNDERSTAND, exc.message)
            return
        self._names = (upload.sop_class_uid, upload.sop_instance_uid)
        if self.study_uid is not None and upload.study_uid != self.study_uid:
            self._fail(DOES_NOT_MATCH_SOP_CLASS, f"it belongs to study {upload.study_uid}")
            return
        if self.unusable is not None:
            self._fail(PROCESSING_FAILURE, f"not sent: {self.unusable.message}")
            return
        try:
            result = await self.session.store(upload)
        except RstError as exc:
            if not self.outcome.referenced:
                raise
            self.unusable = copy_of(exc)  # not the raised one: its frames hold self
            self._fail(PROCESSING_FAILURE, exc.message)
            return
        if is_stored(result.status):
            self.outcome.add_stored(upload, result.status)
        else:
            self._fail(
                result.status, f"the archive answered 0x{result.status:04X} {result.comment}"
            )

    def _fail(self, reason: int, why: str) -> None:
        sop_class, sop_instance = self._names
        what = f"part {self.count} ({sop_instance or 'no valid SOP Instance UID'})"
        log.debug("STOW-RS %s not stored (0x%04X): %s", what, reason, why)
        if len(self._causes) < _LOGGED_CAUSES:
            self._causes.append(f"{what}, 0x{reason:04X}: {why}")
        self.failures[reason] += 1
        self.outcome.add_failure(sop_class, sop_instance, reason)

    def log_failures(self) -> None:
        """One line for all the parts that failed (thousands of junk parts, one line)."""
        if not self.failures:
            return
        reasons = ", ".join(f"{n} x 0x{reason:04X}" for reason, n in self.failures.most_common())
        log.info(
            "STOW-RS: %d of %d parts not stored (%s); %s",
            self.failures.total(),
            self.count,
            reasons,
            "; ".join(self._causes),
        )


async def _read(data: bytes) -> Upload:
    """:func:`read_upload` in a worker thread, or in this task for a small part (after letting
    other tasks run: a body of many small parts does not hold the loop)."""
    if len(data) > INLINE_PART_BYTES:
        return await run_sync(lambda: read_upload(data))
    await trio.lowlevel.checkpoint()
    return read_upload(data)
