"""STOW-RS outcome rules, against an in-memory archive: each part's fate is its own, and what
was stored is always reported."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from io import BytesIO
from typing import cast

import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from rst.dicom.multipart import MultipartWriter
from rst.dicom.part10 import Upload
from rst.errors import BackendTimeout, BadRequest, PacsUnreachable, PayloadTooLarge
from rst.services.protocols import Backend, StoreResult
from rst.services.stow import MAX_STOW_PARTS, StowOutcome, store_instances

STUDY = "1.2.826.0.1.3680043.10.999.1"
CT = UID("1.2.840.10008.5.1.4.1.1.2")


def instance(number: int, study: str = STUDY) -> tuple[str, bytes]:
    uid = UID(f"1.2.826.0.1.3680043.10.999.1.1.{number}")
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = uid
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = f"{study}.1"
    ds.PixelData = b"\0\1" * 32
    ds["PixelData"].VR = "OW"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return uid, out.getvalue()


class FakeSession:
    """Answers each C-STORE from *answers* (by SOP Instance UID): a result, or an error raised."""

    def __init__(self, answers: dict[str, StoreResult | Exception] | None = None) -> None:
        self.answers = answers or {}
        self.sent: list[str] = []

    async def store(self, upload: Upload) -> StoreResult:
        self.sent.append(upload.sop_instance_uid)
        answer = self.answers.get(upload.sop_instance_uid, StoreResult(0x0000))
        if isinstance(answer, Exception):
            raise answer
        return answer


class FakeArchive:
    name = "FAKE"

    def __init__(self, session: FakeSession) -> None:
        self.session = session

    @asynccontextmanager
    async def store(self) -> AsyncIterator[FakeSession]:
        yield self.session


def multipart(*parts: bytes, close: bool = True) -> tuple[str, bytes]:
    writer = MultipartWriter()
    body = b"".join(writer.part_head("application/dicom") + part for part in parts)
    return writer.content_type(), body + (writer.close() if close else b"")


class Chunks:
    """*body* in chunks of 1000 bytes, as a request body arrives, then *then* raised (an
    iterator, not a generator: STOW may leave it unfinished)."""

    def __init__(self, body: bytes, *, then: Exception | None = None) -> None:
        self._chunks = [body[start : start + 1000] for start in range(0, len(body), 1000)]
        self._then = then

    def __aiter__(self) -> Chunks:
        return self

    async def __anext__(self) -> bytes:
        if self._chunks:
            return self._chunks.pop(0)
        if self._then is not None:
            raise self._then
        raise StopAsyncIteration


async def stow(
    session: FakeSession,
    content_type: str,
    body: Chunks,
    *,
    study: str | None = None,
    max_bytes: int = 1 << 30,
    max_parts: int = MAX_STOW_PARTS,
) -> StowOutcome:
    return await store_instances(
        cast(Backend, FakeArchive(session)),
        body,
        content_type,
        study_uid=study,
        base="http://rst/aets/FAKE",
        max_bytes=max_bytes,
        max_parts=max_parts,
    )


def referenced(outcome: StowOutcome) -> list[str]:
    return [str(item.ReferencedSOPInstanceUID) for item in outcome.referenced]


def failed(outcome: StowOutcome) -> list[tuple[str | None, int]]:
    return [
        (item.get("ReferencedSOPInstanceUID"), int(item.FailureReason)) for item in outcome.failed
    ]


def others(outcome: StowOutcome) -> list[int]:
    return [int(item.FailureReason) for item in outcome.other_failures]


class TestHttpStatus:
    def test_rules(self) -> None:
        item = Dataset()
        outcome = StowOutcome("http://rst", None)
        assert outcome.http_status == 400  # nothing at all
        outcome.failed.append(item)
        assert outcome.http_status == 409  # none stored
        outcome.referenced.append(item)
        assert outcome.http_status == 202  # some stored
        outcome.failed.clear()
        assert outcome.http_status == 200  # all stored
        outcome.warnings = 1
        assert outcome.http_status == 202
        outcome.warnings = 0
        outcome.other_failures.append(item)
        assert outcome.http_status == 202
        assert "0008119A" in outcome.to_json()  # OtherFailuresSequence


class TestEachPartAlone:
    async def test_all_stored(self) -> None:
        (a, da), (b, db) = instance(1), instance(2)
        content_type, body = multipart(da, db)
        outcome = await stow(FakeSession(), content_type, Chunks(body))
        assert outcome.http_status == 200
        assert referenced(outcome) == [a, b]
        url = outcome.referenced[0].RetrieveURL
        assert url == f"http://rst/aets/FAKE/studies/{STUDY}/series/{STUDY}.1/instances/{a}"
        assert outcome.to_json()["00081190"]["Value"] == [f"http://rst/aets/FAKE/studies/{STUDY}"]

    async def test_unexpected_error_fails_that_part_only(self) -> None:
        (a, da), (b, db), (c, dc) = instance(1), instance(2), instance(3)
        session = FakeSession({b: RuntimeError("a bug")})
        content_type, body = multipart(da, db, dc)
        outcome = await stow(session, content_type, Chunks(body))
        assert outcome.http_status == 202
        assert referenced(outcome) == [a, c]
        assert failed(outcome) == [(b, 0x0110)]

    async def test_failure_and_warning_statuses(self) -> None:
        (a, da), (b, db), (c, dc) = instance(1), instance(2), instance(3)
        session = FakeSession({a: StoreResult(0xB000), b: StoreResult(0x0122, "no")})
        content_type, body = multipart(da, db, dc)
        outcome = await stow(session, content_type, Chunks(body))
        assert outcome.http_status == 202
        assert referenced(outcome) == [a, c]
        assert outcome.referenced[0].WarningReason == 0xB000
        assert failed(outcome) == [(b, 0x0122)]

    async def test_study_mismatch_is_never_sent(self) -> None:
        (a, da), (b, db) = instance(1), instance(2, study="1.2.3")
        session = FakeSession()
        content_type, body = multipart(da, db)
        outcome = await stow(session, content_type, Chunks(body), study=STUDY)
        assert referenced(outcome) == [a]
        assert failed(outcome) == [(b, 0xA900)]
        assert session.sent == [a]

    async def test_unreadable_parts_are_never_sent(self) -> None:
        (a, da), (b, db) = instance(1), instance(2)
        session = FakeSession()
        content_type, body = multipart(da[:-10], b"junk" * 100, db)
        outcome = await stow(session, content_type, Chunks(body))
        assert referenced(outcome) == [b]
        assert failed(outcome) == [(a, 0xC000), (None, 0xC000)]
        assert session.sent == [b]


class TestUnusableArchive:
    async def test_before_anything_was_stored_is_the_request_error(self) -> None:
        (a, da), (_, db) = instance(1), instance(2)
        session = FakeSession({a: PacsUnreachable("cannot connect")})
        content_type, body = multipart(da, db)
        with pytest.raises(PacsUnreachable):
            await stow(session, content_type, Chunks(body))

    async def test_after_a_stored_part_fails_the_rest_unsent(self) -> None:
        (a, da), (b, db), (c, dc) = instance(1), instance(2), instance(3)
        session = FakeSession({b: BackendTimeout("no answer")})
        content_type, body = multipart(da, db, dc, b"junk")
        outcome = await stow(session, content_type, Chunks(body))
        assert outcome.http_status == 202
        assert referenced(outcome) == [a]
        assert failed(outcome) == [(b, 0x0110), (c, 0x0110), (None, 0xC000)]
        assert session.sent == [a, b]


class TestBrokenBody:
    async def test_before_anything_was_stored_is_the_request_error(self) -> None:
        _, da = instance(1)
        content_type, body = multipart(da, close=False)
        with pytest.raises(BadRequest, match="closing boundary"):
            await stow(FakeSession(), content_type, Chunks(body))
        empty_type, empty = multipart()
        with pytest.raises(BadRequest, match="no instances"):
            await stow(FakeSession(), empty_type, Chunks(empty))

    async def test_after_a_stored_part_lists_it(self) -> None:
        (a, da), (_, db) = instance(1), instance(2)
        content_type, body = multipart(da, db[:200], close=False)
        outcome = await stow(FakeSession(), content_type, Chunks(body))
        assert outcome.http_status == 202
        assert referenced(outcome) == [a]
        assert others(outcome) == [0xC000]

    @pytest.mark.parametrize("limit", ["part-count", "size"])
    async def test_limits_after_stored_parts(self, limit: str) -> None:
        (a, da), (b, db), (_, dc) = instance(1), instance(2), instance(3)
        content_type, body = multipart(da, db, dc)
        if limit == "part-count":
            outcome = await stow(FakeSession(), content_type, Chunks(body), max_parts=2)
        else:  # reached in the third part
            outcome = await stow(
                FakeSession(), content_type, Chunks(body), max_bytes=len(body) - 99
            )
        assert referenced(outcome) == [a, b]
        assert others(outcome) == [0xA700]

    async def test_limits_before_anything_was_stored(self) -> None:
        _, da = instance(1)
        content_type, body = multipart(b"junk", da)  # the first part fails, nothing is stored
        with pytest.raises(PayloadTooLarge, match="more than 1 parts"):
            await stow(FakeSession({}), content_type, Chunks(body), max_parts=1)
        with pytest.raises(PayloadTooLarge):
            await stow(FakeSession(), content_type, Chunks(body), max_bytes=100)

    async def test_upload_breaking_off(self) -> None:
        (a, da), (_, db) = instance(1), instance(2)
        content_type, body = multipart(da, db)
        gone = ConnectionError("the client went away")
        cut = body.index(db) + 10
        outcome = await stow(FakeSession(), content_type, Chunks(body[:cut], then=gone))
        assert referenced(outcome) == [a]
        assert others(outcome) == [0x0110]
        with pytest.raises(ConnectionError):
            await stow(FakeSession(), content_type, Chunks(body[:100], then=gone))
