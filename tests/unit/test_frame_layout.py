"""Frame layouts: derived once from a whole file, then frames cut from the byte ranges they
name — byte for byte what the whole file's source gives, as stored or transcoded, without
parsing the file again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian, RLELossless

from rst.dicom.frames import LAYOUT_ATTRIBUTES, Frame, FrameSource
from rst.dicom.layout import _NATIVE_ATTRIBUTES, NO_LAYOUT, FrameLayout, derive, native_layout
from tests.support.frames import EVLE, JLS, encapsulated, image, native, part10, volume

IVLE = str(ImplicitVRLittleEndian)


def layout_of(data: bytes) -> FrameLayout:
    kept = derive(data, FrameSource(data))
    layout = FrameLayout.from_json(kept)
    assert layout is not None, kept
    return layout


def by_layout(
    data: bytes, layout: FrameLayout, numbers: list[int], syntax: str | None
) -> list[Frame]:
    held = {n: b"".join(data[s : s + k] for s, k in layout.spans(n)) for n in sorted(set(numbers))}
    return layout.source(held).frames(numbers, syntax)


LISTS = [[1], [2], [5], [5, 1, 3, 1]]


def check(data: bytes, syntaxes: list[str | None], lists: list[list[int]] = LISTS) -> None:
    layout = layout_of(data)
    assert layout.size == len(data)
    for numbers in lists:
        numbers = [n for n in numbers if n <= layout.number_of_frames] or [1]
        for syntax in syntaxes:
            whole = FrameSource(data).frames(numbers, syntax)
            assert by_layout(data, layout, numbers, syntax) == whole, (numbers, syntax)


@pytest.mark.parametrize("syntax", [EVLE, str(ImplicitVRLittleEndian)])
@pytest.mark.parametrize("count", [1, 5])
def test_native_frames_as_stored_and_transcoded(syntax: str, count: int) -> None:
    check(native(volume(count), syntax=syntax), [None, str(RLELossless), JLS])


@pytest.mark.parametrize("offsets", ["basic", "none", "extended"])
@pytest.mark.parametrize("count", [1, 5])
def test_encapsulated_frames_as_stored_and_transcoded(offsets: str, count: int) -> None:
    data, _ = encapsulated(volume(count), offsets=offsets)
    check(data, [None, EVLE, JLS])


@pytest.mark.parametrize("count", [1, 3])
def test_frames_in_several_fragments(count: int) -> None:
    data, _ = encapsulated(volume(count, rows=16, columns=16), fragments_per_frame=3)
    layout = layout_of(data)
    assert all(len(layout.spans(n)) > 1 for n in range(1, count + 1))
    check(data, [None, EVLE])


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",
        "MR_small.dcm",
        "SC_rgb_rle_2frame.dcm",
        "SC_rgb_rle_32bit_2frame.dcm",
        "rtdose_rle.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "JPEG2000.dcm",
        "examples_rgb_color.dcm",
        "SC_rgb_jpeg_gdcm.dcm",
    ],
)
def test_pydicom_test_files(name: str) -> None:
    path = get_testdata_file(name)
    assert isinstance(path, str)
    check(Path(path).read_bytes(), [None, EVLE])


def test_a_held_source_does_not_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    data, _ = encapsulated(volume(3))
    layout = layout_of(data)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("parsed")

    monkeypatch.setattr("rst.dicom.frames.read_part10", refuse)
    held = {2: b"".join(data[s : s + k] for s, k in layout.spans(2))}
    assert layout.source(held).frames([2])[0].data


def test_no_layout_for_one_bit_or_big_endian_files() -> None:
    ds = image(volume(3, rows=3, columns=3) % 2, bits_allocated=1)
    ds.PixelData = np.packbits(volume(3, rows=3, columns=3) % 2, bitorder="little").tobytes()
    one_bit = part10(ds)
    big = native(volume(2), syntax=str(ExplicitVRBigEndian))
    for data in (one_bit, big):
        assert derive(data, FrameSource(data)) == NO_LAYOUT
        assert FrameLayout.from_json(NO_LAYOUT) is None


def test_unreadable_layouts_are_none() -> None:
    for kept in (b"", b"[]", b'{"version": 1}', b"{", b'{"version": 99}'):
        assert FrameLayout.from_json(kept) is None


def _native_cases() -> list[bytes]:
    cases = [native(volume(n), syntax=s) for n in (1, 5) for s in (EVLE, IVLE)]
    cases += [native(volume(2, dtype="u1"), syntax=s) for s in (EVLE, IVLE)]
    folder = Path(str(get_testdata_file("CT_small.dcm"))).parent
    cases += [path.read_bytes() for path in sorted(folder.glob("*.dcm"))]
    return cases


def test_native_layouts_read_from_headers_are_what_derive_keeps() -> None:
    """Every file the header reader gives a layout for gets the one pydicom's way keeps; the
    others (encapsulated, Big Endian, 1-bit, cut short...) are left to pydicom's way."""
    read = 0
    for data in _native_cases():
        quick = native_layout(data)
        if quick is None:
            continue
        read += 1
        assert quick == derive(data, FrameSource(data))
    assert read >= 12  # the generated ones and pydicom's native test files


def test_the_header_reader_names_what_a_source_reads() -> None:
    assert tuple(_NATIVE_ATTRIBUTES) == LAYOUT_ATTRIBUTES


def test_no_header_layout_for_what_derive_reads_whole() -> None:
    data = native(volume(3), syntax=EVLE)
    cut = data[:-10]
    encapsulated_data, _ = encapsulated(volume(2))
    ds = image(volume(3, rows=3, columns=3) % 2, bits_allocated=1)
    ds.PixelData = np.packbits(volume(3, rows=3, columns=3) % 2, bitorder="little").tobytes()
    big = native(volume(2), syntax=str(ExplicitVRBigEndian))
    for odd in (cut, encapsulated_data, part10(ds), big, b"", data[:200]):
        assert native_layout(odd) is None
    assert native_layout(data) is not None
