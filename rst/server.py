"""The server: one root nursery holding the C-STORE receiver and the HTTP server.

``serve`` builds everything from the configuration, starts the receiver and hypercorn with
``nursery.start`` and reports where they listen. When the shutdown trigger fires, hypercorn
stops accepting, lets in-flight requests run for ``http.graceful_timeout`` seconds, cancels the
rest (which cancels their DIMSE operations), and then the receiver is stopped. If either service
dies, the nursery cancels the other and ``serve`` raises: no half-running gateway.

When a DIMSE archive has ``cache = true`` (the default), the retrieve cache (:mod:`rst.cache`)
is opened for the server's lifetime and put in front of those archives.

The server owns the gateway's metrics (:mod:`rst.metrics`, one registry per server) and runs
the archives' health checks (:mod:`rst.health`) as one more task of its nursery, and the audit
trail's writer (:mod:`rst.audit`) in a nursery around that one, so that it outlives the HTTP
server.

With S3 archives configured, everything runs inside a trio-asyncio loop that holds one S3
client per archive; the clients close after the nursery (DIMSE-only configurations open no
asyncio loop and never import aiobotocore).
"""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from rst.audit import AuditTrail
from rst.backends.dimse import DimseBackend, Mediator, MessageIds, StoreReceiver
from rst.backends.dimse.callers import Callers
from rst.backends.dimse.without_bulk_data import around_cache
from rst.backends.metered import metered
from rst.cache import Cache, open_cache, with_cache
from rst.config import AeConfig, Config, S3AeConfig
from rst.groups import collapse
from rst.health import HealthMonitor
from rst.http.app import create_app
from rst.http.listener import serve_http
from rst.malloc import trim_periodically
from rst.metrics import Metrics
from rst.services.protocols import Backend
from rst.workers import WorkerSlot

__all__ = ["Running", "build_backends", "serve", "wait_for_signal"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Running:
    """Where a started server listens."""

    http_url: str
    dimse_address: tuple[str, int]
    receiver: StoreReceiver
    backends: dict[str, Backend]
    """The archives themselves (the routes reach the DIMSE ones through the cache)."""
    mediator: Mediator
    cache: Cache | None = None
    metrics: Metrics | None = None
    health: HealthMonitor | None = None


def build_backends(
    config: Config,
    mediator: Mediator,
    ids: MessageIds | None = None,
    metrics: Metrics | None = None,
) -> dict[str, Backend]:
    ids = ids or MessageIds()
    backends: dict[str, Backend] = {}
    for ae in config.aets:
        if not isinstance(ae, AeConfig):
            continue  # S3 archives are opened by serve(), they need the event loop
        backends[ae.aet] = DimseBackend(
            ae,
            config.dimse,
            calling_aet=config.calling_aet(ae),
            mediator=mediator,
            message_ids=ids,
            metrics=metrics,
        )
    return backends


async def wait_for_signal() -> None:
    """Return on the first SIGTERM or SIGINT (a shutdown trigger for :func:`serve`)."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("received %s: shutting down", signal.Signals(signum).name)
            return


async def serve(
    config: Config,
    *,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
    task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
    worker: WorkerSlot | None = None,
) -> None:
    """Run the gateway until *shutdown_trigger* returns (or forever, until cancelled).

    *worker*: run as one of several worker processes (:mod:`rst.workers`), on the supervisor's
    sockets."""
    mediator = Mediator()
    ids = MessageIds() if worker is None else MessageIds(worker.index, worker.count)
    metrics = Metrics(multiprocess_dir=worker.metrics_dir if worker is not None else None)
    backends = build_backends(config, mediator, ids, metrics)
    async with _s3_backends(config, backends, metrics), _cache(config, metrics) as cache:
        counted = metered(backends, metrics)
        served = around_cache(config, counted, with_cache(config, counted, cache, metrics))
        await _serve(
            config,
            mediator,
            backends,
            served,
            cache,
            metrics,
            shutdown_trigger,
            task_status,
            worker,
        )


@asynccontextmanager
async def _cache(config: Config, metrics: Metrics) -> AsyncIterator[Cache | None]:
    """The retrieve cache, if an archive uses it; closed on exit."""
    if not any(isinstance(ae, AeConfig) and ae.cache for ae in config.aets):
        yield None
        return
    async with open_cache(config.cache, metrics) as cache:
        yield cache


@asynccontextmanager
async def _s3_backends(
    config: Config, backends: dict[str, Backend], metrics: Metrics
) -> AsyncIterator[None]:
    """Open one S3 client per S3 archive (inside a trio-asyncio loop, counting into
    *metrics*), closed on exit.

    Only configurations with S3 archives pay for the asyncio loop (and for importing
    aiobotocore)."""
    archives = [ae for ae in config.aets if isinstance(ae, S3AeConfig)]
    if not archives:
        yield
        return
    import trio_asyncio  # type: ignore[import-untyped]

    from rst.backends.s3 import S3Backend, open_client
    from rst.backends.s3.index import Index, index_location

    async with trio_asyncio.open_loop(), AsyncExitStack() as stack:
        for ae in archives:
            client = await stack.enter_async_context(open_client(ae, metrics))
            index = await Index.open(index_location(ae))
            stack.push_async_callback(index.close)
            backends[ae.aet] = S3Backend(ae, client, index)
        # keep the configured order (GET /aets, logs)
        ordered = {ae.aet: backends[ae.aet] for ae in config.aets}
        backends.clear()
        backends.update(ordered)
        yield


async def _serve(
    config: Config,
    mediator: Mediator,
    backends: dict[str, Backend],
    served: dict[str, Backend],
    cache: Cache | None,
    metrics: Metrics,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None,
    task_status: trio.TaskStatus[Running],
    worker: WorkerSlot | None,
) -> None:
    health = HealthMonitor(backends, config.health, metrics=metrics)
    audit = AuditTrail(config.audit) if config.audit is not None else None
    app = create_app(config, served, metrics=metrics, health=health, audit=audit)
    callers = Callers.from_config(config)
    receiver = StoreReceiver(
        config.dimse,
        mediator,
        listener=worker.dimse if worker is not None else None,
        ring=worker.ring if worker is not None else None,
        callers=callers,
        metrics=metrics,
    )

    with collapse():
        async with trio.open_nursery() as lifetime:
            if audit is not None:
                # Outlives the HTTP server: the events of its last requests are written.
                await lifetime.start(audit.run)
            async with trio.open_nursery() as nursery:

                async def http(*, task_status: trio.TaskStatus[list[str]]) -> None:
                    await serve_http(
                        app,
                        config.http,
                        fd=worker.http.fileno() if worker is not None else None,
                        shutdown_trigger=shutdown_trigger,
                        task_status=task_status,
                    )
                    # hypercorn returns after a graceful shutdown: stop the receiver too.
                    nursery.cancel_scope.cancel()

                dimse_address = await nursery.start(receiver.run)
                health.receiver_listening(*dimse_address)
                await nursery.start(health.run)
                await nursery.start(trim_periodically)
                binds = await nursery.start(http)
                running = Running(
                    binds[0], dimse_address, receiver, backends, mediator, cache, metrics, health
                )
                log.info(
                    "rst serving DICOMweb on %s, C-STORE receiver %s on %s:%s",
                    running.http_url,
                    config.dimse.aet,
                    *dimse_address,
                )
                task_status.started(running)
            lifetime.cancel_scope.cancel()
