"""STOW-RS outcome rules, against an in-memory archive: each part's fate is its own, and what
was stored is always reported."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from io import BytesIO
from typing import TypeVar, cast

import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from rst.bridge import run_sync
from rst.dicom.multipart import MultipartWriter
from rst.dicom.part10 import Upload
from rst.errors import BackendTimeout, BadRequest, PacsUnreachable, PayloadTooLarge
from rst.services import stow as stow_module
from rst.services.protocols import StoreResult
from rst.services.stow import INLINE_PART_BYTES, MAX_STOW_PARTS, StowOutcome, store_instances
from tests.gateway.test_containment import serving
from tests.support.scripted_backend import ScriptedBackend

STUDY = "1.2.826.0.1.3680043.10.999.1"
CT = UID("1.2.840.10008.5.1.4.1.1.2")


def instance(number: int, study: str = STUDY, *, pixels: int = 64) -> tuple[str, bytes]:
    uid = UID(f"1.2.826.0.1.3680043.10.999.1.1.{number}")
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = uid
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = f"{study}.1"
    ds.PixelData = b"\0\1" * (pixels // 2)
    ds["PixelData"].VR = "OW"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return uid, out.getvalue()


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
    backend: ScriptedBackend,
    content_type: str,
    body: Chunks,
    *,
    study: str | None = None,
    max_bytes: int = 1 << 30,
    max_parts: int = MAX_STOW_PARTS,
) -> StowOutcome:
    return await store_instances(
        backend,
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
        outcome = await stow(ScriptedBackend(), content_type, Chunks(body))
        assert outcome.http_status == 200
        assert referenced(outcome) == [a, b]
        url = outcome.referenced[0].RetrieveURL
        assert url == f"http://rst/aets/FAKE/studies/{STUDY}/series/{STUDY}.1/instances/{a}"
        assert outcome.to_json()["00081190"]["Value"] == [f"http://rst/aets/FAKE/studies/{STUDY}"]

    async def test_unexpected_error_fails_that_part_only(self) -> None:
        (a, da), (b, db), (c, dc) = instance(1), instance(2), instance(3)
        archive = ScriptedBackend(answers={b: RuntimeError("a bug")})
        content_type, body = multipart(da, db, dc)
        outcome = await stow(archive, content_type, Chunks(body))
        assert outcome.http_status == 202
        assert referenced(outcome) == [a, c]
        assert failed(outcome) == [(b, 0x0110)]

    async def test_failure_and_warning_statuses(self) -> None:
        (a, da), (b, db), (c, dc) = instance(1), instance(2), instance(3)
        archive = ScriptedBackend(answers={a: StoreResult(0xB000), b: StoreResult(0x0122, "no")})
        content_type, body = multipart(da, db, dc)
        outcome = await stow(archive, content_type, Chunks(body))
        assert outcome.http_status == 202
        assert referenced(outcome) == [a, c]
        assert outcome.referenced[0].WarningReason == 0xB000
        assert failed(outcome) == [(b, 0x0122)]

    async def test_study_mismatch_is_never_sent(self) -> None:
        (a, da), (b, db) = instance(1), instance(2, study="1.2.3")
        archive = ScriptedBackend()
        content_type, body = multipart(da, db)
        outcome = await stow(archive, content_type, Chunks(body), study=STUDY)
        assert referenced(outcome) == [a]
        assert failed(outcome) == [(b, 0xA900)]
        assert archive.sent == [a]

    async def test_unreadable_parts_are_never_sent(self) -> None:
        (a, da), (b, db) = instance(1), instance(2)
        archive = ScriptedBackend()
        content_type, body = multipart(da[:-10], b"junk" * 100, db)
        outcome = await stow(archive, content_type, Chunks(body))
        assert referenced(outcome) == [b]
        assert failed(outcome) == [(a, 0xC000), (None, 0xC000)]
        assert archive.sent == [b]


class TestUnusableArchive:
    async def test_before_anything_was_stored_is_the_request_error(self) -> None:
        (a, da), (_, db) = instance(1), instance(2)
        archive = ScriptedBackend(answers={a: PacsUnreachable("cannot connect")})
        content_type, body = multipart(da, db)
        with pytest.raises(PacsUnreachable):
            await stow(archive, content_type, Chunks(body))

    async def test_after_a_stored_part_fails_the_rest_unsent(self) -> None:
        (a, da), (b, db), (c, dc) = instance(1), instance(2), instance(3)
        archive = ScriptedBackend(answers={b: BackendTimeout("no answer")})
        content_type, body = multipart(da, db, dc, b"junk")
        outcome = await stow(archive, content_type, Chunks(body))
        assert outcome.http_status == 202
        assert referenced(outcome) == [a]
        assert failed(outcome) == [(b, 0x0110), (c, 0x0110), (None, 0xC000)]
        assert archive.sent == [a, b]


class TestBrokenBody:
    async def test_before_anything_was_stored_is_the_request_error(self) -> None:
        _, da = instance(1)
        content_type, body = multipart(da, close=False)
        with pytest.raises(BadRequest, match="closing boundary"):
            await stow(ScriptedBackend(), content_type, Chunks(body))
        empty_type, empty = multipart()
        with pytest.raises(BadRequest, match="no instances"):
            await stow(ScriptedBackend(), empty_type, Chunks(empty))

    async def test_after_a_stored_part_lists_it(self) -> None:
        (a, da), (_, db) = instance(1), instance(2)
        content_type, body = multipart(da, db[:200], close=False)
        outcome = await stow(ScriptedBackend(), content_type, Chunks(body))
        assert outcome.http_status == 202
        assert referenced(outcome) == [a]
        assert others(outcome) == [0xC000]

    @pytest.mark.parametrize("limit", ["part-count", "size"])
    async def test_limits_after_stored_parts(self, limit: str) -> None:
        (a, da), (b, db), (_, dc) = instance(1), instance(2), instance(3)
        content_type, body = multipart(da, db, dc)
        if limit == "part-count":
            outcome = await stow(ScriptedBackend(), content_type, Chunks(body), max_parts=2)
        else:  # reached in the third part
            outcome = await stow(
                ScriptedBackend(), content_type, Chunks(body), max_bytes=len(body) - 99
            )
        assert referenced(outcome) == [a, b]
        assert others(outcome) == [0xA700]

    async def test_limits_before_anything_was_stored(self) -> None:
        _, da = instance(1)
        content_type, body = multipart(b"junk", da)  # the first part fails, nothing is stored
        with pytest.raises(PayloadTooLarge, match="more than 1 parts"):
            await stow(ScriptedBackend(), content_type, Chunks(body), max_parts=1)
        with pytest.raises(PayloadTooLarge):
            await stow(ScriptedBackend(), content_type, Chunks(body), max_bytes=100)

    async def test_upload_breaking_off(self) -> None:
        (a, da), (_, db) = instance(1), instance(2)
        content_type, body = multipart(da, db)
        gone = ConnectionError("the client went away")
        cut = body.index(db) + 10
        outcome = await stow(ScriptedBackend(), content_type, Chunks(body[:cut], then=gone))
        assert referenced(outcome) == [a]
        assert others(outcome) == [0x0110]
        with pytest.raises(ConnectionError):
            await stow(ScriptedBackend(), content_type, Chunks(body[:100], then=gone))


R = TypeVar("R")


class TestManySmallParts:
    """The chaos run's body: thousands of empty parts, each ~1 ms (a worker thread to read it,
    a log line), >30 s under load. A small part is read in the request's task and failures are
    logged once per request."""

    @pytest.fixture
    def hops(self, monkeypatch: pytest.MonkeyPatch) -> list[Upload]:
        """What was read in a worker thread."""
        read: list[Upload] = []

        async def counted(fn: Callable[[], R]) -> R:
            result = await run_sync(fn)
            read.append(cast(Upload, result))
            return result

        monkeypatch.setattr(stow_module, "run_sync", counted)
        return read

    async def test_twelve_thousand_empty_parts(
        self, hops: list[Upload], caplog: pytest.LogCaptureFixture
    ) -> None:
        (a, da), (b, db) = instance(1), instance(2, pixels=INLINE_PART_BYTES)
        content_type, body = multipart(da, db, *[b""] * 12_000)
        started = time.perf_counter()
        with caplog.at_level(logging.INFO, logger="rst.services.stow"):
            outcome = await stow(ScriptedBackend(), content_type, Chunks(body))
        took = time.perf_counter() - started
        assert referenced(outcome) == [a, b]
        assert failed(outcome) == [(None, 0xC000)] * (MAX_STOW_PARTS - 2)
        assert others(outcome) == [0xA700]  # the parts past the limit, not read
        assert [upload.sop_instance_uid for upload in hops] == [b]  # the one larger part
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 2, lines[:5]
        assert lines[0].startswith("STOW-RS body unreadable after part 10000")
        empty = "(no valid SOP Instance UID), 0xC000: the part is empty"
        assert lines[1] == (
            f"STOW-RS: 9998 of 10000 parts not stored (9998 x 0xC000); part 3 {empty}; "
            f"part 4 {empty}; part 5 {empty}"
        )
        assert took < 5.0, f"{took:.1f} s"  # ~0.5 s; it was 6 s, and 30 under load

    async def test_through_the_http_route(self) -> None:
        """One junk part, then 12,000 empty ones: 413 once the limit is passed, at once."""
        content_type, body = multipart(b"junk", *[b""] * 12_000)
        async with serving({"X": ScriptedBackend()}) as client:
            started = time.perf_counter()
            response = await client.post(
                "/aets/X/studies", content=body, headers={"Content-Type": content_type}
            )
            took = time.perf_counter() - started
        assert response.status_code == 413, response.text[:300]
        assert response.json()["error"] == (
            f"the request body has more than {MAX_STOW_PARTS} parts (http.max_stow_parts)"
        )
        assert took < 5.0, f"{took:.1f} s"  # ~0.6 s; it was 6 s

    async def test_the_limit_is_configured(self) -> None:
        content_type, body = multipart(b"junk", b"", b"")
        async with serving({"X": ScriptedBackend()}, max_stow_parts=2) as client:
            response = await client.post(
                "/aets/X/studies", content=body, headers={"Content-Type": content_type}
            )
        assert response.status_code == 413, response.text[:300]
        assert response.json()["error"] == (
            "the request body has more than 2 parts (http.max_stow_parts)"
        )
