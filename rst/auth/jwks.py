"""The identity provider's signing keys (a JWKS), fetched, cached and refreshed.

Keys come from ``auth.jwks_url`` (over https, with httpx's async client: it runs on trio through
anyio, so a slow provider holds only the requests that need its keys) or ``auth.jwks_file``.
They are kept for ``jwks_cache_seconds``. A token signed with a key id rst does not know — the
provider rotated its keys — makes rst fetch the set again, but not more often than every
``jwks_refresh_interval`` seconds: a caller inventing key ids cannot make rst hammer the provider.
Concurrent requests that need a fetch share one.

Each key says which algorithm it verifies (its ``alg``, or the one its type implies: RS256 for
RSA, ES256/384/512 for the P-256/384/521 curves). A token is verified with that algorithm only,
whatever its own header claims, so neither ``alg: none`` nor an HMAC keyed with the public key
can pass. Only RSA and EC keys for signing are used: symmetric keys (``kty: oct``), keys for
encryption (``use: enc``) and private keys published by mistake are ignored.
"""

from __future__ import annotations

import json
import logging
import math
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import trio
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, JWKRegistry, Key, RSAKey

from rst.errors import AuthUnavailable

__all__ = ["MAX_JWKS_BYTES", "SIGNING_ALGORITHMS", "KeySet", "Keys", "file_source", "url_source"]

log = logging.getLogger(__name__)

SIGNING_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
)
"""Asymmetric JWS algorithms rst verifies (HMAC and ``none`` are not among them)."""
_CURVE_ALGORITHMS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
MAX_JWKS_BYTES = 1 << 20
"""Largest JWKS document accepted (a provider publishes a few keys, a few KiB)."""

Source = Callable[[], Awaitable[Mapping[str, Any]]]
"""Returns the JWKS document (``{"keys": [...]}``); raises OSError or ValueError when it
cannot."""


@dataclass(frozen=True)
class Keys:
    """One fetched key set: key id → (key, the algorithm it verifies)."""

    by_kid: Mapping[str | None, tuple[Key, str]]

    @classmethod
    def parse(cls, document: Mapping[str, Any]) -> Keys:
        entries = document.get("keys")
        if not isinstance(entries, list):
            raise ValueError('a JWKS is a JSON object with a "keys" array')
        by_kid: dict[str | None, tuple[Key, str]] = {}
        for entry in entries:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            if entry.get("kty") not in ("RSA", "EC"):
                continue  # symmetric (oct) keys never verify a provider's tokens
            try:
                key = JWKRegistry.import_key(entry)
            except (JoseError, ValueError, TypeError) as exc:
                log.warning("JWKS: ignoring key %r: %s", entry.get("kid"), exc)
                continue
            algorithm = _algorithm_of(key)
            if algorithm is not None:
                by_kid[key.kid] = (key, algorithm)
        return cls(by_kid)

    def find(self, kid: str | None) -> tuple[Key, str] | None:
        if kid is None:  # a token without "kid": only unambiguous with a single key
            return next(iter(self.by_kid.values())) if len(self.by_kid) == 1 else None
        return self.by_kid.get(kid)


def _algorithm_of(key: Key) -> str | None:
    if key.is_private:
        return None  # a private key published by mistake: do not use it
    if key.alg is not None:
        return key.alg if key.alg in SIGNING_ALGORITHMS else None
    if isinstance(key, RSAKey):
        return "RS256"
    if isinstance(key, ECKey):
        return _CURVE_ALGORITHMS.get(key.curve_name)
    return None


class KeySet:
    """The cached keys of one provider; :meth:`find` fetches when it must."""

    def __init__(
        self,
        source: Source,
        *,
        max_age: float,
        refresh_interval: float,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self._source = source
        self._max_age = max_age
        self._refresh_interval = refresh_interval
        self._clock = clock
        self._keys: Keys | None = None
        self._fetched_at = -math.inf
        self._attempted_at = -math.inf
        self._lock = trio.Lock()

    async def find(self, kid: str | None) -> tuple[Key, str] | None:
        """The key with id *kid* and its algorithm, or None when the provider has no such key.

        Raises :class:`~rst.errors.AuthUnavailable` when no keys could be fetched at all."""
        if self._keys is None or self._clock() - self._fetched_at >= self._max_age:
            await self._refresh(self._attempted_at)
        found = self._keys.find(kid) if self._keys is not None else None
        if found is None and self._keys is not None:
            await self._refresh(self._attempted_at)  # rotated keys?
            found = self._keys.find(kid)
        if self._keys is None:
            retry = max(1, math.ceil(self._refresh_interval))
            raise AuthUnavailable(
                "the identity provider's signing keys cannot be fetched; try again later",
                retry_after=retry,
            )
        return found

    async def _refresh(self, seen_attempt: float) -> None:
        async with self._lock:
            if self._attempted_at != seen_attempt:
                return  # another request fetched while this one waited
            now = self._clock()
            if now - self._attempted_at < self._refresh_interval:
                return
            self._attempted_at = now
            try:
                keys = Keys.parse(await self._source())
            except (OSError, ValueError, httpx.HTTPError) as exc:
                log.warning("cannot fetch the identity provider's keys: %s", exc)
                return
            self._keys, self._fetched_at = keys, self._clock()
            log.info("identity provider keys: %s", ", ".join(map(str, keys.by_kid)) or "none")


def url_source(url: str, timeout: float) -> Source:
    """Fetch the JWKS at *url* (the system's trusted CAs; no redirects; at most
    :data:`MAX_JWKS_BYTES`)."""

    async def fetch() -> Mapping[str, Any]:
        tls = ssl.create_default_context()
        async with (
            httpx.AsyncClient(timeout=timeout, verify=tls, follow_redirects=False) as client,
            client.stream("GET", url, headers={"Accept": "application/json"}) as response,
        ):
            if response.status_code != 200:
                raise ValueError(f"{url} answered {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError(f"{url} sent more than {MAX_JWKS_BYTES} bytes")
        return _json_object(bytes(body), url)

    return fetch


def file_source(path: str) -> Source:
    """Read the JWKS in the file *path* (read again when a key id is unknown)."""

    async def read() -> Mapping[str, Any]:
        return _json_object(await trio.Path(path).read_bytes(), path)

    return read


def _json_object(body: bytes, where: str) -> Mapping[str, Any]:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{where} is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ValueError(f"{where} is not a JSON object")
    return document
