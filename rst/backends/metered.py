"""A :class:`~rst.services.protocols.Backend` that counts its retrieves and how they ended.

It wraps each archive — DIMSE or S3 — right behind the retrieve cache, so the counts are of
what was asked *of the archive* (a retrieve served by the cache is a cache hit, counted
there). One outcome per retrieve (``rst_retrieves_total``):

- ``complete``: every instance arrived and the archive said so;
- ``partial``: the retrieve failed after instances had arrived, or the archive sent fewer than
  it announced (:class:`~rst.errors.IncompleteRetrieve`);
- ``not_found``: the archive has nothing under those UIDs;
- ``failed``: the retrieve failed before any instance arrived;
- ``cancelled``: the request stopped reading first (client gone, limit, shutdown).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager

from pydicom import Dataset

from rst.dicom.query import QidoQuery
from rst.errors import (
    AssociationBroken,
    BackendTimeout,
    IncompleteRetrieve,
    NotFound,
    PeerProtocolError,
    RstError,
    StorageError,
)
from rst.metrics import Metrics
from rst.services.protocols import Backend, Instance, RetrieveKeys, StoreSession

__all__ = ["MeteredBackend", "metered", "retrieve_outcome"]

MIDWAY_ERRORS = (
    IncompleteRetrieve,
    BackendTimeout,
    AssociationBroken,
    PeerProtocolError,
    StorageError,
)
"""Errors of the archive that can reach the consumer while it reads an instance's rest."""


def retrieve_outcome(error: BaseException | None, *, received: int, ended: bool) -> str:
    """The outcome label of a retrieve that *received* instances and ended (*ended*: its
    iterator was read to its end) or stopped, with the archive's *error* if any."""
    if error is None:
        return "complete" if ended else "cancelled"
    if isinstance(error, NotFound):
        return "not_found"
    if isinstance(error, IncompleteRetrieve) or received:
        return "partial"
    return "failed"


class MeteredBackend:
    """*inner*, counted in *metrics* under the AE title *aet* (default: its name)."""

    def __init__(self, inner: Backend, metrics: Metrics, *, aet: str | None = None) -> None:
        self.inner = inner
        self.metrics = metrics
        self.name = inner.name
        self.aet = aet or inner.name

    async def echo(self) -> None:
        await self.inner.echo()

    def search(self, query: QidoQuery) -> AbstractAsyncContextManager[AsyncIterator[Dataset]]:
        return self.inner.search(query)

    def store(self) -> AbstractAsyncContextManager[StoreSession]:
        return self.inner.store()

    def retrieve(
        self, keys: RetrieveKeys, prefer: str | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[Instance]]:
        return self._retrieve(keys, prefer)

    @asynccontextmanager
    async def _retrieve(
        self, keys: RetrieveKeys, prefer: str | None
    ) -> AsyncIterator[AsyncIterator[Instance]]:
        tally = _Tally()
        error: BaseException | None = None
        try:
            async with (
                self.inner.retrieve(keys, prefer) as instances,
                aclosing(tally.follow(instances)) as counted,
            ):
                tally.held = True
                yield counted
        except RstError as exc:
            # From the iterator, from opening or closing the retrieve, or — only these count
            # as the archive's — from an instance's rest while the consumer read it.
            if exc is tally.error or not tally.held or isinstance(exc, MIDWAY_ERRORS):
                error = exc
            raise
        finally:
            error = error or tally.error
            outcome = retrieve_outcome(error, received=tally.received, ended=tally.ended)
            self.metrics.retrieves.labels(self.aet, outcome).inc()
            if tally.received:
                self.metrics.retrieved_instances.labels(self.aet).inc(tally.received)
            error = tally.error = None  # the error's traceback holds this frame: no cycle


class _Tally:
    def __init__(self) -> None:
        self.received = 0
        self.ended = False
        self.held = False
        """Whether the consumer holds the iterator (errors may then be its own)."""
        self.error: RstError | None = None

    async def follow(self, instances: AsyncIterator[Instance]) -> AsyncGenerator[Instance]:
        while True:
            try:
                instance = await anext(instances)
            except StopAsyncIteration:
                self.ended = True
                return
            except RstError as exc:
                self.error = exc
                raise
            self.received += 1
            yield instance


def metered(backends: dict[str, Backend], metrics: Metrics) -> dict[str, Backend]:
    """Each of *backends* counted in *metrics* under its AE title."""
    return {name: MeteredBackend(backend, metrics, aet=name) for name, backend in backends.items()}
