"""What every TLS context of rst shares: the BCP 195 settings and reading certificates and keys.

Two sides of rst speak TLS — the HTTP listener (:mod:`rst.http.tls`) and DICOM, as a client of
each PACS and as the C-STORE receiver (:mod:`rst.backends.dimse.tls`) — and they build their
contexts here, so that one profile and one way of reporting a bad file hold for all of them.

The profile follows BCP 195 (RFC 9325), which DICOM's secure transport profiles point to
(PS3.15 §B.9, the "BCP 195 TLS Profile"): TLS 1.2 at least, only forward-secret key exchange
with an AEAD cipher (ECDHE/DHE with AES-GCM or ChaCha20-Poly1305; TLS 1.3 suites are all
such), no compression (CRIME), no renegotiation (a peer could otherwise make rst read while it
writes, and spend its CPU). dcmtk's ``--profile-bcp195`` and Orthanc (which uses dcmtk) offer
these suites.

Files are read once, when the context is built: a missing or unreadable file, a file that holds
no PEM certificate or key, a key that does not match its certificate or an encrypted key is a
:class:`~rst.config.ConfigError` naming the key and the file (never the key's content), raised
before rst serves anything and by ``rst check-config``.
"""

from __future__ import annotations

import ssl
from typing import NoReturn

from rst.config import ConfigError

__all__ = ["BCP195_CIPHERS", "check_readable", "harden", "load_identity", "load_trust"]

BCP195_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL"
"""TLS 1.2 suites allowed (OpenSSL syntax): forward secrecy and AEAD only (RFC 9325 §4.2)."""


def harden(context: ssl.SSLContext) -> ssl.SSLContext:
    """Apply the BCP 195 profile to *context* (and return it)."""
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.set_ciphers(BCP195_CIPHERS)
    return context


def check_readable(section: str, files: dict[str, str | None]) -> None:
    """Each set file of *files* (key -> path) can be opened, or a :class:`ConfigError` saying
    which key of *section* (e.g. ``[dimse]``) names one that cannot."""
    for key, path in files.items():
        if path is None:
            continue
        try:
            with open(path, "rb"):
                pass
        except OSError as error:
            raise ConfigError(
                f"{section} {key} = {path!r}: cannot read it: {error.strerror}"
            ) from None


def load_identity(context: ssl.SSLContext, cert: str, key: str | None, where: str) -> None:
    """Load the certificate (and the chain after it) in *cert* and its private key (in *key*,
    or in *cert* when ``None``); *where* names the keys for the error message."""
    try:
        context.load_cert_chain(cert, key, password=_no_password)
    except _EncryptedKey:
        raise ConfigError(
            f"{where}: the private key is encrypted; rst reads unencrypted PEM keys only "
            "(protect the file with its permissions)"
        ) from None
    except OSError as error:  # ssl.SSLError is an OSError too
        raise ConfigError(f"{where}: {_reason(error)}") from None


def load_trust(context: ssl.SSLContext, ca: str, where: str) -> None:
    """Trust the authorities of the PEM file *ca* (and only them, for a fresh context)."""
    try:
        context.load_verify_locations(cafile=ca)
    except OSError as error:
        raise ConfigError(f"{where}: {_reason(error)}") from None


class _EncryptedKey(Exception):
    pass


def _no_password() -> NoReturn:
    """Called by OpenSSL only for an encrypted key: refuse at once instead of prompting on the
    terminal."""
    raise _EncryptedKey


def _reason(error: OSError) -> str:
    if isinstance(error, ssl.SSLError):
        reason = error.reason or error.strerror or str(error)
        if reason == "KEY_VALUES_MISMATCH":
            return "the private key does not belong to the certificate"
        if "PEM lib" in reason or reason in ("NO_START_LINE", "NO_CERTIFICATE_OR_CRL_FOUND"):
            # OpenSSL says no more (PEM lib): a file that is not PEM, or no key where expected
            return "no PEM certificate or private key where one was expected"
        return f"not a usable certificate or key ({reason})"
    return error.strerror or str(error)
