"""Part 10 helpers: wrapping received datasets, reading uploads, re-encoding."""

from __future__ import annotations

import struct
import zlib
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite, write_dataset
from pydicom.tag import Tag
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from rst.dicom.completeness import check_complete
from rst.dicom.part10 import (
    BadUpload,
    dataset_offset,
    encodable_syntaxes,
    part10_bytes,
    read_instance,
    read_upload,
    reencode,
    transfer_syntax_of,
)
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

    def test_lossy_target_refused(self) -> None:
        with pytest.raises(NotAcceptable):
            reencode(load("CT_small.dcm"), "1.2.840.10008.1.2.4.50")

    def test_lossless_targets_are_those_with_an_encoder(self) -> None:
        assert encodable_syntaxes() == {RLELossless, JPEGLSLossless, JPEG2000Lossless}

    @pytest.mark.parametrize("target", [RLELossless, JPEGLSLossless, JPEG2000Lossless])
    @pytest.mark.parametrize(
        "name",
        [
            "CT_small.dcm",
            "MR_small_bigendian.dcm",
            "SC_rgb_jpeg_dcmtk.dcm",
            "SC_rgb_rle_16bit_2frame.dcm",
        ],
    )
    def test_encoded_losslessly_keeping_its_identity(self, name: str, target: str) -> None:
        """Native (also Big Endian) and compressed sources, single and multi-frame (2 frames of
        RGB), into each lossless syntax: the pixels decode back to the source's."""
        source = dcmread(BytesIO(load(name)))
        out = dcmread(BytesIO(reencode(load(name), target)))
        assert out.file_meta.TransferSyntaxUID == target
        assert out.SOPInstanceUID == source.SOPInstanceUID
        assert out["PixelData"].is_undefined_length
        assert np.array_equal(out.pixel_array, source.pixel_array)

    def test_no_pixel_data_changes_only_the_label(self) -> None:
        ds = Dataset()
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
        ds.SOPInstanceUID = "1.2.3.4"
        ds.PatientName = "NO^PIXELS"
        data = part10_bytes(
            encode(ds, implicit=False),
            sop_class_uid=ds.SOPClassUID,
            sop_instance_uid=ds.SOPInstanceUID,
            transfer_syntax=ExplicitVRLittleEndian,
            implementation_uid=IMPL_UID,
        )
        out = dcmread(BytesIO(reencode(data, JPEGLSLossless)))
        assert out.file_meta.TransferSyntaxUID == JPEGLSLossless
        assert out.PatientName == "NO^PIXELS"

    def test_pixels_a_syntax_cannot_hold_are_not_acceptable(self) -> None:
        # 1-bit pixel data: JPEG-LS cannot encode it
        ds = dcmread(BytesIO(load("liver_1frame.dcm")))
        assert ds.BitsAllocated == 1
        with pytest.raises(NotAcceptable, match="cannot encode"):
            reencode(load("liver_1frame.dcm"), JPEGLSLossless)

    def test_big_endian_target_refused(self) -> None:
        with pytest.raises(NotAcceptable):
            reencode(load("CT_small.dcm"), ExplicitVRBigEndian)

    def test_not_part10(self) -> None:
        with pytest.raises(BadRequest):
            reencode(b"junk", ExplicitVRLittleEndian)


# -- uploads: whole data sets, valid UIDs --------------------------------------------------------


def nested_dataset(*, encapsulated: bool) -> Dataset:
    """Elements of every shape the completeness check walks: short and long VRs, a sequence of
    undefined length holding an item of undefined length (with a nested sequence of undefined
    length) and one of defined length, and optionally encapsulated pixel data."""
    inner = Dataset()
    inner.CodeValue = "42"
    nested = Dataset()
    nested.CodeMeaning = "nested"
    nested.ConceptCodeSequence = [inner]
    nested["ConceptCodeSequence"].is_undefined_length = True
    inner.is_undefined_length_sequence_item = False
    nested.is_undefined_length_sequence_item = True
    plain = Dataset()
    plain.ReferencedSOPInstanceUID = "1.2.3.4"
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.ContentSequence = [nested, plain]
    ds["ContentSequence"].is_undefined_length = True
    ds.PatientName = "DOE^JANE"
    ds.ImageComments = "x" * 300
    if encapsulated:
        ds.add_new(0x7FE00010, "OB", encapsulate([b"\x01" * 10, b"\x02" * 12]))
        ds["PixelData"].is_undefined_length = True
    return ds


def encode_as(ds: Dataset, *, implicit: bool, little: bool = True) -> tuple[bytes, set[int]]:
    """The encoded data set and the offsets where a top-level element starts or the data ends."""
    elements = list(ds)
    boundaries = set()
    for count in range(len(elements) + 1):
        fp = DicomBytesIO()
        fp.is_little_endian = little
        fp.is_implicit_VR = implicit
        part = Dataset()
        for elem in elements[:count]:
            part.add(elem)
        write_dataset(fp, part)
        boundaries.add(len(fp.getvalue()))
    return fp.getvalue(), boundaries


class TestCheckComplete:
    @pytest.mark.parametrize(
        ("implicit", "little", "encapsulated"),
        [(False, True, True), (True, True, False), (False, False, False)],
        ids=["explicit-le-encapsulated", "implicit-le", "explicit-be"],
    )
    def test_every_cut_inside_an_element_is_found(
        self, implicit: bool, little: bool, encapsulated: bool
    ) -> None:
        data, boundaries = encode_as(
            nested_dataset(encapsulated=encapsulated), implicit=implicit, little=little
        )
        assert b"\xfe\xff\xdd\xe0" in data or b"\xff\xfe\xe0\xdd" in data  # delimiters present
        form = {"implicit_vr": implicit, "little_endian": little, "encapsulated": encapsulated}
        for cut in range(len(data) + 1):
            if cut in boundaries:  # whole elements, nothing to detect
                check_complete(data[:cut], **form)
            else:
                with pytest.raises(BadRequest, match="truncated"):
                    check_complete(data[:cut], **form)

    @pytest.mark.parametrize(
        "name",
        [
            "CT_small.dcm",
            "MR_small_implicit.dcm",
            "MR_small_bigendian.dcm",
            "JPEG2000.dcm",
            "SC_rgb_rle.dcm",
            "rtplan.dcm",
            "image_dfl.dcm",
        ],
    )
    def test_whole_files_pass_and_cut_ones_do_not(self, name: str) -> None:
        data = load(name)
        read_upload(data)
        for keep in (0.3, 0.7, 0.99):
            # (a cut between two elements leaves a whole, shorter data set: refused for the UIDs
            # it lacks, or sent as it is)
            with pytest.raises(BadUpload):
                read_upload(data[: int(len(data) * keep)])

    def test_pixel_data_cut_short_names_the_element(self) -> None:
        data = load("CT_small.dcm")
        with pytest.raises(BadUpload, match=r"\(7FE0,0010\) declares 32768 bytes") as caught:
            read_upload(data[:-1000])
        assert caught.value.sop_instance_uid == dcmread(BytesIO(data)).SOPInstanceUID

    def test_missing_delimiter_of_encapsulated_pixel_data(self) -> None:
        data, _ = encode_as(nested_dataset(encapsulated=True), implicit=False)
        assert data.endswith(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")
        with pytest.raises(BadRequest, match=r"inside \(7FE0,0010\) of undefined length"):
            check_complete(data[:-8], implicit_vr=False, little_endian=True, encapsulated=True)

    def test_un_of_undefined_length_holds_implicit_items(self) -> None:
        item = b"\xfe\xff\x00\xe0\x0c\x00\x00\x00" + b"\x08\x00\x00\x01\x04\x00\x00\x0042  "
        data = (
            b"\x09\x00\x10\x10UN\x00\x00\xff\xff\xff\xff"
            + item
            + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
        )
        check_complete(data, implicit_vr=False, little_endian=True)
        with pytest.raises(BadRequest, match="truncated"):
            check_complete(data[:-8], implicit_vr=False, little_endian=True)

    def test_trailing_nul_padding_is_tolerated(self) -> None:
        data, _ = encode_as(nested_dataset(encapsulated=False), implicit=False)
        for padding in (b"\0" * 8, b"\0" * 65):
            check_complete(data + padding, implicit_vr=False, little_endian=True)
        for cut_header in (b"\0", b"\0" * 7, b"\0" * 8 + b"\x01"):
            with pytest.raises(BadRequest, match=r"(truncated|malformed)"):
                check_complete(data + cut_header, implicit_vr=False, little_endian=True)

    @pytest.mark.parametrize(
        ("data", "match"),
        [
            (b"\x10\x00\x10\x00ZZ\x02\x00AB", "not in explicit VR"),
            (b"\x10\x00\x10\x00PN\x02\x00AB\x10\x00\x20\x00Z!\x02\x00CD", "invalid VR"),
            (b"\xfe\xff\x00\xe0\x00\x00\x00\x00", "delimiter .* at the top level"),
            (
                b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff\x10\x00\x10\x00PN\x00\x00",
                "where an item",
            ),
            (b"\x10\x00\x10\x00UT\x00\x00\xff\xff\xff\xff", "undefined length"),
        ],
    )
    def test_malformed(self, data: bytes, match: str) -> None:
        with pytest.raises(BadRequest, match=match):
            check_complete(data, implicit_vr=False, little_endian=True)

    def test_bare_data_set_with_meta_group_first(self) -> None:
        meta = b"\x02\x00\x10\x00UI\x14\x00" + b"1.2.840.10008.1.2\0\0\0"
        data, _ = encode_as(nested_dataset(encapsulated=False), implicit=True)
        check_complete(meta + data, implicit_vr=True, little_endian=True, meta_first=True)
        with pytest.raises(BadRequest, match="truncated"):
            check_complete(meta + data[:-3], implicit_vr=True, little_endian=True, meta_first=True)

    def test_deflate_stream_cut_short(self) -> None:
        data = load("image_dfl.dcm")
        offset = dataset_offset(data)
        stream = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        deflated = stream.compress(data[offset:]) + stream.flush()
        check_complete(deflated, implicit_vr=False, little_endian=True, deflated=True)
        with pytest.raises(BadRequest, match="deflate stream ends early"):
            check_complete(deflated[:-20], implicit_vr=False, little_endian=True, deflated=True)
        with pytest.raises(BadRequest, match="cannot be inflated"):
            check_complete(b"\xff" * 40, implicit_vr=False, little_endian=True, deflated=True)


def with_uid(keyword: str, value: bytes) -> bytes:
    """CT_small.dcm (Explicit VR LE) with *keyword*'s value replaced by raw bytes."""
    data = load("CT_small.dcm")
    tag = Tag(keyword)
    head = struct.pack("<HH", tag.group, tag.elem)
    at = data.index(head, dataset_offset(data))
    (length,) = struct.unpack_from("<H", data, at + 6)
    value += b"\0" * (len(value) % 2)
    return data[: at + 6] + struct.pack("<H", len(value)) + value + data[at + 8 + length :]


class TestReadUpload:
    def test_uids(self) -> None:
        data = load("CT_small.dcm")
        ds = dcmread(BytesIO(data))
        upload = read_upload(data)
        assert upload.sop_class_uid == ds.SOPClassUID
        assert upload.sop_instance_uid == ds.SOPInstanceUID
        assert upload.study_uid == ds.StudyInstanceUID
        assert upload.series_uid == ds.SeriesInstanceUID
        assert upload.transfer_syntax == ExplicitVRLittleEndian

    @pytest.mark.parametrize(
        "value",
        [b"1.2.3\\4.5", b"1.2.abc", b"1." + b"2" * 70, "1.2.\u00e9".encode(), b"1..2", b".1.2"],
        ids=["backslash", "letters", "too-long", "non-ascii", "empty-component", "leading-dot"],
    )
    def test_malformed_sop_instance_uid(self, value: bytes) -> None:
        with pytest.raises(BadUpload) as caught:
            read_upload(with_uid("SOPInstanceUID", value))
        assert caught.value.sop_instance_uid is None  # never echoed back as a UID

    @pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID"])
    def test_missing_or_malformed_other_uids(self, keyword: str) -> None:
        instance = dcmread(BytesIO(load("CT_small.dcm"))).SOPInstanceUID
        for value in (b"", b"1.2.x"):
            with pytest.raises(BadUpload, match=r"(Study|Series|SOP Class)") as caught:
                read_upload(with_uid(keyword, value))
            assert caught.value.sop_instance_uid == instance

    def test_not_dicom(self) -> None:
        with pytest.raises(BadUpload):
            read_upload(b"this is not DICOM at all " * 20)
