"""Socket and reactor tuning for pynetdicom associations (set when the connection opens)."""

from __future__ import annotations

import contextlib
import socket
from typing import Any

__all__ = ["nodelay", "tune_connection"]

# pynetdicom's DUL reactor sleeps this long whenever a loop found nothing to do (default 1 ms).
# While a study streams in, that sleep caps a receiving association at about one 128 KiB PDU per
# millisecond; a shorter sleep trades a little idle CPU, only while an association is open, for
# throughput. (A trio-native receiver will remove the polling altogether.)
RUN_LOOP_DELAY = 0.0001


def nodelay(event: Any) -> None:
    """EVT_CONN_OPEN handler: disable Nagle's algorithm.

    pynetdicom leaves it on; with small DIMSE messages (C-STORE responses, C-FIND matches)
    waiting for delayed ACKs costs ~40 ms per message on Linux.
    """
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def tune_connection(event: Any) -> None:
    """EVT_CONN_OPEN handler for associations that carry bulk data: Nagle off, short polls."""
    nodelay(event)
    dul = event.assoc.dul
    if hasattr(dul, "_run_loop_delay"):
        dul._run_loop_delay = RUN_LOOP_DELAY
