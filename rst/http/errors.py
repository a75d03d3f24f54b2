"""The one place where errors become HTTP responses: a JSON body a person can act on."""

from __future__ import annotations

import logging
from typing import Any

from quart import Quart, Response, jsonify
from werkzeug.exceptions import HTTPException

from rst.errors import RstError, Unauthenticated
from rst.groups import single
from rst.metrics import Metrics

__all__ = ["error_response", "register_error_handlers"]

log = logging.getLogger(__name__)


def error_response(status: int, message: str, **extra: Any) -> Response:
    response = jsonify({"error": message, "status": status, **extra})
    response.status_code = status
    return response


def _from_rst(error: RstError) -> Response:
    if error.status >= 500:
        log.warning("%s: %s", type(error).__name__, error.message)
    response = error_response(error.status, error.message)
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    if isinstance(error, Unauthenticated):
        for challenge in error.challenges:
            response.headers.add("WWW-Authenticate", challenge)
    return response


def register_error_handlers(app: Quart, metrics: Metrics | None = None) -> None:
    """*metrics* counts the errors by kind: the rst error class, ``HTTPException`` (routing,
    methods) or ``InternalError`` (a bug)."""

    def count(kind: str) -> None:
        if metrics is not None:
            metrics.errors.labels(kind).inc()

    async def on_rst_error(error: RstError) -> Response:
        count(type(error).__name__)
        return _from_rst(error)

    async def on_group(group: ExceptionGroup[Exception]) -> Response:
        leaf = single(group)
        if isinstance(leaf, RstError):
            count(type(leaf).__name__)
            return _from_rst(leaf)
        count("InternalError")
        log.error("unexpected error", exc_info=group)
        return error_response(500, "internal error in rst; the log has the details")

    async def on_http_exception(error: HTTPException) -> Response:
        count("HTTPException")
        response = error_response(error.code or 500, error.description or error.name)
        for name, value in error.get_headers():
            if name.lower() != "content-type":  # e.g. Allow on a 405
                response.headers[name] = value
        return response

    async def on_unexpected(error: Exception) -> Response:
        count("InternalError")
        log.error("unexpected error", exc_info=error)
        return error_response(500, "internal error in rst; the log has the details")

    app.register_error_handler(RstError, on_rst_error)
    app.register_error_handler(ExceptionGroup, on_group)
    app.register_error_handler(HTTPException, on_http_exception)
    app.register_error_handler(Exception, on_unexpected)
