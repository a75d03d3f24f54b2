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
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
    MPEGTransferSyntaxes,
)

from rst.dicom.uids import (
    ENCAPSULATED_UNCOMPRESSED,
    EXPLICIT_VR_LITTLE_ENDIAN,
    HEVC,
    HTJ2K,
    HTJ2K_LOSSLESS,
    JPEG_2000,
    JPEG_2000_LOSSLESS,
    JPEG_2000_MULTI_COMPONENT,
    JPEG_2000_MULTI_COMPONENT_LOSSLESS,
    JPEG_LOSSLESS_SV1,
    JPEG_LS_LOSSLESS,
    JPEG_XL,
    JPEG_XL_LOSSLESS,
    MPEG2_PREFIXES,
    NATIVE_SYNTAXES,
    RLE_LOSSLESS,
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

_MPEG2 = tuple(uid for uid in MPEGTransferSyntaxes if uid.startswith(MPEG2_PREFIXES))


def _table() -> dict[str, str]:
    table = dict.fromkeys(
        (
            *NATIVE_SYNTAXES,
            ENCAPSULATED_UNCOMPRESSED,
        ),
        OCTET_STREAM,
    )
    table.update(dict.fromkeys(map(str, JPEGTransferSyntaxes), "image/jpeg"))
    table[RLE_LOSSLESS] = "image/dicom-rle"
    table.update(dict.fromkeys(map(str, JPEGLSTransferSyntaxes), "image/jls"))
    table[JPEG_2000_LOSSLESS] = table[JPEG_2000] = "image/jp2"
    table[JPEG_2000_MULTI_COMPONENT_LOSSLESS] = table[JPEG_2000_MULTI_COMPONENT] = "image/jpx"
    table.update(dict.fromkeys(HTJ2K, "image/jphc"))  # pydicom lists them with JPEG 2000
    table.update(dict.fromkeys(JPEG_XL, "image/jxl"))
    table.update(dict.fromkeys(map(str, MPEGTransferSyntaxes), "video/mp4"))
    table.update(dict.fromkeys(_MPEG2, "video/mpeg2"))
    table.update(dict.fromkeys(HEVC, "video/H265"))
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
        OCTET_STREAM: EXPLICIT_VR_LITTLE_ENDIAN,
        "image/jpeg": JPEG_LOSSLESS_SV1,
        "image/dicom-rle": RLE_LOSSLESS,
        "image/jls": JPEG_LS_LOSSLESS,
        "image/jp2": JPEG_2000_LOSSLESS,
        "image/jpx": JPEG_2000_MULTI_COMPONENT_LOSSLESS,
        "image/jphc": HTJ2K_LOSSLESS,
        "image/jxl": JPEG_XL_LOSSLESS,
    }
)
"""The default ("D") transfer syntax of each image bulk media type in Table 8.7.3-5: what
a client asking for frames as that type without ``transfer-syntax`` gets. Video is not cut
into frames."""


def default_transfer_syntax(media_type: str) -> str | None:
    """The transfer syntax a client means by an image bulk *media_type* without a
    ``transfer-syntax`` parameter; ``None`` for anything else (video types included: their
    frames are not encoded one by one)."""
    return _DEFAULTS.get(media_type)


def transfer_syntaxes_of(media_type: str) -> frozenset[str]:
    """Every transfer syntax whose pixel data is *media_type*."""
    return frozenset(uid for uid, media in BULK_MEDIA_TYPES.items() if media == media_type)
