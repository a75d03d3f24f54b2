"""STOW-RS uploads for tests: instances, multipart bodies, ways to spoil one part, and each
instance's fate read back from the response."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from rst.dicom.multipart import MultipartWriter
from rst.dicom.part10 import dataset_offset
from tests.support.sample import write_ct_study

__all__ = [
    "Fates",
    "Instance",
    "ct_instances",
    "fates",
    "huge_pixel_data",
    "multipart",
    "replace_element",
    "truncated_pixel_data",
    "with_sop_instance",
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
