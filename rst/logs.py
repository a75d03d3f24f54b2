"""Log lines that say which request they belong to.

Each HTTP request gets an id — the client's ``X-Request-ID`` when it sends a sane one, else a
new one — that rst echoes in the response and puts on every log line written while serving it:
by the route, the DIMSE client, the spool, the receiver's hand-off. trio copies the context
into every task a request starts, so the id follows the work without being passed around;
outside any request it reads ``-``. The AE title of the archive a request is for follows it
the same way (:data:`request_aet`, set when the route is known).

Two formats (``[log] format``): ``text``, one readable line per record, and ``json``, one JSON
object per line for log collectors (fields: ``docs/discussion/operations.md``).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import secrets
import sys
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "REQUEST_ID_HEADER",
    "JsonFormatter",
    "RequestIdFilter",
    "new_request_id",
    "request_aet",
    "request_id",
    "setup",
]

REQUEST_ID_HEADER = "X-Request-ID"
_SANE = re.compile(r"[A-Za-z0-9._:+/=-]{1,64}")

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("rst_request_id", default="-")
"""The id of the request being served by the current task (``-`` outside requests)."""

request_aet: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "rst_request_aet", default=None
)
"""The AE title in the path of the request being served (``/aets/{aet}/…``), if any."""


def new_request_id(offered: str | None) -> str:
    """The client's id if it is short and plain (it goes into logs and a header), else a new
    random one."""
    if offered is not None and _SANE.fullmatch(offered):
        return offered
    return secrets.token_hex(8)


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` and ``aet`` to every record (``%(request_id)s`` in a format)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        record.aet = request_aet.get()
        return True


_STANDARD = frozenset(
    (*vars(logging.LogRecord("", 0, "", 0, "", None, None)), "message", "asctime", "taskName")
) | {"request_id", "aet"}
"""Attributes every record has; the others came in ``extra=`` and become fields of their own."""


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, ``request_id`` (``-`` outside requests), when known ``aet``, ``worker``
    and ``exception`` (the formatted traceback), and what the call passed as ``extra=`` (e.g.
    ``association``, :mod:`rst.backends.dimse.journal`)."""

    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        aet = getattr(record, "aet", None)
        if aet is not None:
            line["aet"] = aet
        if self.worker is not None:
            line["worker"] = self.worker
        for key, value in vars(record).items():
            if key not in _STANDARD:  # what the caller passed in ``extra=``
                line.setdefault(key, value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


def setup(level: str, worker: int | None = None, format: str = "text") -> None:
    """Logs on stderr, one line per record (text or JSON), with the request id."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    if format == "json":
        handler.setFormatter(JsonFormatter(worker))
    else:
        where = "" if worker is None else f"[worker {worker}] "
        handler.setFormatter(
            logging.Formatter(
                f"%(asctime)s %(levelname)-7s {where}%(name)s [%(request_id)s]: %(message)s"
            )
        )
    logging.basicConfig(level=level, handlers=[handler])
    # pynetdicom logs every PDU at INFO; keep it to problems unless asked for DEBUG.
    logging.getLogger("pynetdicom").setLevel("DEBUG" if level == "DEBUG" else "WARNING")
