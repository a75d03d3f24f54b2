"""What a final C-FIND response means, and how a status reads in a message.

Pure functions over status datasets. The verdict on a C-MOVE/C-GET (its counts reconciled with
what arrived) is :mod:`rst.backends.dimse.verdict`'s.
"""

from __future__ import annotations

from pydicom import Dataset

from rst.errors import BackendTimeout, DimseFailure

__all__ = ["check_find_status", "status_text"]

PENDING = (0xFF00, 0xFF01)
CANCEL = 0xFE00
SUCCESS = 0x0000


def status_text(status: Dataset) -> str:
    """The status code and its error comment, for messages: ``0xA700 (Out of resources)``."""
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
    raise DimseFailure(f"the PACS {pacs} failed the C-FIND with status {status_text(status)}", code)
