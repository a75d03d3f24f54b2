"""rst with an S3 archive (moto in server mode): STOW-RS into the bucket, WADO-RS out of it."""

from __future__ import annotations

import io
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pydicom
import pytest
import trio

from rst.backends.s3 import S3Backend
from rst.dicom.multipart import MultipartReader, MultipartWriter, parse_content_type
from rst.logs import RequestIdFilter
from rst.server import Running
from tests.support.garbage import (
    Abandon,
    abandon,
    cyclic_collection_paused,
    cyclic_garbage,
    live_tasks,
    read_all,
    wait_for_tasks,
)
from tests.support.gateway import run_gateway, wait_until
from tests.support.moto import create_bucket, get_object, open_moto, put_object
from tests.support.sample import StudyFiles, write_ct_study

from .conftest import AET, BUCKET, MAX_CONCURRENCY, s3_config

AS_STORED = {"Accept": "multipart/related; type=application/dicom; transfer-syntax=*"}


def base(running: Running) -> str:
    return f"{running.http_url}/aets/{AET}"


def object_key(study: StudyFiles, index: int) -> str:
    return f"{study.study_uid}/{study.instance_series[index]}/{study.sop_uids[index]}.dcm"


async def stow(running: Running, paths: list[Path]) -> httpx.Response:
    writer = MultipartWriter()
    body = b"".join(writer.part_head("application/dicom") + p.read_bytes() for p in paths)
    body += writer.close()
    async with httpx.AsyncClient(timeout=60, trust_env=False) as http:
        return await http.post(
            f"{base(running)}/studies",
            content=body,
            headers={"Content-Type": writer.content_type("application/dicom")},
        )


def parts_of(response: httpx.Response) -> list[bytes]:
    _, params = parse_content_type(response.headers["Content-Type"])
    reader = MultipartReader(params["boundary"], max_part_bytes=1 << 30, max_total_bytes=1 << 30)
    parts = reader.feed(response.content) + reader.finish()
    return [part.data for part in parts]


def backend_of(running: Running) -> S3Backend:
    backend = running.backends[AET]
    assert isinstance(backend, S3Backend)
    return backend


class GetProbe:
    """Wraps the backend client's ``get``: counts gets in flight and their peak."""

    def __init__(self, backend: S3Backend, delay: float = 0.0) -> None:
        self.inner: Callable[[str], Awaitable[bytes]] = backend.client.get
        self.delay = delay
        self.in_flight = 0
        self.peak = 0
        self.started = 0
        backend.client.get = self.get  # type: ignore[method-assign]

    async def get(self, key: str) -> bytes:
        self.in_flight += 1
        self.started += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await trio.sleep(self.delay)
            return await self.inner(key)
        finally:
            self.in_flight -= 1


@pytest.fixture
async def stored(s3_gateway: Running, study: StudyFiles) -> StudyFiles:
    response = await stow(s3_gateway, study.paths)
    assert response.status_code == 200, response.text
    return study


async def test_stow_writes_dicom_rst_keys(
    s3_gateway: Running, moto: str, study: StudyFiles
) -> None:
    response = await stow(s3_gateway, study.paths)
    assert response.status_code == 200
    referenced = response.json()["00081199"]["Value"]
    assert len(referenced) == len(study.paths)
    for index, path in enumerate(study.paths):
        assert await get_object(moto, BUCKET, object_key(study, index)) == path.read_bytes()


async def test_stow_of_garbage_is_refused(s3_gateway: Running, study: StudyFiles) -> None:
    writer = MultipartWriter()
    body = writer.part_head("application/dicom") + study.paths[0].read_bytes()
    body += writer.part_head("application/dicom") + b"this is not DICOM" + writer.close()
    async with httpx.AsyncClient(timeout=60, trust_env=False) as http:
        response = await http.post(
            f"{base(s3_gateway)}/studies",
            content=body,
            headers={"Content-Type": writer.content_type("application/dicom")},
        )
    assert response.status_code == 202  # one stored, one failed


async def test_wado_round_trip_at_every_level(s3_gateway: Running, stored: StudyFiles) -> None:
    study = stored
    files = {uid: path.read_bytes() for uid, path in zip(study.sop_uids, study.paths, strict=True)}
    async with httpx.AsyncClient(base_url=base(s3_gateway), timeout=60, trust_env=False) as http:
        whole = await http.get(f"/studies/{study.study_uid}", headers=AS_STORED)
        series_uid = study.series_uids[1]
        series = await http.get(
            f"/studies/{study.study_uid}/series/{series_uid}", headers=AS_STORED
        )
        sop = study.sop_uids[3]
        one = await http.get(
            f"/studies/{study.study_uid}/series/{study.instance_series[3]}/instances/{sop}",
            headers=AS_STORED,
        )
        default = await http.get(f"/studies/{study.study_uid}")
    assert whole.status_code == series.status_code == one.status_code == 200
    parts = parts_of(whole)
    assert sorted(parts) == sorted(files.values())  # whole files, byte-identical
    keys = sorted(object_key(study, i) for i in range(len(study.paths)))
    by_key = {object_key(study, i): study.paths[i].read_bytes() for i in range(len(study.paths))}
    assert parts == [by_key[k] for k in keys]  # in key order
    series_parts = parts_of(series)
    assert sorted(series_parts) == sorted(p.read_bytes() for p in study.series_paths(series_uid))
    assert parts_of(one) == [files[sop]]
    # default (Explicit VR Little Endian, as stored): the pixel data is identical too
    for data in parts_of(default):
        ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data))
        source = pydicom.dcmread(study.paths[study.sop_uids.index(ds.SOPInstanceUID)])
        assert ds.PixelData == source.PixelData


async def test_missing_study_is_404(s3_gateway: Running, stored: StudyFiles) -> None:
    async with httpx.AsyncClient(base_url=base(s3_gateway), trust_env=False) as http:
        missing = await http.get("/studies/1.2.3.4.5")
        series = await http.get(f"/studies/{stored.study_uid}/series/1.2.3")
        bad_uid = await http.get("/studies/1.2.x")
    assert missing.status_code == series.status_code == 404
    assert "1.2.3.4.5" in missing.json()["error"]
    assert bad_uid.status_code == 400


async def test_corrupt_object_breaks_the_stream_and_names_the_key(
    s3_gateway: Running, moto: str, stored: StudyFiles, caplog: pytest.LogCaptureFixture
) -> None:
    study = stored
    key = sorted(object_key(study, i) for i in range(len(study.paths)))[4]
    await put_object(moto, BUCKET, key, b"garbage" * 100)
    caplog.handler.addFilter(RequestIdFilter())
    with caplog.at_level(logging.WARNING):
        async with httpx.AsyncClient(
            base_url=base(s3_gateway), timeout=60, trust_env=False
        ) as http:
            headers = {**AS_STORED, "X-Request-ID": "s3-1"}
            with pytest.raises(httpx.HTTPError):
                await http.get(f"/studies/{study.study_uid}", headers=headers)
    named = [record for record in caplog.records if key in record.getMessage()]
    assert named
    assert all(getattr(record, "request_id", None) == "s3-1" for record in named)


async def test_health(s3_gateway: Running) -> None:
    async with httpx.AsyncClient(trust_env=False) as http:
        health = await http.get(base(s3_gateway))
        aets = (await http.get(f"{s3_gateway.http_url}/aets")).json()
    assert health.status_code == 200
    assert [a["aet"] for a in aets] == [AET]


async def test_missing_bucket(moto: str) -> None:
    async with (
        run_gateway(s3_config(moto, bucket="nobucket")) as running,
        httpx.AsyncClient(base_url=base(running), trust_env=False) as http,
    ):
        health = await http.get(base(running))
        retrieve = await http.get("/studies/1.2.3")
    assert health.status_code == 503
    assert retrieve.status_code == 502
    assert "'nobucket'" in retrieve.json()["error"]
    assert "does not exist" in retrieve.json()["error"]


async def test_bad_credentials(tmp_path: Path) -> None:
    async with (
        open_moto(tmp_path / "moto-auth", auth=True) as endpoint,
        run_gateway(s3_config(endpoint)) as running,
        httpx.AsyncClient(base_url=base(running), trust_env=False) as http,
    ):
        health = await http.get(base(running))
        retrieve = await http.get("/studies/1.2.3")
    assert health.status_code == 503
    assert retrieve.status_code == 502
    error = retrieve.json()["error"]
    assert "credentials" in error
    assert "InvalidAccessKeyId" in error
    assert "RST_S3_KEY" in error


async def test_unreachable_endpoint() -> None:
    from tests.support.loopback import free_port

    port = free_port()
    config = s3_config(f"http://127.0.0.1:{port}", max_attempts=1)
    async with (
        run_gateway(config) as running,
        httpx.AsyncClient(base_url=base(running), trust_env=False) as http,
    ):
        retrieve = await http.get("/studies/1.2.3")
    assert retrieve.status_code == 502
    assert "cannot reach" in retrieve.json()["error"]
    assert str(port) not in retrieve.text  # the endpoint goes to the log only


async def test_concurrency_is_bounded(s3_gateway: Running, stored: StudyFiles) -> None:
    probe = GetProbe(backend_of(s3_gateway), delay=0.05)
    async with httpx.AsyncClient(base_url=base(s3_gateway), timeout=60, trust_env=False) as http:
        response = await http.get(f"/studies/{stored.study_uid}", headers=AS_STORED)
    assert len(parts_of(response)) == len(stored.paths)
    assert probe.started == len(stored.paths)
    assert probe.peak == MAX_CONCURRENCY


async def test_client_gone_cancels_the_fetches(s3_gateway: Running, stored: StudyFiles) -> None:
    probe = GetProbe(backend_of(s3_gateway), delay=0.3)
    # A raw connection: read the response head and the first bytes of the body, then hang up.
    host, port = s3_gateway.http_url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        request = (
            f"GET /aets/{AET}/studies/{stored.study_uid} HTTP/1.1\r\nHost: {host}\r\n"
            f"Accept: {AS_STORED['Accept']}\r\n\r\n"
        )
        await stream.send_all(request.encode())
        received = b""
        while len(received) < 4096:
            received += await stream.receive_some()
        assert received.startswith(b"HTTP/1.1 200")
        assert probe.started < len(stored.paths)
    await wait_until(lambda: probe.in_flight == 0, what="the outstanding gets to end")
    started = probe.started
    assert started < len(stored.paths)
    await trio.sleep(0.5)
    assert probe.started == started  # nothing new was started after the client left


async def test_stow_into_missing_bucket_is_502(moto: str, study: StudyFiles) -> None:
    async with run_gateway(s3_config(moto, bucket="nobucket")) as running:
        response = await stow(running, study.paths[:2])
    assert response.status_code == 502
    assert "does not exist" in response.json()["error"]


async def test_prefix(moto: str, study: StudyFiles) -> None:
    await create_bucket(moto, "other")
    async with run_gateway(s3_config(moto, bucket="other", prefix="dicom/")) as running:
        assert (await stow(running, study.paths[:1])).status_code == 200
        stored = await get_object(moto, "other", f"dicom/{object_key(study, 0)}")
        async with httpx.AsyncClient(trust_env=False) as http:
            back = await http.get(f"{base(running)}/studies/{study.study_uid}", headers=AS_STORED)
    assert stored == study.paths[0].read_bytes()
    assert parts_of(back) == [study.paths[0].read_bytes()]


async def test_qido_over_the_index_updated_by_stow(s3_gateway: Running, stored: StudyFiles) -> None:
    async with httpx.AsyncClient(base_url=base(s3_gateway), timeout=60, trust_env=False) as http:
        studies = (await http.get("/studies", params={"PatientName": "TEST*"})).json()
        nobody = (await http.get("/studies", params={"PatientName": "NOBODY*"})).json()
        series = (await http.get(f"/studies/{stored.study_uid}/series")).json()
        page = await http.get("/instances", params={"limit": "3"})
        in_range = (await http.get("/studies", params={"StudyDate": "19000101-21000101"})).json()
    assert [row["0020000D"]["Value"][0] for row in studies] == [stored.study_uid]
    assert studies[0]["00201208"]["Value"] == [len(stored.paths)]  # NumberOfStudyRelatedInstances
    assert nobody == []
    assert {row["0020000E"]["Value"][0] for row in series} == set(stored.series_uids)
    assert all(row["0020000D"]["Value"] == [stored.study_uid] for row in series)
    assert len(page.json()) == 3
    assert "additional results" in page.headers["Warning"]
    assert len(in_range) == 1


async def test_stow_of_a_bare_dataset_is_stored_as_part10(
    s3_gateway: Running, study: StudyFiles
) -> None:
    """A STOW part without preamble and meta is stored as a Part 10 file, so WADO can serve it."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    source = pydicom.dcmread(study.paths[0])
    bare = DicomBytesIO()
    bare.is_little_endian, bare.is_implicit_VR = True, True
    write_dataset(bare, source)  # the dataset alone, Implicit VR Little Endian
    assert bare.getvalue()[128:132] != b"DICM"
    writer = MultipartWriter()
    body = writer.part_head("application/dicom") + bare.getvalue() + writer.close()
    async with httpx.AsyncClient(base_url=base(s3_gateway), timeout=60, trust_env=False) as http:
        stored = await http.post(
            "/studies",
            content=body,
            headers={"Content-Type": writer.content_type("application/dicom")},
        )
        series = study.instance_series[0]
        got = await http.get(
            f"/studies/{study.study_uid}/series/{series}/instances/{study.sop_uids[0]}",
            headers={"Accept": "multipart/related; type=application/dicom; transfer-syntax=*"},
        )
    assert stored.status_code == 200, stored.text
    assert got.status_code == 200
    (part,) = parts_of(got)
    instance = pydicom.dcmread(io.BytesIO(part))
    assert instance.SOPInstanceUID == study.sop_uids[0]
    assert instance.PixelData == source.PixelData


# -- no cyclic garbage (issue 8; see tests/faults/test_retrieve_garbage.py) -----------------


async def put_study(moto: str, study: StudyFiles) -> None:
    """The objects of *study* straight into the bucket (the retrieve lists them, no index)."""
    for index, path in enumerate(study.paths):
        await put_object(moto, BUCKET, object_key(study, index), path.read_bytes())


@pytest.mark.parametrize("how", ["never-reads", "hangs-up"])
async def test_an_abandoned_retrieve_leaves_no_cyclic_garbage(
    moto: str, tmp_path: Path, how: Abandon
) -> None:
    study = write_ct_study(tmp_path / "large", images=12, rows=512, columns=512)
    await put_study(moto, study)
    async with run_gateway(s3_config(moto), http={"send_timeout": 0.3}) as running:
        host, port = running.http_url.removeprefix("http://").rsplit(":", 1)
        with cyclic_collection_paused():
            baseline = live_tasks()
            target = f"/aets/{AET}/studies/{study.study_uid}"
            received = await abandon(host, int(port), target, how, baseline)
            # Buffers from an instance up: a GetObject cut short leaves aiohttp's own cycle
            # (ResponseHandler <-> StreamReader) holding what it had received, 128 KB chunks.
            garbage = cyclic_garbage(large=min(path.stat().st_size for path in study.paths))
    assert received < sum(path.stat().st_size for path in study.paths)
    assert not garbage, garbage.describe()


async def test_a_corrupt_object_leaves_no_cyclic_garbage(moto: str, study: StudyFiles) -> None:
    """The fetch's error, returned to the retrieve and raised there, then the broken stream."""
    await put_study(moto, study)
    key = sorted(object_key(study, i) for i in range(len(study.paths)))[4]
    await put_object(moto, BUCKET, key, b"garbage" * 100)
    async with run_gateway(s3_config(moto)) as running:
        host, port = running.http_url.removeprefix("http://").rsplit(":", 1)
        with cyclic_collection_paused():
            baseline = live_tasks()
            received = await read_all(host, int(port), f"/aets/{AET}/studies/{study.study_uid}")
            await wait_for_tasks(baseline)
            garbage = cyclic_garbage()
    assert received.startswith(b"HTTP/1.1 200")
    assert not received.endswith(b"0\r\n\r\n")  # broken off, not a complete chunked body
    assert not garbage, garbage.describe()
