"""The application factory: a quart-trio app for one configuration and its backends."""

from __future__ import annotations

from collections.abc import Mapping

from quart import Response, request
from quart_trio import QuartTrio

from rst.audit import AuditTrail, install_audit, note_identity
from rst.auth import install_guard
from rst.config import AeConfig, Config
from rst.health import HealthMonitor
from rst.http.compression import gzip_response
from rst.http.errors import register_error_handlers
from rst.http.limits import check_head
from rst.http.ops_routes import ops_blueprint
from rst.http.request_body import RstRequest
from rst.http.request_metrics import RequestMetrics, note_route
from rst.http.request_scope import RequestScopedConnection
from rst.http.routes import dicomweb_blueprint
from rst.logs import REQUEST_ID_HEADER, request_aet, request_id
from rst.metrics import Metrics
from rst.services.protocols import Backend

__all__ = ["create_app"]


class _App(QuartTrio):
    asgi_http_class = RequestScopedConnection
    request_class = RstRequest


def create_app(
    config: Config,
    backends: Mapping[str, Backend],
    *,
    metrics: Metrics | None = None,
    health: HealthMonitor | None = None,
    audit: AuditTrail | None = None,
) -> QuartTrio:
    """Build the app. No global state: everything it serves comes from the arguments.

    *metrics* and *health* come from the server (:mod:`rst.server`); an app built alone gets
    metrics of its own and a health monitor nobody runs (``/readyz`` then says 503)."""
    app = _App("rst")
    metrics = metrics if metrics is not None else Metrics()
    health = health if health is not None else HealthMonitor(backends, config.health)
    app.asgi_app = RequestMetrics(app.asgi_app, metrics)  # type: ignore[method-assign]

    @app.before_request
    async def observe() -> None:
        """First of the hooks: the route and AE are known even if a later hook answers; a
        head over the limits (:mod:`rst.http.limits`) is answered before anything reads it."""
        note_route(request)
        check_head(request.scope, config.http)
        aet = (request.view_args or {}).get("aet")
        if isinstance(aet, str) and aet in backends:
            request_aet.set(aet)

    # rst enforces its own limits (http.max_stow_bytes) and streams bodies both ways.
    app.config["MAX_CONTENT_LENGTH"] = None
    app.config["BODY_TIMEOUT"] = None
    app.config["RESPONSE_TIMEOUT"] = None
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = True
    app.config["RST_BODY_TIMEOUT"] = config.http.body_timeout  # read by RequestScopedConnection
    register_error_handlers(app, metrics)
    if audit is not None:
        stations = {
            ae.aet: ae.called_aet
            for ae in config.aets
            if isinstance(ae, AeConfig) and ae.called_aet != ae.aet
        }
        install_audit(app, audit, stations)  # before the guard: a refused one is audited too
    if config.auth is not None:
        install_guard(app, config.auth)  # before every route: rst.auth.guard
    if audit is not None:
        app.before_request(note_identity)  # the caller the guard let in
    app.register_blueprint(dicomweb_blueprint(config, backends, metrics))
    app.register_blueprint(ops_blueprint(metrics, health))

    @app.after_request
    async def tag(response: Response) -> Response:
        note_route(request)  # also when no before_request hook ran
        response.headers[REQUEST_ID_HEADER] = request_id.get()
        return await gzip_response(request, response)

    origins = config.http.cors_origins
    if origins:

        @app.after_request
        async def cors(response: Response) -> Response:
            origin = request.headers.get("Origin")
            if origin and ("*" in origins or origin in origins):
                response.headers["Access-Control-Allow-Origin"] = "*" if "*" in origins else origin
                response.headers["Access-Control-Allow-Headers"] = (
                    "Authorization, Content-Type, Accept"
                )
                response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
                response.headers["Access-Control-Expose-Headers"] = (
                    f"Warning, Content-Type, Retry-After, WWW-Authenticate, {REQUEST_ID_HEADER}"
                )
                response.headers["Vary"] = "Origin"
            return response

    return app
