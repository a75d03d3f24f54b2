"""WADO-RS metadata from a DIMSE PACS without its bulk data: Composite Instance Retrieve
Without Bulk Data - GET (PS3.4 Annex Z), negotiated, with the full retrieve as fallback.

A PACS answers a C-GET on that SOP class with C-STOREs of the instances with their bulk data
removed (Pixel Data, Float and Double Float Pixel Data, Pixel Data Provider URL, Spectroscopy
Data, Encapsulated Document, Waveform Data, Overlay, Curve and Audio Sample Data): what metadata
needs, at a fraction of the bytes. It only pays when nothing wants the whole instances next.
With the retrieve cache on, a viewer asks for frames right after the metadata, and the full
retrieve that answered the metadata has already put them in the cache; so ``[[aets]] metadata =
"auto"`` uses it only where the AE's cache is off (:func:`wanted`). Such instances never reach
the cache: with ``metadata = "without-bulk-data"`` and the cache on, metadata requests go round
the cache (:class:`AroundCache`).

The C-GET's identifier is at IMAGE level with the SOP Instance UIDs (PS3.4 Z.4.2.1.3.1), so
rst first lists them with Study Root C-FINDs (the series of a study, then the instances of each
series), which also name their SOP classes for the storage contexts; that association proposes
the Annex Z context as well, so a PACS that refuses it costs one association and no C-FIND.
Then one association proposes the Annex Z context and those storage contexts
(:mod:`.proposal`), and sends one C-GET per :data:`BATCH` instances.

Where that does not work, the request falls back to the AE's full retrieve (``retrieve =
"move"`` or ``"get"``) for whatever has not arrived yet:

- the PACS refuses the Annex Z context (or the association, or rst's SCP role): ``refused``;
- it accepts, then fails a C-GET, sends fewer instances than listed, or breaks the association:
  ``failed``;
- the C-FINDs list nothing, or fail: ``unlisted`` (the full retrieve gives the real answer,
  a 404 included).

A PACS that refused or failed is remembered for :data:`REMEMBER_FOR` seconds (per AE, in this
process): until then its metadata requests go straight to the full retrieve (``remembered``) and
do not pay the failed negotiation again. Each fallback is counted by reason
(``rst_metadata_without_bulk_data_fallbacks_total``). A timeout (the PACS went quiet) is not a
fallback: a full retrieve would only wait longer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydicom import Dataset

from rst.backends.dimse.client import Connection, encode_identifier
from rst.backends.dimse.proposal import (
    broad_contexts,
    get_syntaxes,
    per_class_contexts,
    roles_for,
)
from rst.backends.dimse.retrieve import follow
from rst.backends.dimse.sink import InstanceSink
from rst.backends.dimse.ul import PresentationContextRQ, encode_c_get_rq
from rst.backends.dimse.verdict import reconcile
from rst.config import AeConfig, Config
from rst.dicom import uids
from rst.dicom.query import QidoQuery
from rst.dicom.uid import is_valid_uid
from rst.errors import (
    AssociationBroken,
    AssociationRejected,
    DimseFailure,
    PeerProtocolError,
    RstError,
)
from rst.services.protocols import (
    METADATA_ONLY,
    Backend,
    Instance,
    RetrieveKeys,
    StoreSession,
)

if TYPE_CHECKING:
    from rst.backends.dimse.backend import DimseBackend

__all__ = [
    "BATCH",
    "MODEL",
    "REMEMBER_FOR",
    "AroundCache",
    "Memory",
    "around_cache",
    "retrieve_without_bulk_data",
    "wanted",
]

log = logging.getLogger(__name__)

MODEL = uids.WITHOUT_BULK_DATA_GET
FIND_MODEL = uids.STUDY_ROOT_FIND
REMEMBER_FOR = 600.0
"""Seconds a PACS that refused or failed a retrieve without bulk data is not asked again."""
BATCH = 500
"""SOP Instance UIDs in one C-GET identifier: a list of UIDs is one UI value, whose length
(2 bytes in Explicit VR) holds some 1,000 UIDs of 64 characters; half that leaves room."""
OPERATION = "C-GET without bulk data"

Reason = Literal["refused", "failed", "unlisted", "remembered"]


def wanted(config: AeConfig) -> bool:
    """Whether metadata from this AE is to be retrieved without bulk data."""
    return config.metadata == "without-bulk-data" or (
        config.metadata == "auto" and not config.cache
    )


@dataclass
class Memory:
    """What rst remembers of one PACS: until when not to ask it for a retrieve without bulk
    data (it refused or failed)."""

    until: float = float("-inf")

    def remembered(self) -> bool:
        return time.monotonic() < self.until

    def remember(self) -> None:
        self.until = time.monotonic() + REMEMBER_FOR


class _Fallback(RstError):
    """A retrieve without bulk data did not work: the full retrieve takes over."""

    def __init__(self, message: str, reason: Reason) -> None:
        super().__init__(message)
        self.reason = reason


def retrieve_without_bulk_data(
    backend: DimseBackend, keys: RetrieveKeys
) -> AbstractAsyncContextManager[AsyncIterator[Instance]]:
    """The instances *keys* names, without bulk data where the PACS does that, else (or for
    what did not arrive) in full."""
    return _retrieve(backend, keys)


@asynccontextmanager
async def _retrieve(
    backend: DimseBackend, keys: RetrieveKeys
) -> AsyncIterator[AsyncIterator[Instance]]:
    async with aclosing(_instances(backend, keys)) as instances:
        yield instances


async def _instances(backend: DimseBackend, keys: RetrieveKeys) -> AsyncGenerator[Instance]:
    delivered: set[str] = set()
    """SOP Instance UIDs sent already: the fallback skips them."""
    reason: Reason = "remembered"
    if not backend.without_bulk_data.remembered():
        try:
            async with _annex_z(backend, keys) as instances:
                async for instance in instances:
                    delivered.add(instance.sop_instance_uid)
                    yield instance
            return
        except _Fallback as error:
            reason = error.reason
            if reason != "unlisted":
                backend.without_bulk_data.remember()
            log.info(
                "metadata from %s: full retrieve (%s), %d instance(s) had come without bulk data",
                backend.name,
                error.message,
                len(delivered),
            )
    if backend.metrics is not None:
        backend.metrics.without_bulk_data_fallbacks.labels(backend.name, reason).inc()
    async with backend.retrieve(keys) as instances:
        async for instance in instances:
            if instance.sop_instance_uid not in delivered:
                yield instance
            elif instance.rest is not None:
                async for _ in instance.rest:  # read to its end before the next instance
                    pass


@asynccontextmanager
async def _annex_z(
    backend: DimseBackend, keys: RetrieveKeys
) -> AsyncIterator[AsyncIterator[Instance]]:
    listed = await _list(backend, keys)
    if not listed:
        raise _Fallback("the C-FIND listed no instances", "unlisted")
    sink = backend.new_sink()
    async with backend.spooling(sink, _get(backend, listed, sink)) as instances:
        yield instances


async def _list(backend: DimseBackend, keys: RetrieveKeys) -> dict[str, str]:
    """SOP Instance UID → SOP Class UID ("" if the PACS did not say) of every instance *keys*
    names, from Study Root C-FINDs on one association. A failure status or a PACS without
    C-FIND: nothing (the full retrieve will answer).

    The association proposes the Annex Z context too: a PACS that refuses it is found out
    here, before any C-FIND and without a second association (:class:`_Fallback`)."""
    contexts = [
        PresentationContextRQ(1, FIND_MODEL, uids.UNCOMPRESSED),
        PresentationContextRQ(3, MODEL, uids.UNCOMPRESSED),
    ]
    listed: dict[str, str] = {}
    try:
        async with backend.peer.connect(contexts) as connection:
            if not any(abstract == MODEL for abstract, _ in connection.accepted.values()):
                raise _Fallback(f"the PACS refused the context {MODEL}", "refused")
            if keys.series_uid is not None:
                series = [keys.series_uid]
            else:
                study = _query("SERIES", keys.study_uid, SeriesInstanceUID="")
                series = [
                    uid
                    for match in await _matches(backend, connection, study)
                    if is_valid_uid(uid := str(match.get("SeriesInstanceUID", "")))
                ]
            for series_uid in series:
                identifier = _query(
                    "IMAGE",
                    keys.study_uid,
                    SeriesInstanceUID=series_uid,
                    SOPInstanceUID=keys.sop_uid or "",
                    SOPClassUID="",
                )
                for match in await _matches(backend, connection, identifier):
                    uid = str(match.get("SOPInstanceUID", ""))
                    if is_valid_uid(uid):
                        listed[uid] = str(match.get("SOPClassUID", ""))
    except (DimseFailure, AssociationRejected) as error:
        log.info("metadata from %s: no instance list (%s)", backend.name, error.message)
        return {}
    return listed


def _query(level: str, study_uid: str, **keys: str) -> Dataset:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    identifier.StudyInstanceUID = study_uid
    for keyword, value in keys.items():
        setattr(identifier, keyword, value)
    return identifier


async def _matches(
    backend: DimseBackend, connection: Connection, identifier: Dataset
) -> list[Dataset]:
    async with backend.find_on(connection, identifier, FIND_MODEL) as matches:
        return [match async for match in matches]


def _contexts(backend: DimseBackend, classes: Iterable[str]) -> list[PresentationContextRQ]:
    """The Annex Z context and storage contexts for *classes* (all syntaxes as stored, so
    that an instance keeps its stored transfer syntax, which decides the pixel data's VR;
    :mod:`rst.services.metadata`), or the broad proposal if the PACS named no class."""
    syntaxes = get_syntaxes(backend.dimse.transfer_syntaxes, None)
    named = [uid for uid in classes if is_valid_uid(uid)]
    if named:
        return per_class_contexts(MODEL, named, syntaxes)
    return broad_contexts(MODEL, syntaxes)


@asynccontextmanager
async def _get(
    backend: DimseBackend, listed: dict[str, str], sink: InstanceSink
) -> AsyncIterator[AsyncIterator[Instance]]:
    """One association, one C-GET per :data:`BATCH` of *listed*; the sink ends with a
    :class:`_Fallback` if the PACS fails any of them."""
    contexts = _contexts(backend, listed.values())
    roles = roles_for(contexts, MODEL)
    try:
        async with backend.peer.connect(contexts, roles) as connection:
            if not any(abstract == MODEL for abstract, _ in connection.accepted.values()):
                raise _Fallback(f"the PACS refused the context {MODEL}", "refused")
            backend.can_receive(connection, roles, frozenset())
            context_id, syntax = connection.context_for(MODEL)

            async def run() -> None:
                try:
                    await _batches(backend, connection, context_id, syntax, list(listed), sink)
                except (AssociationBroken, PeerProtocolError) as error:
                    sink.finish(_Fallback(error.message, "failed"))
                except _Fallback as error:
                    sink.finish(error)
                else:
                    sink.finish()

            async with backend.streaming(sink, run) as instances:
                yield instances
    except AssociationRejected as error:
        raise _Fallback(error.message, "refused") from None


async def _batches(
    backend: DimseBackend,
    connection: Connection,
    context_id: int,
    syntax: str,
    sop_uids: list[str],
    sink: InstanceSink,
) -> None:
    for start in range(0, len(sop_uids), BATCH):
        batch = sop_uids[start : start + BATCH]
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "IMAGE"
        identifier.SOPInstanceUID = batch if len(batch) > 1 else batch[0]
        msg_id = backend.message_ids.next(backend.peer.calling_aet)
        before = sink.delivered
        final = await follow(
            connection,
            context_id=context_id,
            msg_id=msg_id,
            request=encode_c_get_rq(message_id=msg_id, sop_class_uid=MODEL),
            identifier=encode_identifier(identifier, syntax),
            sink=sink,
            cancel_timeout=backend.config.cancel_timeout,
            calling_aet=backend.peer.calling_aet,
            pacs=backend.name,
        )
        received = sink.delivered - before
        error = reconcile(final, received=received, pacs=backend.name, operation=OPERATION)
        if error is None and received < len(batch):
            error = DimseFailure(
                f"the PACS {backend.name} sent {received} of the {len(batch)} instances listed",
                final.code,
            )
        if error is not None:
            raise _Fallback(error.message, "failed")


class AroundCache:
    """*cached* (the AE behind the retrieve cache) for everything but metadata retrieves,
    which go to *uncached*: instances without bulk data must never enter the cache."""

    def __init__(self, cached: Backend, uncached: Backend) -> None:
        self.cached = cached
        self.uncached = uncached
        self.name = cached.name

    async def echo(self) -> None:
        await self.cached.echo()

    def search(self, query: QidoQuery) -> AbstractAsyncContextManager[AsyncIterator[Dataset]]:
        return self.cached.search(query)

    def retrieve(
        self, keys: RetrieveKeys, prefer: str | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[Instance]]:
        if prefer == METADATA_ONLY:
            return self.uncached.retrieve(keys, prefer)
        return self.cached.retrieve(keys, prefer)

    def store(self) -> AbstractAsyncContextManager[StoreSession]:
        return self.cached.store()


def around_cache(
    config: Config, uncached: dict[str, Backend], cached: dict[str, Backend]
) -> dict[str, Backend]:
    """*cached*, with the metadata retrieves of each AE that retrieves them without bulk data
    while its cache is on going round the cache (:class:`AroundCache`)."""
    served = dict(cached)
    for name, backend in cached.items():
        ae = config.ae(name)
        if isinstance(ae, AeConfig) and ae.cache and wanted(ae) and backend is not uncached[name]:
            served[name] = AroundCache(backend, uncached[name])
    return served
