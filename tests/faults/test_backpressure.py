"""A slow HTTP client slows the PACS; past ``stall_timeout`` rst spools instead of holding the
PACS, and the client still gets every instance, in order, byte for byte."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import h11
import httpx
import pydicom
import trio

from rst.config import AeConfig
from rst.devpacs import DevPacs, FolderArchive, write_sample_study
from tests.support.gateway import run_gateway, wait_until
from tests.support.slow_client import slow_request


async def test_slow_client_spools_and_still_gets_everything(tmp_path: Path) -> None:
    paths = write_sample_study(tmp_path / "pacs", images=30, rows=512, columns=512, series=1)
    study = pydicom.dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID
    pacs = DevPacs(FolderArchive(tmp_path / "pacs"), aet="SLOWPACS")
    pacs.start()
    try:
        ae = AeConfig(aet="SLOWPACS", host="127.0.0.1", port=pacs.port)
        async with run_gateway(ae, dimse={"stall_timeout": 0.2, "channel_size": 1}) as running:
            pacs.add_destination("RST", *running.dimse_address)
            stream, client = await slow_request(running.http_url, f"/aets/SLOWPACS/studies/{study}")
            body = bytearray()

            async def read_event() -> Any:
                while True:
                    event = client.next_event()
                    if event is h11.NEED_DATA:
                        client.receive_data(await stream.receive_some(65536))
                        continue
                    return event

            response = await read_event()
            assert response.status_code == 200
            # The client now stops reading; the PACS keeps sending; rst must spool.
            subscription = running.mediator.subscriptions()[0]
            await wait_until(lambda: subscription.sink.spooled > 0, within=20, what="spooling")
            while not isinstance(event := await read_event(), h11.EndOfMessage):
                body += event.data
            await stream.aclose()
            assert len(running.mediator) == 0
    finally:
        pacs.stop()
    content_type = dict(response.headers)[b"content-type"].decode()
    boundary = content_type.split("boundary=")[1].encode()
    parts = bytes(body).split(b"--" + boundary)[1:-1]
    received = [part.split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n") for part in parts]
    expected = sorted(paths)
    assert len(received) == len(expected)
    by_uid = {ds.SOPInstanceUID: ds for ds in map(pydicom.dcmread, expected)}
    for data in received:
        ds = pydicom.dcmread(io.BytesIO(data))
        assert ds.PixelData == by_uid.pop(ds.SOPInstanceUID).PixelData
    assert not by_uid
    assert subscription.sink.spooled > 0


async def test_association_limit_queues_requests(tmp_path: Path) -> None:
    write_sample_study(tmp_path / "pacs", images=2, rows=16, columns=16, series=1)
    pacs = DevPacs(FolderArchive(tmp_path / "pacs"), aet="ONEATATIME")
    pacs.start()
    try:
        ae = AeConfig(aet="ONEATATIME", host="127.0.0.1", port=pacs.port, max_associations=1)
        async with run_gateway(ae) as running:
            backend: Any = running.backends["ONEATATIME"]
            results: list[int] = []

            async with httpx.AsyncClient(base_url=f"{running.http_url}/aets/ONEATATIME") as http:

                async def search() -> None:
                    results.append((await http.get("/studies")).status_code)

                async with trio.open_nursery() as nursery:
                    for _ in range(6):
                        nursery.start_soon(search)
            assert results == [200] * 6
            assert backend.peer.peak_associations == 1
            assert pacs.events.count("find") == 6
    finally:
        pacs.stop()
