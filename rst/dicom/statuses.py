"""DIMSE statuses: every status code rst reads or sends, named once, and what each class of code
means (PS3.7 Annex C). C-STORE statuses are also STOW-RS failure and warning reasons
(PS3.18 Table I.2-1).

A response's status travels as a :class:`Status` — the code, the error comment and the
sub-operation counts of a C-MOVE/C-GET response — never as a pydicom data set.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CANCEL",
    "CANNOT_UNDERSTAND",
    "DOES_NOT_MATCH_SOP_CLASS",
    "MOVE_DESTINATION_UNKNOWN",
    "NOT_AUTHORIZED",
    "OUT_OF_RESOURCES",
    "PENDING",
    "PENDING_WITH_WARNINGS",
    "PROCESSING_FAILURE",
    "SOP_CLASS_NOT_SUPPORTED",
    "SUBOPERATIONS_FAILED",
    "SUCCESS",
    "TRANSFER_SYNTAX_NOT_SUPPORTED",
    "Status",
    "is_cancel",
    "is_failure",
    "is_pending",
    "is_stored",
    "is_success",
    "is_warning",
]

# -- the classes of PS3.7 Annex C ----------------------------------------------------------------

SUCCESS = 0x0000
"""C.1: the operation completed."""
CANCEL = 0xFE00
"""C.3: the operation ended because rst (or the PACS) cancelled it."""
PENDING = 0xFF00
"""C.2: a match (C-FIND) or sub-operations still to come (C-MOVE/C-GET)."""
PENDING_WITH_WARNINGS = 0xFF01
"""C.2: pending, and an optional key was not supported for matching (C-FIND)."""

# -- the codes rst names ----------------------------------------------------------------------

PROCESSING_FAILURE = 0x0110
"""A general failure: rst uses it for an instance whose association broke, or that was not sent
because the archive could not be used."""
SOP_CLASS_NOT_SUPPORTED = 0x0122
NOT_AUTHORIZED = 0x0124
""""Refused: not authorized": the receiver answers a C-STORE with it when no retrieve (any more)
waits for the instance."""
OUT_OF_RESOURCES = 0xA700
MOVE_DESTINATION_UNKNOWN = 0xA801
"""C-MOVE (PS3.4 C.4.2.1.5): the PACS does not know the destination AE title — rst's."""
DOES_NOT_MATCH_SOP_CLASS = 0xA900
"""PS3.4: the data set (C-STORE) or identifier (C-FIND) does not match the SOP class. STOW-RS
uses it for an instance of another study than the one the URL names."""
SUBOPERATIONS_FAILED = 0xB000
"""C-MOVE/C-GET warning: one or more sub-operations failed (for C-STORE: coercion of data
elements). The counts tell how many."""
CANNOT_UNDERSTAND = 0xC000
TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122
"""STOW-RS only (PS3.18 Table I.2-1): the archive takes none of the syntaxes rst can send."""

_WARNINGS_OUTSIDE_CLASS_B = frozenset({0x0001, 0x0107, 0x0116})
"""C.4: warnings that are not in 0xBxxx (attribute list error, attribute value out of range)."""


def is_success(code: int) -> bool:
    return code == SUCCESS


def is_pending(code: int) -> bool:
    """C.2: 0xFF00 or 0xFF01 — not the final response."""
    return code in (PENDING, PENDING_WITH_WARNINGS)


def is_cancel(code: int) -> bool:
    return code == CANCEL


def is_warning(code: int) -> bool:
    """C.4: 0xBxxx, 0x0001, 0x0107, 0x0116 — done, with something to report."""
    return code & 0xF000 == 0xB000 or code in _WARNINGS_OUTSIDE_CLASS_B


def is_failure(code: int) -> bool:
    """C.5: 0xAxxx, 0xCxxx, 0x01xx (but the warnings of C.4), 0x02xx — and any code the
    standard does not define: a status rst cannot read as anything else did not succeed."""
    return not (is_success(code) or is_pending(code) or is_cancel(code) or is_warning(code))


def is_stored(code: int) -> bool:
    """Whether a C-STORE status means the instance was stored (success or a warning)."""
    return is_success(code) or is_warning(code)


@dataclass(frozen=True, slots=True)
class Status:
    """The status of a DIMSE response as rst reads it: the code, the error comment, and for a
    C-MOVE/C-GET response the sub-operation counts (absent counts are 0)."""

    code: int
    error_comment: str = ""
    completed: int = 0
    failed: int = 0
    warning: int = 0
    remaining: int = 0

    def __str__(self) -> str:
        """The code and its error comment, for messages: ``0xA700 (Out of resources)``."""
        text = f"0x{self.code:04X}"
        return f"{text} ({self.error_comment})" if self.error_comment else text
