"""HTTPS: HTTP/1.1 and HTTP/2 (by ALPN) over TLS, mutual TLS, and clients that fail their
handshake — each of which ends its own connection, frees its slot of ``http.max_connections``
and is logged as the client's affair, while the server goes on serving.

Served by the real listener with certificates the test makes (:mod:`tests.support.certificates`)
in front of a :class:`ScriptedBackend`, with one connection slot unless a test says otherwise: a
probe that is answered proves that the connection before it has ended."""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import trio
from pydicom import Dataset

from rst import cli
from rst.config import Config, ConfigError, HttpConfig
from rst.http import tls
from rst.http.app import create_app
from rst.http.listener import serve_http
from rst.services.protocols import Backend
from tests.support.certificates import Issued, Pki
from tests.support.rst_process import read_until, rst_process
from tests.support.scripted_backend import ScriptedBackend, part10

STUDY = "1.2.3"
SETTLE = 5.0
"""Seconds within which an ended connection must have given its slot back."""
HANDSHAKE_TIMEOUT = 0.5


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


@pytest.fixture
def server_cert(pki: Pki) -> Issued:
    return pki.issue("server", server=True)


@dataclass
class Server:
    url: str
    host: str
    port: int
    pki: Pki
    client_certs: list[Issued] = field(default_factory=list)

    def client(self, *, http2: bool = False, cert: Issued | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url, verify=self.pki.client_context(cert), http2=http2, timeout=SETTLE
        )

    async def probe(self, cert: Issued | None = None) -> None:
        """GET /aets over TLS on a new connection answers 200 within :data:`SETTLE` seconds:
        the one slot is free, so the connection before has ended."""
        with trio.move_on_after(SETTLE):
            async with self.client(cert=cert) as client:
                response = await client.get("/aets")
            assert response.status_code == 200
            return
        pytest.fail(f"no answer within {SETTLE} s: the connection before still holds its slot")

    async def connect(self) -> trio.SocketStream:
        return await trio.open_tcp_stream(self.host, self.port)


@asynccontextmanager
async def serving(
    pki: Pki, cert: Issued, backends: Mapping[str, Backend] | None = None, **http: object
) -> AsyncIterator[Server]:
    settings: dict[str, object] = {
        "max_connections": 1,
        "keep_alive_timeout": 60.0,
        "tls_handshake_timeout": HANDSHAKE_TIMEOUT,
        "certfile": str(cert.cert),
        "keyfile": str(cert.key),
        **http,
    }
    config = Config(http=HttpConfig(host="127.0.0.1", port=0, **settings))  # type: ignore[arg-type]
    app = create_app(config, backends or {"X": ScriptedBackend(matches=[study_match()])})
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve_http, app, config.http)
        assert binds[0].startswith("https://127.0.0.1:")
        port = int(binds[0].rsplit(":", 1)[1])
        # the certificate names 127.0.0.1: the URL is verified as it is
        yield Server(binds[0], "127.0.0.1", port, pki)
        nursery.cancel_scope.cancel()


def study_match() -> Dataset:
    ds = Dataset()
    ds.StudyInstanceUID = f"{STUDY}.1"
    ds.PatientName = "TLS"
    return ds


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def test_https_serves_aets_and_searches_with_https_urls(
    pki: Pki, server_cert: Issued
) -> None:
    async with serving(pki, server_cert, max_connections=4) as server, server.client() as client:
        aets = await client.get("/aets")
        assert aets.status_code == 200
        assert aets.http_version == "HTTP/1.1"
        found = await client.get("/aets/X/studies")
        assert found.status_code == 200
        (row,) = found.json()
        assert row["00081190"]["Value"] == [f"{server.url}/aets/X/studies/{STUDY}.1"]
        assert row["00081190"]["Value"][0].startswith("https://")


async def test_http2_over_tls_by_alpn(pki: Pki, server_cert: Issued) -> None:
    instances = [part10(f"{STUDY}.1.{n}", size=300_000) for n in range(3)]
    backend = ScriptedBackend(matches=[study_match()], instances=instances)
    async with serving(pki, server_cert, {"X": backend}) as server:
        async with server.client(http2=True) as client:
            responses: list[httpx.Response] = []

            async def get(path: str) -> None:
                responses.append(await client.get(path))

            # several streams at once on the one connection the one slot allows
            async with trio.open_nursery() as nursery:
                for path in ("/aets", "/aets/X/studies", f"/aets/X/studies/{STUDY}"):
                    nursery.start_soon(get, path)
        assert [r.http_version for r in responses] == ["HTTP/2"] * 3
        assert [r.status_code for r in responses] == [200] * 3
        retrieve = next(r for r in responses if r.url.path.endswith(STUDY))
        assert retrieve.content.count(b"Content-Type: application/dicom") == 3
        found = next(r for r in responses if r.url.path.endswith("/studies"))
        assert found.json()[0]["00081190"]["Value"][0].startswith("https://")
        await server.probe()  # the HTTP/2 connection ended when its client closed it


async def test_mutual_tls_refuses_a_client_without_a_trusted_certificate(
    pki: Pki, server_cert: Issued, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    good = pki.issue("client")
    stranger = Pki(tmp_path / "other", "another CA").issue("stranger")
    async with serving(pki, server_cert, client_ca=str(pki.ca)) as server:
        async with server.client() as client:
            with pytest.raises(httpx.TransportError):
                await client.get("/aets")
        async with server.client(cert=stranger) as client:
            with pytest.raises(httpx.TransportError):
                await client.get("/aets")
        for http2 in (False, True):
            async with server.client(cert=good, http2=http2) as client:
                response = await client.get("/aets")
                assert response.status_code == 200
                assert response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
        await server.probe(cert=good)
    refused = [r.getMessage() for r in caplog.records if "TLS handshake" in r.getMessage()]
    assert len(refused) == 2, refused
    assert errors(caplog) == []


async def test_a_plain_http_client_is_told_to_use_https(
    pki: Pki, server_cert: Issued, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(pki, server_cert) as server:
        stream = await server.connect()
        async with stream:
            await stream.send_all(b"GET /aets HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            with trio.fail_after(SETTLE):
                while chunk := await stream.receive_some():
                    answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 ")
        assert b"connection: close" in head
        assert "https://" in json.loads(body)["error"]
        await server.probe()
    assert errors(caplog) == []


@pytest.mark.parametrize(
    "sent",
    [
        pytest.param(b"", id="nothing"),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", id="half-a-client-hello"),
    ],
)
async def test_a_client_that_stalls_its_handshake_is_dropped(
    pki: Pki, server_cert: Issued, sent: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with serving(pki, server_cert) as server:
        stream = await server.connect()
        async with stream:
            await stream.send_all(sent)
            await server.probe()  # waits in the kernel's queue until the stalled one is dropped
            with trio.fail_after(SETTLE):
                assert await stream.receive_some() == b""  # closed by rst
    stalled = [r for r in caplog.records if "tls_handshake_timeout" in r.getMessage()]
    assert [r.levelno for r in stalled] == [logging.INFO]
    assert errors(caplog) == []


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(bytes(range(256)) * 4, id="not-tls"),
        pytest.param(b"\x16\x03\x01\x00\x05hello" + b"\xff" * 100, id="a-broken-client-hello"),
        pytest.param(b"\x16\x03\x01\x40\x00" + b"\x00" * 1000, id="a-record-cut-short"),
    ],
)
async def test_garbage_instead_of_a_client_hello_ends_that_connection(
    pki: Pki, server_cert: Issued, garbage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with serving(pki, server_cert, tls_handshake_timeout=30.0) as server:
        stream = await server.connect()
        async with stream:
            await stream.send_all(garbage)
            await stream.send_eof()  # a record announced longer than sent waits for the rest
            with trio.fail_after(SETTLE):
                try:
                    while await stream.receive_some():
                        pass  # an alert at most, then the end
                except trio.BrokenResourceError:
                    pass  # or a reset: unread bytes when rst closed
        await server.probe()
    assert errors(caplog) == []
    assert any("TLS" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)


async def test_closing_over_tls_sends_close_notify_and_a_whole_answer(
    pki: Pki, server_cert: Issued
) -> None:
    """``Connection: close`` over TLS: the answer, then close_notify (a clean TLS end of file,
    not a truncation), then the TCP end of file — and the slot is free."""
    async with serving(pki, server_cert) as server:
        stream = trio.SSLStream(
            await server.connect(), server.pki.client_context(), server_hostname="127.0.0.1"
        )
        async with stream:
            await stream.send_all(b"GET /aets HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = b""
            with trio.fail_after(SETTLE):
                while chunk := await stream.receive_some():  # b"" only after close_notify
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 200 ")
            head, _, body = answer.partition(b"\r\n\r\n")
            assert b"content-length: %d" % len(body) in head.lower()
        await server.probe()


# --- configuration ----------------------------------------------------------------------------


def test_the_key_may_be_in_the_certificate_file(pki: Pki, server_cert: Issued) -> None:
    combined = server_cert.combined(pki.folder / "both.pem")
    context = tls.server_context(HttpConfig(certfile=str(combined)))
    assert context is not None
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.verify_mode is ssl.CERT_NONE
    assert tls.server_context(HttpConfig()) is None


def test_unusable_certificates_and_keys_are_config_errors(
    pki: Pki, server_cert: Issued, tmp_path: Path
) -> None:
    other = pki.issue("other", server=True)
    encrypted = pki.issue("locked", server=True, password=b"secret")
    cases = {
        "keyfile = .*: cannot read it": HttpConfig(
            certfile=str(server_cert.cert), keyfile=str(tmp_path / "no")
        ),
        "does not belong to the certificate": HttpConfig(
            certfile=str(server_cert.cert), keyfile=str(other.key)
        ),
        "no PEM": HttpConfig(certfile=str(server_cert.cert)),  # no key in it
        "encrypted": HttpConfig(certfile=str(encrypted.cert), keyfile=str(encrypted.key)),
        "client_ca": HttpConfig(
            certfile=str(server_cert.cert),
            keyfile=str(server_cert.key),
            client_ca=str(tmp_path / "no-ca.pem"),
        ),
    }
    for expected, http in cases.items():
        with pytest.raises(ConfigError, match=expected):
            tls.server_context(http)
    with pytest.raises(ValueError, match="need certfile"):
        HttpConfig(keyfile=str(server_cert.key))


def test_check_config_reports_a_bad_key_path(
    server_cert: Issued, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "rst.toml"
    missing = tmp_path / "missing.key"
    config.write_text(f'[http]\ncertfile = "{server_cert.cert}"\nkeyfile = "{missing}"\n')
    assert cli.main(["check-config", "-c", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"[http] keyfile = '{missing}'" in err
    assert "cannot read it: No such file" in err
    config.write_text(f'[http]\ncertfile = "{server_cert.cert}"\nkeyfile = "{server_cert.key}"\n')
    assert cli.main(["check-config", "-c", str(config)]) == 0
    assert json.loads(capsys.readouterr().out)["http"]["certfile"] == str(server_cert.cert)


async def test_worker_processes_serve_tls(pki: Pki, server_cert: Issued, tmp_path: Path) -> None:
    config = tmp_path / "rst.toml"
    config.write_text(
        f'[http]\nworkers = 2\ngraceful_timeout = 1.0\ncertfile = "{server_cert.cert}"\n'
        f'keyfile = "{server_cert.key}"\n'
    )
    async with rst_process("serve", "--config", str(config)) as process:
        match = await read_until(process, r"serving DICOMweb on (https://\S+),")
        for _ in range(2):
            await read_until(
                process, r"\[worker [01]\] rst\.server\b[^:]*: rst serving[^\n]*https://"
            )
        statuses = []
        for _ in range(6):  # new connections, spread among the workers by the kernel
            async with httpx.AsyncClient(
                base_url=match.group(1), verify=pki.client_context(), http2=True, timeout=10
            ) as client:
                response = await client.get("/aets")
                statuses.append((response.status_code, response.http_version))
        assert statuses == [(200, "HTTP/2")] * 6
