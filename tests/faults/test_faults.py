"""rst against PACS that misbehave: each fault must end in a clear error, never a hang, a
leak or a retrieve that looks complete when it is not."""

from __future__ import annotations

import socket
import threading
from typing import Any

import httpx
import pytest
import trio

from rst.config import AeConfig
from rst.devpacs import DevPacs, Faults
from rst.server import Running
from tests.support.gateway import run_gateway, settled
from tests.support.receiver_counts import refused, stores


def ae(pacs: DevPacs, **kw: Any) -> AeConfig:
    return AeConfig(aet="FAULTY", host="127.0.0.1", port=pacs.port, **kw)


def study_uid(pacs: DevPacs) -> str:
    return str(pacs.archive.instances()[0].study_uid)


def client(running: Running) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"{running.http_url}/aets/FAULTY", timeout=30)


async def pacs_saw(pacs: DevPacs, what: str) -> bool:
    """Wait (without blocking the event loop rst runs on) until the PACS logged *what*."""
    return await trio.to_thread.run_sync(pacs.wait_for, what, 5.0)


async def test_rejected_association_is_502_with_reason(pacs: DevPacs, faults: Faults) -> None:
    faults.reject_association = True
    async with run_gateway(ae(pacs)) as running, client(running) as http:
        response = await http.get("/studies")
        health = await http.get(f"{running.http_url}/aets/FAULTY")
    assert response.status_code == 502
    assert "rejected the association" in response.json()["error"]
    assert health.status_code == 503
    assert health.json()["status"] == "unavailable"


async def test_unreachable_pacs_is_502(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = AeConfig(aet="FAULTY", host="127.0.0.1", port=port)
    async with run_gateway(config) as running, client(running) as http:
        response = await http.get("/studies")
        health = await http.get(f"{running.http_url}/aets/FAULTY")
    assert response.status_code == 502
    assert "cannot connect to the PACS FAULTY" in response.json()["error"]
    # the client learns the AE title; where the PACS is goes to the log only
    for body in (response.text, health.text):
        assert str(port) not in body
        assert "127.0.0.1" not in body
    assert f"127.0.0.1:{port}" in caplog.text


async def test_unknown_move_destination_is_502_naming_the_fix(pacs: DevPacs) -> None:
    async with run_gateway(ae(pacs)) as running, client(running) as http:
        response = await http.get(f"/studies/{study_uid(pacs)}")
        await settled(running)
    assert response.status_code == 502
    assert "0xA801" in response.json()["error"]
    assert "DICOM modalities" in response.json()["error"]


async def test_missing_move_originator_falls_back_to_uids(pacs: DevPacs, faults: Faults) -> None:
    faults.omit_move_originator = True
    async with run_gateway(ae(pacs)) as running, client(running) as http:
        pacs.add_destination("RST", *running.dimse_address)
        response = await http.get(f"/studies/{study_uid(pacs)}")
        assert response.status_code == 200
        assert response.content.count(b"Content-Type: application/dicom") == 12
        assert stores(running.receiver, "unsolicited") == 0


async def test_missing_move_originator_refused_when_correlation_requires_it(
    pacs: DevPacs, faults: Faults
) -> None:
    faults.omit_move_originator = True
    async with run_gateway(ae(pacs, correlation="move-originator")) as running:
        pacs.add_destination("RST", *running.dimse_address)
        async with client(running) as http:
            response = await http.get(f"/studies/{study_uid(pacs)}")
        assert response.status_code == 502
        assert stores(running.receiver, "unsolicited") >= 1
        await settled(running)


@pytest.mark.parametrize("mode", ["move", "get"])
@pytest.mark.parametrize(
    "fault",
    [{"drop_instances": 2}, {"die_after": 3}],
    ids=["fewer-instances-than-reported", "pacs-dies-mid-transfer"],
)
async def test_incomplete_retrieve_breaks_the_stream(
    pacs: DevPacs, faults: Faults, mode: str, fault: dict[str, int]
) -> None:
    for name, value in fault.items():
        setattr(faults, name, value)
    async with run_gateway(ae(pacs, retrieve=mode)) as running:
        pacs.add_destination("RST", *running.dimse_address)
        async with client(running) as http:
            with pytest.raises(httpx.RemoteProtocolError):  # the body never completes
                await http.get(f"/studies/{study_uid(pacs)}")
        await settled(running)


@pytest.mark.parametrize("mode", ["move", "get"])
async def test_pacs_aborting_before_any_instance_is_502_not_a_timeout(
    pacs: DevPacs, faults: Faults, mode: str
) -> None:
    """An abort is not a timeout: 502 (never 504), with a message saying the PACS aborted."""
    faults.die_after = 0
    async with run_gateway(ae(pacs, retrieve=mode)) as running:
        pacs.add_destination("RST", *running.dimse_address)
        async with client(running) as http:
            response = await http.get(f"/studies/{study_uid(pacs)}")
        await settled(running)
    assert response.status_code == 502, response.text
    assert "the PACS aborted the association" in response.json()["error"]


@pytest.mark.parametrize("mode", ["move", "get"])
async def test_hanging_pacs_times_out_with_cancel(pacs: DevPacs, faults: Faults, mode: str) -> None:
    gate = threading.Event()
    faults.hang_after_move = gate
    try:
        async with run_gateway(
            ae(pacs, retrieve=mode, first_store_timeout=0.5, cancel_timeout=1.0)
        ) as running:
            pacs.add_destination("RST", *running.dimse_address)
            async with client(running) as http:
                response = await http.get(f"/studies/{study_uid(pacs)}")
            assert response.status_code == 504
            assert "sent no C-STORE" in response.json()["error"]
            assert await pacs_saw(pacs, "cancel"), pacs.events
            await settled(running)
    finally:
        gate.set()


@pytest.mark.parametrize("mode", ["move", "get"])
async def test_client_disconnect_cancels_the_retrieve(
    pacs: DevPacs, faults: Faults, mode: str
) -> None:
    gate = threading.Event()
    faults.hang_after_move = gate
    try:
        async with run_gateway(ae(pacs, retrieve=mode, cancel_timeout=1.0)) as running:
            pacs.add_destination("RST", *running.dimse_address)
            url = f"{running.http_url}/aets/FAULTY/studies/{study_uid(pacs)}"
            async with httpx.AsyncClient(timeout=30) as http:
                with trio.move_on_after(5):  # the client gives up (disconnects) once hung
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(http.get, url)
                        assert await pacs_saw(pacs, "hang")
                        nursery.cancel_scope.cancel()
                        hung_up = trio.current_time()
            await settled(running)
            # The promise: within a second of the client hanging up, the C-CANCEL has reached
            # the PACS and the association and subscription are gone.
            assert trio.current_time() - hung_up < 1.0
            assert await pacs_saw(pacs, "cancel"), pacs.events
    finally:
        gate.set()


async def test_stow_reports_each_refused_instance(
    pacs: DevPacs, faults: Faults, sample_folder: Any
) -> None:
    from rst.dicom.multipart import MultipartWriter

    faults.store_status = 0xA700
    files = sorted(sample_folder.rglob("*.dcm"))[:3]
    writer = MultipartWriter()
    body = b"".join(writer.part_head("application/dicom") + f.read_bytes() for f in files)
    body += writer.close()
    async with run_gateway(ae(pacs)) as running, client(running) as http:
        response = await http.post(
            "/studies",
            content=body,
            headers={"Content-Type": writer.content_type("application/dicom")},
        )
    assert response.status_code == 409
    failed = response.json()["00081198"]["Value"]
    assert len(failed) == 3
    assert {item["00081197"]["Value"][0] for item in failed} == {0xA700}


async def test_stow_too_large_is_413(pacs: DevPacs, sample_folder: Any) -> None:
    from rst.dicom.multipart import MultipartWriter

    files = sorted(sample_folder.rglob("*.dcm"))[:4]
    writer = MultipartWriter()
    body = b"".join(writer.part_head("application/dicom") + f.read_bytes() for f in files)
    body += writer.close()
    headers = {"Content-Type": writer.content_type("application/dicom")}

    async def chunked() -> Any:  # no Content-Length: the limit must hold while streaming
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    limits = {"max_stow_bytes": 5_000}  # less than one part: nothing is stored
    async with run_gateway(ae(pacs), http=limits) as running, client(running) as http:
        declared = await http.post("/studies", content=body, headers=headers)
        streamed = await http.post("/studies", content=chunked(), headers=headers)
    assert declared.status_code == 413
    assert "max_stow_bytes" in declared.json()["error"]
    assert streamed.status_code == 413


async def test_cors_preflight_and_headers(pacs: DevPacs) -> None:
    cors = {"cors_origins": ("https://viewer.example",)}
    async with run_gateway(ae(pacs), http=cors) as running, client(running) as http:
        preflight = await http.options(
            "/studies",
            headers={
                "Origin": "https://viewer.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "Authorization",
            },
        )
        search = await http.get("/studies", headers={"Origin": "https://viewer.example"})
        other = await http.get("/studies", headers={"Origin": "https://evil.example"})
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://viewer.example"
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    assert search.headers["Access-Control-Allow-Origin"] == "https://viewer.example"
    assert "Warning" in search.headers["Access-Control-Expose-Headers"]
    assert "Access-Control-Allow-Origin" not in other.headers


async def test_limit_reached_sends_c_cancel(
    pacs: DevPacs, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="rst.backends.dimse")
    async with run_gateway(ae(pacs)) as running, client(running) as http:
        page = await http.get("/instances", params={"limit": "2"})
        await settled(running)
    assert len(page.json()) == 2
    assert "additional results" in page.headers["Warning"]
    # rst stopped reading after limit + 1 matches and told the PACS to stop sending the rest.
    assert any("sending C-CANCEL" in record.message for record in caplog.records)


@pytest.mark.parametrize("mode", ["move", "get"])
async def test_retrieve_with_the_receiver_closed_to_unknown_callers(
    pacs: DevPacs, mode: str
) -> None:
    """accept_unknown_callers = false: the PACS calls with its AE title, which is configured."""
    dimse = {"accept_unknown_callers": False}
    async with run_gateway(ae(pacs, retrieve=mode), dimse=dimse) as running:
        pacs.add_destination("RST", *running.dimse_address)
        async with client(running) as http:
            response = await http.get(f"/studies/{study_uid(pacs)}")
        assert response.status_code == 200
        assert response.content.count(b"Content-Type: application/dicom") == 12
        assert refused(running.receiver, "unknown_caller") == 0
        await settled(running)


async def test_retrieve_from_a_pacs_calling_with_another_title_is_rejected(
    pacs: DevPacs, caplog: pytest.LogCaptureFixture
) -> None:
    """By default, the C-STORE sub-associations of a PACS whose calling AE title is not
    configured are rejected: the retrieve fails with a 502, it does not hang."""
    archive = ae(pacs, store_calling_aets=["ELSEWHERE"])
    async with run_gateway(archive) as running:
        pacs.add_destination("RST", *running.dimse_address)
        async with client(running) as http:
            response = await http.get(f"/studies/{study_uid(pacs)}")
        assert response.status_code == 502
        assert refused(running.receiver, "unknown_caller") >= 1
        assert stores(running.receiver, "accepted") == 0
        await settled(running)
    assert "rejected the association from AE 'FAULTY'" in caplog.text
