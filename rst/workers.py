"""``[http] workers = N``: N rst processes serving the same ports, one core each.

Python runs one thread at a time, so one rst process streams with at most one core. With
``workers > 1`` the ``rst serve`` process becomes a supervisor: it binds the HTTP port and the
C-STORE receiver's port, links the workers with Unix sockets, and starts N worker processes
(``python -m rst worker``, the specification on their stdin). Each worker is a whole gateway —
hypercorn on the shared HTTP socket, a receiver on the shared C-STORE socket, its own
associations — and the kernel spreads incoming connections among them. A C-STORE that reaches
the wrong worker is passed to the right one (:mod:`rst.backends.dimse.handoff`).

SIGTERM or SIGINT is passed on to every worker, which shuts down gracefully
(``http.graceful_timeout``); workers still running ten seconds after that are killed. A worker
also shuts down when its standard input (a pipe from the supervisor) reaches EOF: if the
supervisor is killed outright, the workers do not outlive it.

The workers report their metrics as one gateway: the supervisor makes a folder of its own
(removed when it ends) and names it to every worker in ``PROMETHEUS_MULTIPROC_DIR``;
prometheus-client's multiprocess mode keeps each worker's counts there, in files, and the
worker that answers ``GET /metrics`` sums them all. The counts of a worker that died stay in
(a counter never goes backwards); its gauges are dropped.

A worker that dies is replaced, crash-only: the supervisor logs how it ended and starts another
in the same slot — the same index, so the same share of the C-MOVE message ids, and the same
descriptors — at once the first time, then after a growing wait (:mod:`rst.restarts`). The
requests it was serving fail (their connections close); the other workers go on serving. The
supervisor holds both ends of every Unix socket of the ring for its whole life, so a death
closes none of them: associations passed to the dead worker wait in its inbox for its
replacement (which refuses those of the dead worker's own C-MOVEs, and carries on with the
others). Only a signal stops the gateway.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

import trio
from prometheus_client import multiprocess

from rst.auth.settings import REVEAL_SECRETS
from rst.backends.dimse import WorkerRing
from rst.config import Config
from rst.restarts import Restart, RestartSchedule

__all__ = ["WorkerSlot", "read_worker_spec", "supervise", "until_orphaned"]

log = logging.getLogger(__name__)

KILL_AFTER = 10.0  # seconds past http.graceful_timeout
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus-client reads it when first imported: it must be in a worker's environment."""


@dataclass(frozen=True)
class WorkerSlot:
    """What a worker process gets from the supervisor: its place and its sockets."""

    index: int
    count: int
    http: socket.socket
    dimse: socket.socket
    ring: WorkerRing
    metrics_dir: str | None = None
    """The folder all workers count their metrics into (:mod:`rst.metrics`)."""


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted sockets inherit it
        sock.bind((host, port))
        sock.listen(1024)
    except BaseException:
        sock.close()
        raise
    return sock


def _spec(config: Config, index: int, fds: dict[str, Any], metrics_dir: str) -> bytes:
    return json.dumps(
        {
            "index": index,
            "count": config.http.workers,
            "fds": fds,
            "metrics_dir": metrics_dir,
            "config": config.model_dump(mode="json", context=REVEAL_SECRETS),
        }
    ).encode()


async def until_orphaned() -> None:
    """Return when the supervisor has gone (EOF on this worker's standard input)."""
    stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    async with stream:
        while await stream.receive_some():
            pass
    log.warning("the supervisor has gone: shutting down")


def read_worker_spec(data: bytes) -> tuple[Config, WorkerSlot]:
    """A worker's configuration and sockets, from what the supervisor wrote to its stdin."""
    spec = json.loads(data)
    config = Config.model_validate(spec["config"])
    fds = spec["fds"]
    index, count = int(spec["index"]), int(spec["count"])
    ring = WorkerRing(
        index,
        count,
        socket.socket(fileno=fds["inbox"]),
        {int(j): socket.socket(fileno=fd) for j, fd in fds["outboxes"].items()},
    )
    return config, WorkerSlot(
        index,
        count,
        http=socket.socket(fileno=fds["http"]),
        dimse=socket.socket(fileno=fds["dimse"]),
        ring=ring,
        metrics_dir=spec.get("metrics_dir"),
    )


async def supervise(config: Config) -> int:
    """Start ``config.http.workers`` workers and keep them running until a signal; the exit
    status (0: stopped by the signal)."""
    count = config.http.workers
    sockets: list[socket.socket] = []
    metrics_dir = tempfile.mkdtemp(prefix="rst-metrics-")
    try:
        http = _listen(config.http.host, config.http.port)
        sockets.append(http)
        dimse = _listen(config.dimse.host, config.dimse.port)
        sockets.append(dimse)
        # Both ends of every pair stay open here until the end: a worker's death never closes
        # a socket of the ring, and its replacement takes over its inbox as it is.
        pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(count)]
        sockets += [end for pair in pairs for end in pair]
        slots = [_Slot(config, index, http, dimse, pairs, metrics_dir) for index in range(count)]
        return await _run(config, http, dimse, slots)
    finally:
        for sock in sockets:
            sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)


async def _run(
    config: Config, http: socket.socket, dimse: socket.socket, slots: list[_Slot]
) -> int:
    async def on_signal(cancel_scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("received %s: stopping the workers", signal.Signals(signum).name)
                cancel_scope.cancel()
                return

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(on_signal, nursery.cancel_scope)
            for slot in slots:
                await nursery.start(slot.keep_running)
            host, port = http.getsockname()[:2]
            dhost, dport = dimse.getsockname()[:2]
            log.info(
                "rst serving DICOMweb on %s://%s:%s, C-STORE receiver %s on %s:%s, %d workers",
                "http" if config.http.certfile is None else "https",
                host,
                port,
                config.dimse.aet,
                dhost,
                dport,
                len(slots),
            )
    finally:
        with trio.CancelScope(shield=True):
            await _stop(
                [slot.process for slot in slots if slot.process is not None],
                config.http.graceful_timeout + KILL_AFTER,
            )
    return 0


class _Slot:
    """One worker's place: its index, the descriptors it inherits, and the process that holds
    it now. A worker that dies is replaced in the same slot — same index, so the same share of
    the C-MOVE message ids, and the same inbox on the ring — after :class:`RestartSchedule`'s
    wait."""

    def __init__(
        self,
        config: Config,
        index: int,
        http: socket.socket,
        dimse: socket.socket,
        pairs: list[tuple[socket.socket, socket.socket]],
        metrics_dir: str,
    ) -> None:
        self.index = index
        self._metrics_dir = metrics_dir
        outboxes = {j: pairs[j][1].fileno() for j in range(len(pairs)) if j != index}
        fds = {"http": http.fileno(), "dimse": dimse.fileno(), "inbox": pairs[index][0].fileno()}
        self._pass_fds = [*fds.values(), *outboxes.values()]
        self._spec = _spec(config, index, {**fds, "outboxes": outboxes}, metrics_dir) + b"\n"
        self.process: trio.Process | None = None

    async def keep_running(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Start the slot's worker (a failure is the supervisor's own: it ends the gateway),
        report it started, then replace it each time it dies, until cancelled."""
        process: trio.Process | None = await self._start()
        task_status.started()
        schedule = RestartSchedule()
        what = ""
        while True:
            started = trio.current_time()
            if process is not None:
                status = await process.wait()
                uptime = trio.current_time() - started
                what = (
                    f"worker {self.index} (pid {process.pid}) {_ended(status)} after {uptime:.1f} s"
                )
                if process.stdin is not None:
                    await process.stdin.aclose()
                _forget_gauges(process.pid, self._metrics_dir)
            restart = schedule.crashed(started, trio.current_time())
            _log_crash(what, restart)
            await trio.sleep(restart.delay)
            try:
                process = await self._start()
            except OSError as exc:  # out of memory or processes: as good as a crash
                process = None
                what = f"worker {self.index} could not be started again ({exc})"
            else:
                log.info("worker %d started again: pid %d", self.index, process.pid)

    async def _start(self) -> trio.Process:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "rst", "worker"],
            stdin=subprocess.PIPE,
            pass_fds=self._pass_fds,
            env={**os.environ, METRICS_DIR_VARIABLE: self._metrics_dir},
        )
        self.process = process  # from now on, stopping the gateway stops it
        # The spec is one line; stdin then stays open, unwritten, for the worker's lifetime:
        # when this process ends, however it ends, the worker reads EOF and shuts down (no
        # orphaned workers holding the ports).
        assert process.stdin is not None
        with contextlib.suppress(trio.BrokenResourceError):  # it died at once: wait() says how
            await process.stdin.send_all(self._spec)
        return process


def _forget_gauges(pid: int, metrics_dir: str) -> None:
    """Drop the gauges of a dead worker (its requests in progress, its open associations)."""
    multiprocess.mark_process_dead(pid, metrics_dir)  # type: ignore[no-untyped-call]


def _ended(status: int) -> str:
    """How a worker ended, from its exit status (negative: the signal that killed it)."""
    if status < 0:
        try:
            return f"was killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"was killed by signal {-status}"
    return f"exited with status {status}"


def _log_crash(what: str, restart: Restart) -> None:
    if restart.delay:
        when = f"in {restart.delay:g} s ({restart.crashes} crashes in a row)"
    else:
        when = "at once"
    if restart.looping:
        log.error("%s: crash loop; starting another %s", what, when)
    else:
        log.warning("%s: starting another %s", what, when)


async def _stop(processes: list[trio.Process], grace: float) -> None:
    for process in processes:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
    with trio.move_on_after(grace):
        for process in processes:
            await process.wait()
    for process in processes:
        if process.returncode is None:
            log.warning("worker (pid %d) still running after %g s: killing it", process.pid, grace)
            process.kill()
            await process.wait()
        if process.stdin is not None:
            await process.stdin.aclose()
