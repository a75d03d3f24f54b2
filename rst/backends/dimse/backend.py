"""The DIMSE backend: QIDO-RS → C-FIND, WADO-RS → C-MOVE (or C-GET), STOW-RS → C-STORE."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, ExitStack, aclosing, asynccontextmanager

import trio
from pydicom import Dataset

from rst.backends.dimse.client import BROKEN, Connection, broken_association, encode_identifier
from rst.backends.dimse.find import find
from rst.backends.dimse.mediator import Mediator, MessageIds, Subscription
from rst.backends.dimse.outcome import status_of
from rst.backends.dimse.peer import Peer
from rst.backends.dimse.proposal import (
    broad_contexts,
    get_syntaxes,
    per_class_contexts,
    roles_for,
)
from rst.backends.dimse.retrieve import follow
from rst.backends.dimse.sink import InstanceSink
from rst.backends.dimse.store import DimseStoreSession
from rst.backends.dimse.ul import (
    OtherCommand,
    PresentationContextRQ,
    encode_c_echo_rq,
    encode_c_get_rq,
    encode_c_move_rq,
)
from rst.backends.dimse.verdict import arrivals, conclude
from rst.backends.dimse.without_bulk_data import Memory, retrieve_without_bulk_data, wanted
from rst.config import AeConfig, DimseConfig
from rst.dicom import uids
from rst.dicom.query import Model, QidoQuery
from rst.dicom.statuses import Status, is_success
from rst.errors import (
    AssociationBroken,
    AssociationRejected,
    BackendTimeout,
    DimseFailure,
    NotSupported,
    PeerProtocolError,
)
from rst.groups import collapse
from rst.metrics import Metrics
from rst.services.protocols import METADATA_ONLY, Instance, RetrieveKeys

__all__ = ["DimseBackend"]

log = logging.getLogger(__name__)

FIND_MODEL = uids.STUDY_ROOT_FIND
FIND_MODELS: dict[Model, str] = {
    "study-root": uids.STUDY_ROOT_FIND,
    "worklist": uids.MODALITY_WORKLIST_FIND,
}
"""The C-FIND SOP class of each information model a search may run in."""
MOVE_MODEL = uids.STUDY_ROOT_MOVE
GET_MODEL = uids.STUDY_ROOT_GET


class DimseBackend:
    """One PACS reached over DIMSE."""

    def __init__(
        self,
        config: AeConfig,
        dimse: DimseConfig,
        *,
        calling_aet: str,
        mediator: Mediator,
        message_ids: MessageIds,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.dimse = dimse
        self.name = config.aet
        self.peer = Peer(config, calling_aet=calling_aet, max_pdu=dimse.max_pdu, metrics=metrics)
        self.mediator = mediator
        self.message_ids = message_ids
        self.metrics = metrics
        self.without_bulk_data = Memory()
        """Whether the PACS refused or failed a retrieve without bulk data lately."""

    def saturated(self) -> bool:
        """Whether every association slot is held by an open association (:mod:`rst.health`)."""
        return self.peer.saturated()

    # -- verification --------------------------------------------------------------------------

    async def echo(self) -> None:
        status = await self._echo()
        if status is None:
            raise BackendTimeout(
                f"the PACS {self.name} did not answer C-ECHO within {self.config.find_timeout:g} s"
            )
        if not is_success(status.code):
            raise DimseFailure(
                f"the PACS {self.name} answered C-ECHO with status {status}", status.code
            )

    async def _echo(self) -> Status | None:
        """The C-ECHO's status, or ``None`` if none came within ``find_timeout``."""
        contexts = [PresentationContextRQ(1, uids.VERIFICATION, uids.UNCOMPRESSED)]
        async with self.peer.connect(contexts) as connection:
            context_id, _ = connection.context_for(uids.VERIFICATION)
            msg_id = self.message_ids.next(self.peer.calling_aet)
            with trio.move_on_after(self.config.find_timeout):
                try:
                    await connection.send(context_id, encode_c_echo_rq(message_id=msg_id))
                    _, response = await connection.receive_command()
                except BROKEN as exc:
                    connection.broken = True
                    raise broken_association(exc, self.name, "a C-ECHO") from None
                status = status_of(response) if isinstance(response, OtherCommand) else None
                if status is not None:
                    return status
                connection.broken = True
                raise PeerProtocolError(f"the PACS {self.name} answered C-ECHO with {response!r}")
            connection.broken = True
            return None

    # -- QIDO-RS -------------------------------------------------------------------------------

    def search(self, query: QidoQuery) -> AbstractAsyncContextManager[AsyncIterator[Dataset]]:
        """C-FIND at the query's level, in its information model (study root or modality
        worklist); matches stream out as the PACS sends them.

        Leaving the block early (limit reached, client gone) sends C-CANCEL. A PACS that
        refuses the worklist's presentation context does not offer worklists:
        :class:`~rst.errors.NotSupported`."""
        return self._find(query.identifier, FIND_MODELS[query.model])

    @staticmethod
    def _find_syntaxes(model: str) -> list[str]:
        """The abstract syntaxes of a C-FIND association. A worklist search also proposes
        Verification, so that a PACS without worklists still accepts the association and its
        refusal of the worklist context reads as what it is (see :meth:`_offers`)."""
        return [model] if model == FIND_MODEL else [model, uids.VERIFICATION]

    def _offers(self, model: str, accepted: bool) -> None:
        """Raise NotSupported when the PACS refused the worklist model's context."""
        if not accepted and model == uids.MODALITY_WORKLIST_FIND:
            raise NotSupported(
                f"the PACS {self.name} does not offer Modality Worklist queries (it refused "
                f"the presentation context for {model})"
            )

    @asynccontextmanager
    async def _find(
        self, identifier: Dataset, model: str = FIND_MODEL
    ) -> AsyncIterator[AsyncIterator[Dataset]]:
        contexts = [
            PresentationContextRQ(1 + 2 * n, uid, uids.UNCOMPRESSED)
            for n, uid in enumerate(self._find_syntaxes(model))
        ]
        async with self.peer.connect(contexts) as connection:
            self._offers(model, any(a == model for a, _ in connection.accepted.values()))
            async with self.find_on(connection, identifier, model) as matches:
                yield matches

    def find_on(
        self, connection: Connection, identifier: Dataset, model: str
    ) -> AbstractAsyncContextManager[AsyncIterator[Dataset]]:
        """One C-FIND on an open association, with this PACS's message IDs and timeouts."""
        return find(
            connection,
            identifier,
            model=model,
            msg_id=self.message_ids.next(self.peer.calling_aet),
            find_timeout=self.config.find_timeout,
            cancel_timeout=self.config.cancel_timeout,
            calling_aet=self.peer.calling_aet,
            pacs=self.name,
        )

    # -- WADO-RS -------------------------------------------------------------------------------

    def _identifier(self, keys: RetrieveKeys) -> Dataset:
        ds = Dataset()
        ds.QueryRetrieveLevel = keys.level
        ds.StudyInstanceUID = keys.study_uid
        if keys.series_uid is not None:
            ds.SeriesInstanceUID = keys.series_uid
        if keys.sop_uid is not None:
            ds.SOPInstanceUID = keys.sop_uid
        return ds

    def new_sink(self) -> InstanceSink:
        """A sink for one retrieve's instances, as configured."""
        return self._sink()

    def spooling(
        self, sink: InstanceSink, retrieve: AbstractAsyncContextManager[AsyncIterator[Instance]]
    ) -> AbstractAsyncContextManager[AsyncIterator[Instance]]:
        """*retrieve*, then its spool closed and counted."""
        return self._spooling(sink, retrieve)

    def can_receive(
        self,
        connection: Connection,
        proposed: dict[str, tuple[bool, bool]],
        needed: frozenset[str],
    ) -> None:
        """Raise unless the PACS lets rst take C-STOREs on this C-GET association."""
        self._can_receive(connection, proposed, needed)

    @asynccontextmanager
    async def streaming(
        self, sink: InstanceSink, run: Callable[[], Awaitable[None]]
    ) -> AsyncIterator[AsyncGenerator[Instance]]:
        """Run *run* (the operation that fills *sink*) beside the block, which gets *sink*'s
        instances as they arrive, each waited for within the AE's timeouts; leaving the block
        closes the sink and cancels *run*."""
        with collapse():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run)
                try:
                    async with aclosing(self._arrivals(sink)) as instances:
                        yield instances
                finally:
                    sink.close()
                    nursery.cancel_scope.cancel()

    def _sink(self) -> InstanceSink:
        return InstanceSink(
            capacity=self.dimse.channel_size,
            stall_timeout=self.dimse.stall_timeout,
            spool_dir=self.dimse.spool_dir,
            spool_max_bytes=self.dimse.spool_max_bytes,
            idle_timeout=self.config.idle_timeout,
            # bytes on disk now; back to 0 when the retrieve ends (the sink's close)
            spool_held=self.metrics.spool_held.labels(self.name) if self.metrics else None,
        )

    def retrieve(
        self, keys: RetrieveKeys, prefer: str | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[Instance]]:
        """C-MOVE into rst's receiver or C-GET, at exactly the level of *keys*.

        With C-GET, rst negotiates the transfer syntaxes for this request alone: *prefer*
        (an uncompressed syntax) makes the PACS send uncompressed data; ``None`` lets it send
        instances as stored. C-MOVE sub-operations arrive at the shared receiver, whose order
        of preference (``[dimse] transfer_syntaxes``) applies to every retrieve.

        *prefer* :data:`~rst.services.protocols.METADATA_ONLY`: where the AE's ``metadata``
        says so, Composite Instance Retrieve Without Bulk Data (:mod:`.without_bulk_data`);
        else the instances as stored."""
        if prefer == METADATA_ONLY:
            if wanted(self.config):
                return retrieve_without_bulk_data(self, keys)
            prefer = None
        get = self.config.retrieve == "get"
        sink = self._sink()
        return self._spooling(sink, self._retrieve(keys, prefer, sink, get=get))

    @asynccontextmanager
    async def _spooling(
        self, sink: InstanceSink, retrieve: AbstractAsyncContextManager[AsyncIterator[Instance]]
    ) -> AsyncIterator[AsyncIterator[Instance]]:
        """*retrieve*, then its spool closed and counted."""
        try:
            async with retrieve as instances:
                yield instances
        finally:
            sink.close()
            if self.metrics is not None and sink.spooled_bytes:
                self.metrics.spooled_instances.labels(self.name).inc(sink.spooled)
                self.metrics.spooled_bytes.labels(self.name).inc(sink.spooled_bytes)

    def _subscription(self, sink: InstanceSink, keys: RetrieveKeys, msg_id: int) -> Subscription:
        correlation = self.config.correlation
        return Subscription(
            sink,
            keys.study_uid,
            keys.series_uid,
            keys.sop_uid,
            originator=(self.peer.calling_aet, msg_id),
            uid_fallback=correlation != "move-originator",
            trust_originator=correlation != "uid",
        )

    @asynccontextmanager
    async def _retrieve(
        self, keys: RetrieveKeys, prefer: str | None, sink: InstanceSink, *, get: bool
    ) -> AsyncIterator[AsyncIterator[Instance]]:
        """C-MOVE or C-GET: the association's responses end the sink with the verdict, the
        caller reads the instances."""
        msg_id = self.message_ids.next(self.peer.calling_aet)
        operation = "C-GET" if get else "C-MOVE"
        if get:
            contexts, needed = await self._get_contexts(keys, prefer)
            roles = roles_for(contexts, GET_MODEL)
        else:
            contexts, roles = [PresentationContextRQ(1, MOVE_MODEL, uids.UNCOMPRESSED)], {}
            needed = frozenset()
        with ExitStack() as stack:
            if not get:
                stack.enter_context(self.mediator.subscribe(self._subscription(sink, keys, msg_id)))
            async with self.peer.connect(contexts, roles) as connection:
                model = GET_MODEL if get else MOVE_MODEL
                context_id, syntax = connection.context_for(model)
                if get:
                    self._can_receive(connection, roles, needed)
                request = (
                    encode_c_get_rq(message_id=msg_id, sop_class_uid=model)
                    if get
                    else encode_c_move_rq(
                        message_id=msg_id, sop_class_uid=model, move_destination=self.dimse.aet
                    )
                )
                identifier = encode_identifier(self._identifier(keys), syntax)

                async def run() -> None:
                    try:
                        final = await follow(
                            connection,
                            context_id=context_id,
                            msg_id=msg_id,
                            request=request,
                            identifier=identifier,
                            sink=sink if get else None,
                            cancel_timeout=self.config.cancel_timeout,
                            calling_aet=self.peer.calling_aet,
                            pacs=self.name,
                        )
                    except (AssociationBroken, PeerProtocolError) as error:
                        log.warning("%s (%s of %s)", error.message, operation, keys)
                        sink.finish(error)  # what arrived before still goes out, then the error
                        return
                    verdict = await conclude(
                        final,
                        received=sink.delivered,
                        keys=keys,
                        pacs=self.name,
                        operation=operation,
                        exists=lambda: self._exists(keys),
                    )
                    sink.finish(verdict)

                async with self.streaming(sink, run) as instances:
                    yield instances

    async def _get_contexts(
        self, keys: RetrieveKeys, prefer: str | None
    ) -> tuple[list[PresentationContextRQ], frozenset[str]]:
        """The presentation contexts of a C-GET (:mod:`~rst.backends.dimse.proposal`): one per
        class and syntax when the PACS names the study's SOP classes, the broad set otherwise
        (or when there is no compressed syntax to propose, where the two do the same); and the
        classes the PACS must accept for anything to arrive (the study's, when it named them;
        otherwise any proposed)."""
        syntaxes = get_syntaxes(self.dimse.transfer_syntaxes, prefer)
        if all(ts in uids.NATIVE_SYNTAXES for ts in syntaxes):
            return broad_contexts(GET_MODEL, syntaxes), frozenset()
        classes = await self._classes_in_study(keys.study_uid)
        if not classes:
            log.debug("C-GET from %s: broad proposal (no SOP Classes in Study)", self.name)
            return broad_contexts(GET_MODEL, syntaxes), frozenset()
        log.debug("C-GET from %s: per-class proposal for %s", self.name, ", ".join(classes))
        return per_class_contexts(GET_MODEL, classes, syntaxes), frozenset(classes)

    async def _classes_in_study(self, study_uid: str) -> list[str]:
        """The SOP classes of the study, from a study-level C-FIND with SOP Classes in Study
        (0008,0062); empty if the PACS does not return them (dcmqrscp), does not offer C-FIND
        (the association also proposes the C-GET model, so that such a PACS still accepts it
        and its refusal reads as what it is) or answers with a failure status. Anything else
        (unreachable, busy, silent, a broken protocol) is raised: the C-GET would meet it too."""
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = study_uid
        identifier.SOPClassesInStudy = ""
        contexts = [
            PresentationContextRQ(1 + 2 * n, uid, uids.UNCOMPRESSED)
            for n, uid in enumerate((FIND_MODEL, GET_MODEL))
        ]
        classes: list[str] = []
        async with self.peer.connect(contexts) as connection:
            if not any(a == FIND_MODEL for a, _ in connection.accepted.values()):
                log.info("C-GET from %s: no SOP classes (no C-FIND)", self.name)
                return []
            try:
                async with self.find_on(connection, identifier, FIND_MODEL) as matches:
                    async for match in matches:
                        classes += _values(match.get("SOPClassesInStudy"))
            except DimseFailure as error:
                log.info("C-GET from %s: no SOP classes (%s)", self.name, error.message)
                return []
        return sorted(set(classes))

    def _can_receive(
        self,
        connection: Connection,
        proposed: dict[str, tuple[bool, bool]],
        needed: frozenset[str],
    ) -> None:
        """Raise unless the PACS lets rst take C-STOREs on this C-GET association: a storage
        context accepted with the SCP role rst proposed for it. Without a role selection item
        in the answer, the roles are the default ones (PS3.7 D.3.3.4): rst is only SCU, and the
        PACS could send nothing; rst says so instead of sending the C-GET. The same if it
        accepted none of the storage classes (with the per-class proposal: none of the
        study's)."""
        accepted = {abstract for abstract, _ in connection.accepted.values()}
        storage = accepted & set(needed or proposed)
        proposed = {uid: role for uid, role in proposed.items() if not needed or uid in needed}
        advice = 'retrieve by C-MOVE (retrieve = "move") from this PACS'
        if not storage:
            shown = ", ".join(sorted(proposed)[:3]) + (", …" if len(proposed) > 3 else "")
            raise AssociationRejected(
                f"the PACS {self.name} cannot send instances on a C-GET association: it "
                f"refused each of the {len(proposed)} storage classes rst proposed ({shown}) "
                f"with rst in the SCP role (SCP/SCU role selection); {advice}"
            )
        roles = connection.accept.roles
        if not any(roles.get(uid, (True, False))[1] for uid in storage):
            raise AssociationRejected(
                f"the PACS {self.name} cannot send instances on a C-GET association: of the "
                f"{len(proposed)} storage classes rst proposed it accepted {len(storage)}, and "
                f"rst as their SCP for none (SCP/SCU role selection); {advice}"
            )

    def _arrivals(self, sink: InstanceSink) -> AsyncGenerator[Instance]:
        return arrivals(
            sink,
            pacs=self.name,
            first_timeout=self.config.first_store_timeout,
            idle_timeout=self.config.idle_timeout,
        )

    async def _exists(self, keys: RetrieveKeys) -> bool:
        """Whether the PACS has anything at *keys* (a C-FIND): the question the verdict asks
        to tell "not found" from "failed"."""
        async with self._find(self._identifier(keys)) as matches:
            async for _ in matches:
                return True
        return False

    # -- STOW-RS -------------------------------------------------------------------------------

    @asynccontextmanager
    async def store(self) -> AsyncIterator[DimseStoreSession]:
        session = DimseStoreSession(
            self.peer, pacs=self.name, store_timeout=self.config.store_timeout
        )
        try:
            yield session
        finally:
            with trio.CancelScope(shield=True):
                await session.aclose()


def _values(value: object) -> list[str]:
    """The strings of a multi-valued element's value (pydicom: ``None``, ``""``, one ``str``
    or a ``MultiValue``)."""
    if not value:
        return []
    if isinstance(value, str):
        return [value]
    return [str(item) for item in value] if isinstance(value, Iterable) else []
