"""The walk over an upload's element headers refuses, before anything is sent, the whole data sets
that stall a PACS (issue 8): Pixel Data whose form is not its transfer syntax's, broken
encapsulated fragments, tags that do not ascend, containers whose contents outrun their length.
(Cut-short data sets: ``tests/unit/test_part10.py``.)"""

from __future__ import annotations

import struct
import time
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from rst.dicom.completeness import check_complete
from rst.dicom.part10 import (
    BadUpload,
    dataset_offset,
    part10_header,
    read_upload,
)
from rst.dicom.uids import IMPLEMENTATION_CLASS_UID
from rst.errors import BadRequest

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
UNDEFINED = 0xFFFFFFFF
_LONG = {b"OB", b"OW", b"SQ", b"UN", b"UT"}


def element(group: int, elem: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    """One Explicit VR Little Endian element, written by hand (its length may lie)."""
    size = len(value) if length is None else length
    head = struct.pack("<HH", group, elem) + vr
    if vr in _LONG:
        return head + b"\0\0" + struct.pack("<I", size) + value
    return head + struct.pack("<H", size) + value


def item(value: bytes, length: int | None = None) -> bytes:
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(value) if length is None else length) + value


ITEM_END = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
SEQUENCE_END = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
ROWS = element(0x0028, 0x0010, b"US", b"\4\0")
NAME = element(0x0010, 0x0010, b"PN", b"DOE^JANE")
MODALITY = element(0x0008, 0x0060, b"CS", b"OT")
NATIVE = element(0x7FE0, 0x0010, b"OB", b"\1" * 16)


def encapsulated(*items: bytes) -> bytes:
    """Pixel Data of undefined length holding *items*, then the sequence delimiter."""
    return element(0x7FE0, 0x0010, b"OB", b"", length=UNDEFINED) + b"".join(items) + SEQUENCE_END


ENCAPSULATED = encapsulated(item(b""), item(b"\xff\xd8" * 5))


def check(data: bytes, *, encapsulated: bool = False, implicit: bool = False) -> None:
    check_complete(data, implicit_vr=implicit, little_endian=True, encapsulated=encapsulated)


# --- the form of Pixel Data -----------------------------------------------------------------------


class TestPixelDataForm:
    def test_native_pixel_data_under_an_encapsulated_syntax(self) -> None:
        check(MODALITY + ROWS + NATIVE)
        with pytest.raises(BadRequest, match=r"Pixel Data \(7FE0,0010\) is native \(16 bytes"):
            check(MODALITY + ROWS + NATIVE, encapsulated=True)

    def test_encapsulated_pixel_data_under_a_native_syntax(self) -> None:
        check(MODALITY + ROWS + ENCAPSULATED, encapsulated=True)
        with pytest.raises(BadRequest, match=r"is encapsulated .* transfer syntax is native"):
            check(MODALITY + ROWS + ENCAPSULATED)

    def test_undefined_length_pixel_data_in_implicit_vr(self) -> None:
        pixel = struct.pack("<HHI", 0x7FE0, 0x0010, UNDEFINED) + item(b"") + SEQUENCE_END
        with pytest.raises(BadRequest, match="is encapsulated"):
            check(pixel, implicit=True)

    def test_empty_pixel_data_is_either_form(self) -> None:
        empty = element(0x7FE0, 0x0010, b"OB", b"")
        check(ROWS + empty, encapsulated=True)
        check(ROWS + empty)

    def test_only_the_top_level_pixel_data_must_match(self) -> None:
        """An icon image (in a sequence) may be native under an encapsulated syntax."""
        icon = element(0x0088, 0x0200, b"SQ", item(ROWS + NATIVE))
        check(ROWS + icon + ENCAPSULATED, encapsulated=True)


class TestFragments:
    def test_well_formed(self) -> None:
        offsets = struct.pack("<2I", 0, 12)
        check(encapsulated(item(offsets), item(b"\1" * 4), item(b"\2" * 6)), encapsulated=True)

    @pytest.mark.parametrize(
        ("pixel_data", "match"),
        [
            (encapsulated(), "no Basic Offset Table item"),
            (encapsulated(item(b"\0" * 6), item(b"\1" * 4)), "not a whole number of 32-bit"),
            (
                encapsulated(item(b""), item(b"", length=UNDEFINED) + b"\1" * 4 + ITEM_END),
                "fragment 1 of the encapsulated .* has undefined length",
            ),
            (encapsulated(item(b""), NAME), r"holds \(0010,0010\) where a fragment item"),
            (encapsulated(item(b""), ITEM_END), r"holds \(FFFE,E00D\) where a fragment item"),
        ],
        ids=["no-offset-table", "offset-table-of-6-bytes", "undefined-fragment", "element", "E00D"],
    )
    def test_broken_structure(self, pixel_data: bytes, match: str) -> None:
        with pytest.raises(BadRequest, match=match):
            check(ROWS + pixel_data, encapsulated=True)

    def test_cut_short(self) -> None:
        whole = ROWS + ENCAPSULATED
        for cut in range(len(ROWS) + 1, len(whole)):
            with pytest.raises(BadRequest, match="truncated"):
                check(whole[:cut], encapsulated=True)


# --- tags ascend, each once, at every level -------------------------------------------------------


def sequence(*items: bytes, defined: bool) -> bytes:
    """(0008,1115) holding *items* (each whole), of defined length or with its delimiter."""
    body = b"".join(items)
    if defined:
        return element(0x0008, 0x1115, b"SQ", body)
    return element(0x0008, 0x1115, b"SQ", b"", length=UNDEFINED) + body + SEQUENCE_END


def undefined_item(elements: bytes) -> bytes:
    return item(b"", length=UNDEFINED) + elements + ITEM_END


class TestTagOrder:
    def test_ascending_tags_pass(self) -> None:
        nested = sequence(item(MODALITY + NAME), undefined_item(MODALITY + NAME), defined=True)
        check(MODALITY + nested + NAME + ROWS + NATIVE)

    @pytest.mark.parametrize(
        ("data", "match"),
        [
            (NAME + MODALITY + ROWS, r"\(0008,0060\) comes after \(0010,0010\)"),
            (MODALITY + NAME + NAME + ROWS, r"\(0010,0010\) comes twice;"),
            (
                MODALITY + sequence(undefined_item(NAME + MODALITY), defined=False),
                r"\(0008,0060\) comes after \(0010,0010\) in an item of \(0008,1115\)",
            ),
            (
                MODALITY + sequence(item(MODALITY), item(NAME + NAME), defined=True),
                r"\(0010,0010\) comes twice in an item of \(0008,1115\)",
            ),
            (
                NAME + sequence(item(MODALITY), defined=True),  # the sequence's own place
                r"\(0008,1115\) comes after \(0010,0010\);",
            ),
        ],
        ids=["top-level", "duplicate", "undefined-item", "defined-item", "sequence"],
    )
    def test_disorder_is_refused(self, data: bytes, match: str) -> None:
        with pytest.raises(BadRequest, match=match):
            check(data)

    def test_implicit_vr_sequences_of_defined_length_are_walked(self) -> None:
        """Implicit VR names no VR: the data dictionary tells that (0008,1115) is a sequence."""

        def implicit(group: int, elem: int, value: bytes) -> bytes:
            return struct.pack("<HHI", group, elem, len(value)) + value

        name, modality = implicit(0x0010, 0x0010, b"DOE^JANE"), implicit(0x0008, 0x0060, b"OT")
        check(implicit(0x0008, 0x1115, item(modality + name)), implicit=True)
        with pytest.raises(BadRequest, match=r"\(0008,0060\) comes after \(0010,0010\) in an"):
            check(implicit(0x0008, 0x1115, item(name + modality)), implicit=True)

    def test_the_chaos_runs_twenty_thousand_repeated_elements(self) -> None:
        """The part that kept Orthanc busy past store_timeout: 20,000 private elements whose
        tags repeat, after the image attributes. Refused at its first step back, at once."""
        creator = element(0x0009, 0x0010, b"LO", b"HOSTILE ")
        private = b"".join(element(0x0009, 0x1000 | (n & 0xFF), b"LO", b"x ") for n in range(20000))
        started = time.perf_counter()
        with pytest.raises(BadRequest, match=r"\(0009,0010\) comes after \(0028,0010\)"):
            check(MODALITY + ROWS + creator + private + NATIVE)
        with pytest.raises(BadRequest, match=r"\(0009,1000\) comes after \(0009,10FF\)"):
            check(MODALITY + creator + private + ROWS + NATIVE)
        assert time.perf_counter() - started < 2.0


# --- containers of defined length -----------------------------------------------------------------


class TestDefinedLengths:
    def test_an_element_outrunning_its_item(self) -> None:
        short_item = item(MODALITY + NAME, length=len(MODALITY) + 4)
        with pytest.raises(BadRequest, match=r"malformed: .* within an item of \(0008,1115\)"):
            check(sequence(short_item, defined=True) + ROWS)

    def test_an_item_outrunning_its_sequence(self) -> None:
        whole = sequence(item(MODALITY), defined=True)
        lying = whole[:8] + struct.pack("<I", 8 + len(MODALITY) - 2) + whole[12:]
        with pytest.raises(BadRequest, match=r"malformed: .* within \(0008,1115\)"):
            check(lying + ROWS)

    def test_delimiters_in_containers_of_defined_length(self) -> None:
        # tolerated where the container ends anyway
        check(sequence(item(MODALITY + ITEM_END), defined=True) + ROWS)
        check(element(0x0008, 0x1115, b"SQ", item(MODALITY) + SEQUENCE_END) + ROWS)
        with pytest.raises(BadRequest, match=r"in the middle of an item of \(0008,1115\)"):
            check(sequence(item(MODALITY + ITEM_END + NAME), defined=True) + ROWS)


# --- through read_upload: what STOW-RS checks before sending --------------------------------------


def load(name: str) -> bytes:
    path = get_testdata_file(name, download=False)
    assert path is not None, f"pydicom test file {name} is not bundled"
    return Path(str(path)).read_bytes()


def relabelled(data: bytes, syntax: str) -> bytes:
    """A Part 10 file whose file meta names *syntax*; its data set is left as it was."""
    ds = dcmread(BytesIO(data), stop_before_pixels=True)
    header = part10_header(
        sop_class_uid=ds.SOPClassUID,
        sop_instance_uid=ds.SOPInstanceUID,
        transfer_syntax=syntax,
        implementation_uid=IMPLEMENTATION_CLASS_UID,
    )
    return header + data[dataset_offset(data) :]


class TestReadUpload:
    def test_native_pixel_data_labelled_jpeg_baseline(self) -> None:
        data = load("CT_small.dcm")
        read_upload(data)
        with pytest.raises(BadUpload, match=r"Pixel Data \(7FE0,0010\) is native") as caught:
            read_upload(relabelled(data, JPEG_BASELINE))
        assert caught.value.sop_instance_uid == dcmread(BytesIO(data)).SOPInstanceUID

    def test_encapsulated_pixel_data_labelled_explicit_vr_little_endian(self) -> None:
        data = load("JPEG2000.dcm")
        read_upload(data)
        with pytest.raises(BadUpload, match=r"Pixel Data \(7FE0,0010\) is encapsulated"):
            read_upload(relabelled(data, EXPLICIT_LE))
