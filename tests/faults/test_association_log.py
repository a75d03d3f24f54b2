"""One log line per DIMSE association, with its fields, and the receiver's metrics: against
rst's development PACS on loopback, through the real gateway."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
import trio
from pynetdicom import AE

from rst.config import AeConfig
from rst.devpacs import DevPacs, Faults
from rst.dicom.uids import VERIFICATION
from rst.logs import JsonFormatter, RequestIdFilter
from rst.server import Running
from tests.support.gateway import run_gateway, settled
from tests.support.receiver_counts import refused, stores


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.handler.addFilter(RequestIdFilter())
    caplog.set_level(logging.INFO)
    return caplog


def associations(caplog: pytest.LogCaptureFixture, direction: str) -> list[dict[str, Any]]:
    """The association lines of *direction*, as the JSON log format writes them."""
    found = []
    for record in caplog.records:
        if record.name == "rst.backends.dimse.journal":
            line = json.loads(JsonFormatter().format(record))
            if line["association"]["direction"] == direction:
                found.append(line)
    return found


def ae(pacs: DevPacs, **kw: Any) -> AeConfig:
    return AeConfig(aet="FAULTY", host="127.0.0.1", port=pacs.port, **kw)


def client(running: Running, request_id: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"{running.http_url}/aets/FAULTY",
        headers={"X-Request-ID": request_id},
        timeout=30,
    )


async def test_a_c_find_logs_one_line_with_its_peer_status_and_request(
    pacs: DevPacs, lines: pytest.LogCaptureFixture
) -> None:
    async with run_gateway(ae(pacs)) as running, client(running, "find-1") as http:
        response = await http.get("/studies")
        await settled(running)
    assert response.status_code == 200
    [line] = associations(lines, "outgoing")
    assert line["request_id"] == "find-1"
    assert line["aet"] == "FAULTY"
    fields = line["association"]
    assert fields["peer_aet"] == "FAULTY"
    assert fields["peer"] == f"127.0.0.1:{pacs.port}"
    assert fields["operation"] == "C-FIND"
    assert fields["outcome"] == "released"
    assert fields["status"] == "0x0000"
    assert 0 <= fields["duration_s"] < 30
    assert "rst → FAULTY" in line["message"]
    assert "C-FIND" in line["message"]


async def test_a_c_move_logs_the_client_and_the_receiver_line_with_one_request_id(
    pacs: DevPacs, lines: pytest.LogCaptureFixture
) -> None:
    async with run_gateway(ae(pacs)) as running:
        pacs.add_destination("RST", *running.dimse_address)
        async with client(running, "move-1") as http:
            study = str(pacs.archive.instances()[0].study_uid)
            response = await http.get(f"/studies/{study}")
        await settled(running)
        received = stores(running.receiver, "accepted")
        metrics = running.receiver.metrics
        accepted = metrics.total("rst_receiver_associations_total", calling_aet="FAULTY")
        read = metrics.total("rst_receiver_bytes_total", calling_aet="FAULTY")
    assert response.status_code == 200
    [move] = associations(lines, "outgoing")
    assert move["request_id"] == "move-1"
    assert move["association"]["operation"] == "C-MOVE"
    assert move["association"]["outcome"] == "released"
    assert move["association"]["status"] == "0x0000"
    incoming = associations(lines, "incoming")
    assert incoming, "the receiver logged no association"
    assert sum(line["association"]["stores"] for line in incoming) == 12 == received
    for line in incoming:
        fields = line["association"]
        assert line["request_id"] == "move-1"
        assert line["aet"] == "FAULTY"
        assert fields["request_ids"] == ["move-1"]
        assert fields["peer_aet"] == "FAULTY"
        assert fields["outcome"] == "released"
        assert fields["stores_refused"] == 0
        assert fields["bytes"] > 0
    assert accepted == len(incoming)
    assert read == sum(line["association"]["bytes"] for line in incoming)


async def test_a_rejected_association_logs_why(
    pacs: DevPacs, faults: Faults, lines: pytest.LogCaptureFixture
) -> None:
    faults.reject_association = True
    async with run_gateway(ae(pacs)) as running, client(running, "rejected-1") as http:
        response = await http.get("/studies")
    assert response.status_code == 502
    [line] = associations(lines, "outgoing")
    assert line["request_id"] == "rejected-1"
    assert line["association"]["outcome"] == "rejected"
    assert "rejected the association" in line["association"]["reason"]
    assert "status" not in line["association"]


async def test_a_c_get_logs_the_instances_it_received(
    pacs: DevPacs, lines: pytest.LogCaptureFixture
) -> None:
    async with run_gateway(ae(pacs, retrieve="get")) as running:
        async with client(running, "get-1") as http:
            study = str(pacs.archive.instances()[0].study_uid)
            response = await http.get(f"/studies/{study}")
        await settled(running)
    assert response.status_code == 200
    # the C-FIND for the study's SOP classes (the C-GET's proposal), then the C-GET itself
    find, line = associations(lines, "outgoing")
    assert find["association"]["operation"] == "C-FIND"
    assert find["request_id"] == "get-1"
    fields = line["association"]
    assert line["request_id"] == "get-1"
    assert fields["operation"] == "C-GET"
    assert fields["outcome"] == "released"
    assert fields["status"] == "0x0000"
    assert fields["stores"] == 12
    assert fields["stores_refused"] == 0
    assert fields["bytes"] > 12 * 64 * 64
    assert associations(lines, "incoming") == []


async def test_an_association_the_pacs_aborts_logs_who_aborted(
    pacs: DevPacs, faults: Faults, lines: pytest.LogCaptureFixture
) -> None:
    faults.die_after = 0
    async with run_gateway(ae(pacs, retrieve="get")) as running:
        async with client(running, "aborted-1") as http:
            study = str(pacs.archive.instances()[0].study_uid)
            response = await http.get(f"/studies/{study}")
        await settled(running)
    assert response.status_code == 502
    find, line = associations(lines, "outgoing")  # the SOP classes' C-FIND, then the C-GET
    assert find["association"]["outcome"] == "released"
    assert line["request_id"] == "aborted-1"
    assert line["association"]["operation"] == "C-GET"
    assert line["association"]["outcome"] == "aborted"
    assert line["association"]["aborted_by"] == "peer"


def _echo(port: int, calling_aet: str) -> bool:
    scu = AE(calling_aet)
    scu.add_requested_context(VERIFICATION)
    association = scu.associate("127.0.0.1", port, ae_title="RST")
    if not association.is_established:
        return False
    try:
        return bool(association.send_c_echo().Status == 0)
    finally:
        association.release()


async def test_the_receiver_logs_and_counts_a_caller_it_rejects(
    pacs: DevPacs, lines: pytest.LogCaptureFixture
) -> None:
    async with run_gateway(ae(pacs)) as running:
        port = running.dimse_address[1]
        assert await trio.to_thread.run_sync(_echo, port, "FAULTY")
        assert not await trio.to_thread.run_sync(_echo, port, "STRANGER")
        metrics = running.receiver.metrics
        assert refused(running.receiver, "unknown_caller") == 1
        assert metrics.total("rst_receiver_associations_total", calling_aet="FAULTY") == 1
        assert metrics.total("rst_receiver_associations_total", calling_aet="unknown") == 0
    known, stranger = associations(lines, "incoming")
    assert known["association"]["peer_aet"] == "FAULTY"
    assert known["association"]["operation"] == "1 C-ECHO"
    assert known["association"]["outcome"] == "released"
    assert known["request_id"] == "-"
    assert stranger["association"]["peer_aet"] == "STRANGER"
    assert stranger["association"]["outcome"] == "rejected"
    assert "calling AE title not recognized" in stranger["association"]["reason"]
