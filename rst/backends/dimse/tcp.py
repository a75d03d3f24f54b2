"""Socket options for pynetdicom associations."""

from __future__ import annotations

import contextlib
import socket
from typing import Any

__all__ = ["nodelay"]


def nodelay(event: Any) -> None:
    """EVT_CONN_OPEN handler: disable Nagle's algorithm.

    pynetdicom leaves it on; with small DIMSE messages (C-STORE responses, C-FIND matches)
    waiting for delayed ACKs costs ~40 ms per message on Linux.
    """
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
