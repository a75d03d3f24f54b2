"""The one check in front of every route: who is calling, and may they do this, here?

Each route's endpoint maps to what it needs (:data:`ENDPOINT_ACTIONS`): an action on the archive
named by the URL's ``<aet>`` (QIDO-RS → ``search``, every WADO-RS/WADO-URI resource →
``retrieve``, STOW-RS → ``store``, MWL-RS → ``worklist``), or only an authenticated caller
(``GET /aets``, which then lists only the archives the caller may use), or nothing (the
endpoints ``auth.open_endpoints`` leaves open). A route missing from the table needs an
authenticated caller, and a test fails until the table names it.

The order of the answers keeps the archives secret from strangers: without valid credentials
every URL is a 401 — an unknown AE title too, and a URL that matches no route. An authenticated
caller gets a 403 for an archive none of its roles is granted, whether or not it exists; a 404
(no such AE title) only when a grant would have let it in. CORS preflights (``OPTIONS``) carry
no credentials and pass.

The caller's :class:`~rst.auth.identity.Identity` stays on the request (:func:`identity`) for
the routes and for the audit trail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from quart import Quart, g, request

from rst.auth.authenticate import Authenticator
from rst.auth.grants import Grants
from rst.auth.identity import Identity
from rst.auth.settings import Action, AuthConfig, OpenEndpoint
from rst.errors import Forbidden

__all__ = ["ENDPOINT_ACTIONS", "Access", "identity", "install_guard", "may_use", "requirement_of"]

Requirement = Action | Literal["authenticated", "echo", "livez", "readyz", "metrics"]
"""What a route needs: an action on its archive, an authenticated caller, or one of the
endpoints that ``auth.open_endpoints`` may open (``echo`` is ``search`` when not open)."""

ENDPOINT_ACTIONS: dict[str, Requirement] = {
    "dicomweb.list_aets": "authenticated",
    "dicomweb.health": "echo",
    "dicomweb.qido": "search",
    "dicomweb.wado": "retrieve",
    "dicomweb.metadata": "retrieve",
    "dicomweb.bulkdata": "retrieve",
    "dicomweb.pixeldata": "retrieve",
    "dicomweb.rendered": "retrieve",
    "dicomweb.thumbnail": "retrieve",
    "dicomweb.wado-uri": "retrieve",
    "dicomweb.stow": "store",
    "dicomweb.worklist": "worklist",
}
"""Endpoint (up to its first ``:``, e.g. ``dicomweb.qido:studies``) → what it needs."""
RULE_ACTIONS: dict[str, Requirement] = {
    "/livez": "livez",
    "/readyz": "readyz",
    "/metrics": "metrics",
}
"""Operational endpoints, by URL rule."""


def requirement_of(endpoint: str | None, rule: str | None) -> Requirement | None:
    """What the route needs, or None when the tables do not name it."""
    if rule is not None and rule in RULE_ACTIONS:
        return RULE_ACTIONS[rule]
    if endpoint is None:
        return None
    return ENDPOINT_ACTIONS.get(endpoint.split(":", 1)[0])


@dataclass(frozen=True)
class Access:
    """The caller and what its roles allow."""

    identity: Identity
    grants: Grants

    def may_use(self, aet: str) -> bool:
        return bool(self.grants.actions(self.identity.roles, aet))


def identity() -> Identity | None:
    """The authenticated caller of the current request (None without ``[auth]``, or on an
    open endpoint)."""
    access: Access | None = g.get("rst_access")
    return None if access is None else access.identity


def may_use(aet: str) -> bool:
    """Whether the caller of the current request may do anything on the archive *aet* (always,
    without ``[auth]``)."""
    access: Access | None = g.get("rst_access")
    return access is None or access.may_use(aet)


def install_guard(app: Quart, auth: AuthConfig) -> None:
    """Check every request of *app* against *auth* before its route runs (nothing to install
    when ``auth.anonymous``)."""
    if auth.anonymous:
        return
    authenticator = Authenticator(auth)
    grants = Grants.of(auth.grants)
    opened: frozenset[OpenEndpoint] = frozenset(auth.open_endpoints)

    @app.before_request
    async def guard() -> None:
        if request.method == "OPTIONS":
            return  # CORS preflight: browsers send no credentials with it
        rule = request.url_rule.rule if request.url_rule is not None else None
        needs = requirement_of(request.endpoint, rule)
        if needs in opened:
            return
        caller = await authenticator.authenticate(request.headers.get("Authorization"))
        access = Access(caller, grants)
        g.rst_access = access
        if needs == "echo":
            needs = "search"
        if needs in ("search", "retrieve", "store", "worklist"):
            aet = (request.view_args or {}).get("aet", "")
            if not grants.allows(caller.roles, aet, needs):
                raise Forbidden(f"the caller's roles do not allow {needs} on the AE {aet!r}")
