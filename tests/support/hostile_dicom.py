"""Small DICOM instances for hostile STOW-RS uploads, and the ways to spoil them.

An instance is a list of elements encoded by hand (Explicit VR Little Endian), so that any lie
can be told: a VR that is not one, a length that does not fit, UIDs that are not UIDs, a file
meta that names another transfer syntax, sequences nested thousands deep, elements repeated out
of order. Each mutation is a plain function of a :class:`random.Random` (see
:mod:`tests.support.hostile_http`, which puts them into multipart bodies).
"""

from __future__ import annotations

import itertools
import os
import random
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

__all__ = [
    "EXPLICIT_LE",
    "MUTATIONS",
    "SECONDARY_CAPTURE",
    "SmallInstance",
    "fresh_uid",
    "mutate_instance",
    "small_instance",
]

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def _bulk(rng: random.Random) -> random.Random:
    """A child generator for large payloads (one draw from *rng*)."""
    return random.Random(rng.getrandbits(32))


def fresh_uid_root() -> str:
    return f"2.25.{int.from_bytes(os.urandom(8), 'big')}"


_ROOT = fresh_uid_root()
_UIDS = itertools.count(1)


def fresh_uid() -> str:
    """A UID no archive has seen (unique in this process)."""
    return f"{_ROOT}.{next(_UIDS)}"


# --- instances --------------------------------------------------------------------------

_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"})


@dataclass(frozen=True)
class _Element:
    tag: int
    vr: bytes
    value: bytes
    length: int | None = None  # a length field that lies


def _encode(elements: Sequence[_Element]) -> bytes:
    """Explicit VR Little Endian, written by hand so that any lie can be told."""
    out = bytearray()
    for element in elements:
        length = len(element.value) if element.length is None else element.length
        out += struct.pack("<HH", element.tag >> 16, element.tag & 0xFFFF) + element.vr
        if element.vr.decode("latin-1") in _LONG_VRS:
            out += b"\0\0" + struct.pack("<L", length & 0xFFFFFFFF)
        else:
            out += struct.pack("<H", length & 0xFFFF)
        out += element.value
    return bytes(out)


def _ui(uid: str) -> bytes:
    data = uid.encode("utf-8", errors="surrogatepass")
    return data + b"\0" if len(data) % 2 else data


def _text_value(text: str) -> bytes:
    data = text.encode("utf-8", errors="surrogatepass")
    return data + b" " if len(data) % 2 else data


@dataclass(frozen=True)
class SmallInstance:
    """A small Secondary Capture instance as elements, encoded on demand."""

    sop_uid: str
    study_uid: str
    series_uid: str
    elements: tuple[_Element, ...]
    syntax: str = EXPLICIT_LE
    meta: bool = True

    def part10(self) -> bytes:
        data = _encode(self.elements)
        if not self.meta:
            return data
        sop_class = next((e.value for e in self.elements if e.tag == 0x00080016), b"")
        meta = _encode(
            [
                _Element(0x00020001, b"OB", b"\0\1"),
                _Element(0x00020002, b"UI", sop_class),
                _Element(0x00020003, b"UI", _ui(self.sop_uid)),
                _Element(0x00020010, b"UI", _ui(self.syntax)),
                _Element(0x00020012, b"UI", _ui("1.2.826.0.1.3680043.10.1379.2")),
            ]
        )
        group = _encode([_Element(0x00020000, b"UL", struct.pack("<L", len(meta)))])
        return bytes(128) + b"DICM" + group + meta + data


def small_instance(
    rng: random.Random, *, study_uid: str | None = None, series_uid: str | None = None
) -> SmallInstance:
    """A valid 4x4 8-bit Secondary Capture instance with fresh UIDs."""
    sop_uid = fresh_uid()
    study_uid = study_uid or fresh_uid()
    series_uid = series_uid or fresh_uid()
    pixels = bytes(rng.randrange(256) for _ in range(2)) * 8
    us = struct.Struct("<H").pack
    elements = (
        _Element(0x00080016, b"UI", _ui(SECONDARY_CAPTURE)),
        _Element(0x00080018, b"UI", _ui(sop_uid)),
        _Element(0x00080020, b"DA", b"20240101"),
        _Element(0x00080060, b"CS", b"OT"),
        _Element(0x00080064, b"CS", b"WSD "),
        _Element(0x00100010, b"PN", _text_value("HOSTILE^CLIENT")),
        _Element(0x00100020, b"LO", b"FUZZ"),
        _Element(0x0020000D, b"UI", _ui(study_uid)),
        _Element(0x0020000E, b"UI", _ui(series_uid)),
        _Element(0x00200013, b"IS", b"1 "),
        _Element(0x00280002, b"US", us(1)),
        _Element(0x00280004, b"CS", b"MONOCHROME2 "),
        _Element(0x00280010, b"US", us(4)),
        _Element(0x00280011, b"US", us(4)),
        _Element(0x00280100, b"US", us(8)),
        _Element(0x00280101, b"US", us(8)),
        _Element(0x00280102, b"US", us(7)),
        _Element(0x00280103, b"US", us(0)),
        _Element(0x7FE00010, b"OB", pixels),
    )
    return SmallInstance(sop_uid, study_uid, series_uid, elements)


_UID_TAGS = (0x00080016, 0x00080018, 0x0020000D, 0x0020000E)
_BAD_UIDS = ("abc", "", "1" * 65, "1.2.*", "1..2", "1.2\\1.3", "😀", "1.2.\x00", " 1.2", "1.02")


def _set(instance: SmallInstance, tag: int, **change: Any) -> SmallInstance:
    elements = tuple(replace(e, **change) if e.tag == tag else e for e in instance.elements)
    return replace(instance, elements=elements)


def mutate_instance(rng: random.Random, instance: SmallInstance, url_study: str | None) -> bytes:
    """Spoil one thing about *instance*; returns its bytes (see :data:`MUTATIONS`)."""
    return MUTATIONS[rng.choice(sorted(MUTATIONS))](rng, instance, url_study)


def _bad_uid(rng: random.Random, instance: SmallInstance, url_study: str | None) -> bytes:
    tag = rng.choice(_UID_TAGS)
    return _set(instance, tag, value=_ui(rng.choice(_BAD_UIDS))).part10()


def _missing(rng: random.Random, instance: SmallInstance, url_study: str | None) -> bytes:
    tag = rng.choice(_UID_TAGS)
    elements = tuple(e for e in instance.elements if e.tag != tag)
    return replace(instance, elements=elements).part10()


def _wrong_vr(rng: random.Random, instance: SmallInstance, url_study: str | None) -> bytes:
    element = rng.choice(instance.elements)
    vr = rng.choice([b"ZZ", b"\0\0", b"SQ", b"OB", b"US", b"UN", b"FD", b"\xff\xff", b"ui"])
    return _set(instance, element.tag, vr=vr).part10()


def _huge_length(rng: random.Random, instance: SmallInstance, url_study: str | None) -> bytes:
    element = rng.choice(instance.elements)
    length = rng.choice([0xFFFFFFF0, 0xFFFFFFFF, 0x7FFFFFFF, 0xFFFF, 0xFFFE, 1, 3])
    return _set(instance, element.tag, length=length).part10()


def _truncated(rng: random.Random, instance: SmallInstance, url_study: str | None) -> bytes:
    data = instance.part10()
    return data[: rng.randrange(len(data))]


def _random_bytes(rng: random.Random, instance: SmallInstance, url_study: str | None) -> bytes:
    bulk = _bulk(rng)
    data = bulk.randbytes(bulk.choice([0, 1, 10, 132, 1000, 100_000]))
    if rng.random() < 0.5:
        data = bytes(128) + b"DICM" + data  # a preamble, then noise
    return data


def _flipped(rng: random.Random, instance: SmallInstance, url_study: str | None) -> bytes:
    data = bytearray(instance.part10())
    bulk = _bulk(rng)
    for _ in range(rng.choice([1, 3, 10])):
        data[bulk.randrange(132, len(data))] ^= 1 << bulk.randrange(8)
    return bytes(data)


def _syntax(rng: random.Random, instance: SmallInstance, url_study: str | None) -> bytes:
    syntax = rng.choice(
        [
            "1.2.840.10008.1.2",  # implicit: the data says explicit
            "1.2.840.10008.1.2.2",  # big endian
            "1.2.840.10008.1.2.1.99",  # deflated: the data is not
            "1.2.840.10008.1.2.4.50",  # JPEG: the pixel data is native
            "1.2.3.4",
            "",
            "abc",
        ]
    )
    return replace(instance, syntax=syntax).part10()


def _no_meta(rng: random.Random, instance: SmallInstance, url_study: str | None) -> bytes:
    return replace(instance, meta=False).part10()


def _unknown_class(rng: random.Random, instance: SmallInstance, url_study: str | None) -> bytes:
    sop_class = rng.choice(["1.2.3.4.5", "1.2.840.10008.1.1", "1.2.840.10008.5.1.4.1.2.2.1"])
    return _set(instance, 0x00080016, value=_ui(sop_class)).part10()


def _other_study(rng: random.Random, instance: SmallInstance, url_study: str | None) -> bytes:
    return _set(instance, 0x0020000D, value=_ui(fresh_uid())).part10()


def _deep(rng: random.Random, instance: SmallInstance, url_study: str | None) -> bytes:
    """Sequences nested *depth* levels deep (undefined lengths), inside the data set."""
    depth = rng.choice([10, 200, 2000])
    seq_start = struct.pack("<HH", 0x0040, 0xA730) + b"SQ\0\0" + b"\xff\xff\xff\xff"
    item_start = struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
    item_end = struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
    seq_end = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    nested = (seq_start + item_start) * depth + (item_end + seq_end) * depth
    if rng.random() < 0.5:
        nested = nested[: len(nested) // 2]  # never closed
    data = instance.part10()
    pixel = data.rfind(struct.pack("<HH", 0x7FE0, 0x0010))
    return data[:pixel] + nested + data[pixel:]


def _many_elements(rng: random.Random, instance: SmallInstance, url_study: str | None) -> bytes:
    """Thousands of private elements in front of the pixel data."""
    count = rng.choice([1000, 20000])
    creator = _Element(0x00090010, b"LO", b"HOSTILE ")
    private = [_Element(0x00091000 | (n & 0xFF), b"LO", b"x ") for n in range(count)]
    data = instance.part10()
    pixel = data.rfind(struct.pack("<HH", 0x7FE0, 0x0010))
    return data[:pixel] + _encode([creator, *private]) + data[pixel:]


MUTATIONS: dict[str, Callable[[random.Random, SmallInstance, str | None], bytes]] = {
    "bad-uid": _bad_uid,
    "missing-uid": _missing,
    "wrong-vr": _wrong_vr,
    "huge-length": _huge_length,
    "truncated": _truncated,
    "random-bytes": _random_bytes,
    "bit-flips": _flipped,
    "transfer-syntax": _syntax,
    "no-file-meta": _no_meta,
    "unknown-class": _unknown_class,
    "other-study": _other_study,
    "deep-sequences": _deep,
    "many-elements": _many_elements,
}
