"""``rst_spool_bytes``: the bytes a stalled client's retrieve holds on disk, through a real
C-MOVE — up while rst spools, back to 0 once the client has gone and the retrieve is abandoned."""

from __future__ import annotations

from pathlib import Path

import httpx
import pydicom
from prometheus_client.parser import text_string_to_metric_families

from rst.config import AeConfig
from rst.devpacs import DevPacs, FolderArchive, write_sample_study
from rst.metrics import Metrics
from tests.support.gateway import run_gateway, wait_until
from tests.support.slow_client import slow_request

AET = "SLOWPACS"


def held(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value("rst_spool_bytes", {"aet": AET})
    return value or 0.0  # no sample before the first retrieve


async def test_the_spool_gauge_falls_back_to_zero_when_a_spooling_client_goes(
    tmp_path: Path,
) -> None:
    paths = write_sample_study(tmp_path / "pacs", images=30, rows=512, columns=512, series=1)
    study = pydicom.dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID
    pacs = DevPacs(FolderArchive(tmp_path / "pacs"), aet=AET)
    pacs.start()
    try:
        ae = AeConfig(aet=AET, host="127.0.0.1", port=pacs.port)
        dimse = {"stall_timeout": 0.2, "channel_size": 1, "spool_dir": str(tmp_path)}
        async with run_gateway(ae, dimse=dimse) as running:
            metrics = running.metrics
            assert metrics is not None
            pacs.add_destination("RST", *running.dimse_address)
            stream, _ = await slow_request(running.http_url, f"/aets/{AET}/studies/{study}")
            # the client reads nothing more: the PACS keeps sending, rst spools
            await wait_until(lambda: held(metrics) > 0, within=20, what="spooling")
            sink = running.mediator.subscriptions()[0].sink
            assert 0 < held(metrics) <= sink.spooled_bytes  # what this retrieve wrote, no more

            await stream.aclose()  # the client goes: the retrieve is abandoned, its file closed
            await wait_until(lambda: len(running.mediator) == 0, within=30, what="the abandon")
            await wait_until(lambda: held(metrics) == 0, within=5, what="the spool released")
            written = metrics.registry.get_sample_value(
                "rst_spool_written_bytes_total", {"aet": AET}
            )
            assert written is not None
            assert written == sink.spooled_bytes > 0
            async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
                scraped = (await http.get(f"{running.http_url}/metrics")).text
    finally:
        pacs.stop()
    gauge = [
        s.value
        for family in text_string_to_metric_families(scraped)
        for s in family.samples
        if s.name == "rst_spool_bytes"
    ]
    assert gauge == [0]
