"""Large S3 objects read in parts (moto): metadata from the head, frames by ranged GETs.

Every answer is compared with the one the same gateway gives when it reads the objects whole
(``ranged_reads_above`` switched between a huge value and 0 on the running backend), and the
bytes the S3 client read are counted.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
import trio
import trio_asyncio  # type: ignore[import-untyped]
from dicomweb_client.api import DICOMwebClient
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames
from pydicom.filewriter import dcmwrite
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from rst.backends.s3 import S3Backend
from rst.backends.s3.backend import HEAD_BYTES
from rst.backends.s3.client import open_client
from rst.errors import StorageError
from rst.metrics import Metrics
from rst.server import Running
from tests.support.frames import JLS, RLE, decode, parts, rle_frames
from tests.support.gateway import run_gateway
from tests.support.moto import put_object
from tests.support.sample import StudyFiles, write_ct_study, write_multiframe

from .conftest import AET, BUCKET, s3_config

FRAMES = 12
SIZE = 128
AS_STORED = "multipart/related; type=application/octet-stream; transfer-syntax=*"
DEFAULT = "multipart/related; type=application/octet-stream"
METADATA = "application/dicom+json"
WHOLE = 1 << 40


@dataclass(frozen=True)
class Stored:
    study: str
    series: str
    sops: dict[str, str]  # variant -> SOP Instance UID
    sizes: dict[str, int]
    pixels: np.ndarray  # frames, rows, columns
    ct: StudyFiles


def _variant(ds: pydicom.Dataset, kind: str, frames: np.ndarray) -> bytes:
    ds = copy.deepcopy(ds)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_of(kind))
    syntax = ExplicitVRLittleEndian
    if kind == "implicit":
        syntax = ImplicitVRLittleEndian
    elif kind == "overlay":  # a value longer than the first read before the pixel data
        ds.add_new(0x60000010, "US", 512)  # Overlay Rows
        ds.add_new(0x60000011, "US", 800)  # Overlay Columns
        ds.add_new(0x60003000, "OW", bytes(range(256)) * 400)
        ds.add_new(0xFFFCFFFC, "OB", b"\0" * 2000)  # an element after the pixel data
    elif kind in ("bot", "eot", "nobot", "jls"):
        if kind == "jls":
            syntax = UID(JLS)
            encoded = list(generate_frames(ds.PixelData, number_of_frames=FRAMES))
        else:
            syntax = UID(RLE)
            encoded = rle_frames(frames)
        if kind == "eot":
            ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = (
                encapsulate_extended(encoded)
            )
        else:
            fragments = 2 if kind == "bot" else 1
            ds.PixelData = encapsulate(
                encoded, fragments_per_frame=fragments, has_bot=kind != "nobot"
            )
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = syntax
    out = BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


KINDS = ("native", "implicit", "overlay", "bot", "eot", "nobot", "jls")


def sop_of(kind: str) -> str:
    return f"2.25.{7100 + KINDS.index(kind)}"


@pytest.fixture
async def gateway(moto: str) -> AsyncIterator[Running]:
    async with run_gateway(s3_config(moto, ranged_reads_above=WHOLE)) as running:
        yield running


@pytest.fixture
async def stored(gateway: Running, moto: str, tmp_path: Path) -> Stored:
    plain = write_multiframe(tmp_path / "mf", frames=FRAMES, rows=SIZE, columns=SIZE, seed=7)
    jls = write_multiframe(
        tmp_path / "jls", frames=FRAMES, rows=SIZE, columns=SIZE, seed=7, transfer_syntax=JLS
    )
    ds = pydicom.dcmread(plain.paths[0])
    pixels = ds.pixel_array
    sops, sizes = {}, {}
    for kind in KINDS:
        source = pydicom.dcmread(jls.paths[0]) if kind == "jls" else ds
        if kind == "jls":
            source.StudyInstanceUID, source.SeriesInstanceUID = (
                ds.StudyInstanceUID,
                ds.SeriesInstanceUID,
            )
        data = _variant(source, kind, pixels)
        sop = sop_of(kind)
        await put_object(
            moto, BUCKET, f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{sop}.dcm", data
        )
        sops[kind], sizes[kind] = sop, len(data)
    ct = write_ct_study(tmp_path / "ct", images=4, series=1)
    for uid_series, sop, path in zip(ct.instance_series, ct.sop_uids, ct.paths, strict=True):
        await put_object(moto, BUCKET, f"{ct.study_uid}/{uid_series}/{sop}.dcm", path.read_bytes())
    return Stored(ds.StudyInstanceUID, ds.SeriesInstanceUID, sops, sizes, pixels, ct)


def backend_of(running: Running) -> S3Backend:
    backend = running.backends[AET]
    assert isinstance(backend, S3Backend)
    return backend


def ranged(running: Running, above: int) -> None:
    backend = backend_of(running)
    backend.config = backend.config.model_copy(update={"ranged_reads_above": above})


LAST_READ: dict[str, int] = {}
"""Bytes the S3 client read for the last answer :func:`both` got in parts (by path)."""


def bytes_read(metrics: Metrics | None) -> int:
    """What the S3 client read so far (``rst_s3_read_bytes``)."""
    assert metrics is not None
    value = metrics.registry.get_sample_value("rst_s3_read_bytes_total", {"aet": AET})
    return int(value or 0)


async def both(running: Running, path: str, accept: str) -> tuple[httpx.Response, httpx.Response]:
    """The answer to *path* read whole, then read in parts."""
    answers = []
    async with httpx.AsyncClient(
        base_url=f"{running.http_url}/aets/{AET}", timeout=60, trust_env=False
    ) as http:
        for above in (WHOLE, 0):
            ranged(running, above)
            before = bytes_read(running.metrics)
            answers.append(await http.get(path, headers={"Accept": accept}))
            LAST_READ[path] = bytes_read(running.metrics) - before
    return answers[0], answers[1]


def same(whole: httpx.Response, parted: httpx.Response) -> bool:
    """The same status and body (multipart bodies part by part: boundaries differ)."""
    if whole.status_code != parted.status_code:
        return False
    if whole.headers["Content-Type"].startswith("multipart/"):
        return parts(whole) == parts(parted)
    return whole.content == parted.content


def instance(stored: Stored, kind: str) -> str:
    return f"/studies/{stored.study}/series/{stored.series}/instances/{stored.sops[kind]}"


async def test_metadata_from_the_head_is_the_whole_objects(
    gateway: Running, stored: Stored
) -> None:
    series = f"/studies/{stored.study}/series/{stored.series}/metadata"
    whole, parted = await both(gateway, series, METADATA)
    assert whole.status_code == parted.status_code == 200, whole.text
    assert parted.content == whole.content
    assert len(whole.json()) == len(KINDS)
    entry = next(e for e in whole.json() if e["00080018"]["Value"][0] == stored.sops["overlay"])
    assert entry["60003000"]["BulkDataURI"].endswith("/bulkdata/60003000")
    assert "FFFCFFFC" in entry
    assert "BulkDataURI" in entry["7FE00010"]
    ct = f"/studies/{stored.ct.study_uid}/metadata"
    whole, parted = await both(gateway, ct, METADATA)
    assert whole.status_code == 200
    assert parted.content == whole.content
    for kind in KINDS:
        whole, parted = await both(gateway, instance(stored, kind) + "/metadata", METADATA)
        assert parted.content == whole.content, kind


async def test_metadata_reads_the_head_only(gateway: Running, stored: Stored) -> None:
    for kind in ("native", "implicit", "overlay", "bot", "eot", "jls"):
        path = instance(stored, kind) + "/metadata"
        _, parted = await both(gateway, path, METADATA)
        assert parted.status_code == 200
        size, read = stored.sizes[kind], LAST_READ[path]
        # read whole, it would be the object's size (the head, then the rest)
        assert read < size, (kind, read, size)
        if kind in ("native", "implicit"):
            assert read == HEAD_BYTES
    path = instance(stored, "nobot") + "/metadata"  # no offsets: read whole
    await both(gateway, path, METADATA)
    assert LAST_READ[path] == stored.sizes["nobot"]


@pytest.mark.parametrize("kind", KINDS)
async def test_frames_by_range_are_the_whole_objects(
    gateway: Running, stored: Stored, kind: str
) -> None:
    for numbers in ("1", "6", str(FRAMES), "3,1,3,12", "2,3,4"):
        for accept in (AS_STORED, DEFAULT):
            path = f"{instance(stored, kind)}/frames/{numbers}"
            whole, parted = await both(gateway, path, accept)
            assert whole.status_code == 200, (kind, numbers, whole.text)
            assert parts(parted) == parts(whole), (kind, numbers, accept)
            if kind != "nobot":  # read whole: no offsets to go by
                assert LAST_READ[path] < stored.sizes[kind], (kind, numbers)


async def test_errors_are_the_whole_objects(gateway: Running, stored: Stored, moto: str) -> None:
    for kind in ("native", "bot"):
        for path in (f"{instance(stored, kind)}/frames/13", f"{instance(stored, kind)}/frames/0"):
            whole, parted = await both(gateway, path, AS_STORED)
            assert same(whole, parted)
            assert whole.status_code in (400, 404)
    # objects cut short, and one that is not DICOM at all
    data = {
        kind: (await _object(moto, stored, kind)) for kind in ("native", "bot", "eot", "overlay")
    }
    cuts = {
        "native": data["native"][: len(data["native"]) - SIZE * SIZE * 2 * 3],
        "bot": data["bot"][: len(data["bot"]) - 500],
        "eot": data["eot"][: len(data["eot"]) - 500],
        "overlay": data["overlay"][:70_000],  # inside the overlay data
    }
    for kind, cut in cuts.items():
        await _put(moto, stored, kind, cut)
        for path in (
            f"{instance(stored, kind)}/frames/{FRAMES}",
            f"{instance(stored, kind)}/frames/1",
        ):
            whole, parted = await both(gateway, path, AS_STORED)
            assert same(whole, parted), (kind, whole.text[:200], parted.text[:200])
        whole, parted = await both(gateway, f"{instance(stored, kind)}/metadata", METADATA)
        assert same(whole, parted), (kind, whole.text[:200], parted.text[:200])
    await _put(moto, stored, "native", b"not DICOM at all " * 5000)
    for suffix, accept in (("/metadata", METADATA), ("/frames/1", AS_STORED)):
        whole, parted = await both(gateway, instance(stored, "native") + suffix, accept)
        assert parted.status_code == whole.status_code == 502
        assert parted.json() == whole.json()


async def _object(moto: str, stored: Stored, kind: str) -> bytes:
    from tests.support.moto import get_object

    return await get_object(moto, BUCKET, _key(stored, kind))


async def _put(moto: str, stored: Stored, kind: str, data: bytes) -> None:
    await put_object(moto, BUCKET, _key(stored, kind), data)


def _key(stored: Stored, kind: str) -> str:
    return f"{stored.study}/{stored.series}/{stored.sops[kind]}.dcm"


async def test_dicomweb_client_through_ranged_reads(gateway: Running, stored: Stored) -> None:
    ranged(gateway, 0)
    client = DICOMwebClient(url=f"{gateway.http_url}/aets/{AET}")
    metadata = await trio.to_thread.run_sync(
        lambda: client.retrieve_series_metadata(stored.study, stored.series)
    )
    assert {m["00080018"]["Value"][0] for m in metadata} == set(stored.sops.values())
    for kind in ("native", "bot", "jls"):
        sop = stored.sops[kind]

        def frames_of(sop: str = sop) -> Any:
            return client.retrieve_instance_frames(stored.study, stored.series, sop, [1, 7, FRAMES])

        frames = await trio.to_thread.run_sync(frames_of)
        for number, frame in zip((1, 7, FRAMES), frames, strict=True):
            got = decode(frame, "1.2.840.10008.1.2.1", stored.pixels)
            assert np.array_equal(got, stored.pixels[number - 1]), (kind, number)


async def test_a_frame_of_a_large_object_reads_that_frame(moto: str, tmp_path: Path) -> None:
    frames, rows = 40, 256
    study = write_multiframe(tmp_path / "big", frames=frames, rows=rows, columns=rows, seed=3)
    ds = pydicom.dcmread(study.paths[0])
    key = f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
    data = study.paths[0].read_bytes()
    await put_object(moto, BUCKET, key, data)
    frame_bytes = rows * rows * 2
    async with run_gateway(s3_config(moto, ranged_reads_above=1 << 20)) as running:
        path = (
            f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}"
        )
        async with httpx.AsyncClient(
            base_url=f"{running.http_url}/aets/{AET}", timeout=60, trust_env=False
        ) as http:
            before = bytes_read(running.metrics)
            response = await http.get(f"{path}/frames/20", headers={"Accept": AS_STORED})
            read = bytes_read(running.metrics) - before
            assert response.status_code == 200
            assert parts(response)[0][1] == ds.pixel_array[19].astype("<i2").tobytes()
            assert read <= (64 << 10) + frame_bytes, (read, len(data))
            assert len(data) > 10 * read
            # the whole instance still comes whole (head, then the rest in ranged reads)
            response = await http.get(
                path,
                headers={"Accept": "multipart/related; type=application/dicom; transfer-syntax=*"},
            )
            assert response.status_code == 200
            assert data in response.content


async def test_a_replaced_object_is_not_mixed(moto: str) -> None:
    metrics = Metrics()
    async with trio_asyncio.open_loop(), open_client(s3_config(moto), metrics) as client:
        await client.put("a/b/c.dcm", bytes(range(256)) * 4)
        first = await client.get_range("a/b/c.dcm", 1000, 100)  # fewer: the object ends
        assert first.data == (bytes(range(256)) * 4)[1000:]
        assert first.etag
        again = await client.get_range("a/b/c.dcm", 0, 10, etag=first.etag)
        assert again.data == bytes(range(10))
        await client.put("a/b/c.dcm", b"another version")
        with pytest.raises(StorageError, match="replaced"):
            await client.get_range("a/b/c.dcm", 0, 10, etag=first.etag)
        assert bytes_read(metrics) == 24 + 10


RENDERED = (
    ("frames/7/rendered", "image/png"),
    ("rendered", "image/jpeg"),
    ("thumbnail", "image/png"),
    ("frames/2,5/rendered", 'multipart/related; type="image/png"'),
)
BY_RANGES = ("native", "implicit", "overlay", "bot", "eot", "jls")
"""The variants whose frames are found by their offsets (``nobot`` has no offset table)."""


async def test_rendered_by_range_is_the_whole_objects(gateway: Running, stored: Stored) -> None:
    """Rendered frames and thumbnails of a stored object read in parts (WADO-RS and WADO-URI):
    the head, then the frames drawn — the same images as from the whole object, for fewer
    bytes."""
    for kind in KINDS:
        for suffix, accept in RENDERED:
            path = f"{instance(stored, kind)}/{suffix}"
            whole, parted = await both(gateway, path, accept)
            assert whole.status_code == 200, (kind, suffix, whole.text)
            assert same(whole, parted), (kind, suffix)
            if kind in BY_RANGES and "," not in suffix:  # one frame: the head and that frame
                assert LAST_READ[path] < stored.sizes[kind] // 2, (kind, suffix, LAST_READ[path])
        wado = (
            f"/wado?requestType=WADO&studyUID={stored.study}&seriesUID={stored.series}"
            f"&objectUID={stored.sops[kind]}&contentType=image/png&frameNumber=7"
        )
        whole, parted = await both(gateway, wado, "image/png")
        assert whole.status_code == 200, (kind, whole.text)
        assert same(whole, parted), kind
        if kind in BY_RANGES:
            assert LAST_READ[wado] < stored.sizes[kind] // 2, (kind, LAST_READ[wado])


async def test_pixeldata_by_range_is_the_whole_objects(gateway: Running, stored: Stored) -> None:
    """Pixel data of a stored object read in parts: native data as one read of its value,
    encapsulated data frame by frame as stored; the same parts as from the whole object."""
    for kind in KINDS:
        for accept in (AS_STORED, DEFAULT):
            for resource in ("pixeldata", "bulkdata/7FE00010"):
                path = f"{instance(stored, kind)}/{resource}"
                whole, parted = await both(gateway, path, accept)
                assert whole.status_code == 200, (kind, accept, resource, whole.text)
                assert same(whole, parted), (kind, accept, resource)
                # the object once, and the 8-byte delimiter at its end checked with each frame
                most = stored.sizes[kind] + 8 * FRAMES
                assert LAST_READ[path] <= most, (kind, accept, LAST_READ[path])
    # what the instance does not have is the whole object's answer too (404 with a message)
    whole, parted = await both(gateway, f"{instance(stored, 'native')}/bulkdata/7FE00008", DEFAULT)
    assert whole.status_code == 404
    assert same(whole, parted)


async def test_pixeldata_of_a_large_object_is_read_frame_by_frame(
    moto: str, tmp_path: Path
) -> None:
    """A large RLE multi-frame object's pixel data as stored: every frame, in order, and the
    object read once (its head, then each frame's items)."""
    frames, rows = 24, 128
    study = write_multiframe(tmp_path / "big", frames=frames, rows=rows, columns=rows, seed=5)
    ds = pydicom.dcmread(study.paths[0])
    encoded = rle_frames(ds.pixel_array)
    ds.PixelData = encapsulate(encoded, has_bot=True)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = UID(RLE)
    out = BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    data = out.getvalue()
    key = f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
    await put_object(moto, BUCKET, key, data)
    assert len(data) > 4 * HEAD_BYTES  # read in parts
    async with run_gateway(s3_config(moto, ranged_reads_above=1 << 16)) as running:
        client = backend_of(running).client
        lengths: list[int] = []
        get_range = client.get_range

        async def recorded(key: str, start: int, length: int, **kw: Any) -> Any:
            lengths.append(length)
            return await get_range(key, start, length, **kw)

        client.get_range = recorded  # type: ignore[method-assign]
        path = (
            f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}/pixeldata"
        )
        async with httpx.AsyncClient(
            base_url=f"{running.http_url}/aets/{AET}", timeout=60, trust_env=False
        ) as http:
            before = bytes_read(running.metrics)
            response = await http.get(path, headers={"Accept": AS_STORED})
            read = bytes_read(running.metrics) - before
    assert response.status_code == 200, response.text
    got = parts(response)
    assert [data for _, data in got] == encoded
    assert all(kind.startswith("application/x-dicom-rle") or "rle" in kind for kind, _ in got)
    assert read <= len(data) + 8 * frames, (read, len(data))  # and each frame's delimiter check
    # after the head, one frame at a time (its item header with it), never the rest at once
    assert lengths[0] == HEAD_BYTES
    assert max(lengths[1:]) <= max(map(len, encoded)) + 8, lengths
