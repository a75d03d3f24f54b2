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
supervisor is killed outright, the workers do not outlive it. If a
worker dies, the supervisor stops the others and exits with status 1: a gateway missing a worker
would refuse the instances of that worker's C-MOVEs; better to fail as a whole and be restarted.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import trio

from rst.backends.dimse.handoff import WorkerRing
from rst.config import Config

__all__ = ["WorkerSlot", "read_worker_spec", "supervise", "until_orphaned"]

log = logging.getLogger(__name__)

KILL_AFTER = 10.0  # seconds past http.graceful_timeout


@dataclass(frozen=True)
class WorkerSlot:
    """What a worker process gets from the supervisor: its place and its sockets."""

    index: int
    count: int
    http: socket.socket
    dimse: socket.socket
    ring: WorkerRing


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


def _spec(config: Config, index: int, fds: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "index": index,
            "count": config.http.workers,
            "fds": fds,
            "config": config.model_dump(mode="json"),
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
    )


async def supervise(config: Config) -> int:
    """Start ``config.http.workers`` workers and watch them until a signal; the exit status."""
    count = config.http.workers
    sockets: list[socket.socket] = []
    try:
        http = _listen(config.http.host, config.http.port)
        sockets.append(http)
        dimse = _listen(config.dimse.host, config.dimse.port)
        sockets.append(dimse)
        pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(count)]
        sockets += [end for pair in pairs for end in pair]
        return await _run(config, http, dimse, pairs)
    finally:
        for sock in sockets:
            sock.close()


async def _run(
    config: Config,
    http: socket.socket,
    dimse: socket.socket,
    pairs: list[tuple[socket.socket, socket.socket]],
) -> int:
    count = config.http.workers
    stopping = trio.Event()
    failed: list[int] = []
    processes: list[trio.Process] = []

    async def watch(index: int, process: trio.Process) -> None:
        status = await process.wait()
        if not stopping.is_set():
            failed.append(index)
            log.error("worker %d exited with status %s: stopping the others", index, status)
            stopping.set()

    async def on_signal() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("received %s: stopping the workers", signal.Signals(signum).name)
                stopping.set()
                return

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(on_signal)
            for index in range(count):
                outboxes = {j: pairs[j][1].fileno() for j in range(count) if j != index}
                fds = {
                    "http": http.fileno(),
                    "dimse": dimse.fileno(),
                    "inbox": pairs[index][0].fileno(),
                }
                process = await trio.lowlevel.open_process(
                    [sys.executable, "-m", "rst", "worker"],
                    stdin=subprocess.PIPE,
                    pass_fds=[*fds.values(), *outboxes.values()],
                )
                processes.append(process)
                # The spec is one line; stdin then stays open, unwritten, for the worker's
                # lifetime: when this process ends, however it ends, the worker reads EOF and
                # shuts down (no orphaned workers holding the ports).
                assert process.stdin is not None
                await process.stdin.send_all(
                    _spec(config, index, {**fds, "outboxes": outboxes}) + b"\n"
                )
                nursery.start_soon(watch, index, process)
            host, port = http.getsockname()[:2]
            dhost, dport = dimse.getsockname()[:2]
            log.info(
                "rst serving DICOMweb on http://%s:%s, C-STORE receiver %s on %s:%s, %d workers",
                host,
                port,
                config.dimse.aet,
                dhost,
                dport,
                count,
            )
            await stopping.wait()
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await _stop(processes, config.http.graceful_timeout + KILL_AFTER)
    return 1 if failed else 0


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
