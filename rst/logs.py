"""Log lines that say which request they belong to.

Each HTTP request gets an id — the client's ``X-Request-ID`` when it sends a sane one, else a
new one — that rst echoes in the response and puts on every log line written while serving it:
by the route, the DIMSE client, the spool, the receiver's hand-off. trio copies the context
into every task a request starts, so the id follows the work without being passed around;
outside any request it reads ``-``.
"""

from __future__ import annotations

import contextvars
import logging
import re
import secrets
import sys

__all__ = ["REQUEST_ID_HEADER", "RequestIdFilter", "new_request_id", "request_id", "setup"]

REQUEST_ID_HEADER = "X-Request-ID"
_SANE = re.compile(r"[A-Za-z0-9._:+/=-]{1,64}")

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("rst_request_id", default="-")
"""The id of the request being served by the current task (``-`` outside requests)."""


def new_request_id(offered: str | None) -> str:
    """The client's id if it is short and plain (it goes into logs and a header), else a new
    random one."""
    if offered is not None and _SANE.fullmatch(offered):
        return offered
    return secrets.token_hex(8)


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record (for the ``%(request_id)s`` format field)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def setup(level: str, worker: int | None = None) -> None:
    """Text logs on stderr, one line per record, with the request id."""
    where = "" if worker is None else f"[worker {worker}] "
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(
        logging.Formatter(
            f"%(asctime)s %(levelname)-7s {where}%(name)s [%(request_id)s]: %(message)s"
        )
    )
    logging.basicConfig(level=level, handlers=[handler])
    # pynetdicom logs every PDU at INFO; keep it to problems unless asked for DEBUG.
    logging.getLogger("pynetdicom").setLevel("DEBUG" if level == "DEBUG" else "WARNING")
