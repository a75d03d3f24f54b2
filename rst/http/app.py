"""The application factory: a quart-trio app for one configuration and its backends."""

from __future__ import annotations

from collections.abc import Mapping

from quart import Response, request
from quart_trio import QuartTrio

from rst.config import Config
from rst.http.compression import gzip_response
from rst.http.errors import register_error_handlers
from rst.http.request_body import RstRequest
from rst.http.request_scope import RequestScopedConnection
from rst.http.routes import dicomweb_blueprint
from rst.logs import REQUEST_ID_HEADER, request_id
from rst.services.protocols import Backend

__all__ = ["create_app"]


class _App(QuartTrio):
    asgi_http_class = RequestScopedConnection
    request_class = RstRequest


def create_app(config: Config, backends: Mapping[str, Backend]) -> QuartTrio:
    """Build the app. No global state: everything it serves comes from the arguments."""
    app = _App("rst")
    # rst enforces its own limits (http.max_stow_bytes) and streams bodies both ways.
    app.config["MAX_CONTENT_LENGTH"] = None
    app.config["BODY_TIMEOUT"] = None
    app.config["RESPONSE_TIMEOUT"] = None
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = True
    app.config["RST_BODY_TIMEOUT"] = config.http.body_timeout  # read by RequestScopedConnection
    register_error_handlers(app)
    app.register_blueprint(dicomweb_blueprint(config, backends))

    @app.after_request
    async def tag(response: Response) -> Response:
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
                    f"Warning, Content-Type, Retry-After, {REQUEST_ID_HEADER}"
                )
                response.headers["Vary"] = "Origin"
            return response

    return app
