"""What counts as a UID (PS3.5 §9.1): the one rule for UIDs from URLs and query parameters.

A UID is at most 64 characters: components of ASCII digits separated by single dots. A value
that is not one cannot name anything in an archive, and letting it through is not harmless: a
backslash makes a C-FIND or C-MOVE key match two studies (``A\\B`` is a list), ``*`` and ``?``
are wildcards, and non-ASCII text cannot be encoded at all. So rst answers such a value 400
before any DIMSE traffic; a well-formed UID nobody knows stays a 404.

The rule is pragmatic: PS3.5 also forbids leading zeros in a component (``1.02``), but archives
do hold such UIDs and rst must be able to retrieve what they hold, so they pass.
"""

from __future__ import annotations

import re

from rst.errors import BadRequest

__all__ = ["MAX_UID_LENGTH", "check_uid", "is_valid_uid"]

MAX_UID_LENGTH = 64
"""PS3.5 Table 6.2-1, VR UI."""

_UID_RE = re.compile(r"[0-9]+(?:\.[0-9]+)*")


def is_valid_uid(text: str) -> bool:
    """Whether ``text`` can be a UID: 1 to 64 characters, ASCII digits and single inner dots."""
    return len(text) <= MAX_UID_LENGTH and _UID_RE.fullmatch(text) is not None


def check_uid(name: str, text: str) -> str:
    """``text`` if it is a valid UID, else :class:`BadRequest` naming ``name`` (e.g. "study")."""
    if not is_valid_uid(text):
        shown = text if len(text) <= MAX_UID_LENGTH else f"{text[:MAX_UID_LENGTH]}…"
        raise BadRequest(
            f"invalid {name} UID {shown!r}: a UID is at most {MAX_UID_LENGTH} characters of "
            "digits and dots (PS3.5 §9.1)"
        )
    return text
