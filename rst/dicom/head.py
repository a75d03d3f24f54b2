"""Where things are in a Part 10 file, from its first bytes: the top-level Pixel Data element,
the Basic Offset Table and the fragment items of encapsulated pixel data (PS3.5 §7.1, §7.5,
A.4).

What lets rst read a large stored object in parts (:mod:`rst.services.ranged`): the data set
before the pixel data from the object's head, then only the bytes of the frames asked for.
Sans-IO: each function takes the bytes it has, and raises :class:`NeedMore` with how many of
the object's first bytes it needs where those are not enough. Only element headers are read;
a value is skipped by its length. Anything that does not add up raises :class:`ValueError`:
the caller then reads the object whole, and the whole object's reader says what is wrong.

Little Endian only (Implicit or Explicit VR): the syntaxes whose data sets can be read in place
(not those of :data:`rst.dicom.uids.NOT_IN_PLACE`). :func:`top_level_values` reads a few short
values near the start of a data set the same way (the patient of an instance, for the audit trail);
:func:`scan_to_pixel_data` finds the pixel data and reads the short values a frame layout needs
in one walk.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from itertools import pairwise

__all__ = [
    "NeedMore",
    "PixelPosition",
    "basic_offsets",
    "dataset_start",
    "fragments",
    "frame_spans",
    "locate_pixel_data",
    "scan_to_pixel_data",
    "top_level_values",
]

PIXEL_DATA_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
"""Float Pixel Data, Double Float Pixel Data, Pixel Data: an instance has at most one."""
UNDEFINED = 0xFFFFFFFF
_PREAMBLE_AND_PREFIX = 132
_UNKNOWN_SIZE = sys.maxsize
"""The file size, for reading the first bytes of a file whose end is not known yet."""
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
# PS3.5 Table 7.1-1: explicit VRs with a reserved field and a 4-byte length; the others have 2.
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_SHORT_VRS = frozenset(b"AE AS AT CS DA DS DT FL FD IS LO LT PN SH SL SS ST TM UI UL US".split())
_TAG = struct.Struct("<HH")
_EXPLICIT_HEAD = struct.Struct("<HH2sH")
"""Group, element, VR and 2-byte length of an Explicit VR element header with a short VR."""
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


class NeedMore(Exception):
    """The first :attr:`size` bytes of the object are needed to go on."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


@dataclass(frozen=True, slots=True)
class PixelPosition:
    """The top-level pixel data element of a file."""

    tag: int
    start: int
    """Where its element header starts."""
    value: int
    """Where its value starts (the Basic Offset Table item, for encapsulated data)."""
    length: int | None
    """Its value's length; ``None``: undefined (encapsulated pixel data)."""

    @property
    def length_field(self) -> int:
        """Where the 4-byte length in its header is (the last field, in either VR form)."""
        return self.value - 4


def locate_pixel_data(
    data: bytes, start: int, *, implicit: bool, size: int
) -> PixelPosition | None:
    """The top-level pixel data element of the file whose first bytes are *data* (*size* bytes
    in all), its data set starting at *start*; ``None`` when it has none.

    :raises NeedMore: *data* ends before the element's header does.
    :raises ValueError: the element headers do not add up.
    """
    return scan_to_pixel_data(data, start, (), implicit=implicit, size=size)[0]


def scan_to_pixel_data(
    data: bytes, start: int, tags: Collection[int], *, implicit: bool, size: int
) -> tuple[PixelPosition | None, dict[int, bytes]]:
    """:func:`locate_pixel_data`, and the values of those top-level elements of *tags* that
    come before the pixel data, read in the same walk (one walk over the element headers
    instead of two: the common case is unrolled, with the element header read in one unpack).

    :raises NeedMore: *data* ends before the pixel data element's header does.
    :raises ValueError: the element headers do not add up.
    """
    reader = _Reader(data, size)
    found: dict[int, bytes] = {}
    head, u32 = _EXPLICIT_HEAD.unpack_from, _U32.unpack_from  # the loop runs per instance
    whole = min(len(data), size) - 12  # where a header still has all its 12 bytes in *data*
    pos = start
    while pos < size:
        if pos > whole:  # near the end of *data*: the careful reader (NeedMore, the size)
            tag, vr, length, header = reader.element(pos, implicit=implicit)
        else:
            group, element, vr, length = head(data, pos)
            tag, header = group << 16 | element, 8
            if implicit or group == 0xFFFE:  # items and delimiters have no VR
                vr, length = b"", u32(data, pos + 4)[0]
            elif vr not in _SHORT_VRS:
                if vr not in _LONG_VRS:
                    raise ValueError(f"element ({group:04X},{element:04X}) has no valid VR {vr!r}")
                length, header = u32(data, pos + 8)[0], 12
        if tag in PIXEL_DATA_TAGS:
            value = pos + header
            return PixelPosition(tag, pos, value, None if length == UNDEFINED else length), found
        pos += header
        if length == UNDEFINED:
            pos = reader.skip_sequence(pos, implicit=implicit or vr == b"UN")
            continue
        if tag in tags:
            reader.need(pos + length)
            found[tag] = data[pos : pos + length]
        pos += length
    if pos != size:
        raise ValueError(f"the last element runs {pos - size} bytes past the end of the file")
    return None, found


def dataset_start(data: bytes) -> int:
    """Where the data set of the Part 10 file whose first bytes are *data* starts: after the
    preamble, ``DICM`` and the file meta group (Explicit VR Little Endian, PS3.10 §7.1), which
    is walked by its element headers.

    :raises NeedMore: *data* ends inside the file meta.
    :raises ValueError: not a Part 10 file, or its meta does not add up.
    """
    if len(data) < _PREAMBLE_AND_PREFIX:
        raise NeedMore(_PREAMBLE_AND_PREFIX)
    if data[128:132] != b"DICM":
        raise ValueError("not a Part 10 file (no 'DICM' after the preamble)")
    reader = _Reader(data, _UNKNOWN_SIZE)
    pos = _PREAMBLE_AND_PREFIX
    while True:  # as pydicom: by the elements, not by a group length that may lie
        reader.need(pos + 4)
        if _tag(data, pos) >> 16 != 0x0002:
            return pos
        _, _, length, header = reader.element(pos, implicit=False)
        if length == UNDEFINED:
            raise ValueError("an element of the file meta has an undefined length")
        pos += header + length


def top_level_values(
    data: bytes, start: int, tags: Collection[int], *, implicit: bool
) -> dict[int, bytes]:
    """The values of those top-level elements of *tags* that *data* holds, its data set
    starting at *start*: read up to the first element past the largest of *tags* (elements
    come in ascending order), or to the end of *data*, whichever comes first.

    :raises ValueError: the element headers do not add up.
    """
    reader = _Reader(data, _UNKNOWN_SIZE)
    last = max(tags)
    found: dict[int, bytes] = {}
    pos, end = start, len(data)
    head, u32 = _EXPLICIT_HEAD.unpack_from, _U32.unpack_from  # the loop runs per instance
    try:
        while pos + 8 <= end:
            group, element, vr, short = head(data, pos)
            tag = group << 16 | element
            if tag > last:
                break
            if implicit or group == 0xFFFE:
                length, pos = u32(data, pos + 4)[0], pos + 8
            elif vr in _SHORT_VRS:
                length, pos = short, pos + 8
            else:  # a long VR, or no VR at all: the general reader says which
                _, vr, length, header = reader.element(pos, implicit=False)
                pos += header
            if length == UNDEFINED:
                pos = reader.skip_sequence(pos, implicit=implicit or vr == b"UN")
                continue
            if tag in tags:
                reader.need(pos + length)
                found[tag] = data[pos : pos + length]
            pos += length
    except NeedMore:
        pass  # what the first bytes hold is all there is to find
    return found


def basic_offsets(data: bytes, value: int, *, size: int) -> tuple[list[int], int]:
    """The Basic Offset Table of encapsulated pixel data whose value starts at *value*, and
    where its first fragment item starts (the offsets count from there).

    :raises NeedMore: *data* ends before the table does.
    :raises ValueError: the first item is not a table.
    """
    reader = _Reader(data, size)
    reader.need(value + 8)
    tag, length = _tag(data, value), _U32.unpack_from(data, value + 4)[0]
    if tag != _ITEM or length == UNDEFINED or length % 4:
        raise ValueError("the encapsulated pixel data does not start with a Basic Offset Table")
    first = value + 8 + length
    reader.need(first)
    offsets = list(struct.unpack_from(f"<{length // 4}I", data, value + 8))
    if any(b <= a for a, b in pairwise(offsets)) or (offsets and offsets[0] != 0):
        raise ValueError("the Basic Offset Table does not ascend from 0")
    return offsets, first


def fragments(data: bytes | memoryview, *, last: bool) -> tuple[bytes, int]:
    """The fragments of the items in *data* joined (one frame), and where they end. *last*:
    the items end with the sequence delimiter (the end is then after it), else *data* ends
    with the last item.

    :raises ValueError: an item header does not add up, or the delimiter is missing.
    """
    view = memoryview(data)
    pieces: list[bytes] = []
    pos = 0
    while pos + 8 <= len(view):
        tag, length = _tag(view, pos), _U32.unpack_from(view, pos + 4)[0]
        pos += 8
        if tag == _SEQUENCE_END and last:
            return b"".join(pieces), pos
        if tag != _ITEM or length == UNDEFINED or pos + length > len(view):
            raise ValueError(f"no whole fragment item at byte {pos - 8} of a frame")
        pieces.append(bytes(view[pos : pos + length]))
        pos += length
    if last or pos != len(view):
        raise ValueError("the fragments of a frame end inside an item")
    return b"".join(pieces), pos


def frame_spans(
    offsets: Sequence[int], first: int, end: int, indices: Sequence[int]
) -> dict[int, tuple[int, int]]:
    """Where the items of each frame (0-based *indices*) are, as (start, length), by Basic
    Offset Table *offsets* from *first*; the last frame runs to *end*."""
    spans = {}
    for index in indices:
        start = first + offsets[index]
        stop = first + offsets[index + 1] if index + 1 < len(offsets) else end
        spans[index] = (start, stop - start)
    return spans


def _tag(data: bytes | memoryview, pos: int) -> int:
    group, element = _TAG.unpack_from(data, pos)
    return int(group) << 16 | int(element)


class _Reader:
    """Element headers of *data*, the first bytes of a file of *size* bytes."""

    def __init__(self, data: bytes, size: int) -> None:
        self.data = data
        self.size = size

    def need(self, end: int) -> None:
        if end > self.size:
            raise ValueError(f"an element header runs past the end of the file ({self.size})")
        if end > len(self.data):
            raise NeedMore(end)

    def element(self, pos: int, *, implicit: bool) -> tuple[int, bytes, int, int]:
        """(tag, VR, length, header length) of the element at *pos*."""
        self.need(pos + 8)
        tag = _tag(self.data, pos)
        if implicit or tag >> 16 == 0xFFFE:  # items and delimiters have no VR
            return tag, b"", _U32.unpack_from(self.data, pos + 4)[0], 8
        vr = self.data[pos + 4 : pos + 6]
        if vr in _SHORT_VRS:
            return tag, vr, _U16.unpack_from(self.data, pos + 6)[0], 8
        if vr in _LONG_VRS:
            self.need(pos + 12)
            return tag, vr, _U32.unpack_from(self.data, pos + 8)[0], 12
        raise ValueError(f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) has no valid VR {vr!r}")

    def skip_sequence(self, pos: int, *, implicit: bool) -> int:
        """Where a sequence (or fragments) of undefined length that starts at *pos* ends."""
        # Each level: (in an item, implicit VR); a sequence holds items, an item elements.
        levels: list[tuple[bool, bool]] = [(False, implicit)]
        while levels:
            in_item, implicit_here = levels[-1]
            tag, vr, length, header = self.element(pos, implicit=implicit_here)
            pos += header
            if tag == (_ITEM_END if in_item else _SEQUENCE_END):
                levels.pop()
            elif tag == _ITEM and not in_item:
                if length == UNDEFINED:
                    levels.append((True, implicit_here))
                else:
                    pos += length
            elif in_item and tag >> 16 != 0xFFFE:
                if length == UNDEFINED:
                    levels.append((False, implicit_here or vr == b"UN"))
                else:
                    pos += length
            else:
                raise ValueError(f"an unexpected item or delimiter at byte {pos - header}")
        return pos
