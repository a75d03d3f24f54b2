"""rst's built-in C-STORE SCP: the destination of every C-MOVE.

It is started once with the server and accepts associations from any PACS. Each C-STORE is
routed by the :class:`~rst.backends.dimse.mediator.Mediator` to the retrieve that asked for it,
and answered only after the instance has been handed to that retrieve's sink (in memory, or
spooled when the HTTP client is too slow). Instances nobody waits for are refused, not stored.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import trio
from pydicom.filereader import read_dataset
from pydicom.uid import UID
from pynetdicom import AE, evt
from pynetdicom.presentation import AllStoragePresentationContexts

from rst.backends.dimse.mediator import Mediator, Subscription
from rst.backends.dimse.sink import (
    STATUS_OUT_OF_RESOURCES,
    STATUS_REFUSED,
    STATUS_SUCCESS,
    InstanceSink,
    hand_off,
)
from rst.backends.dimse.tcp import tune_connection
from rst.backends.dimse.uids import VERIFICATION
from rst.bridge import Portal, run_sync
from rst.config import DimseConfig
from rst.services.protocols import Instance

__all__ = ["StoreReceiver", "handle_store", "instance_from_event"]

log = logging.getLogger(__name__)

STATUS_CANNOT_UNDERSTAND = 0xC000


def instance_from_event(event: Any) -> Instance:
    """The Part 10 bytes of a C-STORE request, with the transfer syntax of the context used."""
    request = event.request
    return Instance(
        data=event.encoded_dataset(include_meta=True),
        sop_class_uid=str(request.AffectedSOPClassUID),
        sop_instance_uid=str(request.AffectedSOPInstanceUID),
        transfer_syntax=str(event.context.transfer_syntax),
    )


def handle_store(portal: Portal, sink: InstanceSink, instance: Instance) -> int:
    """Hand *instance* to *sink* from a pynetdicom thread; return the C-STORE status.

    Blocks while the sink is full (backpressure), up to the sink's stall timeout; then spools.
    """
    try:
        status: int = portal.run(hand_off, sink, instance)
        return status
    except trio.RunFinishedError:
        return STATUS_OUT_OF_RESOURCES


class StoreReceiver:
    """The C-STORE SCP that receives C-MOVE sub-operations for every configured PACS."""

    def __init__(self, config: DimseConfig, mediator: Mediator) -> None:
        self.config = config
        self.mediator = mediator
        self.address: tuple[str, int] | None = None
        self.received = 0
        self.refused = 0

    def _make_ae(self) -> AE:
        ae = AE(ae_title=self.config.aet)
        ae.maximum_pdu_size = self.config.max_pdu
        ae.maximum_associations = 64
        ae.network_timeout = 60
        ae.dimse_timeout = 60
        ae.acse_timeout = 30
        syntaxes = list(self.config.transfer_syntaxes)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(str(context.abstract_syntax), syntaxes)
        ae.add_supported_context(VERIFICATION)
        return ae

    async def run(self, *, task_status: trio.TaskStatus[tuple[str, int]]) -> None:
        """Serve until cancelled; report the bound (host, port) through *task_status*."""
        portal = Portal()
        ae = self._make_ae()

        def on_store(event: Any) -> int:
            return self._on_store(portal, event)

        handlers: list[Any] = [(evt.EVT_C_STORE, on_store), (evt.EVT_CONN_OPEN, tune_connection)]
        server = await run_sync(
            lambda: ae.start_server(
                (self.config.host, self.config.port), block=False, evt_handlers=handlers
            )
        )
        assert server is not None  # block=False always returns the server
        try:
            self.address = server.server_address[:2]
            log.info("C-STORE receiver %s listening on %s:%s", self.config.aet, *self.address)
            task_status.started(self.address)
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await run_sync(server.shutdown)

    def _on_store(self, portal: Portal, event: Any) -> int:
        request = event.request
        originator = request.MoveOriginatorApplicationEntityTitle
        message_id = request.MoveOriginatorMessageID
        sub: Subscription | None = None
        try:
            if originator and message_id is not None:
                sub = portal.run_sync(self.mediator.by_originator, str(originator), message_id)
            if sub is None and portal.run_sync(self.mediator.needs_uids):
                study, series = _study_series(request.DataSet, event.context.transfer_syntax)
                sub = portal.run_sync(
                    self.mediator.by_uids, study, series, str(request.AffectedSOPInstanceUID)
                )
        except trio.RunFinishedError:
            return STATUS_OUT_OF_RESOURCES
        except Exception:
            log.exception("cannot read C-STORE request %s", request.AffectedSOPInstanceUID)
            return STATUS_CANNOT_UNDERSTAND
        if sub is None:
            self.refused += 1
            log.warning(
                "refused unsolicited C-STORE of %s from %s (originator %r, message id %r)",
                request.AffectedSOPInstanceUID,
                event.assoc.requestor.ae_title,
                originator,
                message_id,
            )
            return STATUS_REFUSED
        status = handle_store(portal, sub.sink, instance_from_event(event))
        if status == STATUS_SUCCESS:
            self.received += 1
        return status


def _study_series(dataset: io.BytesIO, transfer_syntax: UID) -> tuple[str, str]:
    """Study and Series Instance UID of a raw C-STORE dataset, reading no further than needed."""
    dataset.seek(0)
    ds = read_dataset(
        dataset,
        transfer_syntax.is_implicit_VR,
        transfer_syntax.is_little_endian,
        stop_when=lambda tag, vr, length: tag > 0x0020000E,
    )
    dataset.seek(0)
    return str(ds.get("StudyInstanceUID", "")), str(ds.get("SeriesInstanceUID", ""))
