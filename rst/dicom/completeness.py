"""Is an encoded data set whole and well-formed? A walk over its element headers, before it is
sent anywhere.

rst sends an upload's data set to the PACS as it came, without decoding it (STOW-RS reads only
up to the pixel data). A data set cut short — an upload truncated in the middle of its pixel
data — still goes out as a complete DIMSE message, and a PACS then waits for the bytes its last
element declares: the C-STORE stalls until a timeout. Here every element header (tag, VR,
length; PS3.5 §7.1) is read, at every level of sequences: a declared length beyond the end of
the data, an element header cut in two, a sequence or encapsulated pixel data of undefined
length without its delimiter (PS3.5 §7.5, A.4) all mean the data set is truncated. Values other
than sequences are skipped without being read, so the cost is per element, not per byte.

Some whole data sets are refused too, for what they do to a PACS that is sent them (found by
the chaos run, issue 8):

- Pixel Data whose form is not its transfer syntax's: native (defined length) under an
  encapsulated syntax, or encapsulated under a native one (PS3.5 A.4). Orthanc never answers
  such a C-STORE. Encapsulated pixel data must be items of defined length, the first a Basic
  Offset Table of 32-bit offsets, then the sequence delimiter.
- Tags that do not strictly ascend within the data set or an item (PS3.5 §7.1: ascending order,
  each once). Tens of thousands of elements repeated out of order take a PACS longer to insert
  than any store timeout.
- An item or sequence of defined length whose contents run past its end.

Sans-IO: bytes in, :class:`~rst.errors.BadRequest` out. Deflated data sets (PS3.5 A.5) are
checked for a complete deflate stream instead.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from pydicom._dicom_dict import DicomDictionary  # the same dict as pydicom.datadict uses

from rst.errors import BadRequest

__all__ = ["check_complete"]

_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xE000
_ITEM_END = 0xE00D
_SEQUENCE_END = 0xE0DD
_DELIMITER_GROUP = 0xFFFE
_META_GROUP = 0x0002
_PIXEL_DATA = 0x7FE00010
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
class _Level:
    """What the walk is in: the data set, an item's elements, a sequence's items, or the
    fragments of encapsulated pixel data."""

    kind: str  # "data set", "item", "sequence" or "fragments"
    name: str  # for messages: "the data set", "(0008,1115)", "an item of (0008,1115)"
    encoding: _Encoding
    end: int
    """Where it ends at the latest: its defined length, else where its container ends."""
    end_of: str | None
    """The container of defined length that ends at :attr:`end` (None: the end of the data)."""
    delimited: bool
    """Of undefined length: it ends with its delimiter."""
    last: int = -1
    """Of a data set or item: the last element's tag (tags ascend)."""
    items: int = 0
    """Of fragments: how many items so far (the first is the Basic Offset Table)."""

    def inner(self, kind: str, name: str, encoding: _Encoding, end: int | None) -> _Level:
        """A container opened in this one: of defined length if *end* is given."""
        if end is None:
            return _Level(kind, name, encoding, self.end, self.end_of, delimited=True)
        return _Level(kind, name, encoding, end, name, delimited=False)


def check_complete(
    data: bytes | memoryview,
    *,
    implicit_vr: bool,
    little_endian: bool,
    encapsulated: bool = False,
    deflated: bool = False,
    meta_first: bool = False,
) -> None:
    """Raise :class:`BadRequest` unless *data* holds whole, well-formed elements, to its end.

    *data* is a data set (no preamble or file meta) in the encoding given — the one the data set
    really has, which is not always the one its meta group names (pydicom's
    ``Dataset.original_encoding`` tells). *encapsulated*: whether its transfer syntax encodes
    Pixel Data in fragments (PS3.5 A.4), which then must have undefined length, and a defined
    one otherwise. With *meta_first*, leading group 0002 elements are read as Explicit VR Little
    Endian (a bare data set that carries its meta group). Trailing NUL padding of 8 bytes or more
    is tolerated.
    """
    view = memoryview(data).cast("B")
    if deflated:
        _check_deflated(view)
        return
    # Implicit VR is always Little Endian (PS3.5 A.1)
    top = _IMPLICIT_LE if implicit_vr else _EXPLICIT_LE if little_endian else _EXPLICIT_BE
    _walk(view, top, meta_first=meta_first, encapsulated=encapsulated)


def _walk(view: memoryview, top: _Encoding, *, meta_first: bool, encapsulated: bool) -> None:
    root = _Level("data set", "the data set", top, len(view), None, delimited=False)
    stack = [root]
    pos = 0
    first = 0  # where the data set's first element (after any meta group) starts
    while True:
        level = stack[-1]
        if pos == level.end and not level.delimited:
            if level is root:
                return
            stack.pop()
            continue
        if pos + 8 > level.end:
            raise _overrun(level, f"it ends inside an element header at byte {pos}")
        if level is root and view[pos : pos + 8] == _NUL_HEADER and _padding(view, pos):
            return
        encoding = level.encoding
        group, element = encoding.tag.unpack_from(view, pos)
        tag = f"({group:04X},{element:04X})"
        if level.kind in ("sequence", "fragments"):
            # Items and delimiters: tag and 4-byte length, no VR, in every syntax (PS3.5 7.5).
            length = encoding.u32.unpack_from(view, pos + 4)[0]
            pos += 8
            if group == _DELIMITER_GROUP and element == _SEQUENCE_END:
                _close(level, tag, pos)
                stack.pop()
            elif group == _DELIMITER_GROUP and element == _ITEM:
                if level.kind == "fragments":
                    pos = _fragment(level, pos, length)
                elif length == _UNDEFINED:
                    stack.append(level.inner("item", f"an item of {level.name}", encoding, None))
                else:
                    name = f"an item of {level.name}"
                    _fits(level, pos, length, name)
                    stack.append(level.inner("item", name, encoding, pos + length))
            else:
                belongs = "a fragment item" if level.kind == "fragments" else "an item"
                raise BadRequest(
                    f"the data set is malformed: {level.name} holds {tag} where {belongs} or "
                    "the sequence delimiter belongs"
                )
            continue
        if group == _DELIMITER_GROUP:
            if level.kind == "item" and element == _ITEM_END:
                pos += 8
                _close(level, tag, pos)
                stack.pop()
                continue
            where = f"in {level.name}" if level is not root else "at the top level"
            raise BadRequest(f"the data set is malformed: a delimiter {tag} {where}")
        number = group << 16 | element
        if number <= level.last:
            raise BadRequest(_disorder(level, number))
        level.last = number
        if level is root and meta_first and group == _META_GROUP:
            encoding = _EXPLICIT_LE
        elif meta_first:  # the meta group comes first or not at all
            meta_first = False
            first = pos
        if encoding.explicit:
            vr = bytes(view[pos + 4 : pos + 6])
            sequence = vr == b"SQ"
            if vr in _SHORT_VRS:
                length = encoding.u16.unpack_from(view, pos + 6)[0]
                pos += 8
            elif vr in _LONG_VRS:
                if pos + 12 > level.end:
                    raise _overrun(level, f"it ends inside the header of {tag}")
                length = encoding.u32.unpack_from(view, pos + 8)[0]
                pos += 12
            elif level is root and pos == first:
                raise BadRequest(
                    f"the data set is not in explicit VR as its transfer syntax says: its first "
                    f"element {tag} has no valid VR"
                )
            else:
                raise BadRequest(f"the data set is malformed: {tag} has an invalid VR {vr!r}")
        else:  # no VR: the data dictionary tells a sequence (as a PACS reading it does)
            vr = b""
            sequence = DicomDictionary.get(number, ("",))[0] == "SQ"
            length = encoding.u32.unpack_from(view, pos + 4)[0]
            pos += 8
        if number == _PIXEL_DATA and level is root:
            _check_pixel_data(length, encapsulated=encapsulated)
        if length != _UNDEFINED:
            _fits(level, pos, length, tag)
            if sequence:  # its items are walked, their tags checked too
                stack.append(level.inner("sequence", tag, encoding, pos + length))
            else:
                pos += length
        elif not encoding.explicit or vr == b"UN":
            # Undefined length without an explicit VR is a sequence; explicit UN of undefined
            # length is a sequence in Implicit VR Little Endian (PS3.5 6.2.2).
            stack.append(level.inner("sequence", tag, _IMPLICIT_LE, None))
        elif vr == b"SQ":
            stack.append(level.inner("sequence", tag, encoding, None))
        elif vr in (b"OB", b"OW"):  # encapsulated pixel data: fragments as items (PS3.5 A.4)
            stack.append(level.inner("fragments", tag, encoding, None))
        else:
            raise BadRequest(
                f"the data set is malformed: {tag} ({vr.decode('ascii')}) has undefined length"
            )


def _fits(level: _Level, pos: int, length: int, what: str) -> None:
    if pos + length > level.end:
        raise _overrun(level, f"{what} declares {length} bytes, {level.end - pos} are present")


def _overrun(level: _Level, detail: str) -> BadRequest:
    """*detail* goes past where *level* ends: the data set is cut short when that is the end of
    the data, malformed when it is the end of an item or sequence of defined length."""
    if level.end_of is not None:
        return BadRequest(
            f"the data set is malformed: {detail} within {level.end_of}, whose length is "
            "shorter than what it holds"
        )
    if level.delimited:
        detail += f", inside {level.name} of undefined length (its delimiter is missing)"
    return BadRequest(f"the data set is truncated: {detail}")


def _close(level: _Level, tag: str, pos: int) -> None:
    """A delimiter *tag* ends *level* (just before *pos*): an item or sequence of undefined
    length, or — tolerated — one of defined length whose last bytes it is."""
    if not level.delimited and pos != level.end:
        raise BadRequest(
            f"the data set is malformed: a delimiter {tag} in the middle of {level.name}, "
            "which has a defined length"
        )
    if level.kind == "fragments" and not level.items:
        raise BadRequest(
            f"the data set is malformed: the encapsulated {level.name} has no Basic Offset "
            "Table item (its first item, which may be empty; PS3.5 A.4)"
        )


def _fragment(level: _Level, pos: int, length: int) -> int:
    """An item of encapsulated pixel data, skipped: the Basic Offset Table first (32-bit
    offsets), then the fragments, each of defined length (PS3.5 A.4)."""
    what = "the Basic Offset Table" if not level.items else f"fragment {level.items}"
    if length == _UNDEFINED:
        raise BadRequest(
            f"the data set is malformed: {what} of the encapsulated {level.name} has undefined "
            "length (items of encapsulated pixel data have a defined length, PS3.5 A.4)"
        )
    if not level.items and length % 4:
        raise BadRequest(
            f"the data set is malformed: the Basic Offset Table of the encapsulated "
            f"{level.name} takes {length} bytes, not a whole number of 32-bit offsets"
        )
    _fits(level, pos, length, f"{what} of {level.name}")
    level.items += 1
    return pos + length


def _disorder(level: _Level, number: int) -> str:
    tag = f"({number >> 16:04X},{number & 0xFFFF:04X})"
    previous = f"({level.last >> 16:04X},{level.last & 0xFFFF:04X})"
    where = "" if level.kind == "data set" else f" in {level.name}"
    how = "twice" if number == level.last else f"after {previous}"
    return (
        f"the data set is malformed: {tag} comes {how}{where}; the elements of a data set "
        "ascend by tag, each once (PS3.5 7.1)"
    )


def _check_pixel_data(length: int, *, encapsulated: bool) -> None:
    """The form of the top-level Pixel Data must be the transfer syntax's: sent as it is, native
    pixels under an encapsulated syntax (or the converse) leave a PACS parsing the wrong thing
    — Orthanc never answers such a C-STORE. An empty value is either form."""
    if encapsulated and length not in (_UNDEFINED, 0):
        raise BadRequest(
            f"the data set is malformed: its Pixel Data (7FE0,0010) is native ({length} bytes "
            "of defined length) but its transfer syntax is encapsulated, where Pixel Data is a "
            "sequence of fragments of undefined length (PS3.5 A.4)"
        )
    if not encapsulated and length == _UNDEFINED:
        raise BadRequest(
            "the data set is malformed: its Pixel Data (7FE0,0010) is encapsulated (undefined "
            "length) but its transfer syntax is native, where Pixel Data has a defined length "
            "(PS3.5 A.4)"
        )


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
