"""The verdict on a retrieve: did every instance arrive, and if not, what went wrong.

A C-MOVE or C-GET ends with one final response, whose counts of completed, warning and failed
sub-operations are the PACS's word; rst counts what actually reached the sink. Three rules, each
here and nowhere else:

- :func:`reconcile` (pure): the final status and counts against what arrived. Success or a
  warning (0xB000: sub-operations failed) with no failed sub-operation and every reported
  instance received is complete; anything less is :class:`~rst.errors.IncompleteRetrieve` (a
  partial retrieve must never pass for a whole one); 0xA801 names the fix; nothing to send and
  nothing received is a 404.
- :func:`conclude`: "not found" told from "failed". Many PACS (Orthanc among them) fail a
  retrieve of unknown UIDs instead of answering "0 sub-operations", so a failure with nothing
  received asks *exists* (the backend's C-FIND for the same keys) before it is reported.
- :func:`arrivals`: the wait for each instance is bounded (``first_store_timeout`` for the
  first, ``idle_timeout`` after it); a PACS that goes quiet is a timeout, named by :func:`silence`.

Nothing here opens an association: the backend passes in the status, the counts and the one
question that needs the network.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable

import trio

from rst.backends.dimse.sink import InstanceSink
from rst.dicom.statuses import MOVE_DESTINATION_UNKNOWN, Status, is_cancel, is_success, is_warning
from rst.errors import (
    BackendTimeout,
    DimseFailure,
    IncompleteRetrieve,
    MoveDestinationUnknown,
    NotFound,
    RstError,
)
from rst.services.protocols import Instance, RetrieveKeys

__all__ = ["arrivals", "conclude", "may_be_missing", "reconcile", "silence"]

log = logging.getLogger(__name__)


def reconcile(
    status: Status, *, received: int, pacs: str, operation: str, cancelled: bool = False
) -> RstError | None:
    """Reconcile the final C-MOVE/C-GET response with what arrived.

    Returns ``None`` if every instance the PACS sent arrived, else the error to report. A
    partial retrieve is an error: the client must never take it for a complete one.
    """
    code = status.code
    if code == MOVE_DESTINATION_UNKNOWN:
        return MoveDestinationUnknown(
            f"the PACS {pacs} does not know rst as a C-MOVE destination (status {status}): "
            "add rst's AE title, host and port ([dimse] aet/host/port) to the PACS's list of "
            "DICOM modalities"
        )
    if is_cancel(code):
        if cancelled:
            return None
        return IncompleteRetrieve(
            f"the PACS {pacs} cancelled the {operation} after {received} instance(s)"
        )
    sent = status.completed + status.warning
    counted = is_success(code) or is_warning(code)  # the counts decide (0xB000: some failed)
    if counted and status.failed == 0 and received >= sent:
        if received == 0:
            return NotFound(f"the PACS {pacs} has no instances matching the request")
        return None
    if counted:
        return IncompleteRetrieve(
            f"incomplete {operation} from {pacs}: the PACS reports {status.completed} completed, "
            f"{status.warning} with warnings and {status.failed} failed sub-operations, "
            f"rst received {received} instance(s)"
        )
    return DimseFailure(
        f"the PACS {pacs} failed the {operation} with status {status} after "
        f"{received} instance(s) ({status.completed} completed, {status.failed} failed)",
        code,
    )


def may_be_missing(error: RstError | None, received: int) -> bool:
    """Whether *error* might really mean "the PACS has no such study": a failure status with
    nothing received (only a C-FIND can tell)."""
    return isinstance(error, DimseFailure) and received == 0


async def conclude(
    final: Status,
    *,
    received: int,
    keys: RetrieveKeys,
    pacs: str,
    operation: str,
    exists: Callable[[], Awaitable[bool]],
) -> RstError | None:
    """The verdict on a retrieve that ended with *final* after *received* instances: ``None``
    if it is complete, else the error to end the sink with (logged here)."""
    error = reconcile(final, received=received, pacs=pacs, operation=operation)
    if may_be_missing(error, received) and not await exists():
        error = NotFound(f"the PACS {pacs} has no {keys.level.lower()} {keys.uid}")
    if error is not None:
        level = logging.INFO if isinstance(error, NotFound) else logging.WARNING
        log.log(level, "%s (%s of %s)", error.message, operation, keys)
    return error


def silence(pacs: str, *, waited: float, received: int, first: bool) -> BackendTimeout:
    """The error for a PACS that sent no C-STORE for *waited* seconds."""
    phase = "the first instance" if first else "the next instance"
    return BackendTimeout(
        f"the PACS {pacs} sent no C-STORE for {waited:g} s while rst waited "
        f"for {phase} ({received} received)"
    )


async def arrivals(
    sink: InstanceSink, *, pacs: str, first_timeout: float, idle_timeout: float
) -> AsyncGenerator[Instance]:
    """The instances of *sink* as they come, each waited for at most *first_timeout* (until one
    has come) or *idle_timeout* (after that); :func:`silence` when one does not come."""
    timeout = first_timeout
    while True:
        if sink.ready:  # queued already (the usual case): no wait, so no timer to set up
            instance = await sink.receive()
        else:
            try:
                with trio.fail_after(timeout):
                    instance = await sink.receive()
            except trio.TooSlowError:
                first = timeout == first_timeout and sink.delivered == 0
                raise silence(pacs, waited=timeout, received=sink.delivered, first=first) from None
        if instance is None:
            return
        yield instance
        timeout = idle_timeout
