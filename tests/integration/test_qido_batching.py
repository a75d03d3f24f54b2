"""QIDO-RS and MWL-RS rows already waiting go out together: a search of 200 instances from
Orthanc, and a worklist of 100 steps from dcmtk's wlmscpfs, come in far fewer HTTP chunks than
rows, and their JSON is the one a row-per-chunk gateway answers.

The chunks are counted on the wire: a raw HTTP/1.1 request read through h11, whose ``Data``
events mark where each chunk of the chunked body starts."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import h11
import pytest
import trio

from rst.config import AeConfig
from rst.services import qido
from tests.support.dcmtk import open_wlmscpfs
from tests.support.gateway import run_gateway
from tests.support.orthanc import Orthanc, upload
from tests.support.sample import write_ct_study
from tests.support.worklist import Step, write_worklist

pytestmark = pytest.mark.integration

IMAGES = 200
STEPS = 100
SOP_UID, PATIENT_ID = "00080018", "00100020"


def by_key(rows: list[dict[str, Any]], tag: str) -> dict[str, dict[str, Any]]:
    """Rows by their value of *tag*: the same answer whatever order the archive sent it in."""
    keyed = {row[tag]["Value"][0]: row for row in rows}
    assert len(keyed) == len(rows)
    return keyed


async def chunked_get(url: str, target: str, encoding: str = "identity") -> list[bytes]:
    """The chunks of the body of ``GET target``, as the server sent them."""
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    connection = h11.Connection(h11.CLIENT)
    chunks: list[bytearray] = []
    with trio.fail_after(60):
        stream = await trio.open_tcp_stream(parts.hostname, parts.port)
        async with stream:
            request = h11.Request(
                method="GET",
                target=target,
                headers=[
                    ("Host", parts.netloc),
                    ("Accept", "application/dicom+json"),
                    ("Accept-Encoding", encoding),
                ],
            )
            await stream.send_all(connection.send(request) + connection.send(h11.EndOfMessage()))
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    connection.receive_data(await stream.receive_some(1 << 16))
                elif isinstance(event, h11.Response):
                    assert event.status_code == 200, event
                    assert (b"transfer-encoding", b"chunked") in event.headers
                elif isinstance(event, h11.Data):
                    if event.chunk_start or not chunks:
                        chunks.append(bytearray())
                    chunks[-1] += event.data
                elif isinstance(event, h11.EndOfMessage):
                    return [bytes(chunk) for chunk in chunks]


async def test_a_search_of_200_instances_goes_out_in_fewer_chunks_than_rows(
    orthanc: Orthanc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = write_ct_study(tmp_path / "ct", images=IMAGES, rows=16, columns=16)
    await upload(orthanc, study.paths)
    config = AeConfig(aet=orthanc.aet, host="127.0.0.1", port=orthanc.dicom_port)
    target = f"/aets/{orthanc.aet}/studies/{study.study_uid}/instances?includefield=all"
    async with run_gateway(config) as running:
        batched = await chunked_get(running.http_url, target)
        gzipped = await chunked_get(running.http_url, target, encoding="gzip")
        monkeypatch.setattr(qido, "CHUNK_BYTES", 1)  # every row a chunk of its own
        unbatched = await chunked_get(running.http_url, target)

    rows: list[dict[str, Any]] = json.loads(b"".join(batched))
    assert len(rows) == IMAGES
    assert sorted(by_key(rows, SOP_UID)) == sorted(study.sop_uids)
    assert by_key(rows, SOP_UID) == by_key(json.loads(b"".join(unbatched)), SOP_UID)
    assert len(unbatched) >= IMAGES  # the reference: one chunk per row
    assert len(batched) < IMAGES / 2  # rows that waited went out together
    assert len(gzipped) < IMAGES / 2  # and were compressed with one flush per chunk
    unzipped = json.loads(zlib.decompress(b"".join(gzipped), wbits=16 + zlib.MAX_WBITS))
    assert by_key(unzipped, SOP_UID) == by_key(rows, SOP_UID)


async def test_a_worklist_of_100_steps_goes_out_in_fewer_chunks_than_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "wlmscpfs"
    steps = [
        Step(f"P-{n}", f"Doe^Jane{n}", f"ACC{n}", "CT", "CT01", "20261201", "0800", f"SPS{n}")
        for n in range(STEPS)
    ]
    write_worklist(root / "WLM", steps)
    target = "/aets/WLM/modality-scheduled-procedure-steps"
    async with (
        open_wlmscpfs(root) as port,
        run_gateway(AeConfig(aet="WLM", host="127.0.0.1", port=port)) as running,
    ):
        batched = await chunked_get(running.http_url, target)
        monkeypatch.setattr(qido, "CHUNK_BYTES", 1)
        unbatched = await chunked_get(running.http_url, target)

    rows: list[dict[str, Any]] = json.loads(b"".join(batched))
    assert sorted(by_key(rows, PATIENT_ID)) == sorted(step.patient_id for step in steps)
    assert by_key(rows, PATIENT_ID) == by_key(json.loads(b"".join(unbatched)), PATIENT_ID)
    assert len(unbatched) >= STEPS
    assert len(batched) < STEPS / 2
