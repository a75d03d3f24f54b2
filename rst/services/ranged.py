"""Parts of a large stored instance, read where the archive can read any part (S3 objects).

An instance that comes with :attr:`~rst.services.protocols.Instance.ranges` is not read whole
for metadata or frames (nor for rendered images and its pixel data, which are made of frames:
:mod:`rst.services.rendered` and :mod:`rst.services.bulkdata` read them through a
:class:`FrameReader`, one frame or a few at a time):

* its **head** — the file meta and the data set up to the Pixel Data element's header — is what
  the archive sent first, read further (each read at least doubling it) while a long value
  lies before the pixel data;
* **metadata** is made from the head, the pixel data's value replaced by a few bytes (its
  element header is the stored one: its tag and VR are as they were) and the elements after it
  read from the object's tail: the same DICOM JSON as from the whole instance;
* **frames** of native pixel data are at ``value + (n - 1) * frame size``; frames of
  encapsulated pixel data are found by the Extended Offset Table (in the head) or the Basic
  Offset Table, and only their items are read. A :class:`~rst.dicom.frames.FrameSource` holding
  just those frames then serves them, through the same code as a whole instance.

Whenever something does not add up — no offset table, a syntax whose data set cannot be read
in place (Big Endian, deflated), 1-bit frames, offsets or lengths past the object's end — these
functions return ``None`` and the caller reads the instance whole: its reader then gives the
same answer, or the same error, as for any instance.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import trio
from pydicom.uid import ImplicitVRLittleEndian

from rst.bridge import run_sync
from rst.dicom.frames import FrameSource
from rst.dicom.head import (
    NeedMore,
    PixelPosition,
    basic_offsets,
    fragments,
    frame_spans,
    locate_pixel_data,
)
from rst.dicom.part10 import dataset_offset
from rst.dicom.uids import NOT_IN_PLACE
from rst.errors import RstError
from rst.groups import collapse
from rst.services.protocols import ByteRanges, Instance

__all__ = ["FrameReader", "frame_reader", "frame_source", "metadata_file", "ranges_of"]

_PLACEHOLDER = bytes(8)
"""The pixel data value metadata is made with: a whole number of samples of any width."""
_U32 = struct.Struct("<I")
_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
"""The Sequence Delimitation Item (FFFE,E0DD) that ends encapsulated pixel data."""
_END = 0
"""The key of the object's last bytes among frame spans (frames count from 1)."""
_READS_AT_ONCE = 8


@dataclass(slots=True)
class _Head:
    """The first bytes of a stored instance, through its pixel data's element header."""

    data: bytes
    pixels: PixelPosition
    ranges: ByteRanges

    async def need(self, size: int) -> None:
        """Read on until the head holds the object's first *size* bytes (at least doubling)."""
        if size > len(self.data):
            want = min(self.ranges.size, max(size, 2 * len(self.data)))
            self.data += await self.ranges.read(len(self.data), want - len(self.data))

    async def read(self, start: int, length: int) -> bytes:
        """The object's bytes from *start*: from the head where it holds them."""
        if start + length <= len(self.data):
            return self.data[start : start + length]
        if start < len(self.data):  # what the head holds of it is not read again
            held = self.data[start:]
            return held + await self.ranges.read(len(self.data), length - len(held))
        return await self.ranges.read(start, length)

    def file(self, value: bytes) -> bytes:
        """The head up to the pixel data's value, with *value* as that value."""
        return self.data[: self.pixels.length_field] + _U32.pack(len(value)) + value

    async def offsets(self, extended: tuple[list[int], list[int]] | None) -> tuple[list[int], int]:
        """The frame offsets (Extended Offset Table, else Basic) and where they count from."""
        while True:
            try:
                basic, first = basic_offsets(self.data, self.pixels.value, size=self.ranges.size)
            except NeedMore as more:
                await self.need(more.size)
                continue
            return (extended[0] if extended else basic), first


def ranges_of(instance: Instance) -> ByteRanges | None:
    """Reads of parts of *instance*: the archive's (an S3 object), else — for a large cached
    file, one not read whole already — its file's (:attr:`~rst.services.protocols.Sidecars.ranges`,
    open while the instance is the retrieve's current one). One frame path for both."""
    if instance.ranges is not None:
        return instance.ranges
    if instance.rest is not None and instance.sidecars is not None:
        return instance.sidecars.ranges
    return None


async def _head(instance: Instance) -> _Head | None:
    ranges = ranges_of(instance)
    if ranges is None or instance.transfer_syntax in NOT_IN_PLACE:
        return None
    data = instance.data
    try:
        start = dataset_offset(data)
    except Exception:  # pydicom raises many kinds on garbage: the whole reader says which
        return None
    implicit = instance.transfer_syntax == str(ImplicitVRLittleEndian)
    while True:
        try:
            pixels = await run_sync(
                partial(locate_pixel_data, data, start, implicit=implicit, size=ranges.size)
            )
        except NeedMore as more:
            want = min(ranges.size, max(more.size, 2 * len(data)))
            data += await ranges.read(len(data), want - len(data))
            continue
        except ValueError:
            return None
        return None if pixels is None else _Head(data, pixels, ranges)


async def metadata_file(instance: Instance) -> bytes | None:
    """A Part 10 file whose metadata is the instance's: the instance with a short stand-in
    for its pixel data's value. ``None``: read the instance whole instead."""
    head = await _head(instance)
    if head is None:
        return None
    pixels, size = head.pixels, head.ranges.size
    try:
        if pixels.length is not None:
            end = pixels.value + pixels.length
        else:  # after the last frame's items and the sequence delimiter
            offsets, first = await head.offsets(_extended_offsets(await _source(head)))
            if not offsets:
                return None
            last = first + offsets[-1]
            _, ends = fragments(await head.read(last, size - last), last=True)
            end = last + ends
    except ValueError:
        return None
    if end > size:
        return None
    tail = await head.read(end, size - end) if end < size else b""
    return head.file(_PLACEHOLDER if pixels.length != 0 else b"") + tail


@dataclass(slots=True)
class FrameReader:
    """The frames of a stored instance, read by ranges as they are asked for. ``source``
    describes the instance (its data set is the head's, the pixel data a stand-in until
    :meth:`read`); each :meth:`read` makes it hold the frames asked for, and only those."""

    head: _Head
    source: FrameSource
    extended: tuple[list[int], list[int]] | None
    """The Extended Offset Table, read once (a source holding frames has dropped it)."""

    @property
    def number_of_frames(self) -> int:
        return self.source.number_of_frames

    async def value(self) -> bytes | None:
        """The whole value of native pixel data; ``None`` for encapsulated data, or where
        its length does not fit the object (read it whole)."""
        pixels, size = self.head.pixels, self.head.ranges.size
        if pixels.length is None or pixels.value + pixels.length > size:
            return None
        return await self.head.read(pixels.value, pixels.length)

    async def read(self, numbers: Sequence[int]) -> FrameSource | None:
        """:attr:`source`, holding the frames *numbers* (until the next read).

        :raises NotFound: a number is beyond the instance's last frame.
        ``None``: read the instance whole instead.
        """
        head, source, extended = self.head, self.source, self.extended
        source.check(numbers)
        wanted = sorted(set(numbers))
        pixels, size = head.pixels, head.ranges.size
        if source.native:
            frame = source.native_frame_size()
            if not frame or pixels.length is None or wanted[-1] * frame > pixels.length:
                return None
            spans = {n: (pixels.value + (n - 1) * frame, frame) for n in wanted}
            if pixels.value + pixels.length > size:
                return None
            return source.keep(await _read(head, spans))
        try:
            offsets, first = await head.offsets(extended)
            if len(offsets) < wanted[-1]:
                return None
            if extended is not None:
                lengths = extended[1]
                spans = {n: (first + offsets[n - 1] + 8, lengths[n - 1]) for n in wanted}
            else:
                items = frame_spans(offsets, first, size, [n - 1 for n in wanted])
                spans = {n: items[n - 1] for n in wanted}
            if any(length <= 0 or start + length > size for start, length in spans.values()):
                return None
            # The object ends with the pixel data's delimiter, else it was cut short (or
            # elements follow the pixel data): then the whole object's reader answers.
            spans[_END] = (size - len(_DELIMITER), len(_DELIMITER))
            read = await _read(head, spans)
            if read.pop(_END) != _DELIMITER:
                return None
            if extended is not None:
                return source.keep(read)
            frames = {n: fragments(data, last=n == len(offsets))[0] for n, data in read.items()}
        except ValueError:
            return None
        return source.keep(frames)


async def frame_reader(instance: Instance) -> FrameReader | None:
    """A reader of the instance's frames by ranges; ``None``: read the instance whole."""
    head = await _head(instance)
    if head is None:
        return None
    source = await _source(head)
    if source is None:
        return None
    return FrameReader(head, source, _extended_offsets(source))


async def frame_source(instance: Instance, numbers: Sequence[int]) -> FrameSource | None:
    """A source holding the frames *numbers* of the instance, read by ranges.

    :raises NotFound: a number is beyond the instance's last frame (as the whole instance's
        source says). ``None``: read the instance whole instead.
    """
    reader = await frame_reader(instance)
    return None if reader is None else await reader.read(numbers)


async def _source(head: _Head) -> FrameSource | None:
    """The frame source of the head (its pixel data a stand-in), ``None`` if unreadable."""
    try:
        return await run_sync(partial(FrameSource, head.file(_PLACEHOLDER)))
    except RstError:
        return None


def _extended_offsets(source: FrameSource | None) -> tuple[list[int], list[int]] | None:
    if source is None:
        return None
    ds = source.dataset
    if "ExtendedOffsetTable" not in ds or "ExtendedOffsetTableLengths" not in ds:
        return None
    offsets, lengths = (
        bytes(ds.ExtendedOffsetTable or b""),
        bytes(ds.ExtendedOffsetTableLengths or b""),
    )
    if not offsets or len(offsets) % 8 or len(offsets) != len(lengths):
        return None
    count = len(offsets) // 8
    return list(struct.unpack(f"<{count}Q", offsets)), list(struct.unpack(f"<{count}Q", lengths))


async def _read(head: _Head, spans: dict[int, tuple[int, int]]) -> dict[int, bytes]:
    """The bytes of each span: adjacent spans in one read, up to :data:`_READS_AT_ONCE`
    reads at a time."""
    runs: list[list[int]] = []
    for n in sorted(spans, key=lambda n: spans[n][0]):
        if runs and spans[n][0] == sum(spans[runs[-1][-1]]):
            runs[-1].append(n)
        else:
            runs.append([n])
    out: dict[int, bytes] = {}
    limiter = trio.CapacityLimiter(_READS_AT_ONCE)

    async def fetch(run: list[int]) -> None:
        start = spans[run[0]][0]
        last_start, last_length = spans[run[-1]]
        async with limiter:
            data = await head.read(start, last_start + last_length - start)
        for n in run:
            begin, length = spans[n]
            out[n] = data[begin - start : begin - start + length]

    with collapse():
        async with trio.open_nursery() as nursery:
            for run in runs:
                nursery.start_soon(fetch, run)
    return out
