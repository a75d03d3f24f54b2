"""STOW-RS uploads for tests: instances, multipart bodies, ways to spoil one part, and each
instance's fate read back from the response."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
from pydicom import dcmread

from rst.dicom.multipart import MultipartWriter
from rst.dicom.part10 import dataset_offset, part10_header
from rst.dicom.uids import IMPLEMENTATION_CLASS_UID
from tests.support.sample import write_ct_study

__all__ = [
    "Fates",
    "Instance",
    "ct_instances",
    "encapsulated_pixel_data",
    "fates",
    "huge_pixel_data",
    "moved_element",
    "multipart",
    "repeated_element",
    "repeated_private_elements",
    "replace_element",
    "truncated_pixel_data",
    "with_sop_instance",
    "with_transfer_syntax",
    "without_sop_class",
    "wrong_vr",
]

REFERENCED = "00081199"
FAILED = "00081198"
OTHER_FAILURES = "0008119A"
SOP_INSTANCE = "00081155"
REASON = "00081197"
RETRIEVE_URL = "00081190"


@dataclass(frozen=True)
class Instance:
    uid: str
    data: bytes


def ct_instances(folder: Path, count: int, seed: int) -> list[Instance]:
    study = write_ct_study(folder / f"ct-{seed}", images=count, seed=seed, study_uid=None)
    return [Instance(u, p.read_bytes()) for u, p in zip(study.sop_uids, study.paths, strict=True)]


def multipart(*parts: bytes) -> tuple[dict[str, str], bytes]:
    writer = MultipartWriter()
    body = b"".join(writer.part_head("application/dicom") + part for part in parts)
    return {"Content-Type": writer.content_type("application/dicom")}, body + writer.close()


@dataclass
class Fates:
    status: int
    referenced: list[str]
    failed: list[tuple[str | None, int]]
    other: list[int]


def fates(response: httpx.Response) -> Fates:
    assert response.headers["Content-Type"].startswith("application/dicom+json"), response.text
    body = response.json()

    def items(tag: str) -> list[dict[str, Any]]:
        return list(body.get(tag, {}).get("Value", []))

    referenced = [item[SOP_INSTANCE]["Value"][0] for item in items(REFERENCED)]
    for item in items(REFERENCED):
        assert item[RETRIEVE_URL]["Value"][0].endswith(item[SOP_INSTANCE]["Value"][0])
    failed = [
        (item.get(SOP_INSTANCE, {}).get("Value", [None])[0], item[REASON]["Value"][0])
        for item in items(FAILED)
    ]
    other = [item[REASON]["Value"][0] for item in items(OTHER_FAILURES)]
    return Fates(response.status_code, referenced, failed, other)


# -- how one part goes bad --------------------------------------------------------------------


def replace_element(data: bytes, tag: tuple[int, int], value: bytes, vr: bytes = b"") -> bytes:
    """Replace a top-level short-VR element of an Explicit VR Little Endian Part 10 file."""
    head = struct.pack("<HH", *tag)
    at = data.index(head, dataset_offset(data))
    (length,) = struct.unpack_from("<H", data, at + 6)
    value += b"\0" * (len(value) % 2)
    return (
        data[:at]
        + head
        + (vr or data[at + 4 : at + 6])
        + struct.pack("<H", len(value))
        + value
        + data[at + 8 + length :]
    )


def with_sop_instance(value: bytes) -> Callable[[bytes], bytes]:
    return lambda data: replace_element(data, (0x0008, 0x0018), value)


def truncated_pixel_data(data: bytes) -> bytes:
    """Cut in the middle of Pixel Data: its declared length exceeds what is there."""
    return data[: len(data) - 3000]


def huge_pixel_data(data: bytes) -> bytes:
    """Pixel Data declaring 2 GiB."""
    at = data.index(b"\xe0\x7f\x10\x00OW")
    return data[: at + 8] + struct.pack("<I", 2 << 30) + data[at + 12 :]


def without_sop_class(data: bytes) -> bytes:
    return replace_element(data, (0x0008, 0x0016), b"")


def wrong_vr(data: bytes) -> bytes:
    return replace_element(data, (0x0010, 0x0010), b"DOE^JANE", vr=b"Z!")


def _short_element(data: bytes, tag: tuple[int, int]) -> tuple[int, int]:
    """Where a top-level short-VR element of an Explicit VR Little Endian Part 10 file starts
    and ends."""
    at = data.index(struct.pack("<HH", *tag), dataset_offset(data))
    (length,) = struct.unpack_from("<H", data, at + 6)
    return at, at + 8 + length


def _pixel_data(data: bytes) -> int:
    return data.index(b"\xe0\x7f\x10\x00OW")


def moved_element(tag: tuple[int, int]) -> Callable[[bytes], bytes]:
    """*tag* moved to just before Pixel Data: the tags no longer ascend."""

    def spoil(data: bytes) -> bytes:
        start, end = _short_element(data, tag)
        pixel = _pixel_data(data)
        return data[:start] + data[end:pixel] + data[start:end] + data[pixel:]

    return spoil


def repeated_element(tag: tuple[int, int]) -> Callable[[bytes], bytes]:
    """*tag* twice in a row."""

    def spoil(data: bytes) -> bytes:
        start, end = _short_element(data, tag)
        return data[:end] + data[start:end] + data[end:]

    return spoil


def repeated_private_elements(data: bytes) -> bytes:
    """The chaos run's part: 20,000 private elements, their tags repeating, before Pixel Data
    (Orthanc took longer than store_timeout to take it)."""
    elements = [struct.pack("<HH", 0x0009, 0x0010) + b"LO\x08\x00HOSTILE "] + [
        struct.pack("<HH", 0x0009, 0x1000 | (n & 0xFF)) + b"LO\x02\x00x " for n in range(20_000)
    ]
    pixel = _pixel_data(data)
    return data[:pixel] + b"".join(elements) + data[pixel:]


def with_transfer_syntax(syntax: str) -> Callable[[bytes], bytes]:
    """The file meta names *syntax*; the data set is left as it was."""

    def spoil(data: bytes) -> bytes:
        ds = dcmread(BytesIO(data), stop_before_pixels=True)
        header = part10_header(
            sop_class_uid=ds.SOPClassUID,
            sop_instance_uid=ds.SOPInstanceUID,
            transfer_syntax=syntax,
            implementation_uid=IMPLEMENTATION_CLASS_UID,
        )
        return header + data[dataset_offset(data) :]

    return spoil


_UNDEFINED = 0xFFFFFFFF


def encapsulated_pixel_data(data: bytes, *, fragment_length: int | None = None) -> bytes:
    """Pixel Data (the last element) as encapsulated fragments: an empty Basic Offset Table, the
    pixels as one fragment (whose length field says *fragment_length*, if given), the sequence
    delimiter. The file meta is left as it was."""
    pixel = _pixel_data(data)
    (length,) = struct.unpack_from("<I", data, pixel + 8)
    pixels = data[pixel + 12 : pixel + 12 + length]
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 0)
    fragment = struct.pack(
        "<HHI", 0xFFFE, 0xE000, len(pixels) if fragment_length is None else fragment_length
    )
    return (
        data[:pixel]
        + struct.pack("<HH", 0x7FE0, 0x0010)
        + b"OB\0\0"
        + struct.pack("<I", _UNDEFINED)
        + item
        + fragment
        + pixels
        + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    )
