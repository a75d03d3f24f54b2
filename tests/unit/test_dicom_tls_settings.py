"""DICOM TLS without a PACS: the configuration keys and their checks, the contexts built from
them (BCP 195 profile, certificate verification, mutual TLS), and the association code's read
over a TLS stream — on in-memory streams, with certificates the test makes."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trio
import trio.testing

from rst import cli
from rst.backends.dimse import tls
from rst.config import AeConfig, ConfigError, DimseConfig, load_config
from tests.support.certificates import Issued, Pki


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


@pytest.fixture
def server(pki: Pki) -> Issued:
    return pki.issue("rst", server=True)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rst.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[[aets]]\naet = "P"\ntls_ca = "ca.pem"\n', "need tls = true"),
        ('[[aets]]\naet = "P"\ntls = true\ntls_key = "k.pem"\n', "tls_key needs tls_cert"),
        ('[dimse]\ntls_key = "k.pem"\n', "need tls_cert"),
        ('[dimse]\ntls_ca = "ca.pem"\n', "need tls_cert"),
        ('[http]\nworkers = 2\n[dimse]\ntls_cert = "c.pem"\n', "needs http.workers = 1"),
    ],
)
def test_inconsistent_tls_keys_are_refused(tmp_path: Path, toml: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(write(tmp_path, toml), environ={})


def test_per_pacs_tls_from_the_environment(tmp_path: Path, pki: Pki) -> None:
    config = load_config(
        write(tmp_path, '[[aets]]\naet = "P"\n'),
        environ={"RST_AETS_P_TLS": "true", "RST_AETS_P_TLS_CA": str(pki.ca)},
    )
    ae = config.aets[0]
    assert isinstance(ae, AeConfig)
    assert ae.tls
    assert ae.tls_ca == str(pki.ca)


def test_client_context_follows_bcp195_and_verifies_the_pacs(pki: Pki) -> None:
    client = pki.issue("rst-client")
    ae = AeConfig(
        aet="P", tls=True, tls_ca=str(pki.ca), tls_cert=str(client.cert), tls_key=str(client.key)
    )
    context = tls.client_context(ae)
    assert context is not None
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.options & ssl.OP_NO_COMPRESSION
    assert context.options & ssl.OP_NO_RENEGOTIATION
    tls12 = [c for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12
    for cipher in tls12:  # forward secrecy and AEAD only
        assert cipher["kea"] in ("kx-ecdhe", "kx-dhe"), cipher
        assert cipher["aead"], cipher
    assert tls.client_context(ae) is context  # built once, shared by every association
    assert tls.client_context(AeConfig(aet="P")) is None


def test_receiver_context_requires_a_client_certificate_with_tls_ca(
    pki: Pki, server: Issued
) -> None:
    plain = tls.server_context(DimseConfig(tls_cert=str(server.cert), tls_key=str(server.key)))
    assert plain is not None
    assert plain.verify_mode is ssl.CERT_NONE
    mutual = tls.server_context(
        DimseConfig(tls_cert=str(server.cert), tls_key=str(server.key), tls_ca=str(pki.ca))
    )
    assert mutual is not None
    assert mutual.verify_mode is ssl.CERT_REQUIRED
    assert mutual.minimum_version is ssl.TLSVersion.TLSv1_2
    assert tls.server_context(DimseConfig()) is None


def test_unusable_files_are_config_errors_that_never_show_the_key(
    pki: Pki, server: Issued, tmp_path: Path
) -> None:
    other = pki.issue("other", server=True)
    locked = pki.issue("locked", server=True, password=b"secret")
    cases = {
        r"\[dimse\] tls_key = .*: cannot read it": DimseConfig(
            tls_cert=str(server.cert), tls_key=str(tmp_path / "no.key")
        ),
        "does not belong to the certificate": DimseConfig(
            tls_cert=str(server.cert), tls_key=str(other.key)
        ),
        "encrypted": DimseConfig(tls_cert=str(locked.cert), tls_key=str(locked.key)),
        r"\[dimse\] tls_ca = .*: no PEM": DimseConfig(
            tls_cert=str(server.cert), tls_key=str(server.key), tls_ca=str(server.key)
        ),
    }
    secrets = {path.read_text() for path in (server.key, other.key, locked.key)}
    for expected, dimse in cases.items():
        with pytest.raises(ConfigError, match=expected) as raised:
            tls.server_context(dimse)
        assert not any(line in str(raised.value) for s in secrets for line in s.splitlines()[1:-1])
    with pytest.raises(ConfigError, match=r"\[\[aets\]\] P: tls_ca = .*cannot read it"):
        tls.client_context(AeConfig(aet="P", tls=True, tls_ca=str(tmp_path / "no-ca.pem")))


def test_check_config_reports_a_bad_dicom_tls_file(
    pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.pem"
    config = write(tmp_path, f'[[aets]]\naet = "P"\ntls = true\ntls_ca = "{missing}"\n')
    assert cli.main(["check-config", "-c", str(config)]) == 2
    assert f"[[aets]] P: tls_ca = '{missing}': cannot read it" in capsys.readouterr().err
    write(tmp_path, f'[[aets]]\naet = "P"\ntls = true\ntls_ca = "{pki.ca}"\n')
    assert cli.main(["check-config", "-c", str(config)]) == 0


async def test_receive_into_reads_through_tls(pki: Pki, server: Issued) -> None:
    server_side = tls.server_context(
        DimseConfig(tls_cert=str(server.cert), tls_key=str(server.key))
    )
    client_side = tls.client_context(
        AeConfig(aet="P", host="localhost", tls=True, tls_ca=str(pki.ca))
    )
    assert server_side is not None
    assert client_side is not None
    left, right = trio.testing.memory_stream_pair()
    client = trio.SSLStream(left, client_side, server_hostname="localhost")
    accepted = trio.SSLStream(right, server_side, server_side=True)
    payload = bytes(range(256)) * 64
    buffer = bytearray(4096)
    got = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, payload)
        while len(got) < len(payload):
            count = await tls.receive_into(accepted, memoryview(buffer))
            assert 0 < count <= len(buffer)
            got += buffer[:count]
    assert got == payload
