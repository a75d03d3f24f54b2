"""What the final C-FIND / C-MOVE / C-GET response means, and whether a retrieve is complete.

Pure functions over status datasets: the one place that turns DIMSE statuses into rst errors.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom import Dataset

from rst.errors import (
    BackendTimeout,
    DimseFailure,
    IncompleteRetrieve,
    MoveDestinationUnknown,
    NotFound,
    RstError,
)

__all__ = ["SubOperations", "check_find_status", "retrieve_outcome"]

PENDING = (0xFF00, 0xFF01)
CANCEL = 0xFE00
SUCCESS = 0x0000
WARNING_SUBOPS_FAILED = 0xB000
MOVE_DESTINATION_UNKNOWN = 0xA801


def _status_text(status: Dataset) -> str:
    code = status.get("Status")
    text = f"0x{code:04X}" if isinstance(code, int) else "none"
    comment = status.get("ErrorComment")
    return f"{text} ({comment})" if comment else text


def check_find_status(status: Dataset, pacs: str) -> None:
    """Raise for a final C-FIND status that is not success (or cancel, which rst itself sent)."""
    code = status.get("Status")
    if code is None:
        raise BackendTimeout(
            f"the PACS {pacs} stopped answering the C-FIND (timeout or aborted association)"
        )
    if code in (SUCCESS, CANCEL) or code in PENDING:
        return
    raise DimseFailure(
        f"the PACS {pacs} failed the C-FIND with status {_status_text(status)}", code
    )


@dataclass(frozen=True)
class SubOperations:
    completed: int = 0
    failed: int = 0
    warning: int = 0
    remaining: int = 0

    @classmethod
    def of(cls, status: Dataset) -> SubOperations:
        def count(keyword: str) -> int:
            value = status.get(f"NumberOf{keyword}Suboperations")
            return int(value) if value is not None else 0

        return cls(count("Completed"), count("Failed"), count("Warning"), count("Remaining"))


def retrieve_outcome(
    status: Dataset, *, received: int, pacs: str, operation: str, cancelled: bool = False
) -> RstError | None:
    """Reconcile the final C-MOVE/C-GET response with what arrived.

    Returns ``None`` if every instance the PACS sent arrived, else the error to report. A
    partial retrieve is an error: the client must never take it for a complete one.
    """
    code = status.get("Status")
    counts = SubOperations.of(status)
    if code is None:
        return IncompleteRetrieve(
            f"the {operation} from {pacs} broke off after {received} instance(s): "
            "the PACS stopped answering or aborted the association"
        )
    if code == MOVE_DESTINATION_UNKNOWN:
        return MoveDestinationUnknown(
            f"the PACS {pacs} does not know rst as a C-MOVE destination (status 0xA801): "
            "add rst's AE title, host and port ([dimse] aet/host/port) to the PACS's list of "
            "DICOM modalities"
        )
    if code == CANCEL:
        if cancelled:
            return None
        return IncompleteRetrieve(
            f"the PACS {pacs} cancelled the {operation} after {received} instance(s)"
        )
    sent = counts.completed + counts.warning
    if code in (SUCCESS, WARNING_SUBOPS_FAILED) and counts.failed == 0 and received >= sent:
        if received == 0:
            return NotFound(f"the PACS {pacs} has no instances matching the request")
        return None
    if code in (SUCCESS, WARNING_SUBOPS_FAILED):
        return IncompleteRetrieve(
            f"incomplete {operation} from {pacs}: the PACS reports {counts.completed} completed, "
            f"{counts.warning} with warnings and {counts.failed} failed sub-operations, "
            f"rst received {received} instance(s)"
        )
    return DimseFailure(
        f"the PACS {pacs} failed the {operation} with status {_status_text(status)} after "
        f"{received} instance(s) ({counts.completed} completed, {counts.failed} failed)",
        code,
    )
