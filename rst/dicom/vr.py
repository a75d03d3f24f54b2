"""What a query value may be, VR by VR (PS3.5 Table 6.2-1; PS3.4 C.2.2.2 for matching forms).

A QIDO-RS matching value ends up in a C-FIND identifier that rst encodes while the response is
already streaming. A value the VR cannot hold — a US of 70000, a float that overflows, a CS
with lower-case letters, a name longer than the VR allows, text that is not Unicode — must be
refused here, as a 400 that names the attribute, and never reach the encoder. Values of VRs
with a fixed binary form are converted (numbers); text values pass as text, with the matching
forms the standard allows (wildcards, ranges, backslash-separated lists).

``attr`` in the functions below is the attribute as messages show it ("Rows (00280010)").
"""

from __future__ import annotations

import math
import re
import struct
from typing import Any

from rst.dicom.uid import is_valid_uid
from rst.errors import BadRequest

__all__ = ["BINARY_VRS", "is_bulk", "matching_value", "shown"]

BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
"""VRs of bulk data: never a matching key, never a return key of a search."""

_INT_RANGES: dict[str, tuple[int, int]] = {
    "US": (0, 2**16 - 1),
    "SS": (-(2**15), 2**15 - 1),
    "UL": (0, 2**32 - 1),
    "SL": (-(2**31), 2**31 - 1),
    "UV": (0, 2**64 - 1),
    "SV": (-(2**63), 2**63 - 1),
    "IS": (-(2**31), 2**31 - 1),
}
_MAX_CHARS: dict[str, int] = {
    "AE": 16,
    "AS": 4,
    "CS": 16,
    "DS": 16,
    "IS": 12,
    "LO": 64,
    "SH": 16,
    "ST": 1024,
    "LT": 10240,
    # in the context of a query with range matching (PS3.5 Table 6.2-1)
    "DA": 18,
    "TM": 28,
    "DT": 54,
}
"""Characters per value; UC, UR and UT are unlimited (hypercorn bounds the whole request)."""
_PN_GROUP_CHARS = 64
_PN_GROUPS = 3
_SINGLE_VALUED = frozenset({"LT", "ST", "UT", "UR"})
"""Text VRs in which a backslash is a character, not a value separator."""
_ASCII_ONLY = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UR"})
"""VRs of the default character repertoire: SpecificCharacterSet does not apply to them."""
_TEXT_WITH_CONTROLS = frozenset({"LT", "ST", "UT"})

_INT_RE = re.compile(r" *[+-]?[0-9]{1,20} *")
_DECIMAL_RE = re.compile(r" *[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)? *")
_CS_RE = re.compile(r"[A-Z0-9 _*?]*")
_AS_RE = re.compile(r"[0-9]{3}[DWMY]")
_DA = r"[0-9]{8}"
_TM = r"[0-9]{2}(?::?[0-9]{2}(?::?[0-9]{2}(?:\.[0-9]{1,6})?)?)?"
_DT = r"[0-9]{4}(?:[0-9]{2}){0,5}(?:\.[0-9]{1,6})?(?:[+-][0-9]{4})?"
_DATE_TIME_RE = {
    vr: re.compile(rf" *(?:{form})?(?:-(?:{form})?)? *")
    for vr, form in (("DA", _DA), ("TM", _TM), ("DT", _DT))
}
"""A value or a range (``a-b``, ``-b``, ``a-``) of DA, TM (HH:MM:SS tolerated) and DT."""
# ESC (0x1B) too: it only introduces ISO 2022 code extensions, and rst never declares them in
# the Specific Character Set of its identifiers, so a lone ESC is a value no VR can hold there.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_CONTROL_TEXT_RE = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_SHOWN = 80


def shown(value: str) -> str:
    """``value`` for an error message: quoted, and cut short if long."""
    return repr(value if len(value) <= _SHOWN else f"{value[:_SHOWN]}…")


def is_bulk(dictionary_vr: str) -> bool:
    """Whether an attribute of this dictionary VR ("OB or OW", "US or OW"...) may be bulk data."""
    return any(vr in BINARY_VRS for vr in dictionary_vr.split(" or "))


def matching_value(attr: str, dictionary_vr: str, value: str) -> tuple[str, Any]:
    """The VR and value of a non-empty matching key, as pydicom encodes them.

    UIDs may be a comma or backslash separated list; numbers are parsed and range-checked;
    text keeps its wildcards and ranges. "US or SS" takes SS when a value is negative.

    :raises BadRequest: a value the VR cannot hold, naming ``attr``.
    """
    if dictionary_vr == "SQ":
        raise BadRequest(f"{attr} is a sequence: match on an attribute inside it (Seq.Attr=v)")
    if is_bulk(dictionary_vr):
        raise BadRequest(f"{attr} has a binary VR ({dictionary_vr}) and cannot be a matching key")
    if dictionary_vr in ("AT", "NONE"):
        raise BadRequest(f"{attr} has VR {dictionary_vr} and cannot be a matching key")
    if dictionary_vr == "UI":
        uids = [u.strip() for u in re.split(r"[,\\]", value)]
        for uid in uids:
            if not is_valid_uid(uid):
                raise BadRequest(
                    f"{attr}: invalid UID {shown(uid)} (at most 64 digits and dots; "
                    "a list is separated by ',' or '\\')"
                )
        return "UI", uids[0] if len(uids) == 1 else uids
    _check_unicode(attr, value)
    values = [value] if dictionary_vr in _SINGLE_VALUED else value.split("\\")
    vr = dictionary_vr
    if vr == "US or SS":
        vr = "SS" if any(v.strip().startswith("-") for v in values) else "US"
    if vr in _INT_RANGES and vr != "IS":
        ints = [_integer(attr, vr, v) for v in values]
        return vr, ints[0] if len(ints) == 1 else ints
    if vr in ("FL", "FD"):
        floats = [_float(attr, vr, v) for v in values]
        return vr, floats[0] if len(floats) == 1 else floats
    for v in values:
        _check_text_value(attr, vr, v)
    return vr, value


def _check_unicode(attr: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{attr}: the value is not valid Unicode text") from None


def _integer(attr: str, vr: str, text: str) -> int:
    if not _INT_RE.fullmatch(text):
        kind = "an integer string" if vr == "IS" else "an integer"
        raise BadRequest(f"{attr}: {shown(text)} is not {kind} (VR {vr})")
    number = int(text)
    low, high = _INT_RANGES[vr]
    if not low <= number <= high:
        raise BadRequest(f"{attr}: {number} is out of range for VR {vr} ({low} to {high})")
    return number


def _float(attr: str, vr: str, text: str) -> float:
    if not _DECIMAL_RE.fullmatch(text):
        kind = "a decimal string" if vr == "DS" else "a number"
        raise BadRequest(f"{attr}: {shown(text)} is not {kind} (VR {vr})")
    number = float(text)
    try:
        struct.pack("<f" if vr == "FL" else "<d", number)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise BadRequest(f"{attr}: {shown(text)} is out of range for VR {vr}")
    return number


def _check_text_value(attr: str, vr: str, value: str) -> None:
    """One value of a text VR: its characters, its form and its length."""
    control = _CONTROL_TEXT_RE if vr in _TEXT_WITH_CONTROLS else _CONTROL_RE
    if control.search(value):
        raise BadRequest(f"{attr}: the value contains control characters")
    if vr in _ASCII_ONLY and not value.isascii():
        raise BadRequest(f"{attr}: VR {vr} holds ASCII characters only, not {shown(value)}")
    if vr == "CS" and not _CS_RE.fullmatch(value):
        raise BadRequest(
            f"{attr}: {shown(value)} is not a code string (VR CS: upper-case letters, digits, "
            "space and underscore)"
        )
    if vr == "AS" and not _AS_RE.fullmatch(value):
        raise BadRequest(f"{attr}: {shown(value)} is not an age string (VR AS: nnnD/W/M/Y)")
    if vr in _DATE_TIME_RE and not _DATE_TIME_RE[vr].fullmatch(value):
        raise BadRequest(f"{attr}: {shown(value)} is not a {vr} value or range")
    if vr == "IS":
        _integer(attr, vr, value)
    if vr == "DS":
        _float(attr, vr, value)
    if vr == "PN":
        groups = value.split("=")
        if len(groups) > _PN_GROUPS or any(len(g) > _PN_GROUP_CHARS for g in groups):
            raise BadRequest(
                f"{attr}: {shown(value)} is too long for VR PN (at most {_PN_GROUPS} "
                f"'='-separated groups of {_PN_GROUP_CHARS} characters)"
            )
    limit = _MAX_CHARS.get(vr)
    if limit is not None and len(value.strip(" ")) > limit:
        raise BadRequest(
            f"{attr}: {shown(value)} is longer than VR {vr} allows ({limit} characters)"
        )
