"""Start an HTTP server process for tests on a free loopback port and wait until it answers.

    async with open_http_server("nginx", command, log_path, probe="/nginx-healthz",
                                error=NginxError) as url:   # "http://127.0.0.1:PORT"

The launchers of moto and nginx share this; ``free_port()`` is racy, so a server that exits
during start-up (its port taken meanwhile) is started again on another port, a bounded number
of times. (benchmarks/common.py keeps its own readiness loop for rst: see its docstring.)
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import trio

from .loopback import free_port, log_tail, stop_process

__all__ = ["open_http_server", "wait_http_ready"]

READY_TIMEOUT = 20.0
START_ATTEMPTS = 3
PROBE_TIMEOUT = 2.0
POLL_INTERVAL = 0.05


def _is_200(status: int) -> bool:
    return status == 200


async def wait_http_ready(
    proc: trio.Process,
    url: str,
    deadline: float,
    *,
    timed_out: Exception,
    ok: Callable[[int], bool] = _is_200,
) -> bool:
    """Poll GET *url* until its status is *ok*; False if the process exited first; raise
    *timed_out* past *deadline* (``trio.current_time()``)."""
    async with httpx.AsyncClient(trust_env=False) as client:
        while proc.poll() is None:
            try:
                if ok((await client.get(url, timeout=PROBE_TIMEOUT)).status_code):
                    return True
            except httpx.TransportError:
                pass
            if trio.current_time() > deadline:
                raise timed_out
            await trio.sleep(POLL_INTERVAL)  # bounded readiness polling of a fresh process
    return False


@asynccontextmanager
async def open_http_server(
    name: str,
    command: Callable[[int], list[str]],
    log_path: Path,
    *,
    probe: str,
    error: type[Exception],
    ready_timeout: float = READY_TIMEOUT,
    ok: Callable[[int], bool] = _is_200,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[str]:
    """Run ``command(port)`` (output appended to *log_path*) on a free port until GET *probe*
    answers *ok*; yield ``http://127.0.0.1:PORT``; stop it on exit (SIGTERM, then SIGKILL).
    *command* may write a configuration naming the port before it returns. Raises *error* if
    it never answers."""
    for _ in range(START_ATTEMPTS):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with log_path.open("ab") as log:
            proc = await trio.lowlevel.open_process(
                command(port), stdout=log, stderr=subprocess.STDOUT, env=env
            )
        try:
            deadline = trio.current_time() + ready_timeout
            late = error(f"{name} did not answer on {url} in time")
            if await wait_http_ready(proc, url + probe, deadline, timed_out=late, ok=ok):
                yield url
                return
        finally:
            await stop_process(proc, grace=5.0)
    raise error(f"{name} failed to start:\n{log_tail(log_path)}")
