"""OIDC / OAuth2 bearer tokens: JWTs signed by the identity provider, checked with joserfc.

A token is accepted when its signature verifies with the provider's key named by its ``kid``,
with the algorithm of that key (:mod:`rst.auth.jwks`); when its ``iss`` is ``auth.issuer`` and
its ``aud`` holds ``auth.audience`` (a token the same provider issued for another application
is refused); and when ``exp`` has not passed and ``nbf``/``iat`` are not in the future, each with
``auth.leeway`` seconds of clock skew. ``exp`` is required: a token that never expires is not
one rst takes. The roles are the list of strings at the dotted path ``auth.roles_claim``.

The reasons a token is refused are told to the caller (they help whoever configures a client
and reveal nothing about the archives); the token itself is never logged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwt import JWTClaimsRegistry

from rst.auth.identity import Identity
from rst.auth.jwks import KeySet
from rst.auth.settings import AuthConfig

__all__ = ["BearerTokens", "TokenRefused", "roles_at"]


class TokenRefused(Exception):
    """The bearer token is not acceptable; the message says why (without the token)."""


class BearerTokens:
    def __init__(
        self, auth: AuthConfig, keys: KeySet, *, now: Callable[[], int] | None = None
    ) -> None:
        if auth.issuer is None or auth.audience is None:
            raise ValueError("bearer tokens need auth.issuer and auth.audience")
        self._issuer = auth.issuer
        self._audience = auth.audience
        self._roles_claim = auth.roles_claim
        self._leeway = auth.leeway
        self._keys = keys
        self._now = now or (lambda: int(time.time()))

    async def identify(self, token: str) -> Identity:
        """The identity the token vouches for; :class:`TokenRefused` when it does not."""
        try:
            header = jws.extract_compact(token.encode("ascii")).protected
        except (JoseError, ValueError, UnicodeError):
            raise TokenRefused("the bearer token is not a JWT") from None
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenRefused("the token's kid is not a string")
        found = await self._keys.find(kid)
        if found is None:
            raise TokenRefused(
                "the token is signed with a key the identity provider does not publish"
                if kid is not None
                else "the token names no key (kid)"
            )
        key, algorithm = found
        if header.get("alg") != algorithm:
            raise TokenRefused(
                f"the token's algorithm is not {algorithm}, the one of the key that it names"
            )
        try:
            claims = jwt.decode(token, key, algorithms=[algorithm]).claims
        except BadSignatureError:
            raise TokenRefused("the token's signature does not verify") from None
        except JoseError as exc:
            raise TokenRefused(f"the token cannot be read ({exc.error})") from None
        self._check(claims)
        subject = claims.get("sub")
        username = claims.get("preferred_username")
        return Identity(
            subject=subject if isinstance(subject, str) else "",
            method="jwt",
            roles=frozenset(roles_at(claims, self._roles_claim)),
            issuer=self._issuer,
            username=username if isinstance(username, str) else None,
        )

    def _check(self, claims: dict[str, Any]) -> None:
        registry = JWTClaimsRegistry(
            now=self._now,
            leeway=self._leeway,
            iss={"essential": True, "value": self._issuer},
            aud={"essential": True, "value": self._audience},
            exp={"essential": True},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise TokenRefused("the token has expired") from None
        except MissingClaimError as exc:
            raise TokenRefused(f"the token lacks the claim {exc.claim}") from None
        except InvalidClaimError as exc:
            raise TokenRefused(_invalid(exc)) from None


def _invalid(exc: InvalidClaimError) -> str:
    claim = exc.claim
    if claim == "iss":
        return "the token was issued by another issuer"
    if claim == "aud":
        return "the token is meant for another audience"
    if claim == "nbf":
        return "the token is not valid yet"
    return f"the token's claim {claim} is invalid"


def roles_at(claims: dict[str, Any], path: str) -> list[str]:
    """The role names at the dotted *path* of *claims*: a list of strings, or one string of
    space-separated names (an OAuth2 ``scope``); nothing when absent or of another shape."""
    value: Any = claims
    for step in path.split("."):
        if not isinstance(value, dict):
            return []
        value = value.get(step)
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [role for role in value if isinstance(role, str)]
    return []
