"""The pixel data an instance retrieved without bulk data had (rst.dicom.bulkless)."""

from __future__ import annotations

import pytest
from pydicom import Dataset

from rst.dicom import uids
from rst.dicom.bulkless import (
    DOUBLE_FLOAT_PIXEL_DATA,
    FLOAT_PIXEL_DATA,
    PIXEL_DATA,
    removed_pixel_data,
)


def image(bits: int | None, sop_class: str = "1.2.840.10008.5.1.4.1.1.2") -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.Rows = 4
    ds.Columns = 3
    if bits is not None:
        ds.BitsAllocated = bits
    return ds


@pytest.mark.parametrize(
    ("bits", "syntax", "vr"),
    [
        (16, uids.EXPLICIT_VR_LITTLE_ENDIAN, "OW"),
        (16, uids.IMPLICIT_VR_LITTLE_ENDIAN, "OW"),
        (32, uids.EXPLICIT_VR_LITTLE_ENDIAN, "OW"),
        (8, uids.EXPLICIT_VR_LITTLE_ENDIAN, "OB"),
        (1, uids.EXPLICIT_VR_LITTLE_ENDIAN, "OB"),
        (16, uids.RLE_LOSSLESS, "OB"),
        (16, uids.JPEG_LS_LOSSLESS, "OB"),
        (None, uids.EXPLICIT_VR_LITTLE_ENDIAN, "OB"),
    ],
)
def test_pixel_data_vr_follows_encapsulation_and_bits_allocated(
    bits: int | None, syntax: str, vr: str
) -> None:
    assert removed_pixel_data(image(bits), syntax) == (PIXEL_DATA, vr)


@pytest.mark.parametrize(
    ("bits", "removed"),
    [
        (32, (FLOAT_PIXEL_DATA, "OF")),
        (64, (DOUBLE_FLOAT_PIXEL_DATA, "OD")),
        (16, (PIXEL_DATA, "OW")),
    ],
)
def test_a_parametric_map_had_float_pixel_data(bits: int, removed: tuple[int, str]) -> None:
    ds = image(bits, uids.PARAMETRIC_MAP_STORAGE)
    assert removed_pixel_data(ds, uids.EXPLICIT_VR_LITTLE_ENDIAN) == removed


def test_nothing_for_an_instance_with_its_pixel_data_or_no_image() -> None:
    whole = image(16)
    whole.PixelData = b"\0" * 24
    assert removed_pixel_data(whole, uids.EXPLICIT_VR_LITTLE_ENDIAN) is None
    floats = image(32, uids.PARAMETRIC_MAP_STORAGE)
    floats.FloatPixelData = b"\0" * 48
    assert removed_pixel_data(floats, uids.EXPLICIT_VR_LITTLE_ENDIAN) is None
    report = Dataset()
    report.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    assert removed_pixel_data(report, uids.EXPLICIT_VR_LITTLE_ENDIAN) is None
    rows_only = image(16)
    del rows_only.Columns
    assert removed_pixel_data(rows_only, uids.EXPLICIT_VR_LITTLE_ENDIAN) is None
