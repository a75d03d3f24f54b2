"""DICOM Part 10 (PS3.10 §7) file helpers: wrap received datasets, read uploads, re-encode.

Sans-IO and built on pydicom's own file meta writer and reader, so the File Meta Information
(group 0002, always Explicit VR Little Endian, with a correct group length) matches what pydicom
and every other toolkit expect.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from io import BytesIO

from pydicom import Dataset, dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import FileMetaDataset
from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble
from pydicom.filewriter import dcmwrite
from pydicom.multival import MultiValue
from pydicom.pixels.encoders.base import get_encoder
from pydicom.tag import BaseTag
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from rst.dicom.completeness import check_complete
from rst.dicom.uid import is_valid_uid
from rst.dicom.uids import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLEMENTATION_VERSION,
    IMPLICIT_VR_LITTLE_ENDIAN,
    JPEG_2000_LOSSLESS,
    JPEG_LS_LOSSLESS,
    NATIVE_SYNTAXES,
    NOT_IN_PLACE,
    RLE_LOSSLESS,
)
from rst.errors import BadRequest, NotAcceptable

__all__ = [
    "LOSSLESS_ENCODINGS",
    "BadUpload",
    "Upload",
    "data_set_start",
    "encodable_syntaxes",
    "part10_bytes",
    "read_instance",
    "read_part10",
    "read_upload",
    "reencode",
    "transfer_syntax_of",
]

_TARGET_SYNTAXES = frozenset(
    {EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN}
)
"""Uncompressed syntaxes :func:`reencode` writes (Big Endian is retired and not used in web
services)."""

LOSSLESS_ENCODINGS = (RLE_LOSSLESS, JPEG_LS_LOSSLESS, JPEG_2000_LOSSLESS)
"""Compressed syntaxes rst encodes into when pydicom has a plugin for them (RLE: pydicom itself
or pylibjpeg-rle; JPEG-LS: pyjpegls; JPEG 2000: pylibjpeg-openjpeg). Lossy encodings are not
offered: rst does not choose a quality on a client's behalf."""


@cache
def encodable_syntaxes() -> frozenset[str]:
    """The compressed transfer syntaxes of :data:`LOSSLESS_ENCODINGS` that pydicom can encode
    into with the plugins installed here."""
    return frozenset(uid for uid in LOSSLESS_ENCODINGS if get_encoder(UID(uid)).is_available)


_PREAMBLE = b"\x00" * 128
_ELEMENT_HEADER = 8
"""Bytes of the shortest element header (PS3.5 7.1.2): less than that is no data set."""
_UNDEFINED_LENGTH = 0xFFFFFFFF
_SWAP_WIDTH = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
"""Byte width of the words of the binary VRs whose byte order depends on the transfer syntax."""


def part10_bytes(
    dataset_bytes: bytes | memoryview,
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax: str,
    implementation_uid: str,
    source_aet: str | None = None,
) -> bytes:
    """Prefix an encoded dataset with the 128-byte preamble, ``DICM`` and File Meta Information.

    ``dataset_bytes`` (as received in a C-STORE, encoded in ``transfer_syntax``) are copied
    unchanged; the meta group carries the given UIDs and, if given, the Source AE Title.
    """
    header = part10_header(
        sop_class_uid=sop_class_uid,
        sop_instance_uid=sop_instance_uid,
        transfer_syntax=transfer_syntax,
        implementation_uid=implementation_uid,
        source_aet=source_aet,
    )
    return header + bytes(dataset_bytes)


def part10_header(
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax: str,
    implementation_uid: str,
    source_aet: str | None = None,
) -> bytes:
    """Preamble, ``DICM`` and the File Meta Information group, encoded by hand.

    It is written once per received instance, on the receive path: pydicom's general writer
    costs a few hundred microseconds here, this a few. The group is always Explicit VR Little
    Endian (PS3.10 7.1); UIDs are padded with NUL and the AE title with a space to even length.
    """
    elements = [
        _element(0x0001, b"OB", b"\x00\x01"),
        _element(0x0002, b"UI", _uid(sop_class_uid)),
        _element(0x0003, b"UI", _uid(sop_instance_uid)),
        _element(0x0010, b"UI", _uid(transfer_syntax)),
        _element(0x0012, b"UI", _uid(implementation_uid)),
        _element(0x0013, b"SH", _even(IMPLEMENTATION_VERSION.encode("ascii"), b" ")),
    ]
    if source_aet:
        elements.append(_element(0x0016, b"AE", _even(source_aet.encode("ascii"), b" ")))
    body = b"".join(elements)
    group_length = b"\x02\x00\x00\x00UL\x04\x00" + struct.pack("<I", len(body))
    return b"".join((_PREAMBLE, b"DICM", group_length, body))


def _uid(value: str) -> bytes:
    return _even(value.encode("ascii"), b"\x00")


def _even(value: bytes, pad: bytes) -> bytes:
    return value + pad if len(value) % 2 else value


def _element(element: int, vr: bytes, value: bytes) -> bytes:
    if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT", b"UR", b"UC"):  # 4-byte length form
        return (
            struct.pack("<HH", 2, element)
            + vr
            + b"\x00\x00"
            + struct.pack("<I", len(value))
            + value
        )
    return struct.pack("<HH", 2, element) + vr + struct.pack("<H", len(value)) + value


def _has_part10_header(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == b"DICM"


def transfer_syntax_of(data: bytes) -> str:
    """The Transfer Syntax UID in a Part 10 file's meta group (the dataset is not parsed).

    :raises BadRequest: not a Part 10 file, or its meta has no Transfer Syntax UID.
    """
    if not _has_part10_header(data):
        raise BadRequest("not a DICOM Part 10 file (no 'DICM' prefix after the preamble)")
    if (start := data_set_start(data)) is not None:
        return start[1]
    fp = BytesIO(data)
    try:
        read_preamble(fp, False)
        meta = _read_file_meta_info(fp)
    except Exception as err:  # pydicom raises many kinds on garbage
        raise BadRequest(f"unreadable DICOM file meta information: {err}") from err
    syntax = meta.get("TransferSyntaxUID")
    if not syntax:
        raise BadRequest("the DICOM file meta information has no Transfer Syntax UID")
    return str(syntax).strip("\0 ")


def _check_lengths(dataset: Dataset) -> None:
    """Refuse a truncated dataset: pydicom silently returns short values at end of data."""
    for tag in list(dataset.keys()):
        raw = dataset.get_item(tag)
        if not isinstance(raw, RawDataElement) or raw.length == _UNDEFINED_LENGTH:
            continue
        if raw.value is not None and len(raw.value) < raw.length:
            raise BadRequest(
                f"the DICOM data is truncated: {tag} declares {raw.length} bytes, "
                f"{len(raw.value)} are present"
            )


def read_instance(data: bytes) -> tuple[Dataset, str]:
    """Parse an uploaded instance (STOW-RS part): a Part 10 file, or a bare dataset.

    A bare dataset (no preamble/meta) is read with the encoding pydicom detects (Implicit VR
    Little Endian normally). Returns the dataset (file meta in ``dataset.file_meta`` for Part 10
    input) and its transfer syntax UID.

    :raises BadRequest: the data is not DICOM, or lacks SOP Class / SOP Instance UID.
    """
    part10 = _has_part10_header(data)
    try:
        dataset = dcmread(BytesIO(data), force=not part10)
        _check_lengths(dataset)
        # dcmread is lazy: touch every element so that damage shows here, not later.
        for _ in dataset.iterall():
            pass
    except BadRequest:
        raise
    except Exception as err:  # pydicom raises many kinds on garbage
        raise BadRequest(f"the data is not a readable DICOM instance: {err}") from err
    if part10:
        syntax = str(dataset.file_meta.get("TransferSyntaxUID") or "").strip("\0 ")
        if not syntax:
            raise BadRequest("the DICOM file meta information has no Transfer Syntax UID")
    else:
        implicit, little = dataset.original_encoding
        if implicit:
            syntax = str(ImplicitVRLittleEndian)
        else:
            syntax = str(ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    for keyword in ("SOPClassUID", "SOPInstanceUID"):
        if not dataset.get(keyword):
            raise BadRequest(f"the data is not a DICOM instance: it has no {keyword}")
    return dataset, syntax


_CHARSET = 0x00080005
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"})
"""Explicit VRs with a reserved field and a 4-byte length (PS3.5 §7.1.2)."""
_ELEMENT = struct.Struct("<HH2sH")
_LONG_LENGTH = struct.Struct("<L")


def data_set_start(data: bytes) -> tuple[int, str] | None:
    """Where the data set of a Part 10 file starts, and its transfer syntax, read from the file
    meta by hand (pydicom's reader of it costs more than reading a CT image's data set).
    ``None`` for anything but the usual form (a preamble, ``DICM``, then group 0002 in Explicit
    VR Little Endian with a transfer syntax): then let pydicom read the file."""
    offset = len(_PREAMBLE) + 4
    if data[len(_PREAMBLE) : offset] != b"DICM":
        return None
    syntax = None
    while offset + 8 <= len(data):
        group, element, vr, length = _ELEMENT.unpack_from(data, offset)
        if group != 2:
            break
        start = offset + 8
        if vr in _LONG_VRS:
            if start + 4 > len(data):
                return None
            (length,) = _LONG_LENGTH.unpack_from(data, start)
            start += 4
        if element == 0x0010:
            value = data[start : start + length].strip(b"\0 ")
            if not value.isascii():
                return None
            syntax = value.decode("ascii")
        offset = start + length
    if not syntax or offset > len(data):
        return None
    return offset, syntax


def read_part10(data: bytes, tags: Iterable[int] | None = None) -> Dataset:
    """A Part 10 file as pydicom reads it (its file meta: the transfer syntax alone, where
    :func:`data_set_start` reads it by hand — pydicom's reader of the meta costs about as much
    as that of a CT image's data set); only the top-level elements *tags* (and the Specific
    Character Set) when given. Anything unusual is read by ``dcmread``, whatever it makes of
    it (and whatever it raises)."""
    wanted: list[BaseTag | int] | None = [*sorted(tags), _CHARSET] if tags else None
    start = data_set_start(data)
    if start is not None and start[1] not in NOT_IN_PLACE:
        offset, syntax = start
        fp = BytesIO(data)
        fp.seek(offset)
        implicit = syntax == str(ImplicitVRLittleEndian)
        try:  # pydicom's reader of the data set alone, as dcmread would call it
            dataset = read_dataset(fp, implicit, True, specific_tags=wanted)
        except Exception:  # odd files: dcmread's own way
            pass
        else:
            dataset.file_meta = FileMetaDataset()
            dataset.file_meta.TransferSyntaxUID = UID(syntax)
            return dataset
    return dcmread(BytesIO(data), specific_tags=sorted(tags) if tags else None)


def dataset_offset(data: bytes) -> int:
    """Where the dataset starts in a Part 10 file: after the preamble, ``DICM`` and the meta."""
    if (start := data_set_start(data)) is not None:
        return start[0]
    fp = BytesIO(data)
    read_preamble(fp, False)
    _read_file_meta_info(fp)
    return fp.tell()


@dataclass(frozen=True)
class Upload:
    """An uploaded instance (STOW-RS part), read only up to its pixel data, checked whole."""

    data: bytes
    header: Dataset
    """The attributes before Pixel Data (the file meta in ``header.file_meta``)."""
    transfer_syntax: str
    dataset_offset: int
    """Where the encoded dataset starts in ``data`` (after preamble and meta; 0 if bare)."""
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    """The instance's UIDs, each a valid UID (PS3.5 9.1)."""

    @property
    def dataset(self) -> memoryview:
        return memoryview(self.data)[self.dataset_offset :]


class BadUpload(BadRequest):
    """An upload rst cannot store as it is. ``sop_class_uid`` and ``sop_instance_uid`` are the
    instance's UIDs when they could be read and are valid (to name it in a STOW-RS response)."""

    def __init__(
        self, message: str, *, sop_class_uid: str | None = None, sop_instance_uid: str | None = None
    ) -> None:
        super().__init__(message)
        self.sop_class_uid = sop_class_uid
        self.sop_instance_uid = sop_instance_uid


_UPLOAD_UIDS = {
    "SOPClassUID": "SOP Class UID",
    "SOPInstanceUID": "SOP Instance UID",
    "StudyInstanceUID": "Study Instance UID",
    "SeriesInstanceUID": "Series Instance UID",
}


def read_upload(data: bytes) -> Upload:
    """Read an uploaded Part 10 file (or bare dataset) up to its pixel data, and check it.

    Cheaper than :func:`read_instance`: the bulk of the data is not decoded. What is checked is
    what rst relies on to send the data set as it came: the SOP Class, SOP Instance, Study and
    Series Instance UIDs are present and valid, and every element is whole and well-formed (a
    data set cut short would leave the PACS waiting for the rest; tags out of order, or Pixel
    Data whose form is not the transfer syntax's, stall it too; see
    :mod:`rst.dicom.completeness`). Damage inside a value (a corrupt compressed frame) is left
    for the PACS to find.

    :raises BadUpload: the data is not DICOM, is truncated, or lacks a valid UID.
    """
    if len(data) < _ELEMENT_HEADER:  # not even one element (and cheaper than pydicom's answer)
        raise BadUpload("the part is empty" if not data else f"{len(data)} bytes are no DICOM data")
    part10 = _has_part10_header(data)
    offset = 0
    try:
        if part10:
            fp = BytesIO(data)
            read_preamble(fp, False)
            meta = _read_file_meta_info(fp)
            offset = fp.tell()
            syntax = str(meta.get("TransferSyntaxUID") or "").strip("\0 ")
            if not syntax:
                raise BadUpload("the DICOM file meta information has no Transfer Syntax UID")
        header = dcmread(BytesIO(data), force=not part10, stop_before_pixels=True)
        implicit, little = header.original_encoding
        if not part10:
            syntax = str(
                ImplicitVRLittleEndian
                if implicit
                else ExplicitVRLittleEndian
                if little
                else ExplicitVRBigEndian
            )
        uids = {keyword: _text(header, keyword) for keyword in _UPLOAD_UIDS}
    except BadUpload:
        raise
    except Exception as err:  # pydicom raises many kinds on garbage
        raise BadUpload(f"the data is not a readable DICOM instance: {err}") from err
    valid = {keyword: value for keyword, value in uids.items() if is_valid_uid(value)}
    names = {
        "sop_class_uid": valid.get("SOPClassUID"),
        "sop_instance_uid": valid.get("SOPInstanceUID"),
    }
    if not is_valid_uid(syntax) or not UID(syntax).is_transfer_syntax:
        raise BadUpload(
            f"the Transfer Syntax UID {syntax[:80]!r} is not a transfer syntax rst knows", **names
        )
    try:
        check_complete(
            memoryview(data)[offset:],
            implicit_vr=bool(implicit),
            little_endian=bool(little),
            encapsulated=UID(syntax).is_encapsulated,
            deflated=syntax == str(DeflatedExplicitVRLittleEndian),
            meta_first=not part10,
        )
    except BadRequest as exc:
        raise BadUpload(exc.message, **names) from None
    for keyword, name in _UPLOAD_UIDS.items():
        value = uids[keyword]
        if not value:
            raise BadUpload(f"the data is not a DICOM instance: it has no {name}", **names)
        if keyword not in valid:
            raise BadUpload(f"the {name} {value[:80]!r} is not a valid UID", **names)
    return Upload(
        data,
        header,
        syntax,
        offset,
        sop_class_uid=valid["SOPClassUID"],
        sop_instance_uid=valid["SOPInstanceUID"],
        study_uid=valid["StudyInstanceUID"],
        series_uid=valid["SeriesInstanceUID"],
    )


def _text(header: Dataset, keyword: str) -> str:
    """An attribute's value as the text it holds ("" when absent or empty), from the raw bytes
    where pydicom has not converted it yet: a malformed value is reported by rst, not turned
    into a warning (or an exception) by pydicom's validation. Several values (a backslash in a
    UID) come back joined as they were sent."""
    tag = tag_for_keyword(keyword)
    if tag is None or tag not in header:
        return ""
    value = header.get_item(tag).value
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("latin-1").strip("\0 ")
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(item) for item in value)
    return str(value).strip("\0 ")


def _swap_binary(dataset: Dataset) -> None:
    """Byte-swap OW/OF/OL/OD/OV values in place (big ↔ little endian), nested sequences too.

    pydicom re-encodes decoded values (US, FL, ...) itself but leaves these raw byte strings.
    """
    for elem in dataset:
        if elem.VR == "SQ":
            for item in elem.value:
                _swap_binary(item)
            continue
        width = _SWAP_WIDTH.get(elem.VR)
        if width is None or not elem.value or elem.is_undefined_length:
            continue
        value: bytes = elem.value
        if len(value) % width:
            raise NotAcceptable(f"cannot convert {elem.tag} ({elem.VR}) to little endian")
        swapped = bytearray(value)
        for offset in range(width):
            swapped[offset::width] = value[width - 1 - offset :: width]
        elem.value = bytes(swapped)


def reencode(data: bytes, transfer_syntax: str) -> bytes:
    """Re-encode a Part 10 file into another transfer syntax (transcoding, PS3.18 §8.7.3.5).

    Sources: any uncompressed syntax (Implicit VR LE, Explicit VR LE, Explicit VR BE, Deflated)
    and the compressed ones pydicom's decoders handle (JPEG, JPEG-LS, JPEG 2000, RLE, with the
    pylibjpeg plugins), which are decompressed. Targets: Explicit VR LE, Implicit VR LE,
    Deflated, and the lossless compressed syntaxes of :func:`encodable_syntaxes`, into which the
    pixel data is encoded frame by frame. A file already in ``transfer_syntax`` is returned
    unchanged; the instance keeps its SOP Instance UID (the encoding changes, not the image).

    :raises NotAcceptable: the target is not one of the above, or the pixel data cannot be
        decompressed or encoded in it.
    :raises BadRequest: ``data`` is not a Part 10 file.
    """
    source = transfer_syntax_of(data)
    if source == transfer_syntax:
        return data
    compress = transfer_syntax in encodable_syntaxes()
    if transfer_syntax not in _TARGET_SYNTAXES and not compress:
        raise NotAcceptable(f"rst cannot encode instances in transfer syntax {transfer_syntax}")
    try:
        dataset = dcmread(BytesIO(data))
    except Exception as err:  # pydicom raises many kinds on garbage
        raise BadRequest(f"the data is not a readable DICOM instance: {err}") from err
    if source == str(ExplicitVRBigEndian):
        _swap_binary(dataset)
    elif source not in NATIVE_SYNTAXES:
        try:
            # Decompression changes the encoding, not the image: the instance keeps its UID.
            dataset.decompress(generate_instance_uid=False)
        except Exception as err:  # no decoder, or corrupt pixel data
            raise NotAcceptable(
                f"the instance is stored in transfer syntax {source} and rst cannot decompress "
                f"it to {transfer_syntax}: {err}; ask for transfer-syntax=* to get it as stored"
            ) from err
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if compress and "PixelData" in dataset:  # without, only the label changes
        try:
            dataset.compress(transfer_syntax, generate_instance_uid=False)
        except Exception as err:  # pixels the syntax cannot hold (1-bit, float, 32-bit, ...)
            name = UID(transfer_syntax).name
            raise NotAcceptable(
                f"rst cannot encode this instance in transfer syntax {transfer_syntax} "
                f"({name}): {err}; ask for transfer-syntax=* to get it as stored"
            ) from err
    dataset.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    out = BytesIO()
    dcmwrite(out, dataset, enforce_file_format=True)
    return out.getvalue()
