"""An S3 archive behind ``http.workers = 2``: both processes share the bucket and the index."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from rst.dicom.multipart import MultipartWriter
from tests.support.download import AS_STORED, Download
from tests.support.rst_process import read_until, rst_process
from tests.support.sample import StudyFiles

from .conftest import AET, BUCKET


async def test_what_one_worker_stores_every_worker_finds_and_serves(
    moto: str, study: StudyFiles, tmp_path: Path
) -> None:
    config = tmp_path / "rst.toml"
    config.write_text(
        "[http]\nworkers = 2\n\n"
        f'[[aets]]\naet = "{AET}"\nbackend = "s3"\nendpoint = "{moto}"\nbucket = "{BUCKET}"\n'
        'access_key_env = "RST_S3_KEY"\nsecret_key_env = "RST_S3_SECRET"\n'
    )
    # cwd: the default SQLite index, {aet}.sqlite3, is opened there by both workers
    async with rst_process("serve", "--config", str(config), cwd=tmp_path) as process:
        match = await read_until(process, r"serving DICOMweb on (http://\S+),")
        for _ in range(2):
            await read_until(process, r"\[worker [01]\] rst\.server\b[^:]*: rst serving")
        base = f"{match.group(1)}/aets/{AET}"
        async with httpx.AsyncClient(timeout=60, trust_env=False) as http:
            # one instance per request, on a new connection each: the kernel spreads them
            for path in study.paths:
                writer = MultipartWriter()
                body = writer.part_head("application/dicom") + path.read_bytes() + writer.close()
                stored = await http.post(
                    f"{base}/studies",
                    content=body,
                    headers={
                        "Content-Type": writer.content_type("application/dicom"),
                        "Connection": "close",
                    },
                )
                assert stored.status_code == 200, stored.text
            for _ in range(6):
                found = await http.get(
                    f"{base}/studies/{study.study_uid}/instances",
                    headers={"Connection": "close"},
                )
                assert found.status_code == 200
                assert len(found.json()) == len(study.paths)
        download = Download(f"{base}/studies/{study.study_uid}", accept=AS_STORED)
        await download.run()
        assert download.status == 200
        assert sorted(data for _, data in download.parts()) == sorted(
            p.read_bytes() for p in study.paths
        )
        # whichever worker answers, the S3 calls and first bytes of both are summed
        root = match.group(1)
        for _ in range(3):
            async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
                scraped = await http.get(f"{root}/metrics", headers={"Connection": "close"})
            samples = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(scraped.text)
                for s in family.samples
            }
            put = (("aet", AET), ("operation", "PutObject"))
            assert samples[("rst_s3_calls_total", (*put, ("outcome", "ok")))] == len(study.paths)
            assert samples[("rst_s3_call_duration_seconds_count", put)] == len(study.paths)
            stows = (("route", "/aets/{aet}/studies"),)
            assert samples[("rst_http_time_to_first_byte_seconds_count", stows)] == len(study.paths)
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            assert await process.wait() == 0
