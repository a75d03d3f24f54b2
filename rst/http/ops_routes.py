"""The routes for the people and systems that run rst: ``/livez``, ``/readyz``, ``/metrics``.

- ``GET /livez``: 200 while the process serves HTTP at all; nothing else is asked. For
  liveness probes and the container's HEALTHCHECK: restarting rst is the cure only when rst
  itself is stuck, never when a PACS is down.
- ``GET /readyz``: 200 when the C-STORE receiver listens and every archive answered its
  background check recently, else 503; the JSON body names each failing AE and why
  (:mod:`rst.health`). For readiness probes and load balancers. It never opens an association.
- ``GET /metrics``: the Prometheus text format (:mod:`rst.metrics`).

With ``[auth]``, :mod:`rst.auth.guard` decides who may call them (by their URL rules).
"""

from __future__ import annotations

import trio
from quart import Blueprint, Response, jsonify, request

from rst.health import HealthMonitor
from rst.metrics import Metrics

__all__ = ["ops_blueprint"]


def ops_blueprint(metrics: Metrics, health: HealthMonitor) -> Blueprint:
    bp = Blueprint("ops", __name__)

    @bp.get("/livez")
    async def livez() -> Response:
        return _uncached(jsonify({"status": "alive"}))

    @bp.get("/readyz")
    async def readyz() -> Response:
        ready, body = health.readiness()
        response = jsonify(body)
        response.status_code = 200 if ready else 503
        return _uncached(response)

    @bp.get("/metrics")
    async def metrics_() -> Response:
        # Off the event loop: with workers it reads every worker's files, and the cache's
        # size comes from its index.
        body, content_type = await trio.to_thread.run_sync(
            metrics.exposition, request.headers.get("Accept")
        )
        return _uncached(Response(body, content_type=content_type))

    return bp


def _uncached(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response
