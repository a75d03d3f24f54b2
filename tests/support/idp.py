"""A stand-in identity provider: signing keys the test makes, tokens it signs, a JWKS it serves.

Tokens are signed here with ``cryptography`` directly (not with joserfc, which rst verifies
them with), so that a mistake shared by signer and verifier cannot hide: the JWS signing input
is ``b64url(header).b64url(payload)``, RS256 is RSASSA-PKCS1-v1_5 with SHA-256, ES256 is ECDSA
on P-256 with SHA-256 and the signature as the 64 bytes ``r || s`` (RFC 7518 §3.4).

:func:`serve_jwks` is a tiny HTTP server on trio (one ``GET`` per connection, then close) that
answers with whatever key set the test holds at that moment and counts the requests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

__all__ = [
    "ISSUER",
    "JwksServer",
    "SigningKey",
    "b64url",
    "claims",
    "ec_key",
    "hs256_with_public_key",
    "mint",
    "rsa_key",
    "serve_jwks",
    "unsigned",
]

ISSUER = "https://idp.test/realms/radiology"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int(value: int, size: int | None = None) -> str:
    length = size if size is not None else (value.bit_length() + 7) // 8
    return b64url(value.to_bytes(length, "big"))


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

    def jwk(self, *, with_alg: bool = False) -> dict[str, Any]:
        """The public key as a JWK (without ``alg`` unless asked: many providers omit it)."""
        public = self.private.public_key()
        entry: dict[str, Any]
        if isinstance(public, rsa.RSAPublicKey):
            numbers = public.public_numbers()
            entry = {"kty": "RSA", "n": _int(numbers.n), "e": _int(numbers.e)}
        else:
            point = public.public_numbers()
            entry = {"kty": "EC", "crv": "P-256", "x": _int(point.x, 32), "y": _int(point.y, 32)}
        entry.update({"kid": self.kid, "use": "sig"})
        if with_alg:
            entry["alg"] = self.alg
        return entry

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, signing_input: bytes) -> bytes:
        if isinstance(self.private, rsa.RSAPrivateKey):
            return self.private.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        der = self.private.sign(signing_input, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def rsa_key(kid: str) -> SigningKey:
    return SigningKey(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))


def ec_key(kid: str) -> SigningKey:
    return SigningKey(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))


def claims(
    *,
    roles: list[str] | None = None,
    audience: str | list[str] = "rst",
    issuer: str = ISSUER,
    lifetime: float = 300,
    **extra: Any,
) -> dict[str, Any]:
    """Keycloak-shaped access-token claims, valid for *lifetime* seconds from now."""
    now = int(time.time())
    return {
        "iss": issuer,
        "aud": audience,
        "sub": "f3c1e0d2-user",
        "preferred_username": "dr.house",
        "iat": now,
        "exp": now + int(lifetime),
        "realm_access": {"roles": roles or []},
        **extra,
    }


def _compact(header: dict[str, Any], payload: dict[str, Any]) -> bytes:
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}".encode()


def mint(key: SigningKey, payload: dict[str, Any], **header: Any) -> str:
    """A JWT signed by *key*; *header* adds to or overrides ``alg``, ``kid``, ``typ``."""
    signing_input = _compact({"alg": key.alg, "kid": key.kid, "typ": "JWT", **header}, payload)
    return f"{signing_input.decode()}.{b64url(key.sign(signing_input))}"


def unsigned(key: SigningKey, payload: dict[str, Any]) -> str:
    """An ``alg: none`` token naming *key*'s kid (RFC 7519 §6: an empty signature)."""
    return _compact({"alg": "none", "kid": key.kid, "typ": "JWT"}, payload).decode() + "."


def hs256_with_public_key(key: SigningKey, payload: dict[str, Any]) -> str:
    """The classic algorithm-confusion attack: HS256, keyed with the public key's PEM."""
    signing_input = _compact({"alg": "HS256", "kid": key.kid, "typ": "JWT"}, payload)
    mac = hmac.new(key.public_pem(), signing_input, hashlib.sha256).digest()
    return f"{signing_input.decode()}.{b64url(mac)}"


@dataclass
class JwksServer:
    url: str = ""
    keys: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    status: int = 200

    def publish(self, *keys: SigningKey) -> None:
        self.keys = [key.jwk() for key in keys]


@asynccontextmanager
async def serve_jwks(*keys: SigningKey) -> AsyncIterator[JwksServer]:
    """Serve the JWKS of *keys* (change ``server.keys`` to rotate) on 127.0.0.1."""
    server = JwksServer()
    server.publish(*keys)

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return
                head += chunk
            server.requests += 1
            body = json.dumps({"keys": server.keys}).encode()
            await stream.send_all(
                f"HTTP/1.1 {server.status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        server.url = f"http://127.0.0.1:{port}/realms/radiology/protocol/openid-connect/certs"
        yield server
        nursery.cancel_scope.cancel()
