"""Run rst in-process for tests: the real server (hypercorn, receiver) on loopback, port 0."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from rst.audit import AuditConfig
from rst.auth import AuthConfig
from rst.config import (
    AeConfig,
    CacheConfig,
    Config,
    DimseConfig,
    HealthConfig,
    HttpConfig,
    S3AeConfig,
)
from rst.server import Running, serve


@asynccontextmanager
async def run_gateway(
    *aets: AeConfig | S3AeConfig,
    dimse: dict[str, Any] | None = None,
    http: dict[str, Any] | None = None,
    cache: dict[str, Any] | None = None,
    auth: AuthConfig | None = None,
    health: dict[str, Any] | None = None,
    audit: AuditConfig | None = None,
) -> AsyncIterator[Running]:
    """Start rst with *aets*; HTTP and the C-STORE receiver on free loopback ports.

    The retrieve cache lies in a new, empty folder unless *cache* names a ``path``: what one
    test retrieved is never served to another. The archives are not checked in the background
    unless *health* says so: a check's association would spend a fake PACS's scripted fault or
    show up among the associations a test counts (tests call ``running.health.check_all()``)."""
    with tempfile.TemporaryDirectory(prefix="rst-test-cache-") as folder:
        config = Config(
            http=HttpConfig(host="127.0.0.1", port=0, **(http or {})),
            dimse=DimseConfig(**{"host": "127.0.0.1", "port": 0, **(dimse or {})}),
            cache=CacheConfig(**{"path": folder, **(cache or {})}),
            health=HealthConfig(**{"check_archives": False, **(health or {})}),
            aets=aets,
            auth=auth,
            audit=audit,
        )
        async with trio.open_nursery() as nursery:
            running: Running = await nursery.start(serve, config)
            yield running
            nursery.cancel_scope.cancel()


async def wait_until(predicate: Any, *, within: float = 5.0, what: str = "condition") -> None:
    """Poll *predicate* until true; fail after *within* seconds.

    Only for states that offer nothing to wait on (counters of another component, a process
    or a thread of a test peer)."""
    with trio.move_on_after(within):
        while not predicate():  # noqa: ASYNC110 - no event to wait for
            await trio.sleep(0.01)
        return
    raise AssertionError(f"timed out after {within} s waiting for {what}")


async def settled(running: Running, aet: str = "FAULTY", *, within: float = 2.0) -> None:
    """rst holds nothing any more: no association, no subscription."""
    backend: Any = running.backends[aet]
    await wait_until(
        lambda: backend.peer.open_associations == 0 and len(running.mediator) == 0,
        within=within,
        what="rst to release its associations and subscriptions",
    )
