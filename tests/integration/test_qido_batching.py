"""QIDO-RS rows already waiting go out together: a search of 200 instances from Orthanc comes in
far fewer HTTP chunks than rows, and its JSON is the one a row-per-chunk gateway answers.

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
from tests.support.gateway import run_gateway
from tests.support.orthanc import Orthanc, upload
from tests.support.sample import write_ct_study

pytestmark = pytest.mark.integration

IMAGES = 200


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
    assert sorted(row["00080018"]["Value"][0] for row in rows) == sorted(study.sop_uids)
    assert rows == json.loads(b"".join(unbatched))
    assert len(unbatched) >= IMAGES  # the reference: one chunk per row
    assert len(batched) < IMAGES / 2  # rows that waited went out together
    assert len(gzipped) < IMAGES / 2  # and were compressed with one flush per chunk
    assert json.loads(zlib.decompress(b"".join(gzipped), wbits=16 + zlib.MAX_WBITS)) == rows
