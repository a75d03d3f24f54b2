"""Frames for tests: small images as Part 10 files (native or RLE-encapsulated, with or without
offset tables), encoded frames decoded back to pixels, frames responses split into parts.

Built with pydicom and numpy only; deterministic.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

import httpx
import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate, encapsulate_extended
from pydicom.filewriter import dcmwrite
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.encoders.base import get_encoder
from pydicom.uid import UID, RLELossless

from rst.dicom.multipart import MultipartReader, parse_content_type

__all__ = [
    "EVLE",
    "J2K",
    "JLS",
    "OHIF_LOADER",
    "OHIF_VIEWER",
    "RLE",
    "SOP_UID",
    "decode",
    "encapsulated",
    "image",
    "native",
    "part10",
    "parts",
    "rle_frames",
    "volume",
]

EVLE = "1.2.840.10008.1.2.1"
JLS = "1.2.840.10008.1.2.4.80"
J2K = "1.2.840.10008.1.2.4.90"
RLE = str(RLELossless)
OHIF_VIEWER = 'multipart/related; type="application/octet-stream"; transfer-syntax="*"'
"""What OHIF's DICOMweb data source sends for frames (quoted)."""
OHIF_LOADER = "multipart/related; type=application/octet-stream; transfer-syntax=*"
"""The default of OHIF's image loader (unquoted)."""
SOP_UID = "1.2.3.4.5"
"""The SOP Instance UID of every instance built here."""


def part10(ds: Dataset, syntax: str = EVLE) -> bytes:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(ds.SOPClassUID)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(ds.SOPInstanceUID)
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    out = BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def image(
    frames: np.ndarray, *, bits_allocated: int | None = None, signed: bool = False
) -> Dataset:
    """A secondary-capture-like data set for *frames* (frames, rows, columns), no pixel data."""
    count, rows, columns = frames.shape
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = SOP_UID
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    bits = bits_allocated or frames.dtype.itemsize * 8
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = int(signed)
    if count > 1:
        ds.NumberOfFrames = count
    return ds


def volume(count: int, rows: int = 8, columns: int = 6, dtype: str = "<u2") -> np.ndarray:
    """*count* frames of random pixels (within 12 bits, negative too when signed)."""
    rng = np.random.default_rng(count)
    info = np.iinfo(np.dtype(dtype))
    high = min(int(info.max), 4000)
    low = max(int(info.min), -1000)
    return rng.integers(low, high, size=(count, rows, columns)).astype(dtype)


def native(frames: np.ndarray, *, syntax: str = EVLE, signed: bool = False) -> bytes:
    """*frames* as native pixel data in a Part 10 file of transfer syntax *syntax*."""
    ds = image(frames, signed=signed)
    ds.PixelData = frames.tobytes()
    ds["PixelData"].VR = "OW" if frames.dtype.itemsize > 1 else "OB"
    return part10(ds, syntax)


def _pixel_options(like: np.ndarray) -> dict[str, Any]:
    _, rows, columns = like.shape
    return {
        "rows": rows,
        "columns": columns,
        "samples_per_pixel": 1,
        "bits_allocated": like.dtype.itemsize * 8,
        "bits_stored": like.dtype.itemsize * 8,
        "pixel_representation": int(like.dtype.kind == "i"),
        "photometric_interpretation": "MONOCHROME2",
        "number_of_frames": 1,
    }


def rle_frames(frames: np.ndarray) -> list[bytes]:
    encoder = get_encoder(RLELossless)
    options = _pixel_options(frames)
    return [encoder.encode(frame.tobytes(), **options) for frame in frames]


def encapsulated(
    frames: np.ndarray, *, offsets: str = "basic", fragments_per_frame: int = 1
) -> tuple[bytes, list[bytes]]:
    """*frames* as an RLE Lossless Part 10 file, and its encoded frames. *offsets*: ``basic``
    (a basic offset table), ``none`` (an empty one) or ``extended`` (an extended table)."""
    encoded = rle_frames(frames)
    ds = image(frames)
    if offsets == "extended":
        ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(
            encoded
        )
    else:
        ds.PixelData = encapsulate(
            encoded, fragments_per_frame=fragments_per_frame, has_bot=offsets == "basic"
        )
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return part10(ds, RLE), encoded


def decode(frame: bytes, syntax: str, like: np.ndarray) -> np.ndarray:
    """One frame back to pixels shaped and typed like a frame of *like* (frames, rows,
    columns): native bytes as they are, an encoded frame through pydicom's decoder."""
    _, rows, columns = like.shape
    if syntax == EVLE:
        return np.frombuffer(frame, dtype=like.dtype.newbyteorder("<")).reshape(rows, columns)
    options = _pixel_options(like)
    array, _ = get_decoder(UID(syntax)).as_array(encapsulate([frame]), **options)
    return np.asarray(array)


def parts(response: httpx.Response) -> list[tuple[str, bytes]]:
    """A multipart/related response's parts: (Content-Type, bytes) each."""
    _, params = parse_content_type(response.headers["Content-Type"])
    reader = MultipartReader(params["boundary"], max_part_bytes=1 << 28, max_total_bytes=1 << 30)
    found = reader.feed(response.content) + reader.finish()
    return [(part.content_type or "", part.data) for part in found]
