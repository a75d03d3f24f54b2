"""Associations with one PACS, owned by the trio task that opened them.

:meth:`Peer.associate` is an async context manager: the association exists exactly for the
``async with`` block. Leaving it — normally, by an exception or by cancellation — releases the
association, and aborts it if the PACS does not confirm the release within ``cancel_timeout``.
Requests beyond ``max_associations`` wait for a free slot. Each association is counted in the
gateway's metrics (:mod:`rst.metrics`) by operation — what its first presentation context asks
for — with its duration, or with why it could not be used.

DIMSE operations that produce a stream of responses (C-FIND, C-MOVE, C-GET) run their
pynetdicom generator on a worker thread through :func:`~rst.bridge.iterate_in_thread`;
if the trio side stops early, a C-CANCEL is sent and, after ``cancel_timeout``, the association
is aborted and the thread woken.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio
from pydicom import Dataset
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext

from rst.backends.dimse import uids
from rst.backends.dimse.tcp import tune_connection
from rst.backends.dimse.trio_client import Connection, open_association
from rst.backends.dimse.ul import PresentationContextRQ
from rst.bridge import StreamControl, iterate_in_thread, run_sync
from rst.config import AeConfig
from rst.errors import (
    ArchiveBusy,
    AssociationBroken,
    AssociationRejected,
    BackendTimeout,
    PacsUnreachable,
    PeerProtocolError,
)
from rst.metrics import Metrics

__all__ = ["DimseStream", "Peer", "Response"]

log = logging.getLogger(__name__)

Response = tuple[Dataset, Dataset | None]
"""A DIMSE response: (status dataset, identifier or None). An empty status means the
association was aborted or timed out before a response came."""

OPERATIONS = {
    uids.VERIFICATION: "echo",
    uids.STUDY_ROOT_FIND: "find",
    uids.STUDY_ROOT_MOVE: "move",
    uids.STUDY_ROOT_GET: "get",
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
        # One thread per association at most runs a blocking call; allow a few for cleanup.
        self.threads = trio.CapacityLimiter(config.max_associations * 2)
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
    async def associate(
        self,
        contexts: Sequence[PresentationContext],
        *,
        dimse_timeout: float | None,
        ext_neg: Sequence[Any] = (),
        evt_handlers: Sequence[tuple[Any, Callable[..., Any]]] = (),
    ) -> AsyncIterator[Association]:
        """Open an association proposing *contexts*; release (or abort) it on exit."""
        async with self._metered(str(contexts[0].abstract_syntax)) as established, self.slot():
            assoc = await self._request(contexts, dimse_timeout, ext_neg, evt_handlers)
            established()
            try:
                yield assoc
            finally:
                with trio.CancelScope(shield=True):
                    await self._close(assoc)

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
        """A trio association (:mod:`.trio_client`) in one of this PACS's slots."""
        async with (
            self._metered(contexts[0].abstract_syntax) as established,
            self.slot(),
            open_association(
                self.config,
                calling_aet=self.calling_aet,
                contexts=contexts,
                roles=roles,
                max_pdu=self.max_pdu,
            ) as connection,
        ):
            established()
            yield connection

    @asynccontextmanager
    async def _metered(self, abstract_syntax: str) -> AsyncIterator[Callable[[], None]]:
        """Count one association: call the function it yields once the PACS accepted it."""
        operation = OPERATIONS.get(abstract_syntax, "store")
        metrics = self.metrics
        started = time.monotonic()
        accepted = False

        def established() -> None:
            nonlocal accepted
            accepted = True
            self.established += 1
            if metrics is not None:
                metrics.associations_open.labels(self.name).inc()

        try:
            yield established
        except Exception as exc:
            kind = next((kind for cls, kind in FAILURE_KINDS if isinstance(exc, cls)), None)
            if metrics is not None and kind is not None:
                metrics.association_failures.labels(self.name, operation, kind).inc()
            raise
        finally:
            if accepted:
                self.established -= 1
                if metrics is not None:
                    metrics.associations_open.labels(self.name).dec()
                    metrics.associations.labels(self.name, operation).observe(
                        time.monotonic() - started
                    )

    async def _request(
        self,
        contexts: Sequence[PresentationContext],
        dimse_timeout: float | None,
        ext_neg: Sequence[Any],
        evt_handlers: Sequence[tuple[Any, Callable[..., Any]]],
    ) -> Association:
        cfg = self.config
        ae = AE(ae_title=self.calling_aet)
        ae.requested_contexts = list(contexts)
        ae.acse_timeout = cfg.connect_timeout
        ae.connection_timeout = cfg.connect_timeout
        ae.network_timeout = None
        ae.dimse_timeout = dimse_timeout
        seen: dict[str, Any] = {}

        def on_open(event: Any) -> None:
            seen["connected"] = True
            tune_connection(event)

        def on_acse(event: Any) -> None:
            seen.setdefault("primitive", event.primitive)

        handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, on_open),
            (evt.EVT_ACSE_RECV, on_acse),
            *evt_handlers,
        ]

        def request() -> Association:
            return ae.associate(
                cfg.host,
                cfg.port,
                ae_title=cfg.aet,
                max_pdu=self.max_pdu,
                ext_neg=list(ext_neg) or None,
                evt_handlers=handlers,
            )

        assoc = await run_sync(request, self.threads)
        if assoc.is_established:
            return assoc
        where = cfg.aet  # a client learns the AE title; the PACS's address goes to the log only
        if not seen.get("connected"):
            log.warning("cannot connect to the PACS %s at %s:%s", where, cfg.host, cfg.port)
            raise PacsUnreachable(
                f"cannot connect to the PACS {where} (the log has its address and why)"
            )
        primitive = seen.get("primitive")
        if assoc.is_rejected and primitive is not None:
            raise AssociationRejected(
                f"the PACS {where} rejected the association: {primitive.result_str}, "
                f"source: {primitive.source_str}, reason: {primitive.reason_str} "
                f"(rst called it as {self.calling_aet!r}, called AE title {cfg.aet!r})"
            )
        if primitive is None:
            raise BackendTimeout(f"the PACS {where} did not answer the association request")
        raise AssociationRejected(
            f"the PACS {where} aborted association negotiation (no presentation context "
            "accepted, or the peer closed the connection)"
        )

    async def _close(self, assoc: Association) -> None:
        """Release *assoc*, or abort it if the PACS does not confirm within ``cancel_timeout``.

        Every DIMSE operation on it has ended by now (a stream ends only after its final
        response, or after an abort), so a release is always the right first step, also after
        an error or a cancellation: the PACS keeps a clean log and its association slot.
        """
        if assoc.is_established:
            assoc.acse_timeout = self.config.cancel_timeout
            await run_sync(assoc.release, self.threads)
        if not assoc.is_released and not assoc.is_aborted:
            await run_sync(lambda: force_abort(assoc), self.threads)

    @asynccontextmanager
    async def stream(
        self,
        assoc: Association,
        send: Callable[[], Iterator[Response]],
        *,
        msg_id: int,
        query_model: str,
    ) -> AsyncIterator[DimseStream]:
        """Run ``send()`` — a pynetdicom response generator — on a thread, yielding responses.

        Leaving the block before the final response sends C-CANCEL for *msg_id*; if the PACS
        has not ended the operation after ``cancel_timeout``, the association is aborted.
        """

        def produce(control: StreamControl[Response]) -> None:
            for response in send():
                # Once the consumer is gone, keep draining until the final response so the
                # association stays in a state that can be released.
                control.emit(response)

        def interrupt() -> None:
            if assoc.is_established:
                log.info("sending C-CANCEL for message %d to %s", msg_id, self.name)
                assoc.send_c_cancel(msg_id, query_model=query_model)

        def stop() -> None:
            log.warning("aborting the association with %s: C-CANCEL was not honoured", self.name)
            force_abort(assoc)

        async with iterate_in_thread(
            produce,
            interrupt=interrupt,
            force_stop=stop,
            grace=self.config.cancel_timeout,
            limiter=self.threads,
        ) as responses:
            yield DimseStream(responses)


class DimseStream:
    """The responses of one DIMSE operation, in order, ending after the final one."""

    def __init__(self, channel: trio.MemoryReceiveChannel[Response]) -> None:
        self._channel = channel

    def __aiter__(self) -> DimseStream:
        return self

    async def __anext__(self) -> Response:
        try:
            return await self._channel.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


def force_abort(assoc: Association) -> None:
    """Abort *assoc* and wake any thread blocked waiting for its next DIMSE message.

    pynetdicom's response generators block on the DIMSE message queue for up to the DIMSE
    timeout, even after a local abort; an empty message makes them end at once.
    """
    assoc.abort()
    assoc.dimse.msg_queue.put((None, None))
