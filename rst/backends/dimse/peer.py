"""One PACS as rst's DIMSE client sees it: where it is, who rst calls itself, how many
associations at once.

:meth:`Peer.connect` is an async context manager: the association (:mod:`.client`) exists
exactly for the ``async with`` block, and leaving it — normally, by an exception or by
cancellation — releases it (or aborts it). Requests beyond ``max_associations`` wait for a free
slot. Each association is counted in the gateway's metrics (:mod:`rst.metrics`) by operation —
what its first presentation context asks for — with its duration, or with why it could not be
used; and it is logged once when it ends (:mod:`.journal`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager

import trio

from rst.backends.dimse.client import Connection, open_association
from rst.backends.dimse.journal import OUTGOING, AssociationJournal
from rst.backends.dimse.ul import PresentationContextRQ
from rst.config import AeConfig
from rst.dicom import uids
from rst.errors import (
    ArchiveBusy,
    AssociationBroken,
    AssociationRejected,
    BackendTimeout,
    PacsUnreachable,
    PeerProtocolError,
)
from rst.metrics import Metrics

__all__ = ["Peer"]


DIMSE_NAMES = {
    "echo": "C-ECHO",
    "find": "C-FIND",
    "move": "C-MOVE",
    "get": "C-GET",
    "get-without-bulk-data": "C-GET without bulk data",
    "worklist": "C-FIND",
    "store": "C-STORE",
}
"""The DIMSE operation of each label of :data:`OPERATIONS`, for the association's log line."""
OPERATIONS = {
    uids.VERIFICATION: "echo",
    uids.STUDY_ROOT_FIND: "find",
    uids.STUDY_ROOT_MOVE: "move",
    uids.STUDY_ROOT_GET: "get",
    uids.WITHOUT_BULK_DATA_GET: "get-without-bulk-data",
    uids.MODALITY_WORKLIST_FIND: "worklist",
}
"""The operation an association is for, by its first abstract syntax (else a storage class:
``store``), as a metrics label."""
FAILURE_KINDS: tuple[tuple[type[Exception], str], ...] = (
    (PacsUnreachable, "unreachable"),
    (AssociationRejected, "rejected"),
    (ArchiveBusy, "busy"),
    (BackendTimeout, "timeout"),
    (AssociationBroken, "broken"),
    (PeerProtocolError, "broken"),
)
"""Errors that mean the association failed (others, e.g. a study not found, are answers)."""


class Peer:
    """A configured PACS as seen from rst: where it is, who rst calls itself, how many at once."""

    def __init__(
        self, config: AeConfig, *, calling_aet: str, max_pdu: int, metrics: Metrics | None = None
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.calling_aet = calling_aet
        self.max_pdu = max_pdu
        self._slots = trio.Semaphore(config.max_associations)
        self.open_associations = 0
        self.peak_associations = 0
        self.established = 0
        """Associations the PACS accepted that are still open."""

    @property
    def name(self) -> str:
        return self.config.aet

    def saturated(self) -> bool:
        """Whether every slot holds an association the PACS accepted (see :mod:`rst.health`)."""
        return self.established >= self.config.max_associations

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """One of the ``max_associations`` slots (waiting for one at most ``queue_timeout``
        seconds, then :class:`~rst.errors.ArchiveBusy`), counted while held."""
        with trio.move_on_after(self.config.queue_timeout) as waiting:
            await self._slots.acquire()
        if waiting.cancelled_caught:
            raise ArchiveBusy(
                f"all {self.config.max_associations} associations to the PACS {self.name} "
                f"stayed busy for {self.config.queue_timeout:g} s; try again later",
                retry_after=max(1, round(self.config.queue_timeout / 2)),
            )
        self.open_associations += 1
        self.peak_associations = max(self.peak_associations, self.open_associations)
        try:
            yield
        finally:
            self.open_associations -= 1
            self._slots.release()

    @asynccontextmanager
    async def connect(
        self,
        contexts: Sequence[PresentationContextRQ],
        roles: Mapping[str, tuple[bool, bool]] | None = None,
    ) -> AsyncIterator[Connection]:
        """A trio association (:mod:`.client`) in one of this PACS's slots."""
        async with (
            self._metered(contexts[0].abstract_syntax) as (journal, established),
            self.slot(),
            open_association(
                self.config,
                calling_aet=self.calling_aet,
                contexts=contexts,
                roles=roles,
                max_pdu=self.max_pdu,
                journal=journal,
            ) as connection,
        ):
            established()
            yield connection

    @asynccontextmanager
    async def _metered(
        self, abstract_syntax: str
    ) -> AsyncIterator[tuple[AssociationJournal, Callable[[], None]]]:
        """Count and log one association: call the function it yields once the PACS accepted
        it."""
        operation = OPERATIONS.get(abstract_syntax, "store")
        metrics = self.metrics
        started = time.monotonic()
        accepted = False
        journal = AssociationJournal(
            OUTGOING,
            f"{self.config.host}:{self.config.port}",
            peer_aet=self.name,
            operation=DIMSE_NAMES[operation],
        )

        def established() -> None:
            nonlocal accepted
            accepted = True
            self.established += 1
            if metrics is not None:
                metrics.associations_open.labels(self.name).inc()

        try:
            yield journal, established
        except Exception as exc:
            kind = next((kind for cls, kind in FAILURE_KINDS if isinstance(exc, cls)), None)
            if metrics is not None and kind is not None:
                metrics.association_failures.labels(self.name, operation, kind).inc()
            if not accepted:
                if kind == "busy":
                    journal.silent = True  # no association was asked for: the 503 says it
                journal.ended("rejected" if kind == "rejected" else "failed", str(exc))
            raise
        finally:
            if not accepted:
                journal.ended("failed", "cancelled")  # unless it ended otherwise before
            journal.close()
            if accepted:
                self.established -= 1
                if metrics is not None:
                    metrics.associations_open.labels(self.name).dec()
                    metrics.associations.labels(self.name, operation).observe(
                        time.monotonic() - started
                    )
