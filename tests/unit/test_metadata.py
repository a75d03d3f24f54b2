"""Metadata as DICOM JSON with BulkDataURIs, and the bulk data that resolves them (sans-IO)."""

from __future__ import annotations

import base64
import json
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from rst.dicom.accept import (
    BulkChoice,
    BulkdataFormat,
    negotiate_bulkdata,
)
from rst.dicom.media_types import bulk_media_type, default_transfer_syntax, transfer_syntaxes_of
from rst.dicom.uids import EXPLICIT_VR_LITTLE_ENDIAN
from rst.errors import BadRequest, NotAcceptable, NotFound, UnreadableInstance
from rst.services.bulkdata import BULK_MIN_BYTES, BulkPart, Selection, TagPath, instance_parts
from rst.services.metadata import METADATA, instance_metadata, relative_metadata, under
from rst.services.protocols import ByteRanges, Instance, RetrieveKeys
from tests.support.sample import write_ct_study, write_multiframe

BASE = "http://rst.test/aets/PACS"
STUDY, SERIES = "1.2.3", "1.2.3.4"
KEYS = RetrieveKeys(STUDY)
OCTET = "application/octet-stream"
RLE = "1.2.840.10008.1.2.5"
ANY = BulkdataFormat((BulkChoice("*/*", "*"),))
UNCOMPRESSED = BulkdataFormat((BulkChoice(OCTET),))
PIXEL_DATA = "7FE00010"


def part10(ds: Dataset, syntax: UID = ExplicitVRLittleEndian) -> bytes:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.SourceApplicationEntityTitle = "SOURCE"
    out = BytesIO()
    ds.save_as(
        out,
        enforce_file_format=True,
        implicit_vr=syntax.is_implicit_VR,
        little_endian=syntax.is_little_endian,
    )
    return out.getvalue()


def dataset(sop: str = "1.2.3.4.5") -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = SERIES
    ds.PatientName = "BULK^TEST"
    return ds


def metadata(data: bytes, sop: str = "1.2.3.4.5") -> dict[str, Any]:
    result: dict[str, Any] = json.loads(instance_metadata(data, base=BASE, keys=KEYS, sop_uid=sop))
    return result


def url(sop: str = "1.2.3.4.5") -> str:
    return f"{BASE}/studies/{STUDY}/series/{SERIES}/instances/{sop}"


def parts(
    data: bytes,
    selection: Selection | TagPath,
    fmt: BulkdataFormat = ANY,
    syntax: str = EXPLICIT_VR_LITTLE_ENDIAN,
) -> list[BulkPart]:
    return instance_parts(data, syntax, selection, fmt, base=BASE, keys=KEYS, sop_uid="1.2.3.4.5")


def resolve(data: bytes, uri: str, syntax: str = EXPLICIT_VR_LITTLE_ENDIAN) -> list[BulkPart]:
    """What the bulk data route answers for *uri* (one of :func:`url`'s values)."""
    tail = uri.removeprefix(url() + "/")
    selection: Selection | TagPath
    if tail == "pixeldata":
        selection = "pixeldata"
    else:
        selection = TagPath.parse(tail.removeprefix("bulkdata/"))
    return parts(data, selection, syntax=syntax)


def without_bulk(json_dataset: dict[str, Any]) -> dict[str, Any]:
    """*json_dataset* with every binary value dropped (sequences too)."""
    out = {}
    for key, entry in json_dataset.items():
        if "BulkDataURI" in entry or "InlineBinary" in entry:
            continue
        if entry.get("vr") == "SQ" and "Value" in entry:
            entry = {**entry, "Value": [without_bulk(item) for item in entry["Value"]]}
        out[key] = entry
    return out


# -- the JSON ------------------------------------------------------------------------------------


def test_ct_instance_is_pydicoms_json_with_pixel_data_by_uri(tmp_path: Path) -> None:
    study = write_ct_study(tmp_path, images=1)
    data = study.paths[0].read_bytes()
    source = pydicom.dcmread(study.paths[0])
    ours = metadata(data, source.SOPInstanceUID)
    expected = source.to_json_dict()
    assert without_bulk(ours) == without_bulk(expected)
    assert ours.keys() == expected.keys()
    pixel_uri = ours[PIXEL_DATA]["BulkDataURI"]
    assert pixel_uri == (
        f"{BASE}/studies/{source.StudyInstanceUID}/series/{source.SeriesInstanceUID}"
        f"/instances/{source.SOPInstanceUID}/pixeldata"
    )
    assert ours[PIXEL_DATA]["vr"] == "OW"
    assert not any(key.startswith("0002") for key in ours)


def test_multiframe_keeps_its_functional_groups_and_names_its_pixel_data(tmp_path: Path) -> None:
    multiframe = write_multiframe(tmp_path, frames=5)
    source = pydicom.dcmread(multiframe.paths[0])
    ours = metadata(multiframe.paths[0].read_bytes(), source.SOPInstanceUID)
    assert without_bulk(ours) == without_bulk(source.to_json_dict())
    assert ours["00280008"]["Value"] == [5]
    assert len(ours["52009230"]["Value"]) == 5  # PerFrameFunctionalGroupsSequence
    assert ours[PIXEL_DATA]["BulkDataURI"].endswith(f"/{source.SOPInstanceUID}/pixeldata")


def test_binary_values_in_sequences_get_a_tag_path_small_ones_stay_inline() -> None:
    ds = dataset()
    inner = Dataset()
    inner.add_new(0x00420011, "OB", b"\x01" * 2000)  # Encapsulated Document, in an item
    inner.add_new(0x00281201, "OW", b"\x02" * 16)  # a short palette: inline
    outer = Dataset()
    outer.ContentSequence = [Dataset(), inner]
    ds.ContentSequence = [outer]
    data = part10(ds)
    ours = metadata(data)
    item = ours["0040A730"]["Value"][0]["0040A730"]["Value"][1]
    uri = item["00420011"]["BulkDataURI"]
    assert uri == f"{url()}/bulkdata/0040A730/0/0040A730/1/00420011"
    assert base64.b64decode(item["00281201"]["InlineBinary"]) == b"\x02" * 16
    [part] = resolve(data, uri)
    assert part.data == b"\x01" * 2000
    assert part.content_type == OCTET
    assert part.location == uri


class Kept:
    """Sidecars in a dict, counting what is asked of them."""

    def __init__(self) -> None:
        self.kept: dict[str, bytes] = {}
        self.loads = 0
        self.ranges: ByteRanges | None = None

    def peek(self, kind: str) -> bytes | None:
        return None  # nothing in memory: every use loads

    def load(self, kind: str) -> bytes | None:
        self.loads += 1
        return self.kept.get(kind)

    def save(self, kind: str, data: bytes) -> None:
        self.kept[kind] = data

    arriving = False

    def keep_nowait(self, kind: str, data: bytes) -> bool:
        return False


def instance(data: bytes, sidecars: Kept | None) -> Instance:
    return Instance(
        data, "1.2.840.10008.5.1.4.1.1.7", "1.2.3.4.5", EXPLICIT_VR_LITTLE_ENDIAN, sidecars=sidecars
    )


def with_document(ds: Dataset) -> Dataset:
    ds.add_new(0x00420011, "OB", b"\x01" * 2000)
    return ds


def test_metadata_is_kept_relative_and_served_under_any_base() -> None:
    kept = Kept()
    data = part10(with_document(dataset()))

    made = relative_metadata(instance(data, kept), KEYS)
    again = relative_metadata(instance(b"not even DICOM", kept), KEYS)  # the kept one, unread

    assert again == made == kept.kept[METADATA]
    relative = json.loads(made)
    assert relative["00420011"]["BulkDataURI"] == url().removeprefix(BASE) + "/bulkdata/00420011"
    for base in (BASE, 'http://h\\"x/aets/A'):  # a base JSON must escape
        served = json.loads(under(base, made))
        assert served["00420011"]["BulkDataURI"] == f"{base}{relative['00420011']['BulkDataURI']}"
        assert served == json.loads(
            instance_metadata(data, base=base, keys=KEYS, sop_uid="1.2.3.4.5")
        )


def test_text_that_looks_like_a_uri_key_is_left_alone() -> None:
    ds = dataset()
    ds.PatientComments = '"BulkDataURI":"/evil'
    made = relative_metadata(instance(part10(ds), None), KEYS)

    served = json.loads(under(BASE, made))

    assert served["00104000"]["Value"] == ['"BulkDataURI":"/evil']


def test_an_instance_that_does_not_name_its_series_is_not_kept() -> None:
    ds = dataset()
    del ds.SeriesInstanceUID  # its URIs take the series of the request: they vary
    kept = Kept()

    relative_metadata(instance(part10(with_document(ds)), kept), RetrieveKeys(STUDY, SERIES))

    assert kept.kept == {}


def test_overlay_data_is_bulk_data() -> None:
    ds = dataset()
    ds.add_new(0x60000010, "US", 128)  # Overlay Rows
    ds.add_new(0x60000011, "US", 128)  # Overlay Columns
    ds.add_new(0x60000100, "US", 1)  # Overlay Bits Allocated
    ds.add_new(0x60003000, "OW", bytes(range(256)) * 8)  # 128 x 128 bits
    data = part10(ds)
    ours = metadata(data)
    assert ours["60003000"] == {"vr": "OW", "BulkDataURI": f"{url()}/bulkdata/60003000"}
    assert [p.data for p in resolve(data, ours["60003000"]["BulkDataURI"])] == [
        bytes(range(256)) * 8
    ]


@pytest.mark.parametrize(("size", "inline"), [(BULK_MIN_BYTES - 2, True), (BULK_MIN_BYTES, False)])
def test_threshold(size: int, inline: bool) -> None:
    """Values of 1 KiB or more are bulk data (a stored value has an even length)."""
    ds = dataset()
    ds.add_new(0x00091000, "LO", "RST TEST")  # private creator
    ds.add_new(0x00091010, "OB", b"\x07" * size)
    entry = metadata(part10(ds))["00091010"]
    assert ("InlineBinary" in entry) is inline
    assert ("BulkDataURI" in entry) is not inline


def test_small_pixel_data_is_still_bulk_data() -> None:
    ds = dataset()
    ds.Rows = ds.Columns = 4
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(16)
    data = part10(ds)
    entry = metadata(data)[PIXEL_DATA]
    assert entry == {"vr": "OB", "BulkDataURI": f"{url()}/pixeldata"}
    assert [p.data for p in resolve(data, entry["BulkDataURI"])] == [bytes(16)]


def test_no_file_meta_in_the_json() -> None:
    ours = metadata(part10(dataset()))
    assert ours  # the data set is there...
    assert not [key for key in ours if key.startswith("0002")]  # ...its file meta is not


def test_implicit_and_big_endian_sources() -> None:
    ds = dataset()
    ds.add_new(0x60003000, "OW", b"\x01\x02" * 1024)
    implicit = metadata(part10(ds, ImplicitVRLittleEndian))
    assert implicit["60003000"]["vr"] == "OW"
    assert implicit["00100010"]["Value"] == [{"Alphabetic": "BULK^TEST"}]
    # Big Endian is converted before parsing (rst.services.bulkdata.prepared); the parser
    # itself reads whatever syntax the file declares
    big = metadata(part10(dataset(), ExplicitVRBigEndian))
    assert big["00100010"]["Value"] == [{"Alphabetic": "BULK^TEST"}]


def test_an_unreadable_instance_is_a_502() -> None:
    data = part10(dataset())
    with pytest.raises(UnreadableInstance, match=r"cannot read \(1\.2\.3\.4\.5\)"):
        metadata(data[:132] + b"\x08\x00" + b"\xff" * 40)


# -- bulk data ------------------------------------------------------------------------------------


def test_encapsulated_pixel_data_one_part_per_frame(tmp_path: Path) -> None:
    rle = write_multiframe(tmp_path, frames=3, transfer_syntax=RLE)
    data = rle.paths[0].read_bytes()
    source = pydicom.dcmread(rle.paths[0])
    sop = source.SOPInstanceUID
    assert metadata(data, sop)[PIXEL_DATA]["BulkDataURI"].endswith(f"{sop}/pixeldata")
    found = instance_parts(data, RLE, "pixeldata", ANY, base=BASE, keys=KEYS, sop_uid=sop)
    expected = list(generate_frames(source.PixelData, number_of_frames=3))
    assert [p.data for p in found] == expected
    assert {p.content_type for p in found} == {f"image/dicom-rle; transfer-syntax={RLE}"}
    assert [p.location.rsplit("/", 2)[1:] for p in found] == [
        ["frames", "1"],
        ["frames", "2"],
        ["frames", "3"],
    ]


def test_every_bulk_value_of_an_instance(tmp_path: Path) -> None:
    ds = dataset()
    ds.add_new(0x60003000, "OW", b"\x01" * 2048)
    ds.add_new(0x00420011, "OB", b"%PDF" * 512)
    ds.add_new(0x00420012, "LO", "application/pdf")
    ds.add_new(0x00091000, "LO", "RST TEST")
    ds.add_new(0x00091010, "OB", b"\x07" * 8)  # small: not bulk data
    data = part10(ds)
    uris = [entry["BulkDataURI"] for entry in metadata(data).values() if "BulkDataURI" in entry]
    found = parts(data, "bulkdata", UNCOMPRESSED)
    assert (
        [p.location for p in found]
        == uris
        == [
            f"{url()}/bulkdata/00420011",
            f"{url()}/bulkdata/60003000",
        ]
    )
    assert [p.content_type for p in found] == [OCTET, OCTET]
    # an encapsulated document is labelled with its own type when the client names it
    pdf = BulkdataFormat((BulkChoice("application/pdf"),), multipart=False)
    [document] = parts(data, TagPath((), 0x00420011), pdf)
    assert document.content_type == "application/pdf"
    assert document.data == b"%PDF" * 512


def test_values_that_are_not_there() -> None:
    ds = dataset()
    ds.ContentSequence = [Dataset()]
    data = part10(ds)
    with pytest.raises(NotFound, match="no element 00091010"):
        parts(data, TagPath.parse("00091010"))
    with pytest.raises(NotFound, match="is PN, not bulk data"):
        parts(data, TagPath.parse("00100010"))
    with pytest.raises(NotFound, match="has 1 items, no item 1"):
        parts(data, TagPath.parse("0040A730/1/00420011"))
    with pytest.raises(NotFound, match="no sequence 00100010"):
        parts(data, TagPath.parse("00100010/0/00420011"))
    with pytest.raises(NotFound, match="no element 0040A730/0/00420011"):
        parts(data, TagPath.parse("0040A730/0/00420011"))
    assert parts(data, "pixeldata") == []
    assert parts(data, "bulkdata") == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7FE00010", TagPath((), 0x7FE00010)),
        ("7fe00010", TagPath((), 0x7FE00010)),
        ("00540016/0/00181072", TagPath(((0x00540016, 0),), 0x00181072)),
        (
            "0040A730/12/0040A730/3/00420011",
            TagPath(((0x0040A730, 12), (0x0040A730, 3)), 0x00420011),
        ),
    ],
)
def test_tag_paths(text: str, expected: TagPath) -> None:
    assert TagPath.parse(text) == expected
    assert str(expected) == text.upper()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "7FE0001",
        "7FE000100",
        "PixelData",
        "7FE00010/",
        "/7FE00010",
        "00540016/0",
        "00540016/-1/00181072",
        "00540016/x/00181072",
        "00540016/1234567890/00181072",
        "00540016//00181072",
        "7FE00010/0/",
        "\uff17FE00010",  # a full-width digit
    ],
)
def test_bad_tag_paths_are_400(text: str) -> None:
    with pytest.raises(BadRequest, match="bulk data path"):
        TagPath.parse(text)


# -- negotiation ---------------------------------------------------------------------------------


OHIF_METADATA = (
    "application/dicom+json, multipart/related; type=application/octet-stream; transfer-syntax=*"
)


@pytest.mark.parametrize(
    ("accept", "multipart", "first"),
    [
        (None, True, BulkChoice(OCTET)),
        ("*/*", True, BulkChoice("*/*")),
        ('multipart/related; type="*/*"', True, BulkChoice("*/*")),  # dicomweb-client
        ("multipart/related; type=application/octet-stream", True, BulkChoice(OCTET)),
        (OHIF_METADATA, True, BulkChoice(OCTET, "*")),
        ('multipart/related; type="image/x-jls"', True, BulkChoice("image/jls")),
        ("application/octet-stream", False, BulkChoice(OCTET)),
        ("application/pdf, image/jpeg;q=0.5", False, BulkChoice("application/pdf")),
        ("application/octet-stream, multipart/related;q=0.1", True, BulkChoice("*/*")),
    ],
)
def test_negotiate_bulkdata(accept: str | None, multipart: bool, first: BulkChoice) -> None:
    fmt = negotiate_bulkdata(accept)
    assert fmt.multipart is multipart
    assert fmt.choices[0] == first


@pytest.mark.parametrize(
    "accept", ["application/dicom+json", 'multipart/related; type="application/dicom"', "x"]
)
def test_negotiate_bulkdata_refuses(accept: str) -> None:
    with pytest.raises(NotAcceptable):
        negotiate_bulkdata(accept)


JLS = "1.2.840.10008.1.2.4.80"
MPEG4 = "1.2.840.10008.1.2.4.102"


@pytest.mark.parametrize(
    ("accept", "stored", "form"),
    [
        (None, EXPLICIT_VR_LITTLE_ENDIAN, "stored"),
        (None, JLS, "decompressed"),
        ("*/*", JLS, "decompressed"),  # no transfer syntax named: the default, uncompressed
        ("*/*", MPEG4, "stored"),  # ... which a video does not have
        ("multipart/related; type=application/octet-stream; transfer-syntax=*", JLS, "stored"),
        ("multipart/related; type=image/jls", JLS, "stored"),
        ("multipart/related; type=image/*", JLS, "stored"),
        ('multipart/related; type=image/jls; transfer-syntax="1.2.840.10008.1.2.4.81"', JLS, None),
        ("multipart/related; type=image/jp2", JLS, None),
        ("multipart/related; type=image/jp2", EXPLICIT_VR_LITTLE_ENDIAN, None),
        ("multipart/related; type=image/jp2, multipart/related;q=0.2", JLS, "decompressed"),
        ("video/mp4", MPEG4, "stored"),
        ("application/octet-stream", MPEG4, None),
    ],
)
def test_pixel_forms(accept: str | None, stored: str, form: str | None) -> None:
    fmt = negotiate_bulkdata(accept)
    if form is None:
        with pytest.raises(NotAcceptable, match=stored):
            fmt.pixel_form(stored)
    else:
        assert fmt.pixel_form(stored) == form


def test_what_to_ask_the_archive_for() -> None:
    assert negotiate_bulkdata(None).prefer == EXPLICIT_VR_LITTLE_ENDIAN
    assert negotiate_bulkdata("*/*").prefer == EXPLICIT_VR_LITTLE_ENDIAN
    assert negotiate_bulkdata(OHIF_METADATA).prefer is None
    assert negotiate_bulkdata("multipart/related; type=image/jls").prefer is None


def test_media_types_of_table_8_7_3_5() -> None:
    expected = {
        "1.2.840.10008.1.2.1": OCTET,
        "1.2.840.10008.1.2.4.50": "image/jpeg",
        "1.2.840.10008.1.2.4.51": "image/jpeg",
        "1.2.840.10008.1.2.4.57": "image/jpeg",
        "1.2.840.10008.1.2.4.70": "image/jpeg",
        "1.2.840.10008.1.2.4.80": "image/jls",
        "1.2.840.10008.1.2.4.81": "image/jls",
        "1.2.840.10008.1.2.4.90": "image/jp2",
        "1.2.840.10008.1.2.4.91": "image/jp2",
        "1.2.840.10008.1.2.4.92": "image/jpx",
        "1.2.840.10008.1.2.4.93": "image/jpx",
        "1.2.840.10008.1.2.4.201": "image/jphc",
        RLE: "image/dicom-rle",
        "1.2.840.10008.1.2.4.100": "video/mpeg2",
        MPEG4: "video/mp4",
        "1.2.840.10008.1.2.4.107": "video/H265",
        "1.2.999.private": OCTET,
    }
    assert {uid: bulk_media_type(uid) for uid in expected} == expected
    assert default_transfer_syntax("image/jpeg") == "1.2.840.10008.1.2.4.70"
    assert default_transfer_syntax("video/mp4") is None
    assert transfer_syntaxes_of("image/jp2") == {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"}
