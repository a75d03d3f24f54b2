"""The ``[auth]`` section: who may call rst, and what each role may do on which archive.

Absent, rst asks nobody for credentials (the embedded demo, a gateway on loopback). Present, it
names the ways a caller proves who it is — OIDC bearer tokens (JWTs checked against the identity
provider's keys), static API tokens (stored as their SHA-256, never in clear), HTTP Basic users
(argon2 or bcrypt hashes) — and the grants that map role names to actions on AE titles. Or it
says ``anonymous = true``: no authentication, on purpose (see :mod:`rst.auth.exposure`).

This module imports nothing of rst's: :mod:`rst.config` embeds these models.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    SerializationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

__all__ = [
    "ACTIONS",
    "REVEAL_SECRETS",
    "Action",
    "AuthConfig",
    "GrantConfig",
    "OpenEndpoint",
    "TokenConfig",
    "UserConfig",
    "is_loopback",
]

Action = Literal["search", "retrieve", "store", "worklist"]
"""What a grant allows on an archive: QIDO-RS (and the C-ECHO health check), every WADO
resource, STOW-RS, MWL-RS (the modality worklist: patients and orders, granted apart)."""
ACTIONS: tuple[Action, ...] = ("search", "retrieve", "store", "worklist")

OpenEndpoint = Literal["livez", "readyz", "metrics", "echo"]
"""Endpoints that may be left open to callers without credentials: ``livez`` (``GET /livez``,
which tells nothing a 401 does not), ``readyz`` (``GET /readyz``, which names the archives that
fail their checks), ``metrics`` (``GET /metrics``, whose series name the archives), ``echo``
(``GET /aets/{aet}``, the C-ECHO health check of one archive)."""

REVEAL_SECRETS = {"reveal_secrets": True}
"""Serialisation context that writes password hashes out: for the configuration rst hands its
own worker processes, never for what it prints (``rst check-config`` shows ``**********``)."""

_HEX_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_HASH_PREFIXES = ("$argon2id$", "$argon2i$", "$argon2d$", "$2a$", "$2b$", "$2y$")
RoleName = Annotated[str, Field(min_length=1, max_length=256)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TokenConfig(_Section):
    """A static API token for a machine (an AI pipeline, a script): ``[[auth.tokens]]``."""

    name: Annotated[str, Field(min_length=1, max_length=128)]
    """Who holds the token: the identity rst logs (never the token)."""
    sha256: str
    """Hex SHA-256 of the token; the token itself is never stored."""
    roles: tuple[RoleName, ...] = ()

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        if not _HEX_SHA256.match(value):
            raise ValueError("must be the 64 hex digits of the token's SHA-256")
        return value.lower()


class UserConfig(_Section):
    """A user for HTTP Basic authentication: ``[[auth.users]]``."""

    name: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^:]+$")]
    password_hash: SecretStr
    """An argon2 (``$argon2id$…``) or bcrypt (``$2b$…``) hash of the password. Kept out of
    ``rst check-config``'s output and of every log."""
    roles: tuple[RoleName, ...] = ()

    @field_serializer("password_hash", when_used="json")
    def _hidden(self, value: SecretStr, info: SerializationInfo) -> str:
        reveal = bool((info.context or {}).get("reveal_secrets"))
        return value.get_secret_value() if reveal else str(value)

    @field_validator("password_hash")
    @classmethod
    def _known_scheme(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(_HASH_PREFIXES):
            raise ValueError("must be an argon2 ($argon2id$…) or bcrypt ($2b$…) hash")
        return value


class GrantConfig(_Section):
    """What a role may do, and on which archives: ``[[auth.grants]]``."""

    role: RoleName
    aets: tuple[Annotated[str, Field(min_length=1, max_length=16)], ...]
    """AE titles, or ``"*"`` for every archive."""
    allow: tuple[Action, ...]

    @field_validator("aets")
    @classmethod
    def _strip(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(aet.strip() for aet in value)


class AuthConfig(_Section):
    """The ``[auth]`` section."""

    anonymous: bool = False
    """``true``: no authentication at all, on purpose (lets rst listen beyond loopback without
    credentials). Cannot be combined with any way of authenticating."""
    issuer: str | None = None
    """The ``iss`` every bearer token must carry (the OIDC issuer URL)."""
    audience: str | None = None
    """A value the token's ``aud`` must hold (the client id rst is known by)."""
    jwks_url: str | None = None
    """Where the identity provider publishes its signing keys (JWKS, over https)."""
    jwks_file: str | None = None
    """Or a file holding that JWKS (an identity provider rst cannot reach)."""
    roles_claim: Annotated[str, Field(min_length=1, pattern=r"^[^.]+(\.[^.]+)*$")] = (
        "realm_access.roles"
    )
    """Dotted path to the token's list of role names (Keycloak: ``realm_access.roles``)."""
    leeway: Annotated[int, Field(ge=0, le=300)] = 30
    """Seconds of clock skew allowed on ``exp``, ``nbf`` and ``iat``."""
    jwks_cache_seconds: Annotated[float, Field(gt=0)] = 3600.0
    """How long fetched keys are used before they are fetched again."""
    jwks_refresh_interval: Annotated[float, Field(ge=0)] = 30.0
    """Least time between two fetches of ``jwks_url`` (a token with an unknown ``kid`` makes
    rst fetch again, at most this often: made-up key ids cannot hammer the provider)."""
    jwks_timeout: Annotated[float, Field(gt=0)] = 5.0
    """Longest a fetch of ``jwks_url`` may take."""
    realm: Annotated[str, Field(min_length=1, pattern=r"^[ !#-~]+$")] = "rst"
    """The realm named in ``WWW-Authenticate`` challenges."""
    open_endpoints: tuple[OpenEndpoint, ...] = ("livez",)
    """Endpoints that answer without credentials (see :data:`OpenEndpoint`)."""
    tokens: tuple[TokenConfig, ...] = ()
    users: tuple[UserConfig, ...] = ()
    grants: tuple[GrantConfig, ...] = ()

    @property
    def uses_jwt(self) -> bool:
        return self.jwks_url is not None or self.jwks_file is not None

    @field_validator("jwks_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is None:
            return None
        url = urlsplit(value)
        if url.scheme == "https" and url.hostname:
            return value
        if url.scheme == "http" and url.hostname and is_loopback(url.hostname):
            return value  # an identity provider on the same machine
        raise ValueError("must be an https:// URL (http:// only on loopback)")

    @model_validator(mode="after")
    def _consistent(self) -> AuthConfig:
        ways = self.uses_jwt or bool(self.tokens) or bool(self.users)
        if self.anonymous:
            if ways or self.issuer or self.audience or self.grants:
                raise ValueError(
                    "anonymous = true turns authentication off: it cannot be combined with "
                    "issuer, audience, jwks_url, jwks_file, tokens, users or grants"
                )
            return self
        if not ways:
            raise ValueError(
                "configure a way to authenticate (jwks_url or jwks_file, [[auth.tokens]], "
                "[[auth.users]]), or set anonymous = true to serve without authentication"
            )
        if self.jwks_url is not None and self.jwks_file is not None:
            raise ValueError("set jwks_url or jwks_file, not both")
        if self.uses_jwt and not (self.issuer and self.audience):
            raise ValueError("bearer tokens (jwks_url, jwks_file) need issuer and audience")
        if not self.uses_jwt and (self.issuer or self.audience):
            raise ValueError("issuer and audience need jwks_url or jwks_file")
        _unique("tokens", [token.name for token in self.tokens])
        _unique("tokens (sha256)", [token.sha256 for token in self.tokens])
        _unique("users", [user.name for user in self.users])
        return self


def _unique(what: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{what}: {name!r} appears twice")
        seen.add(name)


def is_loopback(host: str) -> bool:
    """Whether *host* (an address or a name) can only be reached from this machine."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
