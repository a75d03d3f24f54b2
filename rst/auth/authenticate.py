"""The ``Authorization`` header → an :class:`~rst.auth.identity.Identity`, or a 401.

``Bearer`` carries a static API token (checked first: a hash and a few comparisons) or an OIDC
JWT; ``Basic`` a user's name and password. Every refusal is an
:class:`~rst.errors.Unauthenticated` with the challenges rst accepts (``Bearer`` when tokens or
JWTs are configured, ``Basic`` when users are), so that a client knows what to send.
"""

from __future__ import annotations

import base64
import binascii

from rst.auth.identity import Identity
from rst.auth.jwks import KeySet, file_source, url_source
from rst.auth.oidc import BearerTokens, TokenRefused
from rst.auth.passwords import BasicUsers
from rst.auth.settings import AuthConfig
from rst.auth.tokens import StaticTokens
from rst.errors import Unauthenticated

__all__ = ["Authenticator"]

MAX_CREDENTIALS = 16384
"""Longest ``Authorization`` value looked at (a JWT with many roles is a few KiB)."""


class Authenticator:
    def __init__(self, auth: AuthConfig, *, keys: KeySet | None = None) -> None:
        self._tokens = StaticTokens(auth.tokens)
        self.users = BasicUsers(auth.users)
        self._bearer: BearerTokens | None = None
        if auth.uses_jwt:
            if keys is None:
                source = (
                    url_source(auth.jwks_url, auth.jwks_timeout)
                    if auth.jwks_url is not None
                    else file_source(str(auth.jwks_file))
                )
                keys = KeySet(
                    source,
                    max_age=auth.jwks_cache_seconds,
                    refresh_interval=auth.jwks_refresh_interval,
                )
            self._bearer = BearerTokens(auth, keys)
        challenges = []
        if self._tokens or self._bearer is not None:
            challenges.append(f'Bearer realm="{auth.realm}"')
        if self.users:
            challenges.append(f'Basic realm="{auth.realm}", charset="UTF-8"')
        self.challenges = tuple(challenges)

    async def authenticate(self, authorization: str | None) -> Identity:
        """Who sent *authorization* (the header's value); :class:`Unauthenticated` if nobody
        rst knows."""
        if not authorization:
            raise self._refuse(
                "authentication required: send " + " or ".join(self._schemes()) + " credentials"
            )
        if len(authorization) > MAX_CREDENTIALS:
            raise self._refuse("the Authorization header is too long")
        scheme, _, credentials = authorization.strip().partition(" ")
        credentials = credentials.strip()
        scheme = scheme.lower()
        if scheme == "bearer" and "Bearer" in self._schemes():
            return await self._bearer_identity(credentials)
        if scheme == "basic" and self.users:
            return await self._basic_identity(credentials)
        raise self._refuse(
            "the Authorization scheme is not accepted here; use " + " or ".join(self._schemes())
        )

    async def _bearer_identity(self, token: str) -> Identity:
        if not token:
            raise self._refuse("the bearer token is empty", invalid_token=True)
        identity = self._tokens.identify(token)
        if identity is not None:
            return identity
        if self._bearer is None:
            raise self._refuse("the bearer token is not valid", invalid_token=True)
        try:
            return await self._bearer.identify(token)
        except TokenRefused as exc:
            raise self._refuse(str(exc), invalid_token=True) from None

    async def _basic_identity(self, credentials: str) -> Identity:
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise self._refuse("the Basic credentials are not base64 of UTF-8") from None
        name, colon, password = decoded.partition(":")
        if not colon:
            raise self._refuse("the Basic credentials are not user:password")
        identity = await self.users.identify(name, password)
        if identity is None:
            raise self._refuse("wrong user name or password")
        return identity

    def _schemes(self) -> list[str]:
        return [challenge.split(" ", 1)[0] for challenge in self.challenges]

    def _refuse(self, message: str, *, invalid_token: bool = False) -> Unauthenticated:
        challenges = self.challenges
        if invalid_token:  # RFC 6750 §3.1: tell a client that its token was looked at
            challenges = tuple(
                f'{challenge}, error="invalid_token"'
                if challenge.startswith("Bearer")
                else challenge
                for challenge in challenges
            )
        return Unauthenticated(message, challenges)
