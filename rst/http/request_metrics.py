"""HTTP metrics, taken in one place: an ASGI middleware around the whole app.

It sees every request from its arrival to the last byte of its response — a streamed retrieve
ends long after its route handler returned — and every message both ways, so status, duration
and body bytes need nothing from the routes. The route *template* (``/aets/{aet}/studies/
{study}``, never the UIDs) is the one thing only the app knows: :func:`note_route` puts it
into the ASGI scope, where the middleware reads it once the request is over.

Time to first byte is taken as the first non-empty body message leaves the app, whatever the
response: a plain one sends its body in one message, a streamed multipart one when its first
part is ready (after the archive answered), so the histogram tells the wait a viewer sees
before anything arrives from the wait for the whole study.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope
from prometheus_client import Counter, Histogram
from quart import Request

from rst.http.exchange import Exchange
from rst.metrics import Metrics

__all__ = ["ROUTE_KEY", "RequestMetrics", "note_route"]

ROUTE_KEY = "rst.route"
"""Where the matched route template is kept in the ASGI scope."""
UNMATCHED = "unmatched"
"""The route of requests no rule matched (404, 405): their paths are not labels."""
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})
_PARAMETER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


@lru_cache(maxsize=1024)  # the app's rules: a few dozen, each rewritten once
def route_template(rule: str) -> str:
    """``/aets/<aet>/studies/<study>`` → ``/aets/{aet}/studies/{study}``."""
    return _PARAMETER.sub(r"{\1}", rule)


def note_route(request: Request) -> None:
    """Record the template of the rule *request* matched (before and after the handler: an
    earlier ``before_request`` may answer for it, a disconnect may cancel it)."""
    if request.url_rule is not None:
        cast(dict[str, Any], request.scope)[ROUTE_KEY] = route_template(request.url_rule.rule)


@dataclass(frozen=True, slots=True)
class _RouteChildren:
    """The children of the metrics labelled by route alone, for one route."""

    first_byte: Histogram
    sent: Counter
    received: Counter
    broken: Counter


class RequestMetrics:
    """ASGI middleware: counts each HTTP request once it is over (``app.asgi_app = ...``)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # The labelled children, looked up once per label values (prometheus_client's
        # ``labels`` takes a lock and rebuilds its key on every call): routes, methods and
        # statuses are few, so these stay small.
        self._requests: dict[tuple[str, str, str], Counter] = {}
        self._durations: dict[tuple[str, str], Histogram] = {}
        self._by_route: dict[str, _RouteChildren] = {}

    def _route(self, route: str) -> _RouteChildren:
        children = self._by_route.get(route)
        if children is None:
            metrics = self.metrics
            children = self._by_route[route] = _RouteChildren(
                first_byte=metrics.http_first_byte.labels(route),
                sent=metrics.http_sent.labels(route),
                received=metrics.http_received.labels(route),
                broken=metrics.http_broken.labels(route),
            )
        return children

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics = self.metrics
        started = time.monotonic()
        failed = False

        def first_byte() -> None:
            route = cast(dict[str, Any], scope).get(ROUTE_KEY, UNMATCHED)
            self._route(route).first_byte.observe(time.monotonic() - started)

        exchange = Exchange(receive, send, first_byte)
        metrics.http_in_progress.inc()
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except Exception:
            failed = True  # hypercorn answers 500 for an app that raised before its answer
            raise
        finally:
            metrics.http_in_progress.dec()
            status = (
                str(exchange.status) if exchange.status is not None else "500" if failed else "none"
            )
            route = cast(dict[str, Any], scope).get(ROUTE_KEY, UNMATCHED)
            method = scope["method"] if scope["method"] in METHODS else "other"
            counted = self._requests.get((route, method, status))
            if counted is None:
                counted = metrics.http_requests.labels(route, method, status)
                self._requests[route, method, status] = counted
            counted.inc()
            timed = self._durations.get((route, method))
            if timed is None:
                timed = self._durations[route, method] = metrics.http_duration.labels(route, method)
            timed.observe(time.monotonic() - started)
            children = self._route(route)
            if exchange.sent:
                children.sent.inc(exchange.sent)
            if exchange.received:
                children.received.inc(exchange.received)
            if exchange.broken:
                children.broken.inc()
