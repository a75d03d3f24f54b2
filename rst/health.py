"""Liveness and readiness: what ``GET /livez`` and ``GET /readyz`` answer.

A readiness probe comes every few seconds from each load balancer and orchestrator; if each
probe opened an association, rst would hammer its PACS at probe rate and a slow PACS would make
the probes themselves time out. So the checks run in the background instead, in one task of
the server's nursery (:class:`HealthMonitor`): every ``[health] interval`` seconds each archive
is asked once — C-ECHO for a PACS, HeadBucket for S3 — within ``[health] timeout``, and
``/readyz`` only reads the results.

rst is ready when its C-STORE receiver listens and every configured archive answered within
the last ``[health] max_age`` seconds. An age rather than "the last check passed": one lost
C-ECHO does not take a gateway out of its load balancer, a PACS gone for ``max_age`` does.

A PACS whose every association slot (``max_associations``) is held by an association it
accepted is not asked: a C-ECHO would queue behind the requests, and those open associations
are an answer already.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import trio

from rst.config import HealthConfig
from rst.errors import RstError
from rst.metrics import Metrics
from rst.services.protocols import Backend

__all__ = ["Check", "HealthMonitor", "Saturable"]

log = logging.getLogger(__name__)

UNCHECKED = "not checked ([health] check_archives = false)"


@runtime_checkable
class Saturable(Protocol):
    """A backend with a bounded pool of connections to its archive."""

    def saturated(self) -> bool:
        """Whether every slot is held by a connection the archive accepted."""
        ...


@dataclass(frozen=True)
class Check:
    """The result of one check of one archive."""

    ok: bool
    at: float
    """When it ended (``trio.current_time()``)."""
    detail: str


class HealthMonitor:
    """Checks *backends* in the background; says whether the gateway is ready."""

    def __init__(
        self,
        backends: Mapping[str, Backend],
        config: HealthConfig,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.backends = dict(backends)
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self.receiver: str | None = None
        """Where the C-STORE receiver listens, once it does (``host:port``)."""
        self.last: dict[str, Check] = {}
        """The latest check of each archive."""
        self.answered: dict[str, float] = {}
        """When each archive last answered."""

    def receiver_listening(self, host: str, port: int) -> None:
        self.receiver = f"{host}:{port}"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Check every archive now, then every ``interval`` seconds, until cancelled. Reports
        started at once: an archive that is down must not hold up the server's start. Returns
        at once with ``check_archives = false``."""
        task_status.started()
        while self.config.check_archives:
            await self.check_all()
            await trio.sleep(self.config.interval)

    async def check_all(self) -> None:
        """One round: every archive at once, each within ``timeout``."""
        async with trio.open_nursery() as nursery:
            for name, backend in self.backends.items():
                nursery.start_soon(self._check, name, backend)

    async def _check(self, name: str, backend: Backend) -> None:
        if isinstance(backend, Saturable) and backend.saturated():
            check = Check(True, self.clock(), "every association slot is in use")
        else:
            check = await self._ask(name, backend)
        previous = self.last.get(name)
        self.last[name] = check
        if check.ok:
            self.answered[name] = check.at
        if self.metrics is not None:
            self.metrics.archive_up.labels(name).set(1 if check.ok else 0)
        if check.ok and previous is not None and not previous.ok:
            log.info("health: %s answers again", name)
        elif not check.ok and (previous is None or previous.ok):
            log.warning("health: %s does not answer: %s", name, check.detail)

    async def _ask(self, name: str, backend: Backend) -> Check:
        timeout = self.config.timeout
        with trio.move_on_after(timeout):
            try:
                await backend.echo()
            except RstError as exc:
                return Check(False, self.clock(), exc.message)
            except Exception as exc:  # a check never takes the server down
                log.exception("health: checking %s failed unexpectedly", name)
                return Check(False, self.clock(), f"{type(exc).__name__}: {exc}")
            return Check(True, self.clock(), "answered")
        return Check(False, self.clock(), f"no answer within {timeout:g} s ([health] timeout)")

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether the gateway is ready, and the JSON body that says why (or why not)."""
        now = self.clock()
        ready = self.receiver is not None
        archives: dict[str, dict[str, Any]] = {}
        for name in self.backends:
            if not self.config.check_archives:
                archives[name] = {"ready": True, "last_check": UNCHECKED}
                continue
            answered = self.answered.get(name)
            last = self.last.get(name)
            entry: dict[str, Any] = {
                "ready": answered is not None and now - answered <= self.config.max_age,
                "answered_seconds_ago": None if answered is None else round(now - answered, 1),
                "last_check": None if last is None else last.detail,
            }
            if not entry["ready"]:
                ready = False
                entry["reason"] = self._reason(answered, last, now)
            archives[name] = entry
        body: dict[str, Any] = {
            "status": "ready" if ready else "unready",
            "receiver": {
                "listening": self.receiver is not None,
                **({"address": self.receiver} if self.receiver is not None else {}),
            },
            "aets": archives,
        }
        if not ready:
            body["failing"] = sorted(name for name, entry in archives.items() if not entry["ready"])
        return ready, body

    def _reason(self, answered: float | None, last: Check | None, now: float) -> str:
        if last is None:
            return "not checked yet"
        if answered is None:
            return f"has not answered since rst started: {last.detail}"
        return (
            f"last answered {now - answered:.0f} s ago (more than [health] max_age = "
            f"{self.config.max_age:g} s): {last.detail}"
        )
