"""The one place requests are audited: an ASGI middleware around the app, and the request hooks
that tell it what the request was.

A streamed retrieve ends long after its route returned and its request context was popped, so
the event is made by the middleware (:class:`AuditMiddleware`), which sees the request from its
arrival to its last byte — the status, the bytes both ways, whether the response ended and
whether the client went away first — and holds the request's :class:`AuditRecord`. The app's
hooks fill that record while the request context lives: what the route is (service, AE, UIDs,
query), and who called (after the guard, and again when the response is made, so that a 403
names its caller). The routes themselves do nothing: the record is on ``g`` and
:func:`audited` wraps the archive so that what passes through it is counted.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, cast

from hypercorn.typing import (
    ASGIReceiveCallable,
    ASGISendCallable,
    Scope,
)
from quart import Quart, Response, g, request

from rst.audit.events import Ending, event
from rst.audit.record import AuditedBackend, AuditRecord, Service
from rst.audit.trail import AuditTrail
from rst.auth import identity
from rst.auth.guard import requirement_of
from rst.http.exchange import Exchange
from rst.logs import request_id
from rst.services.protocols import Backend

__all__ = ["AuditMiddleware", "audited", "install_audit", "note_identity"]

RECORD_KEY = "rst.audit"
"""Where the request's record is kept in the ASGI scope, for the app's hooks to find."""
SERVICES: dict[str, Service] = {
    "search": "search",
    "worklist": "worklist",
    "retrieve": "retrieve",
    "store": "store",
}
"""What the guard's requirement of a route (:mod:`rst.auth.guard`) means to the trail: the
endpoints audited are exactly those that need an action on an archive."""
LEVELS = {"studies": "STUDY", "series": "SERIES", "instances": "IMAGE"}


def audited(backend: Backend) -> Backend:
    """*backend* counted into the current request's record (as it is without an audit trail)."""
    record: AuditRecord | None = g.get("rst_audit")
    return backend if record is None else AuditedBackend(backend, record)


def note_identity() -> None:
    """Put the caller, once known, on the current request's record."""
    record: AuditRecord | None = g.get("rst_audit")
    if record is not None and record.identity is None:
        record.identity = identity()


def install_audit(app: Quart, trail: AuditTrail, stations: Mapping[str, str] | None = None) -> None:
    """Audit the requests of *app* into *trail*: call before :func:`rst.auth.install_guard`
    (so that a request the guard refuses is recorded too), then register :func:`note_identity`
    after it. *stations*: the AE title of each route's archive where it is not the route's
    name (``[[aets]] called_aet``), for the Station AE Title participant."""
    stations = dict(stations or {})
    app.asgi_app = AuditMiddleware(app.asgi_app, trail)  # type: ignore[method-assign]
    limit = trail.config.max_query_chars

    @app.before_request
    async def describe() -> None:
        record = cast(dict[str, Any], request.scope).get(RECORD_KEY)
        if not isinstance(record, AuditRecord):
            return
        rule = request.url_rule.rule if request.url_rule is not None else None
        needs = requirement_of(request.endpoint, rule)
        if needs not in SERVICES or request.method == "OPTIONS":
            return
        g.rst_audit = record
        record.request_id = request_id.get()
        record.service = SERVICES[needs]
        record.resource = (request.endpoint or "").split(".", 1)[-1]
        args = request.view_args or {}
        record.aet = args.get("aet")
        record.station = stations.get(record.aet or "")
        record.study_uid = args.get("study")
        record.series_uid = args.get("series")
        record.sop_uid = args.get("sop")
        if record.service == "search" and rule is not None:
            record.level = LEVELS.get(rule.rsplit("/", 1)[-1])
        elif record.service == "retrieve":
            if record.resource == "wado-uri":
                record.study_uid = request.args.get("studyUID")
                record.series_uid = request.args.get("seriesUID")
                record.sop_uid = request.args.get("objectUID")
            record.level = "IMAGE" if record.sop_uid else "SERIES" if record.series_uid else "STUDY"
        if record.service in ("search", "worklist"):
            query = request.query_string.decode("utf-8", "replace")
            record.query = query[:limit]
            record.query_truncated = len(query) > limit
        authorization = request.headers.get("Authorization")
        if authorization:
            record.auth_scheme = authorization.split(" ", 1)[0][:16]

    @app.after_request
    async def caller(response: Response) -> Response:
        note_identity()
        return response


class AuditMiddleware:
    """ASGI middleware: one event per audited request, once its response is over."""

    def __init__(self, app: Any, trail: AuditTrail) -> None:
        self.app = app
        self.trail = trail

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, clock = time.time(), time.monotonic()
        client = scope.get("client")
        record = AuditRecord(
            started=started,
            client=client[0] if client else None,
            method=scope["method"],
            path=scope["path"],
        )
        cast(dict[str, Any], scope)[RECORD_KEY] = record
        exchange = Exchange(receive, send)
        try:
            await self.app(scope, exchange.receive, exchange.send)
        finally:
            if record.service is not None:
                ending = Ending(
                    status=exchange.status,
                    complete=exchange.complete and exchange.status is not None,
                    client_gone=exchange.client_gone,
                    bytes_sent=exchange.sent,
                    bytes_received=exchange.received,
                    ended=time.time(),
                    duration=time.monotonic() - clock,
                )
                self.trail.record(event(record, ending, source_id=self.trail.config.source_id))
