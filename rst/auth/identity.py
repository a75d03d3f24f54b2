"""Who a request comes from, once authenticated: kept on the request for the routes (``GET
/aets`` lists what the caller may use) and, later, for the audit trail."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Identity", "Method"]

Method = Literal["jwt", "token", "basic"]
"""How the caller proved who it is: an OIDC bearer token, a static API token, HTTP Basic."""


@dataclass(frozen=True)
class Identity:
    subject: str
    """The token's ``sub``, the static token's ``name`` or the Basic user's name; never a
    secret."""
    method: Method
    roles: frozenset[str]
    issuer: str | None = None
    """The token's ``iss`` (bearer tokens only)."""
    username: str | None = None
    """The token's ``preferred_username``, when it has one (bearer tokens only)."""
