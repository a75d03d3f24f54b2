"""The media type of pixel data in each transfer syntax, for bulk data and frames (PS3.18 §8.7.3.3).

Uncompressed bulk data is ``application/octet-stream`` (Table 8.7.3-4); compressed pixel data
travels as its codec's own octet stream, without the fragment delimiters, labelled with the
media type of Table 8.7.3-5 and the transfer syntax as a parameter. This module is the one home
of that table: the bulk data, frames and rendered resources all import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
    MPEGTransferSyntaxes,
    RLELossless,
)

__all__ = [
    "BULK_MEDIA_TYPES",
    "OCTET_STREAM",
    "bulk_media_type",
    "default_transfer_syntax",
    "is_encapsulated",
    "is_video",
    "transfer_syntaxes_of",
]

OCTET_STREAM = "application/octet-stream"

_HTJ2K = ("1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203")
"""High-Throughput JPEG 2000 (image/jphc); pydicom lists them with JPEG 2000."""
_JPEG_XL = ("1.2.840.10008.1.2.4.110", "1.2.840.10008.1.2.4.111", "1.2.840.10008.1.2.4.112")
_HEVC = ("1.2.840.10008.1.2.4.107", "1.2.840.10008.1.2.4.108")
_MPEG2 = tuple(
    uid
    for uid in MPEGTransferSyntaxes
    if uid.startswith(("1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.101"))
)
_ENCAPSULATED_UNCOMPRESSED = "1.2.840.10008.1.2.1.98"


def _table() -> dict[str, str]:
    table = dict.fromkeys(
        (
            str(ImplicitVRLittleEndian),
            str(ExplicitVRLittleEndian),
            str(DeflatedExplicitVRLittleEndian),
            str(ExplicitVRBigEndian),
            _ENCAPSULATED_UNCOMPRESSED,
        ),
        OCTET_STREAM,
    )
    table.update(dict.fromkeys(map(str, JPEGTransferSyntaxes), "image/jpeg"))
    table[str(RLELossless)] = "image/dicom-rle"
    table.update(dict.fromkeys(map(str, JPEGLSTransferSyntaxes), "image/jls"))
    table["1.2.840.10008.1.2.4.90"] = table["1.2.840.10008.1.2.4.91"] = "image/jp2"
    table["1.2.840.10008.1.2.4.92"] = table["1.2.840.10008.1.2.4.93"] = "image/jpx"
    table.update(dict.fromkeys(_HTJ2K, "image/jphc"))
    table.update(dict.fromkeys(_JPEG_XL, "image/jxl"))
    table.update(dict.fromkeys(map(str, MPEGTransferSyntaxes), "video/mp4"))
    table.update(dict.fromkeys(_MPEG2, "video/mpeg2"))
    table.update(dict.fromkeys(_HEVC, "video/H265"))
    assert set(map(str, JPEG2000TransferSyntaxes)) <= table.keys()
    return table


BULK_MEDIA_TYPES: Mapping[str, str] = MappingProxyType(_table())
"""Transfer Syntax UID → media type of its pixel data as bulk data (PS3.18 Table 8.7.3-5):
the JPEG family (baseline, extended, lossless) ``image/jpeg``, JPEG-LS ``image/jls``,
JPEG 2000 ``image/jp2``, JPEG 2000 Part 2 ``image/jpx``, HTJ2K ``image/jphc``, JPEG XL
``image/jxl``, RLE ``image/dicom-rle``, MPEG-2 ``video/mpeg2``, MPEG-4 AVC ``video/mp4``,
HEVC ``video/H265``; uncompressed syntaxes ``application/octet-stream``."""


def bulk_media_type(transfer_syntax: str) -> str:
    """The media type of pixel data stored in *transfer_syntax*; ``application/octet-stream``
    for a syntax rst does not know (a private one: the bytes are sent as they are)."""
    return BULK_MEDIA_TYPES.get(transfer_syntax, OCTET_STREAM)


def is_encapsulated(transfer_syntax: str) -> bool:
    """Whether pixel data in *transfer_syntax* is encapsulated (fragments, PS3.5 §A.4)."""
    return UID(transfer_syntax).is_encapsulated


def is_video(transfer_syntax: str) -> bool:
    """Whether *transfer_syntax* holds one video stream: its fragments are not frames."""
    return transfer_syntax in MPEGTransferSyntaxes


_DEFAULTS: Mapping[str, str] = MappingProxyType(
    {
        OCTET_STREAM: str(ExplicitVRLittleEndian),
        "image/jpeg": "1.2.840.10008.1.2.4.70",
        "image/dicom-rle": str(RLELossless),
        "image/jls": "1.2.840.10008.1.2.4.80",
        "image/jp2": "1.2.840.10008.1.2.4.90",
        "image/jpx": "1.2.840.10008.1.2.4.92",
        "image/jphc": "1.2.840.10008.1.2.4.201",
        "image/jxl": "1.2.840.10008.1.2.4.110",
    }
)
"""The default ("D") transfer syntax of each image bulk media type in Table 8.7.3-5."""


def default_transfer_syntax(media_type: str) -> str | None:
    """The transfer syntax a client means by an image bulk *media_type* without a
    ``transfer-syntax`` parameter; ``None`` for anything else (video types included: their
    frames are not encoded one by one)."""
    return _DEFAULTS.get(media_type)


def transfer_syntaxes_of(media_type: str) -> frozenset[str]:
    """Every transfer syntax whose pixel data is *media_type*."""
    return frozenset(uid for uid, media in BULK_MEDIA_TYPES.items() if media == media_type)
