"""Object keys, laid out as DICOM-RST does: ``{prefix}{study}/{series}/{instance}.dcm``.

Pure functions. UIDs are checked (digits and dots, at most 64 characters) before they become part
of a key, so a request can never name a key outside the layout (``..``, ``/``).
"""

from __future__ import annotations

import re

from rst.errors import BadRequest
from rst.services.protocols import RetrieveKeys

__all__ = ["SUFFIX", "instance_key", "is_uid", "listing_prefix", "parse_key"]

SUFFIX = ".dcm"
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def is_uid(value: str) -> bool:
    return len(value) <= 64 and _UID.fullmatch(value) is not None


def _checked(value: str) -> str:
    if not is_uid(value):
        raise BadRequest(f"{value!r} is not a valid DICOM UID")
    return value


def instance_key(prefix: str, study: str, series: str, sop: str) -> str:
    """The key of one instance."""
    return f"{prefix}{_checked(study)}/{_checked(series)}/{_checked(sop)}{SUFFIX}"


def listing_prefix(prefix: str, keys: RetrieveKeys) -> str:
    """The prefix to list for *keys*: a study's or series' folder, or the instance key itself."""
    if keys.sop_uid is not None:
        return instance_key(prefix, keys.study_uid, keys.series_uid or "", keys.sop_uid)
    if keys.series_uid is not None:
        return f"{prefix}{_checked(keys.study_uid)}/{_checked(keys.series_uid)}/"
    return f"{prefix}{_checked(keys.study_uid)}/"


def parse_key(prefix: str, key: str) -> tuple[str, str, str] | None:
    """``(study, series, instance)`` of a key in the layout, ``None`` for any other key."""
    if not key.startswith(prefix) or not key.endswith(SUFFIX):
        return None
    parts = key[len(prefix) : -len(SUFFIX)].split("/")
    if len(parts) != 3 or not all(is_uid(part) for part in parts):
        return None
    return parts[0], parts[1], parts[2]
