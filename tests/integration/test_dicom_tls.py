"""DICOM TLS against dcmtk's TLS peers (dcmtk in Debian is built with OpenSSL).

rst as the TLS client: STOW-RS and the health check's C-ECHO through rst to ``storescp +tls``,
which requires rst's client certificate. rst's receiver as the TLS server: ``storescu +tls``
and ``echoscu +tls`` associate into it, with mutual TLS. And what must fail does, saying why:
a PACS whose certificate rst does not trust (502, its address not in the body), a caller
without a certificate, a plain-TCP caller and a stalled handshake (each refused without
harming a concurrent good association).

Every certificate is made by the test (:mod:`tests.support.certificates`)."""

from __future__ import annotations

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

from rst.backends.dimse.mediator import Mediator, Subscription
from rst.backends.dimse.receiver import StoreReceiver
from rst.backends.dimse.sink import InstanceSink
from rst.config import AeConfig, DimseConfig
from tests.support.certificates import Issued, Pki
from tests.support.dcmtk import open_storescp, run_tool, tls_options
from tests.support.gateway import run_gateway
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
        await running.backends[PACS].echo()  # what the health check does
        async with httpx.AsyncClient(base_url=running.http_url, timeout=30) as http:
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
    assert receiver.received == len(study.paths)
    assert receiver.tls_refused == 0
