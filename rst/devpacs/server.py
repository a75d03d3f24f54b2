"""A pynetdicom Query/Retrieve + Storage SCP over a :class:`FolderArchive`, with fault hooks.

:class:`DevPacs` is the embedded development PACS of ``rst dev`` and the base of the
misbehaving PACS used in tests (:class:`Faults`).  Every association runs on its own pynetdicom
thread; :attr:`DevPacs.events` records what happened for test assertions.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import (
    AE,
    ALL_TRANSFER_SYNTAXES,
    AllStoragePresentationContexts,
    build_context,
    evt,
)

from rst.dicom import uids
from rst.dicom.statuses import (
    CANCEL,
    CANNOT_UNDERSTAND,
    DOES_NOT_MATCH_SOP_CLASS,
    OUT_OF_RESOURCES,
    PENDING,
    SUCCESS,
    is_stored,
)

from .archive import FolderArchive, StoredInstance

__all__ = ["DevPacs", "Faults"]

LOG = logging.getLogger(__name__)

_POLL = 0.02  # seconds between checks while hanging (cancel / abort / stop)
_MAX_CONTEXTS = 128
_UNCOMPRESSED = {
    uids.IMPLICIT_VR_LITTLE_ENDIAN,
    uids.EXPLICIT_VR_LITTLE_ENDIAN,
    uids.EXPLICIT_VR_BIG_ENDIAN,
}
_NO_DESTINATIONS: Mapping[str, tuple[str, int]] = MappingProxyType({})
_NOBODY = "\\"  # never a valid AE title: requiring it rejects every calling AE
_VERIFICATION = UID(uids.VERIFICATION)
_QR_CLASSES = tuple(
    UID(uid)
    for uid in (
        uids.STUDY_ROOT_FIND,
        uids.STUDY_ROOT_MOVE,
        uids.STUDY_ROOT_GET,
        uids.PATIENT_ROOT_FIND,
        uids.PATIENT_ROOT_MOVE,
        uids.PATIENT_ROOT_GET,
    )
)


@dataclass
class Faults:
    """Misbehaviours for tests; the defaults behave.  May be changed while the PACS runs."""

    reject_association: bool = False
    """Reject every association (A-ASSOCIATE-RJ permanent, calling AE title not recognised)."""
    omit_move_originator: bool = False
    """Send C-MOVE sub-operations without Move Originator AE Title / Message ID."""
    drop_instances: int = 0
    """Skip the last N C-STOREs of a C-MOVE/C-GET but count them as completed."""
    hang_after_move: threading.Event | None = None
    """After a C-MOVE/C-GET request: answer nothing until set (or C-CANCEL / abort / stop)."""
    die_after: int | None = None
    """After N C-STORE sub-operations abort the sub-association and the requesting one."""
    store_status: int = SUCCESS
    """Status answered to incoming C-STOREs (failure statuses store nothing)."""
    store_status_for: Mapping[str, int] = field(default_factory=dict)
    """Per SOP Instance UID: the status its C-STORE is answered with, instead of store_status."""
    abort_on_store: frozenset[str] = frozenset()
    """SOP Instance UIDs whose C-STORE the PACS answers by aborting the association."""
    hang_on_store: frozenset[str] = frozenset()
    """SOP Instance UIDs whose C-STORE is never answered (until the association ends)."""
    refuse_sop_classes: frozenset[str] = frozenset()
    """SOP classes whose presentation contexts are rejected (abstract syntax not supported)."""
    fail_without_bulk_data_after: int | None = None
    """Fail each C-GET without bulk data (PS3.4 Annex Z) with 0xC000 after sending this many
    of its instances (0: at once)."""


class _DevAE(AE):
    """An AE whose calling-AE check follows :attr:`Faults.reject_association` live."""

    def __init__(self, ae_title: str, faults: Callable[[], Faults]) -> None:
        super().__init__(ae_title=ae_title)
        self._faults = faults

    @property
    def require_calling_aet(self) -> list[str]:
        if self._faults().reject_association:
            return [_NOBODY]
        return list(self._require_calling_aet)

    @require_calling_aet.setter
    def require_calling_aet(self, ae_titles: list[str]) -> None:
        AE.__dict__["require_calling_aet"].__set__(self, ae_titles)


class _SubOperations:
    """Bookkeeping and fault shaping for the C-STORE sub-operations of one C-MOVE/C-GET.

    pynetdicom performs the sub-operations itself (``Association.send_c_store``), so the faults
    that change them are applied by replacing ``send_c_store`` on the one association that
    carries them (an instance attribute; the class and other associations are untouched).
    """

    def __init__(
        self, faults: Faults, total: int, *, originator: str | None, omit_originator: bool
    ) -> None:
        self.sendable = max(0, total - faults.drop_instances)
        self.originator = originator
        self.omit_originator = omit_originator
        self.attempted = 0
        self.sent = 0
        self.store_assoc: Any = None

    def attach(self, assoc: Any) -> None:
        """Route `assoc`'s C-STOREs through :meth:`_send`."""
        original = type(assoc).send_c_store.__get__(assoc)
        assoc.send_c_store = functools.partial(self._send, original)

    @staticmethod
    def detach(assoc: Any) -> None:
        """Undo :meth:`attach`."""
        assoc.__dict__.pop("send_c_store", None)

    def on_established(self, event: Any) -> None:
        """EVT_ESTABLISHED of the C-MOVE sub-association (runs before any C-STORE)."""
        self.store_assoc = event.assoc
        self.attach(event.assoc)

    def _send(
        self,
        original: Callable[..., Dataset],
        dataset: Any,
        msg_id: int = 1,
        priority: int = 2,
        originator_aet: str | None = None,
        originator_id: int | None = None,
    ) -> Dataset:
        self.attempted += 1
        if self.attempted > self.sendable:
            status = Dataset()  # drop_instances: pretend the peer stored it
            status.Status = SUCCESS
            return status
        if self.omit_originator:
            originator_aet = originator_id = None
        elif originator_aet is not None and self.originator is not None:
            # pynetdicom puts its *own* AE title here; PS3.7 9.1.1.1 wants the C-MOVE SCU's
            originator_aet = self.originator
        result = original(dataset, msg_id, priority, originator_aet, originator_id)
        self.sent += 1
        return result


def _nodelay(event: Any) -> None:
    """EVT_CONN_OPEN: disable Nagle (pynetdicom leaves it on; it costs ~40 ms per message)."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _store_contexts(instances: list[StoredInstance]) -> list[Any]:
    """Presentation contexts for sending `instances` over a C-MOVE sub-association.

    One context per stored (SOP class, transfer syntax) so each instance goes as stored
    (pynetdicom prefers an exact match), then an Explicit/Implicit VR Little Endian fallback per
    SOP class with uncompressed instances (pynetdicom converts between uncompressed syntaxes).
    """
    pairs = sorted({(inst.sop_class_uid, inst.transfer_syntax_uid) for inst in instances})
    exact = [build_context(sop_class, [UID(ts)]) for sop_class, ts in pairs]
    uncompressed = sorted({sop_class for sop_class, ts in pairs if ts in _UNCOMPRESSED})
    fallback = [
        build_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        for sop_class in uncompressed
    ]
    return (exact + fallback)[:_MAX_CONTEXTS]


class DevPacs:
    """A small, real DICOM Q/R + Storage SCP over a :class:`FolderArchive`.

    Services: Verification; Study and Patient Root C-FIND/C-MOVE/C-GET; Storage SCP for every
    storage SOP class with every transfer syntax pynetdicom knows (stored as received).
    """

    def __init__(
        self,
        archive: FolderArchive,
        *,
        aet: str = "DEVPACS",
        host: str = "127.0.0.1",
        port: int = 0,
        destinations: Mapping[str, tuple[str, int]] = _NO_DESTINATIONS,
        faults: Faults | None = None,
        max_pdu: int = 131072,
        without_bulk_data: bool = False,
    ) -> None:
        self.archive = archive
        self.without_bulk_data = without_bulk_data
        """Also offer Composite Instance Retrieve Without Bulk Data - GET (pynetdicom removes
        the bulk data from what it sends); its C-GETs are logged as ``get-without-bulk-data``."""
        self.aet = aet
        self.host = host
        self.port = port
        self.faults = faults if faults is not None else Faults()
        self.max_pdu = max_pdu
        self.events: list[str] = []
        self._destinations = dict(destinations)
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._server: Any = None
        self.ae: Any = self._make_ae()

    # ------------------------------------------------------------------ lifecycle

    def _make_ae(self) -> Any:
        ae = _DevAE(self.aet, lambda: self.faults)
        ae.maximum_pdu_size = self.max_pdu
        ae.add_supported_context(_VERIFICATION, ALL_TRANSFER_SYNTAXES)
        for cx in AllStoragePresentationContexts:
            # scp_role: a C-GET requestor acts as Storage SCP on the same association
            ae.add_supported_context(
                UID(str(cx.abstract_syntax)), ALL_TRANSFER_SYNTAXES, scu_role=True, scp_role=True
            )
        for sop_class in _QR_CLASSES:
            ae.add_supported_context(sop_class)
        if self.without_bulk_data:
            ae.add_supported_context(UID(uids.WITHOUT_BULK_DATA_GET))
        return ae

    def start(self) -> tuple[str, int]:
        """Start listening on ``host:port`` (port 0 picks a free one); return the bound address."""
        if self._server is not None:
            return self.host, self.port
        self._stopping.clear()
        handlers = [
            (evt.EVT_CONN_OPEN, _nodelay),
            (evt.EVT_CONN_OPEN, self._refuse_classes),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_FIND, self._on_find),
            (evt.EVT_C_MOVE, self._on_move),
            (evt.EVT_C_GET, self._on_get),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_ACCEPTED, self._logger("accept")),
            (evt.EVT_REJECTED, self._logger("reject")),
            (evt.EVT_ABORTED, self._logger("abort")),
            (evt.EVT_RELEASED, self._logger("release")),
            (evt.EVT_CONN_CLOSE, self._logger("close")),
        ]
        self._server = self.ae.start_server(
            (self.host, self.port), block=False, evt_handlers=handlers
        )
        self.port = int(self._server.server_address[1])
        return self.host, self.port

    def stop(self) -> None:
        """Stop the server, abort its associations (and sub-associations), join their threads."""
        self._stopping.set()
        if self._server is None:
            return
        associations = list(self.ae.active_associations)
        self.ae.shutdown()
        for assoc in associations:
            assoc.join(timeout=10)
        self._server = None

    def __enter__(self) -> DevPacs:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_destination(self, aet: str, host: str, port: int) -> None:
        """Make `aet` a known C-MOVE destination."""
        with self._cond:
            self._destinations[aet.strip()] = (host, port)

    # ------------------------------------------------------------------ event log

    def _log(self, what: str) -> None:
        with self._cond:
            self.events.append(what)
            self._cond.notify_all()

    def _logger(self, what: str) -> Callable[[Any], None]:
        def handler(event: Any) -> None:
            self._log(what)

        return handler

    def wait_for(self, what: str, timeout: float = 10.0, count: int = 1) -> bool:
        """Block until :attr:`events` holds `what` at least `count` times (False on timeout)."""
        with self._cond:
            return self._cond.wait_for(lambda: self.events.count(what) >= count, timeout)

    # ------------------------------------------------------------------ services

    def _on_echo(self, event: Any) -> int:
        self._log("echo")
        return SUCCESS

    def _on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        self._log("find")
        identifier = event.identifier
        try:
            results = self.archive.match(identifier)
        except ValueError as exc:
            LOG.warning("C-FIND: %s", exc)
            yield DOES_NOT_MATCH_SOP_CLASS, None
            return
        for rsp in results:
            if event.is_cancelled:
                self._log("cancel")
                yield CANCEL, None
                return
            if "RetrieveAETitle" in identifier:
                rsp.RetrieveAETitle = self.aet
            yield PENDING, rsp

    def _on_move(self, event: Any) -> Iterator[Any]:
        self._log("move")
        instances = self.archive.locate(event.identifier)  # ValueError → pynetdicom failure
        state = self._hang(event)
        if state == "gone":
            return
        with self._cond:
            destination = self._destinations.get((event.move_destination or "").strip())
        if destination is None:
            yield None, None  # pynetdicom answers 0xA801 Move Destination unknown
            return
        sub = _SubOperations(
            self.faults,
            len(instances),
            originator=str(event.assoc.requestor.ae_title).strip(),
            omit_originator=self.faults.omit_move_originator,
        )
        yield (
            destination[0],
            destination[1],
            {
                "contexts": _store_contexts(instances),
                "max_pdu": self.max_pdu,
                "evt_handlers": [
                    (evt.EVT_CONN_OPEN, _nodelay),
                    (evt.EVT_ESTABLISHED, sub.on_established),
                ],
            },
        )
        yield len(instances)
        yield from self._sub_operations(event, instances, sub, cancelled=state == "cancel")

    def _on_get(self, event: Any) -> Iterator[Any]:
        without_bulk_data = event.context.abstract_syntax == uids.WITHOUT_BULK_DATA_GET
        self._log("get-without-bulk-data" if without_bulk_data else "get")
        instances = self.archive.locate(event.identifier)
        fail_after = self.faults.fail_without_bulk_data_after if without_bulk_data else None
        if fail_after is not None:
            yield len(instances)
            for inst in instances[:fail_after]:
                yield PENDING, dcmread(inst.path)
            yield CANNOT_UNDERSTAND, None
            return
        state = self._hang(event)
        if state == "gone":
            return
        sub = _SubOperations(self.faults, len(instances), originator=None, omit_originator=False)
        sub.attach(event.assoc)
        try:
            yield len(instances)
            yield from self._sub_operations(event, instances, sub, cancelled=state == "cancel")
        finally:
            sub.detach(event.assoc)

    def _refuse_classes(self, event: Any) -> None:
        """EVT_CONN_OPEN (before negotiation): apply :attr:`Faults.refuse_sop_classes`."""
        refused = self.faults.refuse_sop_classes
        if refused and event.assoc.is_acceptor:
            acceptor = event.assoc.acceptor
            acceptor.supported_contexts = [
                cx for cx in acceptor.supported_contexts if cx.abstract_syntax not in refused
            ]

    def _on_store(self, event: Any) -> int:
        self._log("store")
        sop_instance = str(event.request.AffectedSOPInstanceUID)
        if sop_instance in self.faults.abort_on_store:
            self._log("abort-store")
            event.assoc.abort()
            return CANNOT_UNDERSTAND  # never sent: the association is gone
        if sop_instance in self.faults.hang_on_store:
            self._log("hang-store")
            assoc = event.assoc
            while assoc.is_established and not assoc.acse.is_aborted():
                if self._stopping.wait(_POLL):
                    break
            return CANNOT_UNDERSTAND  # too late for anyone to read it
        status = self.faults.store_status_for.get(sop_instance, self.faults.store_status)
        if not is_stored(status):
            return status  # a failure: store nothing
        try:
            self.archive.store_bytes(event.encoded_dataset())
        except OSError:
            LOG.exception("C-STORE: cannot write")
            return OUT_OF_RESOURCES
        except Exception:
            LOG.exception("C-STORE: cannot store")
            return CANNOT_UNDERSTAND
        return status

    # ------------------------------------------------------------------ retrieve helpers

    def _hang(self, event: Any) -> str:
        """Apply :attr:`Faults.hang_after_move`: "go", "cancel" (C-CANCEL seen) or "gone"."""
        gate = self.faults.hang_after_move
        if gate is None:
            return "go"
        self._log("hang")
        while not gate.wait(_POLL):
            assoc = event.assoc
            if self._stopping.is_set() or not assoc.is_established or assoc.acse.is_aborted():
                return "gone"
            if event.is_cancelled:
                self._log("cancel")
                return "cancel"
        return "go"

    def _sub_operations(
        self,
        event: Any,
        instances: list[StoredInstance],
        sub: _SubOperations,
        *,
        cancelled: bool,
    ) -> Iterator[tuple[int, Dataset | None]]:
        """Yield the C-MOVE/C-GET (status, dataset) pairs, honouring C-CANCEL and die_after."""
        if cancelled:
            yield CANCEL, None
            return
        for index, inst in enumerate(instances):
            if event.is_cancelled:
                self._log("cancel")
                yield CANCEL, None
                return
            die_after = self.faults.die_after
            if die_after is not None and index >= die_after:
                self._die(event.assoc, sub)
                return
            yield PENDING, dcmread(inst.path)

    def _die(self, assoc: Any, sub: _SubOperations) -> None:
        """die_after: abort the C-MOVE sub-association and the requesting association."""
        self._log("die")
        if sub.store_assoc is not None:
            sub.store_assoc.abort()
        assoc.abort()
