"""Metadata made without reading the pixel data's value (:mod:`rst.dicom.without_pixels`) is
byte for byte the metadata made from the whole file: on pydicom's test files and on generated
instances (native and encapsulated, implicit and explicit VR, multi-frame, float pixel data,
no pixel data, elements after the pixel data, files cut short). Each comparison runs twice:
with the reader's own threshold (only long values skipped) and with every value skipped, so
that the stand-in and the values read back from the bytes meet every element of every file."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.encaps import encapsulate
from pydicom.uid import ImplicitVRLittleEndian

import rst.dicom.without_pixels as without_pixels
import rst.services.metadata as metadata
from rst.dicom.part10 import data_set_start
from rst.dicom.without_pixels import DEFER_BYTES, STAND_IN, read_without_pixels
from rst.services.bulkdata import read_dataset
from rst.services.metadata import _derive
from rst.services.protocols import RetrieveKeys
from tests.support.frames import EVLE, encapsulated, image, native, part10, volume
from tests.support.sample import write_ct_study, write_multiframe
from tests.unit.test_dicom_json import CORPUS

KEYS = RetrieveKeys("1.2.3", "1.2.3.4")
SOP = "1.2.3.4.5"
IVLE = str(ImplicitVRLittleEndian)
PIXEL_DATA = 0x7FE00010
LONG = bytes(range(256)) * 300
SEQUENCE_END = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"


def _whole(data: bytes, tags: set[int] | None = None, *, pixels: bool = True) -> Dataset:
    return read_dataset(data, tags)


def both(data: bytes, monkeypatch: pytest.MonkeyPatch) -> tuple[object, object]:
    """The metadata (or the error) made as rst makes it, and from the whole file."""
    results: list[object] = []
    for whole in (False, True):
        with monkeypatch.context() as patch, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns on odd values: both alike
            if whole:
                patch.setattr(metadata, "read_dataset", _whole)
            try:
                results.append(_derive(data, KEYS, SOP))
            except Exception as exc:  # the whole file's reader fails: then so must the other
                results.append(type(exc))
    return results[0], results[1]


@pytest.fixture(params=[DEFER_BYTES, 0], ids=["long-values", "every-value"])
def skipped(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(without_pixels, "DEFER_BYTES", request.param)
    return int(request.param)


@pytest.mark.parametrize(("name", "data"), CORPUS, ids=[name for name, _ in CORPUS])
def test_same_metadata_on_pydicoms_test_files(
    name: str, data: bytes, skipped: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours, whole = both(data, monkeypatch)
    assert ours == whole


def _with_elements(ds: Dataset, syntax: str = EVLE) -> bytes:
    ds.add_new(0x00090010, "LO", "RST PRIVATE")
    ds.add_new(0x00091010, "OB", LONG)  # a long value before the pixel data
    ds.add_new(0x00181030, "LO", "PROTOCOL")
    return part10(ds, syntax)


def _trailing(data: bytes, implicit: bool) -> bytes:
    """*data* with Data Set Trailing Padding (FFFC,FFFC) after its pixel data."""
    header = b"\xfc\xff\xfc\xff" + (b"\x10\x00\x00\x00" if implicit else b"OB\0\0\x10\0\0\0")
    return data + header + bytes(16)


def _generated(tmp: Path) -> dict[str, bytes]:
    cases: dict[str, bytes] = {}
    study = write_ct_study(tmp / "ct", images=1, rows=256, columns=256)
    cases["ct"] = study.paths[0].read_bytes()
    study = write_ct_study(tmp / "ivle", images=1, rows=256, columns=256, transfer_syntax=IVLE)
    cases["ct-implicit"] = study.paths[0].read_bytes()
    multi = write_multiframe(tmp / "mf", frames=8, rows=128, columns=128)
    cases["multiframe"] = multi.paths[0].read_bytes()
    big = volume(3, rows=128, columns=128)
    for syntax, label in ((EVLE, "explicit"), (IVLE, "implicit")):
        cases[f"native-{label}"] = native(big, syntax=syntax)
        cases[f"trailing-{label}"] = _trailing(cases[f"native-{label}"], syntax == IVLE)
        cases[f"cut-{label}"] = cases[f"native-{label}"][:-1000]
        ds = image(big)
        ds.PixelData = big.tobytes()
        cases[f"long-private-{label}"] = _with_elements(ds, syntax)
        cases[f"no-pixels-{label}"] = _with_elements(image(big), syntax)
        ds = image(big)
        ds.PixelData = b""
        cases[f"empty-{label}"] = part10(ds, syntax)
    plain = cases["native-explicit"]  # a group 0002 element in the data set itself: left out
    start = data_set_start(plain)
    assert start is not None
    after = start[0] + 8 + int.from_bytes(plain[start[0] + 6 : start[0] + 8], "little")
    element = b"\x02\x00\x13\x00SH\x04\x00RST "  # after the first element, not in the meta
    cases["group-2-in-data-set"] = plain[:after] + element + plain[after:]
    cases["encapsulated"], _ = encapsulated(volume(4, rows=128, columns=128))
    cases["encapsulated-trailing"] = _trailing(cases["encapsulated"], False)
    cases["encapsulated-no-delimiter"] = cases["encapsulated"][:-8]
    ds = image(big)  # encapsulated, but in implicit VR: its VR follows from its length alone
    value = encapsulate([bytes(40000)] * 3) + SEQUENCE_END
    ds.PixelData = value
    defined = part10(ds, IVLE)
    header = b"\xe0\x7f\x10\x00" + len(value).to_bytes(4, "little")
    assert defined.count(header) == 1
    cases["encapsulated-implicit"] = defined.replace(header, header[:4] + b"\xff" * 4)
    for tag, vr, bits, dtype in ((0x7FE00008, "OF", 32, "<f4"), (0x7FE00009, "OD", 64, "<f8")):
        ds = image(volume(1, rows=128, columns=128), bits_allocated=bits)
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.30"  # Parametric Map
        ds.add_new(tag, vr, np.linspace(0, 1, 128 * 128, dtype=dtype).tobytes())
        cases[f"float-{vr}"] = part10(ds)
        cases[f"float-{vr}-implicit"] = part10(ds, IVLE)
    return cases


def test_same_metadata_on_generated_instances(
    tmp_path: Path, skipped: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, data in _generated(tmp_path).items():
        ours, whole = both(data, monkeypatch)
        assert ours == whole, name
        assert isinstance(ours, tuple), name  # each of them has metadata
        assert not [key for key in json.loads(ours[0]) if key.startswith("0002")], name


def test_the_pixel_data_is_not_read(tmp_path: Path) -> None:
    cases = _generated(tmp_path)
    for name in ("ct", "ct-implicit", "multiframe", "trailing-explicit", "encapsulated"):
        dataset = read_without_pixels(cases[name])
        assert dataset.get_item(PIXEL_DATA).value == STAND_IN, name
    trailing = read_without_pixels(cases["trailing-implicit"])
    assert trailing.get_item(0xFFFCFFFC).value == bytes(16)  # read on after the pixel data
    # what the reader skipped and is not pixel data is read from the bytes
    long_private = read_without_pixels(cases["long-private-explicit"])
    assert long_private.get_item(0x00091010).value == LONG
    assert long_private.get_item(PIXEL_DATA).value == STAND_IN
    # a file cut inside its pixel data is read as the whole file's reader reads it (short)
    cut = read_without_pixels(cases["cut-explicit"])
    short = cut.get_item(PIXEL_DATA)
    assert isinstance(short, RawDataElement)
    assert short.value == cases["cut-explicit"][short.value_tell :]
    assert 0 < len(short.value) < short.length


def test_short_pixel_data_is_read_as_it_is() -> None:
    data = native(volume(1))  # 96 bytes of pixels: less than the reader skips
    assert len(data) < DEFER_BYTES
    assert read_without_pixels(data).get_item(PIXEL_DATA).value == volume(1).tobytes()


def test_big_endian_is_read_whole() -> None:
    pixels = volume(2, rows=128, columns=128)
    ds = image(pixels)
    ds.PixelData = pixels.tobytes()
    dataset = read_without_pixels(part10(ds, "1.2.840.10008.1.2.2"))
    assert len(dataset.get_item(PIXEL_DATA).value) == len(pixels.tobytes())
