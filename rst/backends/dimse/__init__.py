"""PACS reached over DIMSE, on rst's own upper layer (:mod:`rst.backends.dimse.ul`).

The public surface the rest of rst uses: the backend (:class:`DimseBackend`: C-ECHO, C-FIND,
C-MOVE/C-GET, C-STORE), the C-STORE receiver every C-MOVE sends to (:class:`StoreReceiver`),
the mediator that routes what arrives there to the retrieve waiting for it (:class:`Mediator`,
:class:`MessageIds`), and the ring that passes associations between worker processes
(:class:`WorkerRing`).
"""

from rst.backends.dimse.backend import DimseBackend
from rst.backends.dimse.handoff import WorkerRing
from rst.backends.dimse.mediator import Mediator, MessageIds
from rst.backends.dimse.receiver import StoreReceiver
from rst.backends.dimse.store import DimseStoreSession

__all__ = [
    "DimseBackend",
    "DimseStoreSession",
    "Mediator",
    "MessageIds",
    "StoreReceiver",
    "WorkerRing",
]
