"""The safe default: rst does not serve archives to a network without asking who is calling.

Without ``[auth]``, anyone who reaches the HTTP port may search, retrieve and store on every
archive. That is right for the embedded demo and for a gateway on loopback (behind a reverse
proxy on the same machine that authenticates), and wrong anywhere else. So ``rst serve``
refuses to start with its HTTP listener on any other address and no ``[auth]``, unless the
configuration says ``[auth] anonymous = true`` — a decision someone wrote down, not a default
nobody changed. ``rst check-config`` reports the same, and what else in ``[auth]`` looks wrong.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rst.auth.grants import ANY_AE
from rst.auth.settings import TokenConfig, UserConfig, is_loopback

if TYPE_CHECKING:
    from rst.config import Config

__all__ = ["exposure_problem", "exposure_warnings"]


def exposure_problem(config: Config) -> str | None:
    """Why rst must not start with *config*, or None when it may."""
    if config.auth is not None or is_loopback(config.http.host):
        return None
    return (
        f"[http] host = {config.http.host!r} serves every archive to the network without "
        "authentication: configure [auth] (see docs/how-to/protect-with-keycloak.md), or set "
        "[auth] anonymous = true to do so on purpose, or listen on 127.0.0.1"
    )


def exposure_warnings(config: Config) -> list[str]:
    """What in ``[auth]`` (and in who may call the C-STORE receiver) is valid but probably
    not meant."""
    warnings = _receiver_warnings(config)
    auth = config.auth
    if auth is None:
        return warnings
    if auth.anonymous:
        return [
            *warnings,
            "auth.anonymous = true: every caller may search, retrieve and store on every "
            "archive without credentials",
        ]
    known = {ae.aet for ae in config.aets}
    for n, grant in enumerate(auth.grants):
        for aet in grant.aets:
            if aet != ANY_AE and aet not in known:
                warnings.append(f"auth.grants.{n}: AE title {aet!r} is not configured in [[aets]]")
    granted = {grant.role for grant in auth.grants}
    holders: list[TokenConfig | UserConfig] = [*auth.tokens, *auth.users]
    for holder in holders:
        if not granted.intersection(holder.roles):
            warnings.append(
                f"{holder.name!r} has no role with a grant: it can authenticate and do nothing"
            )
    if not auth.grants:
        warnings.append("no [[auth.grants]]: authenticated callers may do nothing")
    return warnings


def _receiver_warnings(config: Config) -> list[str]:
    """The C-STORE receiver open to any calling AE title (on the network: said louder)."""
    dimse = config.dimse
    if not dimse.accept_unknown_callers:
        return []
    where = (
        "on loopback"
        if is_loopback(dimse.host)
        else f"on {dimse.host!r}, reachable from the network"
    )
    return [
        f"[dimse] accept_unknown_callers = true: the C-STORE receiver ({where}) takes "
        "associations from any AE title; remove the key (default false) to take them from the "
        "[[aets]] only (store_calling_aets, store_from)"
    ]
