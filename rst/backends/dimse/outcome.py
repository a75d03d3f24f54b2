"""What a DIMSE response's status means: the parsed response read as a
:class:`~rst.dicom.statuses.Status`, and the verdict on a final C-FIND status.

Pure functions. The verdict on a C-MOVE/C-GET (its counts reconciled with what arrived) is
:mod:`rst.backends.dimse.verdict`'s.
"""

from __future__ import annotations

from rst.backends.dimse.ul import OtherCommand
from rst.dicom.statuses import Status, is_cancel, is_failure
from rst.errors import DimseFailure, IncompleteRetrieve

__all__ = ["check_find_status", "status_of"]


def status_of(response: OtherCommand) -> Status | None:
    """The status of a parsed response, or ``None`` if it has no Status element (a response
    without one breaks the protocol; the caller says so)."""
    if response.status is None:
        return None
    return Status(
        response.status,
        response.error_comment or "",
        completed=response.completed or 0,
        failed=response.failed or 0,
        warning=response.warning or 0,
        remaining=response.remaining or 0,
    )


def check_find_status(status: Status, pacs: str) -> None:
    """Raise for a final C-FIND status that does not close a complete list of matches:
    :class:`~rst.errors.DimseFailure` for a failure (PS3.7 Annex C),
    :class:`~rst.errors.IncompleteRetrieve` for a cancel — rst reads its own C-CANCEL's answer
    elsewhere (:func:`~rst.backends.dimse.retrieve.cancel_operation`), so a cancel here is the
    PACS's own, and the matches so far are not all there are. Success and a warning pass."""
    if is_cancel(status.code):
        raise IncompleteRetrieve(
            f"the PACS {pacs} cancelled the C-FIND itself (status {status}): the matches are "
            "incomplete"
        )
    if is_failure(status.code):
        raise DimseFailure(f"the PACS {pacs} failed the C-FIND with status {status}", status.code)
