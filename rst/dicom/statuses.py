"""C-STORE statuses (PS3.4 Table B.2-1, PS3.7 Annex C), which are also STOW-RS failure and
warning reasons (PS3.18 Table I.2-1): one name for each, imported wherever they are used."""

from __future__ import annotations

__all__ = [
    "CANNOT_UNDERSTAND",
    "OUT_OF_RESOURCES",
    "PROCESSING_FAILURE",
    "SOP_CLASS_NOT_SUPPORTED",
    "STUDY_MISMATCH",
    "SUCCESS",
    "TRANSFER_SYNTAX_NOT_SUPPORTED",
    "WARNING_STATUSES",
    "is_stored",
]

SUCCESS = 0x0000
PROCESSING_FAILURE = 0x0110
"""A general failure: rst uses it for an instance whose association broke, or that was not sent
because the archive could not be used."""
SOP_CLASS_NOT_SUPPORTED = 0x0122
OUT_OF_RESOURCES = 0xA700
STUDY_MISMATCH = 0xA900
"""PS3.4 "data set does not match SOP class"; STOW-RS uses it for an instance of another study
than the one the URL names."""
CANNOT_UNDERSTAND = 0xC000
TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122
"""STOW-RS only (PS3.18 Table I.2-1): the archive takes none of the syntaxes rst can send."""
WARNING_STATUSES = range(0xB000, 0xC000)
"""Coercion of data elements (0xB000), elements discarded (0xB006), data set does not match SOP
class (0xB007): the instance was stored."""


def is_stored(status: int) -> bool:
    """Whether a C-STORE status means the instance was stored (success or a warning)."""
    return status == SUCCESS or status in WARNING_STATUSES
