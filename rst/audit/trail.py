"""The audit trail's one writer: events in through a memory channel, JSON lines out.

Requests end in many tasks at once; their events go through one bounded channel to one task
(:meth:`AuditTrail.run`, started with ``nursery.start`` by the server) that appends them to the
file opened once — each batch joined and written with one ``write`` on a worker thread, so a
slow disk never holds up the trio loop and lines never interleave (several worker processes
appending to one file each write whole lines to an ``O_APPEND`` file). Nothing is lost
silently: an event that finds the channel full, the writer gone, or the file failing is logged
at ERROR with the event itself.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, BinaryIO

import trio

from rst.audit.settings import AuditConfig

__all__ = ["AuditTrail"]

log = logging.getLogger(__name__)


class AuditTrail:
    def __init__(self, config: AuditConfig) -> None:
        self.config = config
        self._send, self._receive = trio.open_memory_channel[str](config.queue)
        self._file: BinaryIO | None = None

    def record(self, event: dict[str, Any]) -> None:
        """Queue *event*; never waits (it is called while a request ends, even cancelled)."""
        line = json.dumps(event, separators=(",", ":"), ensure_ascii=False, default=str)
        try:
            self._send.send_nowait(line)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            log.error("audit event not written (the audit writer is behind or stopped): %s", line)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the file and write the events until cancelled, then the events still queued."""
        self._file = await trio.to_thread.run_sync(self._open)
        task_status.started()
        lines: list[str] = []
        try:
            async for line in self._receive:
                lines.append(line)
                while True:
                    try:
                        lines.append(self._receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                await trio.to_thread.run_sync(self._write, lines)
                lines = []
        finally:
            # Cancelled (shutdown): what was taken or is still queued is written here, on the
            # loop — a few lines, once. Later events find the channel closed and are logged.
            self._send.close()
            while True:
                try:
                    lines.append(self._receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            if lines:
                self._write(lines)
            if self._file is not None and self.config.path != "-":
                self._file.close()

    def _open(self) -> BinaryIO:
        if self.config.path == "-":
            return sys.stdout.buffer
        return open(self.config.path, "ab", buffering=0)

    def _write(self, lines: list[str]) -> None:
        text = "".join(f"{line}\n" for line in lines)
        try:
            assert self._file is not None
            data = memoryview(text.encode())
            while data:
                written = self._file.write(data)
                if not written:
                    raise OSError("the audit file took no bytes")
                data = data[written:]
            self._file.flush()
        except (OSError, ValueError) as exc:
            log.error(
                "audit trail %s: %d events not written (%s): %s",
                self.config.path,
                len(lines),
                exc,
                text.rstrip("\n"),
            )
