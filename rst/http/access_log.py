"""hypercorn's access log, without copying the process environment for every request.

hypercorn builds an :class:`~hypercorn.logging.AccessLogAtoms` for each request it logs: every
request and response header, and every environment variable (for ``%({NAME}e)s`` in a log
format) — the environment copy was the larger part of it, per request, for a format (rst's is
hypercorn's default) that uses none. :class:`AccessAtoms` holds the same atoms and reads an
environment variable only when the format asks for one; :class:`AccessLogger` hands it out.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from http import HTTPStatus

from hypercorn.logging import AccessLogAtoms, Logger
from hypercorn.typing import ResponseSummary, WWWScope

__all__ = ["AccessAtoms", "AccessLogger"]


class AccessAtoms(AccessLogAtoms):
    """hypercorn's atoms (same keys, same values), environment variables read on demand."""

    def __init__(
        self, request: WWWScope, response: ResponseSummary | None, request_time: float
    ) -> None:
        dict.__init__(self)
        for name, value in request["headers"]:
            self[f"{{{name.decode('latin1').lower()}}}i"] = value.decode("latin1")
        protocol = request.get("http_version", "ws")
        client = request.get("client")
        if client is None:
            remote_addr = None
        elif len(client) == 2:
            remote_addr = f"{client[0]}:{client[1]}"
        elif len(client) == 1:
            remote_addr = client[0]
        else:
            remote_addr = f"<???{client}???>"
        method = request["method"] if request["type"] == "http" else "GET"
        query_string = request["query_string"].decode()
        path_with_qs = request["path"] + ("?" + query_string if query_string else "")
        status_code = "-"
        status_phrase = "-"
        if response is not None:
            for name, value in response.get("headers", []):
                self[f"{{{name.decode('latin1').lower()}}}o"] = value.decode("latin1")
            status_code = str(response["status"])
            try:
                status_phrase = HTTPStatus(response["status"]).phrase
            except ValueError:
                status_phrase = f"<???{status_code}???>"
        self.update(
            {
                "h": remote_addr,
                "l": "-",
                "t": time.strftime("[%d/%b/%Y:%H:%M:%S %z]"),
                "r": f"{method} {request['path']} {protocol}",
                "R": f"{method} {path_with_qs} {protocol}",
                "s": status_code,
                "st": status_phrase,
                "S": request["scheme"],
                "m": method,
                "U": request["path"],
                "Uq": path_with_qs,
                "q": query_string,
                "H": protocol,
                "b": self["{Content-Length}o"],
                "B": self["{Content-Length}o"],
                "f": self["{Referer}i"],
                "a": self["{User-Agent}i"],
                "T": int(request_time),
                "D": int(request_time * 1_000_000),
                "L": f"{request_time:.6f}",
                "p": f"<{os.getpid()}>",
            }
        )

    def __getitem__(self, key: str) -> str:
        if key.startswith("{") and key.endswith("}e"):
            wanted = key[1:-2].lower()
            return next((v for k, v in os.environ.items() if k.lower() == wanted), "-")
        return super().__getitem__(key)


class AccessLogger(Logger):
    """hypercorn's logger, with :class:`AccessAtoms` (``Config.logger_class``)."""

    def atoms(
        self, request: WWWScope, response: ResponseSummary | None, request_time: float
    ) -> Mapping[str, str]:
        return AccessAtoms(request, response, request_time)
