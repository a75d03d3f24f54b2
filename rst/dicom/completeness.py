"""Is an encoded data set whole? A walk over its element headers, before it is sent anywhere.

rst sends an upload's data set to the PACS as it came, without decoding it (STOW-RS reads only
up to the pixel data). A data set cut short — an upload truncated in the middle of its pixel
data — still goes out as a complete DIMSE message, and a PACS then waits for the bytes its last
element declares: the C-STORE stalls until a timeout. Here every top-level element header (tag,
VR, length; PS3.5 §7.1) is read and its value skipped: a declared length beyond the end of the
data, an element header cut in two, a sequence or encapsulated pixel data of undefined length
without its delimiter (PS3.5 §7.5, A.4) all mean the data set is truncated. Values of defined
length are skipped without being read, so the cost is per element, not per byte.

Sans-IO: bytes in, :class:`~rst.errors.BadRequest` out. Deflated data sets (PS3.5 A.5) are
checked for a complete deflate stream instead.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from rst.errors import BadRequest

__all__ = ["check_complete"]

_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xE000
_ITEM_END = 0xE00D
_SEQUENCE_END = 0xE0DD
_DELIMITER_GROUP = 0xFFFE
_META_GROUP = 0x0002
# PS3.5 Table 7.1-1: explicit VRs with a reserved field and a 4-byte length; the others have 2.
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_SHORT_VRS = frozenset(b"AE AS AT CS DA DS DT FL FD IS LO LT PN SH SL SS ST TM UI UL US".split())
_NUL_HEADER = bytes(8)
_INFLATE_CHUNK = 1 << 20
MAX_INFLATED = 4 << 30
"""Most bytes a deflated data set may inflate to (a deflate stream can expand ~1000-fold)."""


@dataclass(frozen=True, slots=True)
class _Encoding:
    explicit: bool
    tag: struct.Struct
    u16: struct.Struct
    u32: struct.Struct


def _encoding(*, explicit: bool, order: str) -> _Encoding:
    return _Encoding(
        explicit,
        struct.Struct(order + "HH"),
        struct.Struct(order + "H"),
        struct.Struct(order + "I"),
    )


_IMPLICIT_LE = _encoding(explicit=False, order="<")
_EXPLICIT_LE = _encoding(explicit=True, order="<")
_EXPLICIT_BE = _encoding(explicit=True, order=">")


@dataclass(slots=True)
class _Open:
    """A container of undefined length being walked: its items, or an item's elements."""

    kind: str  # "sequence" (items until E0DD) or "item" (elements until E00D)
    tag: str  # the element that opened it, for messages
    encoding: _Encoding


def check_complete(
    data: bytes | memoryview,
    *,
    implicit_vr: bool,
    little_endian: bool,
    deflated: bool = False,
    meta_first: bool = False,
) -> None:
    """Raise :class:`BadRequest` unless *data* holds whole top-level elements, to its end.

    *data* is a data set (no preamble or file meta) in the encoding given — the one the data set
    really has, which is not always the one its meta group names (pydicom's
    ``Dataset.original_encoding`` tells). With *meta_first*, leading group 0002 elements are
    read as Explicit VR Little Endian (a bare data set that carries its meta group). Trailing NUL
    padding of 8 bytes or more is tolerated.
    """
    view = memoryview(data).cast("B")
    if deflated:
        _check_deflated(view)
        return
    if implicit_vr:  # Implicit VR is always Little Endian (PS3.5 A.1)
        _walk(view, _IMPLICIT_LE, meta_first=meta_first)
    else:
        _walk(view, _EXPLICIT_LE if little_endian else _EXPLICIT_BE, meta_first=meta_first)


def _walk(view: memoryview, top: _Encoding, *, meta_first: bool) -> None:
    end = len(view)
    pos = 0
    stack: list[_Open] = []
    first = 0  # where the data set's first element (after any meta group) starts
    while True:
        inside = stack[-1] if stack else None
        encoding = inside.encoding if inside else top
        if inside is None and pos == end:
            return
        if pos + 8 > end:
            raise BadRequest(_truncated(inside, f"it ends inside an element header at byte {pos}"))
        if inside is None and view[pos : pos + 8] == _NUL_HEADER and _padding(view, pos):
            return
        group, element = encoding.tag.unpack_from(view, pos)
        tag = f"({group:04X},{element:04X})"
        if inside is not None and inside.kind == "sequence":
            # Items and delimiters: tag and 4-byte length, no VR, in every syntax (PS3.5 7.5).
            length = encoding.u32.unpack_from(view, pos + 4)[0]
            pos += 8
            if group == _DELIMITER_GROUP and element == _SEQUENCE_END:
                stack.pop()
            elif group == _DELIMITER_GROUP and element == _ITEM:
                if length == _UNDEFINED:
                    stack.append(_Open("item", inside.tag, encoding))
                else:
                    pos = _skip(view, pos, length, f"an item of {inside.tag}", inside)
            else:
                raise BadRequest(
                    f"the data set is malformed: {inside.tag} holds {tag} where an item or "
                    "the sequence delimiter belongs"
                )
            continue
        if group == _DELIMITER_GROUP:
            if inside is not None and element == _ITEM_END:
                pos += 8
                stack.pop()
                continue
            where = f"in an item of {inside.tag}" if inside else "at the top level"
            raise BadRequest(f"the data set is malformed: a delimiter {tag} {where}")
        if inside is None and meta_first and group == _META_GROUP:
            encoding = _EXPLICIT_LE
        elif meta_first:  # the meta group comes first or not at all
            meta_first = False
            first = pos
        if encoding.explicit:
            vr = bytes(view[pos + 4 : pos + 6])
            if vr in _SHORT_VRS:
                length = encoding.u16.unpack_from(view, pos + 6)[0]
                pos += 8
            elif vr in _LONG_VRS:
                if pos + 12 > end:
                    raise BadRequest(_truncated(inside, f"it ends inside the header of {tag}"))
                length = encoding.u32.unpack_from(view, pos + 8)[0]
                pos += 12
            elif inside is None and pos == first:
                raise BadRequest(
                    f"the data set is not in explicit VR as its transfer syntax says: its first "
                    f"element {tag} has no valid VR"
                )
            else:
                raise BadRequest(f"the data set is malformed: {tag} has an invalid VR {vr!r}")
        else:
            vr = b""
            length = encoding.u32.unpack_from(view, pos + 4)[0]
            pos += 8
        if length != _UNDEFINED:
            pos = _skip(view, pos, length, tag, inside)
        elif not encoding.explicit or vr == b"UN":
            # Undefined length without an explicit VR is a sequence; explicit UN of undefined
            # length is a sequence in Implicit VR Little Endian (PS3.5 6.2.2).
            stack.append(_Open("sequence", tag, _IMPLICIT_LE))
        elif vr in (b"SQ", b"OB", b"OW"):
            # A sequence, or encapsulated pixel data: fragments as items (PS3.5 A.4).
            stack.append(_Open("sequence", tag, encoding))
        else:
            raise BadRequest(
                f"the data set is malformed: {tag} ({vr.decode('ascii')}) has undefined length"
            )


def _skip(view: memoryview, pos: int, length: int, what: str, inside: _Open | None) -> int:
    if pos + length > len(view):
        raise BadRequest(
            _truncated(inside, f"{what} declares {length} bytes, {len(view) - pos} are present")
        )
    return pos + length


def _truncated(inside: _Open | None, detail: str) -> str:
    if inside is not None:
        detail += f", inside {inside.tag} of undefined length (its delimiter is missing)"
    return f"the data set is truncated: {detail}"


def _padding(view: memoryview, pos: int) -> bool:
    """Whether everything from *pos* on is NUL: trailing padding some writers leave. Only a run
    of 8 or more counts (checked where an element header would start): fewer NULs may be the
    start of an element header cut short (a tag in group 0x0008, big endian)."""
    return not view[pos:].tobytes().strip(b"\0")


def _check_deflated(view: memoryview) -> None:
    """The deflate stream must end within the data; it is inflated and thrown away in chunks,
    at most :data:`MAX_INFLATED` bytes of it."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pos = inflated = 0
    try:
        while not inflater.eof:
            if inflater.unconsumed_tail:
                chunk = inflater.decompress(inflater.unconsumed_tail, _INFLATE_CHUNK)
            elif pos < len(view):
                chunk = inflater.decompress(view[pos : pos + _INFLATE_CHUNK], _INFLATE_CHUNK)
                pos += _INFLATE_CHUNK
            else:
                raise BadRequest("the data set is truncated: its deflate stream ends early")
            inflated += len(chunk)
            if inflated > MAX_INFLATED:
                raise BadRequest(
                    f"the deflated data set inflates to more than {MAX_INFLATED} bytes"
                )
    except zlib.error as err:
        raise BadRequest(f"the deflated data set cannot be inflated: {err}") from err
