"""DICOM TLS against dcmtk's TLS peers (dcmtk in Debian is built with OpenSSL).

rst as the TLS client: STOW-RS and the health check's C-ECHO through rst to ``storescp +tls``,
which requires rst's client certificate. rst's receiver as the TLS server: ``storescu +tls``
and ``echoscu +tls`` associate into it, with mutual TLS. And what must fail does, saying why:
a PACS whose certificate rst does not trust (502, its address not in the body), a caller
without a certificate, a plain-TCP caller and a stalled handshake (each refused without
harming a concurrent good association).

Every certificate is made by the test (:mod:`tests.support.certificates`)."""

from __future__ import annotations

import functools
import io
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
import pytest
import trio
from pydicom.uid import ImplicitVRLittleEndian

from rst.backends.dimse.client import Connection, open_association
from rst.backends.dimse.mediator import Mediator, Subscription
from rst.backends.dimse.receiver import StoreReceiver
from rst.backends.dimse.sink import InstanceSink
from rst.backends.dimse.ul import OtherCommand, PresentationContextRQ, encode_c_echo_rq
from rst.config import AeConfig, DimseConfig
from rst.dicom.uids import VERIFICATION
from rst.errors import PacsUnreachable
from tests.support.certificates import Issued, Pki
from tests.support.dcmtk import open_storescp, run_tool, tls_options
from tests.support.gateway import run_gateway
from tests.support.orthanc import add_modality, dicom_tls_config, open_orthanc, upload
from tests.support.receiver_counts import refused, stores
from tests.support.sample import write_ct_study
from tests.support.stow import ct_instances, fates, multipart

pytestmark = pytest.mark.integration

PACS = "TLSPACS"


@dataclass(frozen=True)
class Certificates:
    pki: Pki
    pacs: Issued  # the dcmtk peer's, as a server and as a client
    rst_server: Issued  # rst's receiver
    rst_client: Issued  # what rst presents to a PACS


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    pki = Pki(tmp_path / "pki")
    return Certificates(
        pki,
        pki.issue("pacs", server=True, client=True),
        pki.issue("rst", server=True),
        pki.issue("rst-client"),
    )


def pacs_config(port: int, certs: Certificates, **keys: object) -> AeConfig:
    settings: dict[str, object] = {
        "aet": PACS,
        "host": "127.0.0.1",
        "port": port,
        "tls": True,
        "tls_ca": str(certs.pki.ca),
        "tls_cert": str(certs.rst_client.cert),
        "tls_key": str(certs.rst_client.key),
        "connect_timeout": 10.0,
        **keys,
    }
    return AeConfig.model_validate(settings)


async def test_stow_and_echo_to_a_tls_storescp(certs: Certificates, tmp_path: Path) -> None:
    instances = ct_instances(tmp_path, 2, seed=41)
    headers, body = multipart(*(instance.data for instance in instances))
    folder = tmp_path / "received"
    options = tls_options(certs.pacs.key, certs.pacs.cert, certs.pki.ca)  # requires rst's cert
    async with (
        open_storescp(folder, PACS, extra=options) as port,
        run_gateway(pacs_config(port, certs)) as running,
    ):
        assert running.health is not None
        await running.health.check_all()  # the readiness check's C-ECHO, over TLS
        assert running.health.last[PACS].ok, running.health.last[PACS].detail
        async with httpx.AsyncClient(base_url=running.http_url, timeout=30) as http:
            echo = await http.get(f"/aets/{PACS}")
            assert echo.json()["status"] == "ok", echo.text
            response = await http.post(f"/aets/{PACS}/studies", content=body, headers=headers)
        result = fates(response)
        assert result.status == 200, response.text
        assert sorted(result.referenced) == sorted(instance.uid for instance in instances)
    received = sorted(path.name for path in folder.iterdir())
    assert received == sorted(f"CT.{instance.uid}" for instance in instances)


async def test_a_pacs_certificate_rst_does_not_trust_is_a_502_without_its_address(
    certs: Certificates, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stranger = Pki(tmp_path / "other-ca", name="another CA")
    options = tls_options(certs.pacs.key, certs.pacs.cert, certs.pki.ca, peer_cert="ignore")
    async with open_storescp(tmp_path / "received", PACS, extra=options) as port:
        config = pacs_config(port, certs, tls_ca=str(stranger.ca))
        async with (
            run_gateway(config) as running,
            httpx.AsyncClient(base_url=running.http_url, timeout=30) as http,
        ):
            with caplog.at_level(logging.WARNING, logger="rst.backends.dimse.tls"):
                response = await http.get(f"/aets/{PACS}/studies")
    assert response.status_code == 502, response.text
    message = response.json()["error"]
    assert "TLS handshake" in message, message
    assert "certificate not accepted" in message, message
    assert str(port) not in message
    assert "127.0.0.1" not in message
    logged = [r.getMessage() for r in caplog.records if r.name == "rst.backends.dimse.tls"]
    assert len(logged) == 1, logged
    assert f"127.0.0.1:{port}" in logged[0]


# -- rst's receiver as the TLS server ----------------------------------------------------------


@asynccontextmanager
async def tls_receiver(certs: Certificates, **keys: object) -> AsyncIterator[StoreReceiver]:
    settings: dict[str, object] = {
        "host": "127.0.0.1",
        "port": 0,
        "tls_cert": str(certs.rst_server.cert),
        "tls_key": str(certs.rst_server.key),
        "tls_ca": str(certs.pki.ca),
        **keys,
    }
    receiver = StoreReceiver(DimseConfig.model_validate(settings), Mediator())
    async with trio.open_nursery() as nursery:
        await nursery.start(receiver.run)
        yield receiver
        nursery.cancel_scope.cancel()


def peer_args(receiver: StoreReceiver) -> list[str]:
    assert receiver.address is not None
    return ["-aec", "RST", receiver.address[0], str(receiver.address[1])]


async def test_storescu_and_echoscu_associate_into_the_tls_receiver(
    certs: Certificates, tmp_path: Path
) -> None:
    study = write_ct_study(tmp_path / "study", images=3, rows=16, columns=16)
    options = tls_options(certs.pacs.key, certs.pacs.cert, certs.pki.ca)
    async with tls_receiver(certs) as receiver:
        echo = await run_tool("echoscu", "-v", *options, *peer_args(receiver))
        assert echo.ok, echo.output
        target = Subscription(InstanceSink(capacity=8, stall_timeout=5.0), study.study_uid)
        with receiver.mediator.subscribe(target):
            store = await run_tool(
                "storescu", "-v", *options, *peer_args(receiver), *map(str, study.paths)
            )
            assert store.ok, store.output
            assert len(store.store_statuses) == len(study.paths)
            target.sink.finish()
            got = []
            while (instance := await target.sink.receive()) is not None:
                got.append(instance)
    assert sorted(i.sop_instance_uid for i in got) == sorted(study.sop_uids)
    for instance in got:
        original = study.paths[study.sop_uids.index(instance.sop_instance_uid)]
        sent = pydicom.dcmread(original)
        assert pydicom.dcmread(io.BytesIO(instance.data)).PixelData == sent.PixelData
    assert stores(receiver, "accepted") == len(study.paths)
    assert refused(receiver, "tls") == 0


# -- Orthanc, TLS only, both ways --------------------------------------------------------------


@pytest.mark.parametrize("retrieve", ["move", "get"])
async def test_qido_and_a_retrieve_through_rst_to_a_tls_only_orthanc(
    certs: Certificates, tmp_path: Path, retrieve: str
) -> None:
    """rst searches a TLS-only Orthanc and retrieves a study by C-MOVE — Orthanc sending the
    instances into rst's receiver over TLS: mutual TLS on both associations — or by C-GET."""
    study = write_ct_study(tmp_path / "study", images=3, rows=32, columns=32, series=2)
    orthanc_tls = dicom_tls_config(certs.pacs.cert, certs.pacs.key, certs.pki.ca)
    async with open_orthanc(tmp_path / "orthanc", extra_config=orthanc_tls) as orthanc:
        await upload(orthanc, study.paths)
        pacs = pacs_config(orthanc.dicom_port, certs, aet=orthanc.aet, retrieve=retrieve)
        receiver_tls = {
            "tls_cert": str(certs.rst_server.cert),
            "tls_key": str(certs.rst_server.key),
            "tls_ca": str(certs.pki.ca),
        }
        async with run_gateway(pacs, dimse=receiver_tls) as running:
            await add_modality(orthanc, "rst", "RST", *running.dimse_address, tls=True)
            await running.backends[orthanc.aet].echo()
            base = f"{running.http_url}/aets/{orthanc.aet}"
            async with httpx.AsyncClient(base_url=base, timeout=60) as http:
                found = await http.get("/studies", params={"StudyInstanceUID": study.study_uid})
                assert found.status_code == 200, found.text
                assert [s["0020000D"]["Value"][0] for s in found.json()] == [study.study_uid]
                retrieved = await http.get(f"/studies/{study.study_uid}")
            assert retrieved.status_code == 200, retrieved.text
            moved = len(study.paths) if retrieve == "move" else 0
            assert stores(running.receiver, "accepted") == moved
            assert refused(running.receiver, "tls") == 0
    boundary = retrieved.headers["Content-Type"].split("boundary=")[1].strip('"')
    parts = retrieved.content.split(f"--{boundary}".encode())[1:-1]
    got = {}
    for part in parts:
        ds = pydicom.dcmread(io.BytesIO(part.split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n")))
        got[ds.SOPInstanceUID] = ds.PixelData
    sent = zip(study.sop_uids, study.paths, strict=True)
    expected = {uid: pydicom.dcmread(path).PixelData for uid, path in sent}
    assert got == expected


async def test_a_plain_dicom_caller_cannot_reach_a_tls_only_orthanc_through_rst(
    certs: Certificates, tmp_path: Path
) -> None:
    """The other way round: rst without ``tls`` in front of a TLS-only Orthanc fails with a
    502 (Orthanc drops the association request it cannot read as TLS)."""
    orthanc_tls = dicom_tls_config(certs.pacs.cert, certs.pacs.key, certs.pki.ca)
    async with open_orthanc(tmp_path / "orthanc", extra_config=orthanc_tls) as orthanc:
        plain = AeConfig(aet=orthanc.aet, host="127.0.0.1", port=orthanc.dicom_port)
        async with (
            run_gateway(plain) as running,
            httpx.AsyncClient(base_url=running.http_url, timeout=30) as http,
        ):
            response = await http.get(f"/aets/{orthanc.aet}/studies")
    assert response.status_code == 502, response.text


# -- what must be refused ----------------------------------------------------------------------


def loopback_pacs(receiver: StoreReceiver, certs: Certificates, **keys: object) -> AeConfig:
    """rst's own client calling rst's receiver, as a PACS would (with its certificate)."""
    assert receiver.address is not None
    settings: dict[str, object] = {
        "aet": "RST",
        "host": "127.0.0.1",
        "port": receiver.address[1],
        "tls": True,
        "tls_ca": str(certs.pki.ca),
        "tls_cert": str(certs.pacs.cert),
        "tls_key": str(certs.pacs.key),
        **keys,
    }
    return AeConfig.model_validate(settings)


async def echo_on(connection: Connection, message_id: int) -> int | None:
    await connection.send(1, encode_c_echo_rq(message_id=message_id))
    _, response = await connection.receive_command()
    assert isinstance(response, OtherCommand)
    return response.status


@asynccontextmanager
async def good_association(
    receiver: StoreReceiver, certs: Certificates
) -> AsyncIterator[Connection]:
    """A mutual-TLS association into *receiver* that has answered a C-ECHO."""
    contexts = [PresentationContextRQ(1, VERIFICATION, (ImplicitVRLittleEndian,))]
    async with open_association(
        loopback_pacs(receiver, certs), calling_aet="PACS", contexts=contexts, max_pdu=65536
    ) as connection:
        assert await echo_on(connection, 1) == 0x0000
        yield connection


async def test_a_plain_tcp_caller_is_refused_while_a_tls_association_goes_on(
    certs: Certificates, caplog: pytest.LogCaptureFixture
) -> None:
    async with tls_receiver(certs) as receiver, good_association(receiver, certs) as good:
        with caplog.at_level(logging.WARNING, logger="rst.backends.dimse.tls"):
            plain = await run_tool("echoscu", "-v", *peer_args(receiver))
        assert not plain.ok, plain.output
        assert refused(receiver, "tls") == 1
        assert await echo_on(good, 2) == 0x0000  # the association it shared the port with
    logged = [r.getMessage() for r in caplog.records if r.name == "rst.backends.dimse.tls"]
    assert len(logged) == 1, logged
    assert "refused the DICOM connection from 127.0.0.1:" in logged[0]


async def test_a_caller_without_a_certificate_is_refused_under_mutual_tls(
    certs: Certificates, tmp_path: Path
) -> None:
    async with tls_receiver(certs) as receiver:
        anonymous = tls_options(None, None, certs.pki.ca)
        answer = await run_tool("echoscu", "-v", *anonymous, *peer_args(receiver))
        assert not answer.ok, answer.output
        assert refused(receiver, "tls") == 1
        stranger = Pki(tmp_path / "other-ca", name="another CA").issue("x", client=True)
        untrusted = tls_options(stranger.key, stranger.cert, certs.pki.ca)
        answer = await run_tool("echoscu", "-v", *untrusted, *peer_args(receiver))
        assert not answer.ok, answer.output
        assert refused(receiver, "tls") == 2
    # without tls_ca the receiver asks for no certificate: the same anonymous caller gets in
    async with tls_receiver(certs, tls_ca=None) as receiver:
        welcome = await run_tool("echoscu", "-v", *anonymous, *peer_args(receiver))
        assert welcome.ok, welcome.output


async def test_a_stalled_handshake_is_closed_after_handshake_timeout(
    certs: Certificates,
) -> None:
    timeout = 0.5
    async with tls_receiver(certs, handshake_timeout=timeout) as receiver:
        assert receiver.address is not None
        async with good_association(receiver, certs) as good:
            silent = await trio.open_tcp_stream(*receiver.address)
            started = trio.current_time()
            with trio.fail_after(10 * timeout + 5):
                assert await silent.receive_some(1024) == b""  # closed by the receiver
            assert trio.current_time() - started >= timeout * 0.9
            await silent.aclose()
            assert refused(receiver, "tls") == 1
            assert await echo_on(good, 2) == 0x0000


async def test_a_pacs_that_stalls_the_handshake_is_a_504(certs: Certificates) -> None:
    """rst as the client: a PACS that accepts TCP and then says nothing."""
    async with trio.open_nursery() as nursery:
        held: list[trio.SocketStream] = []

        async def hold(stream: trio.SocketStream) -> None:
            held.append(stream)
            await trio.sleep_forever()

        serve = functools.partial(trio.serve_tcp, hold, 0, host="127.0.0.1")
        listeners = await nursery.start(serve)
        port = listeners[0].socket.getsockname()[1]
        config = pacs_config(port, certs, connect_timeout=0.5)
        async with (
            run_gateway(config) as running,
            httpx.AsyncClient(base_url=running.http_url, timeout=30) as http,
        ):
            response = await http.get(f"/aets/{PACS}/studies")
        assert response.status_code == 504, response.text
        assert "TLS handshake" in response.json()["error"]
        nursery.cancel_scope.cancel()


async def test_beyond_max_connections_a_tls_caller_is_closed_before_its_handshake(
    certs: Certificates,
) -> None:
    async with (
        tls_receiver(certs, max_connections=1) as receiver,
        good_association(receiver, certs) as good,
    ):
        contexts = [PresentationContextRQ(1, VERIFICATION, (ImplicitVRLittleEndian,))]
        with pytest.raises(PacsUnreachable, match=r"TLS handshake .* failed"):
            async with open_association(
                loopback_pacs(receiver, certs), calling_aet="PACS", contexts=contexts, max_pdu=0
            ):
                pytest.fail("associated beyond max_connections")
        assert receiver.turned_away == 1
        assert refused(receiver, "tls") == 0  # no handshake was even started
        assert await echo_on(good, 2) == 0x0000


async def test_a_pacs_that_requires_rst_certificate_refuses_rst_without_one(
    certs: Certificates, tmp_path: Path
) -> None:
    """Under TLS 1.3 the refusal comes after rst's side of the handshake, on the association
    request: the 502 says the TLS connection broke, and the likely reason."""
    options = tls_options(certs.pacs.key, certs.pacs.cert, certs.pki.ca)  # requires one
    async with open_storescp(tmp_path / "received", PACS, extra=options) as port:
        config = pacs_config(port, certs, tls_cert=None, tls_key=None)
        async with (
            run_gateway(config) as running,
            httpx.AsyncClient(base_url=running.http_url, timeout=30) as http,
        ):
            response = await http.get(f"/aets/{PACS}/studies")
    assert response.status_code == 502, response.text
    message = response.json()["error"]
    assert "the TLS connection broke" in message, message
    assert "wants a certificate" in message, message


async def test_a_pacs_certificate_for_another_host_is_refused(
    certs: Certificates, tmp_path: Path
) -> None:
    """Signed by the right authority, but not for the address rst calls (``host``)."""
    elsewhere = certs.pki.issue("elsewhere", server=True, client=True, hosts=("pacs.invalid",))
    options = tls_options(elsewhere.key, elsewhere.cert, certs.pki.ca, peer_cert="ignore")
    async with (
        open_storescp(tmp_path / "received", PACS, extra=options) as port,
        run_gateway(pacs_config(port, certs)) as running,
        httpx.AsyncClient(base_url=running.http_url, timeout=30) as http,
    ):
        response = await http.get(f"/aets/{PACS}/studies")
    assert response.status_code == 502, response.text
    assert "IP address mismatch" in response.json()["error"]
