"""The ``rst`` command as a real process: start it, read its log, find its workers, stop it.

    async with rst_process("serve", "--config", str(path)) as process:
        match = await read_until(process, r"serving DICOMweb on (http://\\S+),")

HTTP and C-STORE ports are 0 (free ports, chosen by the kernel, on loopback by default); the
log (stdout and stderr) is read with :func:`read_until`. On exit a process still running gets
SIGTERM, then SIGKILL after ``STOP_GRACE`` seconds.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import weakref
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import trio

__all__ = ["ENV", "STOP_GRACE", "child_pids", "read_until", "rst_process"]

ENV = {**os.environ, "RST_HTTP_PORT": "0", "RST_DIMSE_PORT": "0", "PYTHONUNBUFFERED": "1"}
STOP_GRACE = 20.0


@asynccontextmanager
async def rst_process(
    *args: str, cwd: Path | None = None, env: Mapping[str, str] | None = None
) -> AsyncIterator[trio.Process]:
    """``python -m rst ARGS`` with the environment at the time of the call, :data:`ENV` and
    *env* (which wins: e.g. ``RST_*`` settings of one replica among several)."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "rst", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **ENV, **(env or {})},
        cwd=None if cwd is None else str(cwd),
    )
    try:
        yield process
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                with trio.move_on_after(STOP_GRACE):
                    await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


_unread: weakref.WeakKeyDictionary[trio.Process, str] = weakref.WeakKeyDictionary()
"""Output read past the last match, for the next :func:`read_until` of the same process."""


async def read_until(process: trio.Process, pattern: str) -> re.Match[str]:
    """Read the process's output until *pattern* matches; fail after 30 s. Each call starts
    where the last match of the previous one ended, so lines that arrived together with it
    are not lost."""
    assert process.stdout is not None
    seen = _unread.pop(process, "")
    with trio.fail_after(30):
        while not (match := re.search(pattern, seen)):
            chunk = await process.stdout.receive_some()
            if not chunk:
                raise AssertionError(f"process ended without printing {pattern!r}:\n{seen}")
            seen += chunk.decode(errors="replace")
    _unread[process] = seen[match.end() :]
    return match


def child_pids(pid: int) -> list[int]:
    """The children of process *pid*. trio starts processes from a worker thread, so this reads
    the children of every thread, not just the main one."""
    tasks = Path(f"/proc/{pid}/task")
    return [int(p) for task in tasks.iterdir() for p in (task / "children").read_text().split()]
