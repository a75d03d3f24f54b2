"""The sans-IO walk to a file's pixel data (rst.dicom.head): from first bytes only."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from rst.dicom.head import (
    NeedMore,
    basic_offsets,
    fragments,
    locate_pixel_data,
    scan_to_pixel_data,
    top_level_values,
)
from rst.dicom.part10 import dataset_offset


def _file(syntax: str, *, pixels: bytes | None = b"\1\2" * 50, encapsulated: bool = False) -> bytes:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.3"
    inner = Dataset()
    inner.CodeValue = "X"
    nested = Dataset()
    nested.ReferencedSOPInstanceUID = "1.2.4"
    inner.ReferencedSOPSequence = Sequence([nested])
    inner["ReferencedSOPSequence"].is_undefined_length = True
    ds.ConceptNameCodeSequence = Sequence([inner, Dataset()])
    ds["ConceptNameCodeSequence"].is_undefined_length = True
    ds.add_new(0x00091010, "OB", b"\0" * 3000)  # a private value to skip
    if pixels is not None:
        ds.PixelData = encapsulate([pixels, pixels[:10]]) if encapsulated else pixels
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = encapsulated
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    out = BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_the_pixel_data_is_found_from_the_head_alone(syntax: str) -> None:
    data = _file(syntax)
    start = dataset_offset(data)
    implicit = syntax == ImplicitVRLittleEndian
    found = locate_pixel_data(data, start, implicit=implicit, size=len(data))
    assert found is not None
    assert data[found.start : found.start + 4] == b"\xe0\x7f\x10\x00"
    assert found.length == 100
    assert data[found.value :] == b"\1\2" * 50
    # fewer bytes: asks for more until it has the header, never more than that
    head = data[: start + 20]
    asked = []
    while len(head) < found.value:
        with pytest.raises(NeedMore) as more:
            locate_pixel_data(head, start, implicit=implicit, size=len(data))
        asked.append(more.value.size)
        head = data[: more.value.size]
    assert locate_pixel_data(head, start, implicit=implicit, size=len(data)) == found
    assert asked == sorted(set(asked))
    assert asked[-1] == found.value


def test_no_pixel_data_and_a_cut_file() -> None:
    data = _file(ExplicitVRLittleEndian, pixels=None)
    start = dataset_offset(data)
    assert locate_pixel_data(data, start, implicit=False, size=len(data)) is None
    with pytest.raises(ValueError, match="past the end"):
        locate_pixel_data(data[:-100], start, implicit=False, size=len(data) - 100)


def test_offsets_and_fragments_of_encapsulated_data() -> None:
    data = _file(RLELossless, encapsulated=True)
    start = dataset_offset(data)
    found = locate_pixel_data(data, start, implicit=False, size=len(data))
    assert found is not None
    assert found.length is None
    offsets, first = basic_offsets(data, found.value, size=len(data))
    assert offsets == [0, 108]
    frame, end = fragments(data[first + offsets[1] :], last=True)
    assert frame == (b"\1\2" * 5)
    assert first + offsets[1] + end == len(data)
    assert fragments(data[first : first + offsets[1]], last=False)[0] == b"\1\2" * 50
    with pytest.raises(ValueError, match="no whole fragment item"):
        fragments(data[first : first + offsets[1] - 2], last=False)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_one_walk_finds_the_pixel_data_and_the_values_before_it(syntax: str) -> None:
    data = _file(syntax)
    start = dataset_offset(data)
    implicit = syntax == ImplicitVRLittleEndian
    tags = {0x00080016, 0x00080018, 0x00091010, 0x00280010}  # the last one is not there
    pixels, values = scan_to_pixel_data(data, start, tags, implicit=implicit, size=len(data))
    assert pixels == locate_pixel_data(data, start, implicit=implicit, size=len(data))
    assert values == {
        0x00080016: b"1.2.840.10008.5.1.4.1.1.7\0",
        0x00080018: b"1.2.3\0",
        0x00091010: b"\0" * 3000,  # after the sequences of undefined length it skipped
    }
    assert values == top_level_values(data, start, tags, implicit=implicit)
    # from the first bytes only: the same, or how many bytes it needs
    head = data[: pixels.start + 4] if pixels is not None else data
    with pytest.raises(NeedMore):
        scan_to_pixel_data(head, start, tags, implicit=implicit, size=len(data))
    none, _ = scan_to_pixel_data(
        _file(syntax, pixels=None),
        start,
        tags,
        implicit=implicit,
        size=len(_file(syntax, pixels=None)),
    )
    assert none is None
