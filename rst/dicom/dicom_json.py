"""A data set as DICOM JSON (PS3.18 Annex F), straight from the raw elements pydicom read.

pydicom's own writer (``Dataset.to_json_dict``) first turns every raw element into a
``DataElement`` — decoding, validating and wrapping each value in its own classes (``DSfloat``,
``UID``, ``MultiValue``…) — and then unwraps them again into JSON values. For a CT image that is
about 2 ms of CPU per instance, most of the cost of a cold series metadata request. This encoder
reads the common cases from the raw bytes directly:

* text of the usual VRs in ASCII (no escape sequences) under a character set whose first 128
  codes are ASCII, split and stripped as pydicom does for each VR;
* IS and DS of the ordinary numeric form, binary numbers (US, SS, UL, SL, UV, SV, FL, FD);
* binary values (OB, OW, OF, OD, OL, OV) inline in base64 or as a ``BulkDataURI``;
* person names in ASCII, and sequences, item by item.

Everything else — another character set, non-ASCII text, implicit VR private or ambiguous
elements, UN, AT, odd numbers, lengths that do not fit the VR — is handed to pydicom element by
element, so the result is pydicom's own (``tests/unit/test_dicom_json.py`` checks this on
pydicom's test files and on generated data sets). An element pydicom cannot encode is left out
(logged), and an error inside a sequence drops that whole top-level element, as
``to_json_dict(suppress_invalid_tags=True)`` does. Encoding *strictly* (C-FIND matches, see
:func:`rst.dicom.query.decode_match`), an element pydicom cannot even read raises instead, as
reading the whole data set with pydicom would have.

The caller decides what is bulk data: *bulk* names a value (its path of (sequence tag, item
index) steps and its tag) and says whether it is bulk, *uri* gives its ``BulkDataURI``.
"""

from __future__ import annotations

import base64
import functools
import logging
import re
import struct
from collections.abc import Callable
from typing import Any

from pydicom import config
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filewriter import correct_ambiguous_vr_element
from pydicom.tag import _LUT_DESCRIPTOR_TAGS
from pydicom.valuerep import AMBIGUOUS_VR, BYTES_VR, VR

__all__ = ["Path", "encode_dataset"]

log = logging.getLogger(__name__)

Path = tuple[tuple[int, int], ...]
"""The (sequence tag, 0-based item index) steps from the top of the data set to an item."""

_SQ, _UN = str(VR.SQ), str(VR.UN)
"""As plain strings: an enum member's lookup (``VR.SQ``) costs more than the comparison, once
per element."""
_BYTES = frozenset(str(vr) for vr in BYTES_VR)
_BINARY = frozenset(str(vr) for vr in (BYTES_VR | AMBIGUOUS_VR) - {VR.US_SS})
"""What pydicom's writer encodes as ``InlineBinary`` / ``BulkDataURI``."""
_SPLIT = frozenset({"AS", "CS", "DA", "DT", "TM"})
"""Text split on backslashes after the whole value lost its trailing spaces and NULs."""
_TEXT = frozenset({"LO", "SH", "UC"})
"""Text split on backslashes, each value losing its trailing spaces and NULs."""
_SINGLE = frozenset({"LT", "ST", "UT"})
"""Text never split, losing its trailing spaces and NULs."""
_DATETIME = frozenset({"DA", "DT", "TM"})
_NUMBERS = {
    "US": struct.Struct("<H"),
    "SS": struct.Struct("<h"),
    "UL": struct.Struct("<L"),
    "SL": struct.Struct("<l"),
    "UV": struct.Struct("<Q"),
    "SV": struct.Struct("<q"),
    "FL": struct.Struct("<f"),
    "FD": struct.Struct("<d"),
}
_IS = re.compile(r"\s*[+-]?[0-9]+\s*")
_DS = re.compile(r"\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*")
_CHARSET = 0x00080005
_LUT_DESCRIPTORS = frozenset(int(tag) for tag in _LUT_DESCRIPTOR_TAGS)
"""pydicom's tuple as a set: looked up by hash, not by a comparison with each."""
_dictionary_vr = functools.lru_cache(maxsize=4096)(dictionary_VR)
"""The dictionary's VR of a tag (implicit VR: every element asks), remembered."""
_ASCII_CHARSETS = frozenset(
    {
        "",
        "ISO_IR 6",
        "ISO_IR 100",
        "ISO_IR 101",
        "ISO_IR 109",
        "ISO_IR 110",
        "ISO_IR 126",
        "ISO_IR 127",
        "ISO_IR 138",
        "ISO_IR 144",
        "ISO_IR 148",
        "ISO_IR 166",
        "ISO_IR 203",
        "ISO_IR 192",
        "GB18030",
        "GBK",
    }
)
"""Character sets in which a byte below 0x80 is the ASCII character (no code extensions)."""

IsBulk = Callable[[Path, int, int], bool]
"""Whether the binary value at (path, tag) of *length* bytes is bulk data."""
Uri = Callable[[Path, int], str]
"""The BulkDataURI of the value at (path, tag)."""


class _Fallback(Exception):
    """This element is pydicom's to encode."""


class _Unreadable(ValueError):
    """pydicom cannot read this element (only raised when encoding strictly)."""


def encode_dataset(
    dataset: Dataset, bulk: IsBulk, uri: Uri, *, strict: bool = False
) -> dict[str, Any]:
    """*dataset* (as read by ``dcmread`` or ``read_dataset``, Little Endian) as a DICOM JSON
    object. With *strict*, an element that pydicom cannot read (a value, or one in its items)
    raises, as reading the whole data set with pydicom would, instead of being left out; one it
    reads but cannot write is left out all the same."""
    safe = _ascii_safe(dataset, parent=True)
    return _encode(dataset, (), safe, top=True, strict=strict, bulk=bulk, uri=uri)


def _ascii_safe(dataset: Dataset, *, parent: bool) -> bool:
    """Whether ASCII bytes in *dataset* decode as ASCII (its own character set, else its
    parent's verdict)."""
    raw = dataset.get_item(_CHARSET)
    if raw is None:
        return parent
    value = raw.value
    if isinstance(value, bytes):
        try:
            names = value.decode("ascii").rstrip(" \0").split("\\")
        except UnicodeDecodeError:
            return False
    elif isinstance(value, str):
        names = [value]
    else:
        names = [str(name) for name in value] if value else [""]
    return len(names) == 1 and names[0].strip() in _ASCII_CHARSETS


def _encode(
    dataset: Dataset,
    path: Path,
    ascii_safe: bool,
    *,
    top: bool,
    strict: bool,
    bulk: IsBulk,
    uri: Uri,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tag, element in list(dataset.items()):  # raw, as read (converted if read before)
        key = f"{tag:08X}"
        try:
            try:
                if element.value is None:  # a deferred read: pydicom reads and converts it
                    element = _raw(dataset, tag, strict)
                out[key] = _element(
                    dataset, element, path, ascii_safe, strict=strict, bulk=bulk, uri=uri
                )
            except _Fallback:
                _read(dataset, tag, strict)
                out[key] = _pydicom(dataset, tag, path, ascii_safe, strict, bulk=bulk, uri=uri)
        except _Unreadable:
            raise
        except Exception as exc:  # pydicom raises many kinds on bad values
            if not top:
                raise  # the whole top-level element goes, as with pydicom's writer
            log.warning("leaving out element %s that cannot be encoded: %s", key, exc)
    return out


def _element(
    dataset: Dataset,
    element: DataElement | RawDataElement,
    path: Path,
    ascii_safe: bool,
    *,
    strict: bool,
    bulk: IsBulk,
    uri: Uri,
) -> dict[str, Any]:
    tag = element.tag
    vr = element.VR
    if isinstance(element, DataElement):
        if vr == _SQ:
            return _sequence(element, path, ascii_safe, strict, bulk=bulk, uri=uri)
        raise _Fallback
    if vr is None:  # implicit VR: public elements by the dictionary; private ones by pydicom
        if tag.is_private:
            raise _Fallback
        try:
            vr = _dictionary_vr(int(tag))
        except KeyError:
            raise _Fallback from None
    value = element.value
    if value is None:  # a deferred read
        raise _Fallback
    if vr == _SQ:
        _read(dataset, tag, strict)
        return _sequence(dataset[tag], path, ascii_safe, strict, bulk=bulk, uri=uri)
    if vr in _BINARY:
        if vr not in _BYTES or vr == _UN:  # ambiguous, or UN pydicom may resolve
            raise _Fallback
        if not value:
            return {"vr": vr}
        if bulk(path, tag, len(value)):
            return {"vr": vr, "BulkDataURI": uri(path, tag)}
        return {"vr": vr, "InlineBinary": base64.b64encode(value).decode()}
    if not value:
        return {"vr": vr}
    number = _NUMBERS.get(vr)
    if number is not None:
        if len(value) % number.size or tag in _LUT_DESCRIPTORS:
            raise _Fallback
        values = [item[0] for item in number.iter_unpack(value)]
        return {"vr": vr, "Value": values}
    if not ascii_safe or not value.isascii() or b"\x1b" in value:
        raise _Fallback
    text = value.decode("ascii")
    if vr == "UI":
        strings = text.rstrip("\0 ").split("\\")
    elif vr in _SPLIT:
        if vr in _DATETIME and config.datetime_conversion:
            raise _Fallback
        strings = text.rstrip(" \0").split("\\")
    elif vr in _TEXT:
        strings = [part.rstrip("\0 ") for part in text.split("\\")]
    elif vr in _SINGLE:
        strings = [text.rstrip("\0 ")]
    elif vr == "AE":
        strings = [part.strip() for part in text.split("\\")]
    elif vr == "UR":
        strings = [text.rstrip()]
    elif vr == "IS":
        return _numbers(vr, text, _IS, int)
    elif vr == "DS":
        if config.use_DS_decimal or config.use_DS_numpy:
            raise _Fallback
        return _numbers(vr, text, _DS, float)
    elif vr == "PN":
        names = text.rstrip("\0 ").split("\\")
        if names == [""]:
            return {"vr": vr}
        return {"vr": vr, "Value": [_person_name(name) for name in names]}
    else:
        raise _Fallback
    if strings == [""]:
        return {"vr": vr}
    return {"vr": vr, "Value": strings}


def _numbers(
    vr: str, text: str, form: re.Pattern[str], kind: type[int] | type[float]
) -> dict[str, Any]:
    parts = text.rstrip(" \0").split("\\")
    if parts == [""]:
        return {"vr": vr}
    if not all(form.fullmatch(part) for part in parts):
        raise _Fallback
    return {"vr": vr, "Value": [kind(part) for part in parts]}


def _person_name(name: str) -> dict[str, str]:
    groups = name.split("=")
    if len(groups) > 3 or not name:  # pydicom's to say (it drops a list with an empty name)
        raise _Fallback
    out = {"Alphabetic": groups[0]}
    if len(groups) > 1:
        out["Ideographic"] = groups[1]
    if len(groups) > 2:
        out["Phonetic"] = groups[2]
    return out


def _sequence(
    element: DataElement, path: Path, ascii_safe: bool, strict: bool, *, bulk: IsBulk, uri: Uri
) -> dict[str, Any]:
    items = []
    for index, item in enumerate(element.value):
        inner = (*path, (element.tag, index))
        safe = _ascii_safe(item, parent=ascii_safe)
        items.append(_encode(item, inner, safe, top=False, strict=strict, bulk=bulk, uri=uri))
    return {"vr": VR.SQ, "Value": items}


def _raw(dataset: Dataset, tag: int, strict: bool) -> DataElement | RawDataElement:
    """Element *tag* of *dataset*, raw as read (converted if read before, or if its value is
    missing, when pydicom converts it and may fail: :class:`_Unreadable` if *strict*)."""
    try:
        return dataset.get_item(tag)
    except Exception as exc:
        if strict:
            raise _Unreadable(str(exc)) from exc
        raise


def _read(dataset: Dataset, tag: int, strict: bool) -> None:
    """Have pydicom read (convert) element *tag* of *dataset*, if *strict*: what it cannot read
    raises :class:`_Unreadable` (only the first reading of an element raises)."""
    if strict:
        try:
            dataset[tag]
        except Exception as exc:
            raise _Unreadable(str(exc)) from exc


def _pydicom(
    dataset: Dataset,
    tag: int,
    path: Path,
    ascii_safe: bool,
    strict: bool,
    *,
    bulk: IsBulk,
    uri: Uri,
) -> dict[str, Any]:
    """pydicom's own encoding of one element (converted as for reading, leniently; an ambiguous
    VR resolved as pydicom's writer would, as reading does only for a raw element)."""
    element = dataset[tag]
    if element.VR in AMBIGUOUS_VR:
        correct_ambiguous_vr_element(element, dataset, True)  # in place for a DataElement
    if element.VR == VR.SQ:
        return _sequence(element, path, ascii_safe, strict, bulk=bulk, uri=uri)

    def handler(element: DataElement) -> str:
        return uri(path, element.tag)

    threshold = _threshold_for(bulk, path, element)
    result: dict[str, Any] = element.to_json_dict(handler, threshold)
    return result


def _threshold_for(bulk: IsBulk, path: Path, element: DataElement) -> int:
    """A pydicom threshold (in base64 characters) that makes *element* bulk data exactly when
    *bulk* says so."""
    if element.VR not in _BINARY or element.is_empty:
        return 0
    try:
        length = len(element.value)
    except TypeError:  # an ambiguous VR resolved to numbers: never binary
        return 0
    if bulk(path, element.tag, length):
        return 0  # any non-empty value is longer than 0 bytes
    return (length // 3 + 1) * 4  # pydicom: bulk when longer than threshold // 4 * 3 bytes
