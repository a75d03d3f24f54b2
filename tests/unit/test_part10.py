"""Part 10 helpers: wrapping received datasets, reading uploads, re-encoding."""

from __future__ import annotations

import struct
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite, write_dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from rst.dicom.part10 import part10_bytes, read_instance, reencode, transfer_syntax_of
from rst.errors import BadRequest, NotAcceptable

IMPL_UID = "1.2.826.0.1.3680043.10.1234"


def load(name: str) -> bytes:
    path = get_testdata_file(name, download=False)
    assert path is not None, f"pydicom test file {name} is not bundled"
    return Path(str(path)).read_bytes()


def encode(ds: Dataset, *, implicit: bool) -> bytes:
    """Encode a dataset without file meta, the way a C-STORE carries it."""
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = implicit
    write_dataset(fp, ds)
    return fp.getvalue()


def dataset_only(name: str) -> Dataset:
    ds = dcmread(BytesIO(load(name)))
    del ds.file_meta
    return ds


class TestPart10Bytes:
    def test_wraps_dataset_unchanged_with_valid_meta(self) -> None:
        ds = dataset_only("CT_small.dcm")
        raw = encode(ds, implicit=False)
        data = part10_bytes(
            memoryview(raw),
            sop_class_uid=ds.SOPClassUID,
            sop_instance_uid=ds.SOPInstanceUID,
            transfer_syntax=ExplicitVRLittleEndian,
            implementation_uid=IMPL_UID,
            source_aet="PACS",
        )
        assert data[:128] == b"\0" * 128
        assert data[128:132] == b"DICM"
        assert data.endswith(raw)
        # The group length covers exactly the meta elements after it.
        assert data[132:140] == b"\x02\x00\x00\x00UL\x04\x00"
        (group_length,) = struct.unpack("<I", data[140:144])
        assert 144 + group_length == len(data) - len(raw)

        read = dcmread(BytesIO(data))
        meta = read.file_meta
        assert meta.MediaStorageSOPClassUID == ds.SOPClassUID
        assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert meta.ImplementationClassUID == IMPL_UID
        assert meta.SourceApplicationEntityTitle == "PACS"
        assert meta.FileMetaInformationVersion == b"\x00\x01"
        assert read.PatientName == ds.PatientName
        assert read.PixelData == ds.PixelData

    def test_implicit_dataset_without_source_aet(self) -> None:
        ds = dataset_only("MR_small.dcm")
        data = part10_bytes(
            encode(ds, implicit=True),
            sop_class_uid=ds.SOPClassUID,
            sop_instance_uid=ds.SOPInstanceUID,
            transfer_syntax=ImplicitVRLittleEndian,
            implementation_uid=IMPL_UID,
        )
        read = dcmread(BytesIO(data))
        assert "SourceApplicationEntityTitle" not in read.file_meta
        assert read.original_encoding == (True, True)
        assert transfer_syntax_of(data) == ImplicitVRLittleEndian
        assert read.PixelData == ds.PixelData


class TestTransferSyntaxOf:
    @pytest.mark.parametrize(
        ("name", "syntax"),
        [
            ("CT_small.dcm", ExplicitVRLittleEndian),
            ("MR_small_implicit.dcm", ImplicitVRLittleEndian),
            ("MR_small_bigendian.dcm", ExplicitVRBigEndian),
            ("image_dfl.dcm", DeflatedExplicitVRLittleEndian),
            ("JPEG2000.dcm", "1.2.840.10008.1.2.4.91"),
        ],
    )
    def test_reads_meta(self, name: str, syntax: str) -> None:
        assert transfer_syntax_of(load(name)) == syntax

    @pytest.mark.parametrize(
        "data", [b"", b"DICM", b"\0" * 200, b"\0" * 128 + b"DICX" + b"\0" * 50]
    )
    def test_not_part10(self, data: bytes) -> None:
        with pytest.raises(BadRequest, match="Part 10"):
            transfer_syntax_of(data)

    def test_meta_without_transfer_syntax(self) -> None:
        data = load("CT_small.dcm")
        ds = dcmread(BytesIO(data))
        del ds.file_meta.TransferSyntaxUID
        out = BytesIO()
        dcmwrite(out, ds, implicit_vr=False, little_endian=True)
        with pytest.raises(BadRequest, match="Transfer Syntax"):
            transfer_syntax_of(out.getvalue())


class TestReadInstance:
    @pytest.mark.parametrize(
        ("name", "syntax"),
        [
            ("CT_small.dcm", ExplicitVRLittleEndian),
            ("MR_small_implicit.dcm", ImplicitVRLittleEndian),
            ("MR_small_bigendian.dcm", ExplicitVRBigEndian),
            ("image_dfl.dcm", DeflatedExplicitVRLittleEndian),
            ("JPEG2000.dcm", "1.2.840.10008.1.2.4.91"),
        ],
    )
    def test_part10(self, name: str, syntax: str) -> None:
        ds, found = read_instance(load(name))
        assert found == syntax
        assert ds.SOPInstanceUID == dcmread(BytesIO(load(name))).SOPInstanceUID

    @pytest.mark.parametrize(
        ("implicit", "syntax"), [(True, ImplicitVRLittleEndian), (False, ExplicitVRLittleEndian)]
    )
    def test_bare_dataset(self, implicit: bool, syntax: str) -> None:
        original = dataset_only("CT_small.dcm")
        ds, found = read_instance(encode(original, implicit=implicit))
        assert found == syntax
        assert ds.SOPInstanceUID == original.SOPInstanceUID
        assert ds.PatientName == original.PatientName

    @pytest.mark.parametrize(
        "data",
        [
            b"",
            b"hello world, this is not DICOM at all",
            b"\0" * 128 + b"DICM" + b"\xff" * 40,
            b"\0" * 128 + b"DICM",
        ],
    )
    def test_garbage(self, data: bytes) -> None:
        with pytest.raises(BadRequest):
            read_instance(data)

    @pytest.mark.parametrize("fraction", [0.5, 0.99])
    def test_truncated_part10(self, fraction: float) -> None:
        data = load("CT_small.dcm")
        with pytest.raises(BadRequest, match="truncated"):
            read_instance(data[: int(len(data) * fraction)])

    def test_dataset_without_sop_uids(self) -> None:
        ds = Dataset()
        ds.PatientName = "DOE^JOHN"
        with pytest.raises(BadRequest, match="SOPClassUID"):
            read_instance(encode(ds, implicit=True))
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
        with pytest.raises(BadRequest, match="SOPInstanceUID"):
            read_instance(encode(ds, implicit=True))


class TestReencode:
    @pytest.mark.parametrize(
        "name",
        ["MR_small_implicit.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm", "CT_small.dcm"],
    )
    def test_to_explicit_little_endian(self, name: str) -> None:
        data = load(name)
        out = reencode(data, ExplicitVRLittleEndian)
        assert transfer_syntax_of(out) == ExplicitVRLittleEndian
        original = dcmread(BytesIO(data))
        converted = dcmread(BytesIO(out))
        assert converted.original_encoding == (False, True)
        assert converted.SOPInstanceUID == original.SOPInstanceUID
        assert converted.PatientName == original.PatientName
        assert converted.Rows == original.Rows
        assert np.array_equal(converted.pixel_array, original.pixel_array)

    def test_same_syntax_is_returned_unchanged(self) -> None:
        data = load("CT_small.dcm")
        assert reencode(data, ExplicitVRLittleEndian) is data

    def test_to_implicit(self) -> None:
        data = load("CT_small.dcm")
        out = reencode(data, ImplicitVRLittleEndian)
        converted = dcmread(BytesIO(out))
        assert converted.original_encoding == (True, True)
        assert np.array_equal(converted.pixel_array, dcmread(BytesIO(data)).pixel_array)

    def test_big_endian_ow_values_are_swapped(self) -> None:
        data = load("MR_small_bigendian.dcm")
        out = reencode(data, ExplicitVRLittleEndian)
        raw_le = dcmread(BytesIO(out)).PixelData
        raw_be = dcmread(BytesIO(data)).PixelData
        assert raw_le == bytes(np.frombuffer(raw_be, ">u2").astype("<u2").tobytes())
        assert raw_le != raw_be

    @pytest.mark.parametrize(
        "name",
        ["JPEG2000.dcm", "SC_rgb_rle.dcm", "SC_rgb_jpeg_dcmtk.dcm", "JPEGLSNearLossless_16.dcm"],
    )
    def test_compressed_source_is_decompressed_keeping_its_identity(self, name: str) -> None:
        source = dcmread(BytesIO(load(name)))
        out = dcmread(BytesIO(reencode(load(name), ExplicitVRLittleEndian)))
        assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert out.SOPInstanceUID == source.SOPInstanceUID
        assert (out.pixel_array == source.pixel_array).all()

    def test_undecodable_compressed_source_is_not_acceptable(self) -> None:
        broken = bytearray(load("JPEG2000.dcm"))
        broken[-600:-8] = bytes(592)  # wreck the codestream
        with pytest.raises(NotAcceptable, match="transfer-syntax=\\*"):
            reencode(bytes(broken), ExplicitVRLittleEndian)

    def test_compressed_target_refused(self) -> None:
        with pytest.raises(NotAcceptable):
            reencode(load("CT_small.dcm"), "1.2.840.10008.1.2.4.50")

    def test_big_endian_target_refused(self) -> None:
        with pytest.raises(NotAcceptable):
            reencode(load("CT_small.dcm"), ExplicitVRBigEndian)

    def test_not_part10(self) -> None:
        with pytest.raises(BadRequest):
            reencode(b"junk", ExplicitVRLittleEndian)
