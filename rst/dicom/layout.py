"""Where each frame of a stored instance lies in its file: what a warm frame request reads
instead of parsing the file again.

A :class:`FrameLayout` records what :class:`~rst.dicom.frames.FrameSource` needs to cut a
frame — the transfer syntax, the pixel module, and the byte ranges of each frame (for
encapsulated data, of each of its fragments) — so that a frame is served by reading just those
bytes (:meth:`FrameLayout.spans`) and handing them to :meth:`FrameSource.held`. It is derived
once from the whole file and the source parsed from it (:func:`derive`), and checked on the
way: every frame's bytes as the ranges give them must equal the frame pydicom cut, or there is
no layout (1-bit data, Big Endian or deflated files, fragments shared by frames) and the
instance is read whole as before. Sans-IO: bytes in, JSON out.

The common case of a cold series — native, Little Endian pixel data of 8, 16 or 32 bits — has
a layout that follows from the element headers and a few short values alone
(:func:`native_layout`): the frames lie one after the other from the Pixel Data value's offset.
It is read without pydicom (no data set is built, no frame compared: one walk over the element
headers, :func:`~rst.dicom.head.scan_to_pixel_data`, about twenty times less CPU than
:func:`derive`), and gives the same JSON as :func:`derive` or nothing (then :func:`derive`
decides).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from rst.dicom.bulkless import PIXEL_DATA
from rst.dicom.frames import FrameSource
from rst.dicom.head import UNDEFINED, locate_pixel_data, scan_to_pixel_data
from rst.dicom.part10 import data_set_start, dataset_offset
from rst.dicom.uids import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    JPIP_REFERENCED_DEFLATE,
    NATIVE_SYNTAXES,
)

__all__ = ["FRAMES", "FrameLayout", "derive", "native_layout"]

FRAMES = "frames.json"
"""The sidecar kind of an instance's frame layout (:class:`~rst.services.protocols.Sidecars`)."""
VERSION = 1
_IN_PLACE = frozenset({IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN})
"""Native syntaxes whose pixel bytes in the file are the frames' bytes (Little Endian)."""
_ITEM = b"\xfe\xff\x00\xe0"
_SEQUENCE_END = b"\xfe\xff\xdd\xe0"
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")


@dataclass(frozen=True, slots=True)
class FrameLayout:
    """The frames of one file: its size, syntax, pixel module and each frame's byte ranges."""

    size: int
    transfer_syntax: str
    keyword: str
    vr: str
    attributes: dict[str, Any]
    native: tuple[int, int, int] | None
    """Native data: (first frame's offset, frame size, frames)."""
    fragments: list[list[tuple[int, int]]]
    """Encapsulated data: each frame's fragments as (offset, length)."""

    @property
    def number_of_frames(self) -> int:
        return self.native[2] if self.native is not None else len(self.fragments)

    def spans(self, number: int) -> list[tuple[int, int]]:
        """The byte ranges whose contents, joined, are frame *number* (1-based) as stored."""
        if self.native is not None:
            start, length, _ = self.native
            return [(start + (number - 1) * length, length)]
        return self.fragments[number - 1]

    def source(self, frames: dict[int, bytes]) -> FrameSource:
        """A source holding *frames* (by number), made without parsing the file."""
        return FrameSource.held(
            self.transfer_syntax, self.keyword, self.vr, self.attributes, self.number_of_frames
        ).keep(frames)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "version": VERSION,
                "size": self.size,
                "transfer_syntax": self.transfer_syntax,
                "keyword": self.keyword,
                "vr": self.vr,
                "attributes": self.attributes,
                "native": self.native,
                "fragments": self.fragments,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> FrameLayout | None:
        """The layout kept as *data*; ``None`` where there is none (or it cannot be read)."""
        try:
            kept = json.loads(data)
            if not isinstance(kept, dict) or kept.get("version") != VERSION:
                return None
            native = kept["native"]
            return cls(
                int(kept["size"]),
                str(kept["transfer_syntax"]),
                str(kept["keyword"]),
                str(kept["vr"]),
                dict(kept["attributes"]),
                None if native is None else (int(native[0]), int(native[1]), int(native[2])),
                [[(int(s), int(n)) for s, n in frame] for frame in kept["fragments"]],
            )
        except (ValueError, KeyError, TypeError, IndexError):
            return None


NO_LAYOUT = json.dumps({"version": VERSION, "none": True}).encode()
"""What is kept for a file whose frames cannot be cut by ranges: it is read whole, and the
layout is not derived again."""


def derive(data: bytes, source: FrameSource) -> bytes:
    """The layout of the Part 10 file *data* (whose source is *source*), as JSON to keep;
    :data:`NO_LAYOUT` where its frames cannot be served by ranges."""
    try:
        layout = _derive(data, source)
        if layout is None:
            return NO_LAYOUT
        # What is kept must serve: the frames it reads, through a source made from it, are
        # the frames pydicom cut from the whole file.
        kept = FrameLayout.from_json(layout.to_json())
        every = list(range(1, source.number_of_frames + 1))
        held = {n: b"".join(data[s : s + k] for s, k in layout.spans(n)) for n in every}
        if kept is None or kept.source(held).as_stored(every) != source.as_stored(every):
            return NO_LAYOUT
    except Exception:  # pydicom and numpy raise many kinds on odd data: read it whole then
        return NO_LAYOUT
    return layout.to_json()


def _derive(data: bytes, source: FrameSource) -> FrameLayout | None:
    syntax = source.stored_syntax
    if source.native and syntax not in _IN_PLACE:
        return None
    if not source.native and syntax in NATIVE_SYNTAXES:
        return None
    if source.native and (source.bits_allocated % 8 or source.bits_allocated == 0):
        return None
    if syntax.startswith(DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN) or syntax == JPIP_REFERENCED_DEFLATE:
        return None  # deflated
    implicit = syntax == IMPLICIT_VR_LITTLE_ENDIAN
    pixels = locate_pixel_data(data, dataset_offset(data), implicit=implicit, size=len(data))
    if pixels is None:
        return None
    count = source.number_of_frames
    every = list(range(1, count + 1))
    frames = source.as_stored(every)
    attributes = source.layout_attributes()
    vr = source.pixel_vr
    if source.native:
        frame = source.native_frame_size()
        if not frame or pixels.length is None or count * frame > pixels.length:
            return None
        native = (pixels.value, frame, count)
        if any(_at(data, pixels.value + (n - 1) * frame, frame) != frames[n] for n in every):
            return None
        return FrameLayout(len(data), syntax, source.keyword, vr, attributes, native, [])
    if pixels.length is not None and pixels.length != UNDEFINED:
        return None
    items = _items(data, pixels.value)
    layout: list[list[tuple[int, int]]] = []
    at = 0
    for n in every:
        want, got, spans = len(frames[n]), 0, []
        while got < want and at < len(items):
            spans.append(items[at])
            got += items[at][1]
            at += 1
        if got != want or b"".join(data[s : s + k] for s, k in spans) != frames[n]:
            return None
        layout.append(spans)
    return FrameLayout(len(data), syntax, source.keyword, vr, attributes, None, layout)


_UI, _IS, _US, _CS = "UI", "IS", "US", "CS"
_NATIVE_ATTRIBUTES = {
    "SOPInstanceUID": (0x00080018, _UI),
    "NumberOfFrames": (0x00280008, _IS),
    "Rows": (0x00280010, _US),
    "Columns": (0x00280011, _US),
    "SamplesPerPixel": (0x00280002, _US),
    "BitsAllocated": (0x00280100, _US),
    "BitsStored": (0x00280101, _US),
    "HighBit": (0x00280102, _US),
    "PixelRepresentation": (0x00280103, _US),
    "PhotometricInterpretation": (0x00280004, _CS),
    "PlanarConfiguration": (0x00280006, _US),
}
"""The elements of :data:`~rst.dicom.frames.LAYOUT_ATTRIBUTES`, in its order: tag and VR."""
_NATIVE_TAGS = frozenset(tag for tag, _ in _NATIVE_ATTRIBUTES.values())
_UID_CHARACTERS = frozenset(b"0123456789.")
_CS_CHARACTERS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_ ")


class _Unusual(Exception):
    """A value not in the one plain form :func:`native_layout` reads: :func:`derive` decides."""


def native_layout(data: bytes) -> bytes | None:
    """The layout of the Part 10 file *data* as :func:`derive` keeps it, read from its element
    headers and the short values of :data:`~rst.dicom.frames.LAYOUT_ATTRIBUTES` alone — for
    native pixel data in place (Implicit or Explicit VR Little Endian, Pixel Data of whole
    bytes per sample) whose values have their plain form; ``None`` for anything else (or
    anything that does not add up), which :func:`derive` then reads whole."""
    try:
        return _native_layout(data)
    except (_Unusual, ValueError, struct.error):  # head's readers: headers that do not add up
        return None


def _native_layout(data: bytes) -> bytes | None:
    start = data_set_start(data)
    if start is None or start[1] not in _IN_PLACE:
        return None
    offset, syntax = start
    implicit = syntax == IMPLICIT_VR_LITTLE_ENDIAN
    pixels, raw = scan_to_pixel_data(data, offset, _NATIVE_TAGS, implicit=implicit, size=len(data))
    if pixels is None or pixels.tag != PIXEL_DATA or pixels.length is None:
        return None
    if pixels.value + pixels.length > len(data):
        return None  # cut short
    attributes: dict[str, Any] = {}
    for keyword, (tag, vr) in _NATIVE_ATTRIBUTES.items():
        value = _value(raw[tag], vr) if tag in raw else None
        if value is not None and value != "":
            attributes[keyword] = value
    bits = attributes.get("BitsAllocated", 0)
    if bits % 8 or bits == 0:
        return None
    samples = attributes.get("SamplesPerPixel", 1) or 1
    if attributes.get("PhotometricInterpretation") == "YBR_FULL_422":
        samples = 2  # as FrameSource counts them
    frame = attributes.get("Rows", 0) * attributes.get("Columns", 0) * samples * bits // 8
    count = attributes.get("NumberOfFrames", 1) or 1
    if not frame or count * frame > pixels.length:
        return None
    vr = "OW"  # what pydicom makes of implicit VR Pixel Data
    if not implicit:
        vr = data[pixels.start + 4 : pixels.start + 6].decode("ascii")
        if vr not in ("OB", "OW"):
            return None
    native = (pixels.value, frame, count)
    layout = FrameLayout(len(data), syntax, "PixelData", vr, attributes, native, [])
    return layout.to_json()


def _value(raw: bytes, vr: str) -> int | str | None:
    """*raw* as pydicom gives it (``None``: empty); :class:`_Unusual` where it might not."""
    if not raw:
        return None
    if vr == _US:
        if len(raw) != 2:
            raise _Unusual
        return int(_U16.unpack(raw)[0])
    text = raw.rstrip(b"\0 ")
    if vr == _IS:
        text = text.lstrip(b" ")
        if not text.isdigit() or len(text) > 10:
            raise _Unusual
        return int(text)
    if vr == _UI:
        if not set(text) <= _UID_CHARACTERS:
            raise _Unusual
        return text.decode("ascii")
    if not set(text) <= _CS_CHARACTERS or text.startswith(b" "):
        raise _Unusual
    return text.decode("ascii")


def _items(data: bytes, value: int) -> list[tuple[int, int]]:
    """The fragments (offset, length) of encapsulated pixel data at *value*, after its Basic
    Offset Table."""
    pos, first = value, True
    found: list[tuple[int, int]] = []
    while True:
        tag, length = data[pos : pos + 4], _U32.unpack_from(data, pos + 4)[0]
        pos += 8
        if tag == _SEQUENCE_END:
            return found
        if tag != _ITEM or length == UNDEFINED or pos + length > len(data):
            raise ValueError(f"no fragment item at byte {pos - 8}")
        if not first:
            found.append((pos, length))
        first = False
        pos += length


def _at(data: bytes, start: int, length: int) -> bytes:
    """The *length* bytes of *data* from *start* (fewer where it ends): one copy of those
    bytes only (a memoryview would compare byte by byte, far slower)."""
    return data[start : start + length]
