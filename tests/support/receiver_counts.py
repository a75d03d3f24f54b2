"""What rst's C-STORE receiver counted, read from its metrics (``rst_receiver_*``)."""

from __future__ import annotations

from rst.backends.dimse.receiver import StoreReceiver

__all__ = ["refused", "stores"]


def stores(receiver: StoreReceiver, outcome: str) -> int:
    """C-STOREs the receiver answered with *outcome* (accepted, unsolicited, failed)."""
    return int(receiver.metrics.total("rst_receiver_stores_total", outcome=outcome))


def refused(receiver: StoreReceiver, reason: str) -> int:
    """Connections the receiver refused for *reason* (unknown_caller, limit, tls,
    handshake_timeout)."""
    return int(receiver.metrics.total("rst_receiver_refused_total", reason=reason))
