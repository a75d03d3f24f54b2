"""Frames of a DICOM instance, as WADO-RS serves them (PS3.18 §10.4.1.1.3; PS3.5 §8.2, Annex A.4).

Sans-IO and pure: a Part 10 file in, the frames a client asked for out.

* Native pixel data is sliced frame by frame. Frames of 1-bit data are packed one after the
  other without padding (PS3.5 §8.1.1), so a frame need not start on a byte boundary: it is
  shifted to bit 0 and padded with zero bits to whole bytes, the way it would be stored alone.
* Encapsulated pixel data is split by :mod:`pydicom.encaps`: by the extended offset table, else
  the basic offset table (then only the frames asked for are read), else by scanning the
  fragments once (one fragment per frame, or JPEG end-of-image markers).
* A frame wanted in another transfer syntax is decoded with pydicom's decoders and, for a
  compressed target, encoded again with its encoders — only the frames asked for.
* A source may hold only some frames of its instance (:meth:`FrameSource.keep`: those read
  from a large stored object by ranged reads); frame numbers stay the instance's.

Frames of native data are always labelled Explicit VR Little Endian: that is the byte order
they are in here (Big Endian files are converted first; Implicit VR and Deflated data hold the
same pixel bytes), and the only uncompressed syntax web services use (PS3.18 §8.7.3.3.2).
Decoding and encoding are CPU work: callers run :func:`read_frames` off the event loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames, get_frame, parse_basic_offsets
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.encoders.base import get_encoder
from pydicom.pixels.utils import pack_bits
from pydicom.uid import UID, ExplicitVRBigEndian

from rst.dicom.part10 import read_part10, reencode, transfer_syntax_of
from rst.dicom.uids import EXPLICIT_VR_LITTLE_ENDIAN, NATIVE_SYNTAXES
from rst.errors import BadRequest, NotAcceptable, NotFound, NotSupported

__all__ = [
    "LAYOUT_ATTRIBUTES",
    "MAX_FRAMES",
    "Frame",
    "FrameSource",
    "parse_frame_list",
    "read_frames",
]

MAX_FRAMES = 10_000
"""Most frame numbers one request may list (a URL of ``1,1,1,…`` must not cost a frame each
without bound)."""
_MAX_DIGITS = 10
"""Frame numbers are at most 2^31 - 1 (Number of Frames is an IS): ten digits."""

LAYOUT_ATTRIBUTES = (
    "SOPInstanceUID",
    "NumberOfFrames",
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PhotometricInterpretation",
    "PlanarConfiguration",
)
"""What a :class:`FrameSource` reads of a data set besides its pixel data."""
_EXTENDED_OFFSET_TAGS = (0x7FE00001, 0x7FE00002)
_PIXEL_KEYWORDS = (("PixelData", None), ("FloatPixelData", 32), ("DoubleFloatPixelData", 64))
"""The elements that hold frames, and the width of their samples when it is fixed."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame as sent: its 1-based number, its bytes and the transfer syntax they are in."""

    number: int
    data: bytes
    transfer_syntax: str


def parse_frame_list(text: str) -> tuple[int, ...]:
    """The frame numbers of a WADO-RS ``frames/{list}`` path segment, in the order given.

    A comma-separated list of positive integers (PS3.18 §10.4.1.1.3: frames count from 1);
    anything else — ``0``, a sign, an empty item, more than :data:`MAX_FRAMES` numbers — is a
    :class:`~rst.errors.BadRequest`.
    """
    shown = repr(text if len(text) <= 80 else text[:80] + "...")
    pieces = text.split(",")
    if len(pieces) > MAX_FRAMES:
        raise BadRequest(
            f"the frame list names {len(pieces)} frames; at most {MAX_FRAMES} are served at once"
        )
    numbers = []
    for piece in pieces:
        piece = piece.strip()
        if not (piece.isascii() and piece.isdigit()) or len(piece) > _MAX_DIGITS:
            raise BadRequest(
                f"the frame list {shown} is not a comma-separated list of frame numbers (1, 2, ...)"
            )
        number = int(piece)
        if number == 0:
            raise BadRequest(f"the frame list {shown} names frame 0; frames are numbered from 1")
        numbers.append(number)
    return tuple(numbers)


class FrameSource:
    """The pixel data of one instance, read for frame access.

    :raises NotFound: the instance has no pixel data.
    :raises BadRequest: the data is not a readable Part 10 file.
    """

    def __init__(self, data: bytes) -> None:
        stored = self.stored_syntax = transfer_syntax_of(data)
        if stored == str(ExplicitVRBigEndian):  # swap the words once, then slice as LE
            data = reencode(data, EXPLICIT_VR_LITTLE_ENDIAN)
            stored = EXPLICIT_VR_LITTLE_ENDIAN
        try:
            dataset = read_part10(data)
        except Exception as err:  # pydicom raises many kinds on garbage
            raise BadRequest(f"the data is not a readable DICOM instance: {err}") from err
        self._describe(dataset, stored)

    @classmethod
    def held(
        cls, stored: str, keyword: str, vr: str, attributes: dict[str, Any], frames: int
    ) -> FrameSource:
        """A source described by *attributes* (:meth:`layout_attributes`), its pixel data
        (*keyword*, *vr*) still to be given by :meth:`keep`: made without parsing a file."""
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = UID(stored)
        for name, value in attributes.items():
            setattr(ds, name, value)
        ds.add_new(keyword, vr, b"")
        source = cls.__new__(cls)
        source.stored_syntax = stored
        source._describe(ds, stored)
        source.number_of_frames = frames
        return source

    def _describe(self, ds: Dataset, stored: str) -> None:
        self.dataset: Dataset = ds
        self.sop_instance_uid = str(ds.get("SOPInstanceUID", "") or "")
        found = next(((kw, bits) for kw, bits in _PIXEL_KEYWORDS if kw in ds), None)
        if found is None:
            raise NotFound(f"the instance {self.sop_instance_uid} has no pixel data, so no frames")
        self.keyword, sample_bits = found
        self.native = stored in NATIVE_SYNTAXES or self.keyword != "PixelData"
        self.transfer_syntax = EXPLICIT_VR_LITTLE_ENDIAN if self.native else stored
        """The syntax the frames are stored in, as a client sees it."""
        self.number_of_frames = _int(ds.get("NumberOfFrames"), default=1) or 1
        self.bits_allocated = sample_bits or _int(ds.get("BitsAllocated"), default=0)
        self.pixel_vr = str(ds[self.keyword].VR)
        self._pixels: bytes = ds[self.keyword].value or b""
        self._index: dict[int, int] | None = None
        """Where only some frames are held (:meth:`keep`): each one's number among them."""

    def layout_attributes(self) -> dict[str, Any]:
        """The attributes of :data:`LAYOUT_ATTRIBUTES` the data set has (JSON values): all
        that cutting, decoding and encoding its frames read of it."""
        ds, out = self.dataset, {}
        for name in LAYOUT_ATTRIBUTES:
            value = ds.get(name)
            if value is not None and value != "":
                out[name] = value if isinstance(value, int) else str(value)
        return out

    def keep(self, frames: dict[int, bytes]) -> FrameSource:
        """Hold *frames* (by number, as stored) in place of the pixel data this source was read
        with: what a source read from the data set before the pixel data serves from."""
        numbers = sorted(frames)
        self._index = {n: i for i, n in enumerate(numbers, start=1)}
        held = [frames[n] for n in numbers]
        self._pixels = b"".join(held) if self.native else encapsulate(held, has_bot=True)
        ds = self.dataset
        ds[self.keyword].value = self._pixels
        if "NumberOfFrames" in ds:  # what pydicom's decoders go by
            ds.NumberOfFrames = len(numbers)
        for tag in _EXTENDED_OFFSET_TAGS:
            if tag in ds:
                del ds[tag]
        return self

    def _at(self, number: int) -> int:
        """The 0-based index of frame *number* in the pixel data held."""
        return (number if self._index is None else self._index[number]) - 1

    def native_frame_size(self) -> int | None:
        """Bytes of one frame of native pixel data; ``None`` where frames need not start on a
        byte (1-bit data) or are not served."""
        bits = self.bits_allocated
        if not self.native or bits % 8 or bits == 0:
            return None
        return self._frame_bits() // 8

    def _frame_bits(self) -> int:
        ds = self.dataset
        rows, columns = _int(ds.get("Rows"), default=0), _int(ds.get("Columns"), default=0)
        samples = _int(ds.get("SamplesPerPixel"), default=1) or 1
        if str(ds.get("PhotometricInterpretation", "")) == "YBR_FULL_422":
            samples = 2  # two Y for each Cb and Cr (PS3.3 C.7.6.3.1.2)
        return rows * columns * samples * self.bits_allocated

    # -- what exists -----------------------------------------------------------------------------

    def check(self, numbers: Iterable[int]) -> None:
        """:raises NotFound: a number is beyond the instance's last frame."""
        missing = sorted({n for n in numbers if n > self.number_of_frames})
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
            count = self.number_of_frames
            raise NotFound(
                f"the instance {self.sop_instance_uid} has {count} frame{'s' * (count != 1)}; "
                f"there is no frame {shown}"
            )

    # -- frames as stored ------------------------------------------------------------------------

    def as_stored(self, numbers: Sequence[int]) -> dict[int, bytes]:
        """The frames *numbers* in :attr:`transfer_syntax`, by number."""
        self.check(numbers)
        if self.native:  # each frame once, however often it is listed
            return {n: self._native_frame(n) for n in dict.fromkeys(numbers)}
        return self._encapsulated_frames(numbers)

    def _native_frame(self, number: int) -> bytes:
        bits = self.bits_allocated
        if bits != 1 and bits % 8:
            raise NotSupported(f"frames of pixel data with Bits Allocated {bits} are not served")
        frame_bits = self._frame_bits()
        index = self._at(number)
        start, end = index * frame_bits, (index + 1) * frame_bits
        if end > len(self._pixels) * 8 or frame_bits == 0:
            raise NotFound(
                f"the pixel data of the instance {self.sop_instance_uid} is too short for "
                f"frame {number} ({len(self._pixels)} bytes)"
            )
        if bits != 1:
            return self._pixels[start // 8 : end // 8]
        first, last = start // 8, (end + 7) // 8
        window = np.frombuffer(self._pixels, dtype=np.uint8, count=last - first, offset=first)
        unpacked = np.unpackbits(window, bitorder="little")[start % 8 : start % 8 + frame_bits]
        return np.packbits(unpacked, bitorder="little").tobytes()

    def _extended_offsets(self) -> tuple[bytes, bytes] | None:
        ds = self.dataset
        if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
            offsets, lengths = ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths
            if offsets and lengths:
                return bytes(offsets), bytes(lengths)
        return None

    def _encapsulated_frames(self, numbers: Sequence[int]) -> dict[int, bytes]:
        wanted = set(numbers)
        count = self.number_of_frames if self._index is None else len(self._index)
        extended = self._extended_offsets()
        try:
            if extended is not None or parse_basic_offsets(self._pixels):
                # Offsets are known: read the frames asked for, nothing else.
                return {
                    n: get_frame(
                        self._pixels, self._at(n), extended_offsets=extended, number_of_frames=count
                    )
                    for n in wanted
                }
            found: dict[int, bytes] = {}
            if count == 1:  # every fragment belongs to the one frame
                found[1] = b"".join(generate_frames(self._pixels, number_of_frames=1))
                return found
            for number, frame in enumerate(
                generate_frames(self._pixels, number_of_frames=count), start=1
            ):
                if number in wanted:
                    found[number] = frame
                if number >= max(wanted):
                    break
        except (ValueError, EOFError, KeyError) as err:  # offsets or items that do not add up
            raise NotFound(
                f"the encapsulated pixel data of the instance {self.sop_instance_uid} cannot be "
                f"split into frames: {err}"
            ) from err
        missing = wanted - found.keys()
        if missing:
            raise NotFound(
                f"the encapsulated pixel data of the instance {self.sop_instance_uid} holds "
                f"fewer frames than its Number of Frames ({count}): frame {min(missing)} is "
                "missing"
            )
        return found

    # -- frames in another syntax ----------------------------------------------------------------

    def frames(self, numbers: Sequence[int], transfer_syntax: str | None = None) -> list[Frame]:
        """The frames *numbers*, in the order asked, in *transfer_syntax* (``None``: as stored).
        A frame listed twice is cut, decoded and encoded once (its parts share the bytes).

        :raises NotFound: a frame does not exist.
        :raises NotAcceptable: the frames cannot be decoded, or encoded in *transfer_syntax*.
        """
        target = transfer_syntax or self.transfer_syntax
        if target == self.transfer_syntax:
            stored = self.as_stored(numbers)
            return [Frame(n, stored[n], target) for n in numbers]
        self.check(numbers)
        decoded = self._decoded(numbers)  # native bytes: as stored, or decoded
        if target == EXPLICIT_VR_LITTLE_ENDIAN:
            return [Frame(n, decoded[n][0], target) for n in numbers]
        encoded = {n: self._encode(native, pixel, target) for n, (native, pixel) in decoded.items()}
        return [Frame(n, encoded[n], target) for n in numbers]

    def _decoded(self, numbers: Sequence[int]) -> dict[int, tuple[bytes, dict[str, int | str]]]:
        """Native bytes of each frame, with the pixel description that goes with them."""
        if self.native:
            stored = self.as_stored(numbers)
            return {n: (stored[n], self._pixel_module()) for n in stored}
        uid = UID(self.transfer_syntax)
        wanted = sorted(set(numbers))
        try:
            decoder = get_decoder(uid)
            arrays = decoder.iter_array(self.dataset, indices=[self._at(n) for n in wanted])
            out: dict[int, tuple[bytes, dict[str, int | str]]] = {}
            for number, (array, pixel) in zip(wanted, arrays, strict=True):
                out[number] = (_native_bytes(array, int(pixel["bits_allocated"])), pixel)
        except Exception as err:  # no decoder plugin, or corrupt frame data
            raise NotAcceptable(
                f"the instance {self.sop_instance_uid} is stored in transfer syntax {uid} "
                f"({uid.name}) and rst cannot decode its frames: {err}; ask for "
                "transfer-syntax=* to get them as stored"
            ) from err
        return out

    def _pixel_module(self) -> dict[str, int | str]:
        ds = self.dataset
        module: dict[str, int | str] = {
            "rows": _int(ds.get("Rows"), default=0),
            "columns": _int(ds.get("Columns"), default=0),
            "samples_per_pixel": _int(ds.get("SamplesPerPixel"), default=1),
            "bits_allocated": self.bits_allocated,
            "bits_stored": _int(ds.get("BitsStored"), default=self.bits_allocated),
            "pixel_representation": _int(ds.get("PixelRepresentation"), default=0),
            "photometric_interpretation": str(ds.get("PhotometricInterpretation", "")),
        }
        if int(module["samples_per_pixel"]) > 1:
            module["planar_configuration"] = _int(ds.get("PlanarConfiguration"), default=0)
        return module

    def _encode(self, native: bytes, pixel: dict[str, int | str], target: str) -> bytes:
        uid = UID(target)
        options: dict[str, Any] = {k: v for k, v in pixel.items() if k != "number_of_frames"}
        try:
            return get_encoder(uid).encode(native, number_of_frames=1, **options)
        except Exception as err:  # no encoder plugin, or pixels the syntax cannot hold
            raise NotAcceptable(
                f"rst cannot encode the frames of the instance {self.sop_instance_uid} in "
                f"transfer syntax {uid} ({uid.name}): {err}"
            ) from err


def read_frames(data: bytes, numbers: Sequence[int], transfer_syntax: str | None) -> list[Frame]:
    """The frames *numbers* of the Part 10 file *data*, in *transfer_syntax* (``None``: as
    stored). See :class:`FrameSource`."""
    return FrameSource(data).frames(numbers, transfer_syntax)


def _native_bytes(array: np.ndarray, bits_allocated: int) -> bytes:
    """A decoded frame as native pixel data (little endian; 1-bit data packed)."""
    if bits_allocated == 1:
        return pack_bits(array)
    return array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


def _int(value: object, *, default: int) -> int:
    """An integer attribute's value (IS, US, ...), *default* when absent or unreadable."""
    if value is None or value == "":
        return default
    try:
        return int(str(value)) if not isinstance(value, int) else value
    except ValueError:
        return default
