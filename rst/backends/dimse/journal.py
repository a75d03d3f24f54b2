"""One log line per DIMSE association, written when it ends.

Each association rst opens to a PACS (:mod:`.peer`, :mod:`.client`) and each one a PACS opens
to rst's receiver (:mod:`.receiver`) keeps an :class:`AssociationJournal` while it lasts: who the
peer is, what was asked on it, how it ended. :meth:`AssociationJournal.close` writes it once, at
INFO, as a readable message and as fields (``extra=``) that the JSON log format
(:class:`rst.logs.JsonFormatter`) emits one by one — the list is in
``docs/discussion/operations.md``. The peer's host and port go to the log only, never to an
HTTP client or a metric label.

An outgoing association runs in the task of the request it serves, so its line carries that
request's id like every other line. An incoming one serves whichever retrieves its C-STOREs
are matched to; the receiver sets the request id of the latest one on its task as it matches
(:meth:`AssociationJournal.served`), and the line lists them all (``request_ids``).

The C-ECHOs of the background archive checks (:mod:`rst.health`) log at DEBUG while they
succeed: one line per PACS every ``[health] interval`` would bury the rest.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Literal

from rst import logs

__all__ = ["INCOMING", "OUTGOING", "AssociationJournal"]

log = logging.getLogger(__name__)

Direction = Literal["outgoing", "incoming"]
OUTGOING: Direction = "outgoing"
"""rst → PACS: an association rst requested."""
INCOMING: Direction = "incoming"
"""PACS → rst: an association to rst's C-STORE receiver."""

Outcome = Literal["released", "aborted", "rejected", "failed", "passed"]
Side = Literal["rst", "peer"]


@dataclass
class AssociationJournal:
    """What one association did, for its log line."""

    direction: Direction
    peer: str
    """host:port of the peer (the log only)."""
    peer_aet: str = ""
    """For an outgoing association the configured AE's name; for an incoming one the calling
    AE title."""
    operation: str = ""
    """What an outgoing association is for (``C-FIND``, ``C-MOVE``, …)."""
    started: float = field(default_factory=time.monotonic)
    outcome: Outcome | None = None
    aborted_by: Side | None = None
    reason: str = ""
    status: int | None = None
    """The final DIMSE status of the last operation (outgoing)."""
    stores: int = 0
    """C-STORE sub-operations received (incoming, or on a C-GET association)."""
    stores_refused: int = 0
    bytes: int = 0
    """Bytes of data sets received in C-STOREs (incoming)."""
    echoes: int = 0
    request_ids: list[str] = field(default_factory=list)
    silent: bool = False
    """No association came to be (no free slot): nothing to log."""
    _closed: bool = False

    def ended(
        self, outcome: Outcome, reason: str = "", *, by: Literal["rst", "peer"] | None = None
    ) -> None:
        """How the association ended; the first word counts (an abort by the peer stays one
        when rst then closes the connection)."""
        if self.outcome is None:
            self.outcome, self.reason, self.aborted_by = outcome, reason, by

    def served(self, request_id: str, aet: str | None) -> None:
        """A C-STORE of this (incoming) association went to the request *request_id* (for the
        archive *aet*): the log lines the association's task writes from now on carry them."""
        if request_id not in self.request_ids:
            self.request_ids.append(request_id)
        logs.request_id.set(request_id)
        logs.request_aet.set(aet)

    @property
    def operations(self) -> str:
        if self.direction == OUTGOING:
            return self.operation
        parts = [f"{self.stores} C-STORE"] if self.stores or not self.echoes else []
        if self.echoes:
            parts.append(f"{self.echoes} C-ECHO")
        return ", ".join(parts)

    def close(self, default: Outcome = "released") -> None:
        """Write the line (once)."""
        if self._closed or self.silent:
            return
        self._closed = True
        outcome = self.outcome or default
        duration = time.monotonic() - self.started
        fields: dict[str, object] = {
            "direction": self.direction,
            "peer_aet": self.peer_aet,
            "peer": self.peer,
            "operation": self.operations,
            "duration_s": round(duration, 3),
            "outcome": outcome,
        }
        how: str = outcome
        if self.aborted_by is not None:
            fields["aborted_by"] = self.aborted_by
            how += f" by {'rst' if self.aborted_by == 'rst' else 'the peer'}"
        if self.reason:
            fields["reason"] = self.reason
            how += f" ({self.reason})"
        if self.direction == OUTGOING:
            arrow = f"rst → {self.peer_aet} at {self.peer}"
            if self.status is not None:
                fields["status"] = f"0x{self.status:04X}"
                how += f", status 0x{self.status:04X}"
        else:
            arrow = f"{self.peer_aet or '?'} at {self.peer} → rst's receiver"
            if self.request_ids:
                fields["request_ids"] = list(self.request_ids)
        if self.direction == INCOMING or self.stores:  # incoming, or a C-GET's sub-operations
            fields.update(stores=self.stores, stores_refused=self.stores_refused, bytes=self.bytes)
            if self.stores_refused:
                how += f", {self.stores_refused} C-STORE refused"
            how += f", {self.stores} C-STORE received, {self.bytes} bytes"
        # The background checks' C-ECHOs (rst.health, every few seconds, outside any request)
        # would drown the rest: at DEBUG while they succeed.
        routine = (
            self.operation == "C-ECHO" and outcome == "released" and logs.request_id.get() == "-"
        )
        log.log(
            logging.DEBUG if routine else logging.INFO,
            "association %s: %s, %s after %.3f s",
            arrow,
            self.operations or "nothing",
            how,
            duration,
            extra={"association": fields},
        )
