"""QIDO-RS query parameters → C-FIND identifier, and C-FIND results → DICOM JSON."""

from __future__ import annotations

import struct
from io import BytesIO
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from pydicom import Dataset
from pydicom.datadict import dictionary_VR, keyword_dict, tag_for_keyword
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pynetdicom.dsutils import decode, encode

from rst.dicom import query as query_module
from rst.dicom.query import (
    IMAGE_KEYS,
    MAX_INCLUDEFIELDS,
    MAX_PARAMETERS,
    MAX_SEQUENCE_DEPTH,
    SERIES_KEYS,
    STUDY_KEYS,
    QidoQuery,
    default_keys,
    parse_qido,
    to_dicom_json,
)
from rst.errors import BadRequest

STUDY = "1.2.3.4"
SERIES = "1.2.3.4.5"


def wire(ds: Dataset) -> Dataset:
    """Encode and decode the identifier the way pynetdicom sends it; fails on unencodable values."""
    raw = encode(ds, False, True)
    assert raw is not None, "pynetdicom could not encode the identifier"
    return decode(BytesIO(raw), False, True)


def keys_of(ds: Dataset) -> set[str]:
    return {elem.keyword for elem in ds}


def tag(keyword: str) -> str:
    found = tag_for_keyword(keyword)
    assert found is not None
    return f"{found:08X}"


class TestLevelsAndDefaults:
    def test_tables_use_known_keywords(self) -> None:
        assert STUDY_KEYS
        assert SERIES_KEYS
        assert IMAGE_KEYS
        assert not (STUDY_KEYS & SERIES_KEYS)
        assert not (SERIES_KEYS & IMAGE_KEYS)

    def test_studies(self) -> None:
        query = parse_qido("STUDY", [])
        ds = wire(query.identifier)
        assert ds.QueryRetrieveLevel == "STUDY"
        assert keys_of(ds) == {
            "QueryRetrieveLevel",
            "StudyDate",
            "StudyTime",
            "AccessionNumber",
            "ModalitiesInStudy",
            "ReferringPhysicianName",
            "PatientName",
            "PatientID",
            "PatientBirthDate",
            "PatientSex",
            "StudyInstanceUID",
            "StudyID",
            "NumberOfStudyRelatedSeries",
            "NumberOfStudyRelatedInstances",
        }
        assert all(elem.is_empty for elem in ds if elem.keyword != "QueryRetrieveLevel")
        assert (query.limit, query.offset, query.fuzzymatching, query.include_all) == (
            None,
            0,
            False,
            False,
        )

    def test_study_series_include_study_uid_match(self) -> None:
        ds = wire(parse_qido("SERIES", [], study_uid=STUDY).identifier)
        assert ds.QueryRetrieveLevel == "SERIES"
        assert ds.StudyInstanceUID == STUDY
        assert {"Modality", "SeriesDescription", "SeriesInstanceUID", "SeriesNumber"} <= keys_of(ds)
        assert {"NumberOfSeriesRelatedInstances", "PerformedProcedureStepStartDate"} <= keys_of(ds)
        assert "PerformedProcedureStepStartTime" in ds
        assert "PatientName" not in ds  # study-level keys only for /series

    def test_all_series_add_study_keys(self) -> None:
        ds = wire(parse_qido("SERIES", []).identifier)
        assert {"PatientName", "StudyDate", "AccessionNumber", "StudyInstanceUID"} <= keys_of(ds)
        assert ds["StudyInstanceUID"].is_empty

    def test_series_instances(self) -> None:
        ds = wire(parse_qido("IMAGE", [], study_uid=STUDY, series_uid=SERIES).identifier)
        assert ds.QueryRetrieveLevel == "IMAGE"
        assert (ds.StudyInstanceUID, ds.SeriesInstanceUID) == (STUDY, SERIES)
        assert {"SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns"} <= keys_of(ds)
        assert {"BitsAllocated", "NumberOfFrames"} <= keys_of(ds)
        assert "Modality" not in ds
        assert "PatientName" not in ds

    def test_study_instances_add_series_keys(self) -> None:
        ds = wire(parse_qido("IMAGE", [], study_uid=STUDY).identifier)
        assert {"Modality", "SeriesNumber", "SeriesInstanceUID"} <= keys_of(ds)
        assert "PatientName" not in ds

    def test_all_instances_add_study_and_series_keys(self) -> None:
        ds = wire(parse_qido("IMAGE", []).identifier)
        assert {"PatientName", "StudyDate", "Modality", "SeriesNumber", "SOPInstanceUID"} <= (
            keys_of(ds)
        )

    def test_default_keys(self) -> None:
        assert "StudyInstanceUID" in default_keys("SERIES", study_uid=STUDY)
        assert "PatientName" in default_keys("IMAGE")
        assert "PatientName" not in default_keys("IMAGE", study_uid=STUDY)

    def test_invalid_path_uid(self) -> None:
        with pytest.raises(BadRequest, match="UID"):
            parse_qido("SERIES", [], study_uid="1.2.abc")
        with pytest.raises(BadRequest, match="UID"):
            parse_qido("IMAGE", [], study_uid=STUDY, series_uid="1" * 65)


class TestMatching:
    def test_keyword_and_tag(self) -> None:
        ds = wire(parse_qido("STUDY", [("PatientName", "DOE*"), ("00100020", "ID?")]).identifier)
        assert ds.PatientName == "DOE*"
        assert ds.PatientID == "ID?"

    def test_lowercase_hex_tag(self) -> None:
        ds = wire(parse_qido("STUDY", [("0020000d", STUDY)]).identifier)
        assert ds.StudyInstanceUID == STUDY

    @pytest.mark.parametrize("value", ["20200101-20201231", "-20201231", "20200101-", "20200101"])
    def test_date_ranges_pass_through(self, value: str) -> None:
        ds = wire(parse_qido("STUDY", [("StudyDate", value)]).identifier)
        assert ds.StudyDate == value

    def test_time_range(self) -> None:
        ds = wire(parse_qido("STUDY", [("StudyTime", "080000-170000.5")]).identifier)
        assert ds.StudyTime == "080000-170000.5"

    @pytest.mark.parametrize("separator", [",", "\\"])
    def test_uid_list(self, separator: str) -> None:
        value = separator.join(["1.2.3", "1.2.4", "1.2.5"])
        elem = wire(parse_qido("STUDY", [("StudyInstanceUID", value)]).identifier)[
            "StudyInstanceUID"
        ]
        assert list(elem.value) == ["1.2.3", "1.2.4", "1.2.5"]
        assert elem.VM == 3

    def test_multi_value_cs(self) -> None:
        ds = wire(parse_qido("STUDY", [("ModalitiesInStudy", "CT\\MR")]).identifier)
        assert list(ds.ModalitiesInStudy) == ["CT", "MR"]

    def test_empty_value_is_universal_match(self) -> None:
        ds = wire(parse_qido("STUDY", [("StudyDescription", "")]).identifier)
        assert "StudyDescription" in ds
        assert ds["StudyDescription"].is_empty

    def test_numeric_values(self) -> None:
        query = parse_qido("IMAGE", [("Rows", "512"), ("InstanceNumber", "7")], study_uid=STUDY)
        ds = wire(query.identifier)
        assert ds.Rows == 512
        assert ds.InstanceNumber == 7

    def test_matching_key_not_duplicated_as_return_key(self) -> None:
        ds = parse_qido("STUDY", [("PatientName", "DOE*")]).identifier
        assert [e.keyword for e in ds].count("PatientName") == 1
        assert ds.PatientName == "DOE*"

    def test_non_ascii_declares_utf8(self) -> None:
        ds = wire(parse_qido("STUDY", [("PatientName", "Müller*")]).identifier)
        assert ds.SpecificCharacterSet == "ISO_IR 192"
        assert ds.PatientName == "Müller*"

    def test_ascii_leaves_character_set_alone(self) -> None:
        assert "SpecificCharacterSet" not in parse_qido("STUDY", [("PatientName", "X")]).identifier

    def test_sequence_path(self) -> None:
        query = parse_qido(
            "SERIES",
            [
                ("RequestAttributesSequence.ScheduledProcedureStepID", "SPS1"),
                ("00400275.00401001", "RP1"),
            ],
            study_uid=STUDY,
        )
        ds = wire(query.identifier)
        (item,) = ds.RequestAttributesSequence
        assert item.ScheduledProcedureStepID == "SPS1"
        assert item.RequestedProcedureID == "RP1"

    def test_empty_sequence_match(self) -> None:
        ds = wire(parse_qido("STUDY", [("ProcedureCodeSequence", "")]).identifier)
        assert len(ds.ProcedureCodeSequence) == 0

    def test_path_uid_and_equal_query_uid(self) -> None:
        ds = parse_qido("SERIES", [("StudyInstanceUID", STUDY)], study_uid=STUDY).identifier
        assert ds.StudyInstanceUID == STUDY

    @pytest.mark.parametrize(
        ("params", "message"),
        [
            ([("NoSuchKeyword", "x")], "NoSuchKeyword"),
            ([("patientname", "x")], "patientname"),
            ([("DEADBEEF", "x")], "DEADBEEF"),
            ([("00091001", "x")], "00091001"),  # private
            ([("00020010", "x")], "00020010"),  # file meta
            ([("QueryRetrieveLevel", "IMAGE")], "QueryRetrieveLevel"),
            ([("PatientName.PatientID", "x")], "not a sequence"),
            ([("RequestAttributesSequence..X", "x")], "malformed"),
            ([("PatientName", "A"), ("00100010", "B")], "more than once"),
            ([("StudyDate", "yesterday")], "StudyDate"),
            ([("StudyInstanceUID", "1.2.x")], "invalid UID"),
            ([("StudyInstanceUID", "1.2,")], "invalid UID"),
            ([("Rows", "many")], "integer"),
            ([("Rows", "1-5")], "integer"),
            ([("InstanceNumber", "1.5")], "integer string"),
            ([("SliceThickness", "thin")], "decimal"),
            ([("PatientName", "A\nB")], "control"),
            ([("ProcedureCodeSequence", "x")], "sequence"),
            ([("PixelData", "x")], "binary"),
            ([("", "x")], "empty name"),
        ],
    )
    def test_bad_matching_keys(self, params: list[tuple[str, str]], message: str) -> None:
        with pytest.raises(BadRequest, match=message) as info:
            parse_qido("IMAGE", params)
        assert info.value.status == 400

    def test_path_uid_with_universal_query_uid(self) -> None:
        query = parse_qido("SERIES", [("StudyInstanceUID", "")], study_uid=STUDY)
        assert query.identifier.StudyInstanceUID == STUDY

    def test_path_uid_contradicted(self) -> None:
        with pytest.raises(BadRequest, match="contradicts"):
            parse_qido("SERIES", [("StudyInstanceUID", "9.9")], study_uid=STUDY)

    @pytest.mark.parametrize(
        ("level", "key"),
        [
            ("STUDY", "SOPInstanceUID"),
            ("STUDY", "SeriesInstanceUID"),
            ("STUDY", "Modality"),
            ("SERIES", "SOPClassUID"),
            ("SERIES", "Rows"),
        ],
    )
    def test_key_below_query_level(self, level: Any, key: str) -> None:
        with pytest.raises(BadRequest, match="level"):
            parse_qido(level, [(key, "")])

    def test_higher_level_keys_are_fine(self) -> None:
        ds = parse_qido("IMAGE", [("PatientName", "X"), ("Modality", "CT")]).identifier
        assert ds.PatientName == "X"
        assert ds.Modality == "CT"


class TestReservedParameters:
    def test_paging_and_fuzzy(self) -> None:
        query = parse_qido("STUDY", [("limit", "10"), ("offset", "20"), ("fuzzymatching", "true")])
        assert (query.limit, query.offset, query.fuzzymatching) == (10, 20, True)
        assert parse_qido("STUDY", [("fuzzymatching", "false")]).fuzzymatching is False

    def test_accept_and_charset_are_ignored(self) -> None:
        query = parse_qido("STUDY", [("accept", "application/json"), ("charset", "utf-8")])
        assert query.identifier == parse_qido("STUDY", []).identifier

    @pytest.mark.parametrize(
        ("params", "message"),
        [
            ([("limit", "0")], "positive"),
            ([("limit", "-1")], "limit"),
            ([("limit", "ten")], "limit"),
            ([("limit", "1.5")], "limit"),
            ([("limit", "")], "limit"),
            ([("limit", "9" * 5000)], "limit"),
            ([("offset", "-1")], "offset"),
            ([("offset", "x")], "offset"),
            ([("limit", "1"), ("limit", "2")], "more than once"),
            ([("fuzzymatching", "yes")], "fuzzymatching"),
            ([("fuzzymatching", "TRUE")], "fuzzymatching"),
        ],
    )
    def test_invalid(self, params: list[tuple[str, str]], message: str) -> None:
        with pytest.raises(BadRequest, match=message):
            parse_qido("STUDY", params)

    def test_offset_zero(self) -> None:
        assert parse_qido("STUDY", [("offset", "0")]).offset == 0


class TestIncludefield:
    def test_keywords_tags_repeated_and_comma(self) -> None:
        query = parse_qido(
            "STUDY",
            [
                ("includefield", "StudyDescription,00081032"),
                ("includefield", "IssuerOfPatientID"),
                ("includefield", " , "),
            ],
        )
        ds = wire(query.identifier)
        assert {"StudyDescription", "ProcedureCodeSequence", "IssuerOfPatientID"} <= keys_of(ds)
        assert ds["StudyDescription"].is_empty
        assert not query.include_all

    def test_include_does_not_clear_matching_key(self) -> None:
        query = parse_qido(
            "STUDY", [("StudyDescription", "CHEST*"), ("includefield", "StudyDescription")]
        )
        assert query.identifier.StudyDescription == "CHEST*"

    def test_sequence_path(self) -> None:
        query = parse_qido(
            "SERIES",
            [
                ("RequestAttributesSequence.RequestedProcedureID", "RP"),
                ("includefield", "RequestAttributesSequence.ScheduledProcedureStepID"),
            ],
        )
        (item,) = wire(query.identifier).RequestAttributesSequence
        assert item.RequestedProcedureID == "RP"
        assert item["ScheduledProcedureStepID"].is_empty

    def test_all(self) -> None:
        query = parse_qido("STUDY", [("includefield", "all")])
        assert query.include_all
        ds = wire(query.identifier)
        assert {"StudyDescription", "PatientAge", "InstanceAvailability"} <= keys_of(ds)
        assert "Modality" not in ds

    def test_all_for_all_instances_covers_upper_levels(self) -> None:
        ds = parse_qido("IMAGE", [("includefield", "all")]).identifier
        assert {"StudyDescription", "BodyPartExamined", "ContentDate"} <= keys_of(ds)

    def test_lower_level_return_keys_are_dropped(self) -> None:
        ds = parse_qido("STUDY", [("includefield", "SOPInstanceUID,Modality")]).identifier
        assert "SOPInstanceUID" not in ds
        assert "Modality" not in ds

    def test_unknown_includefield(self) -> None:
        with pytest.raises(BadRequest, match="Bogus"):
            parse_qido("STUDY", [("includefield", "StudyDescription,Bogus")])


def series_query() -> QidoQuery:
    return parse_qido("SERIES", [("Modality", "CT")], study_uid=STUDY)


def response(**values: Any) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES"
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


class TestToDicomJson:
    def test_basic(self) -> None:
        result = to_dicom_json(
            series_query(),
            response(
                StudyInstanceUID=STUDY,
                SeriesInstanceUID=SERIES,
                Modality="CT",
                SeriesNumber=3,
            ),
            f"https://rst/studies/{STUDY}/series/{SERIES}",
        )
        assert result == {
            tag("Modality"): {"vr": "CS", "Value": ["CT"]},
            tag("RetrieveURL"): {
                "vr": "UR",
                "Value": [f"https://rst/studies/{STUDY}/series/{SERIES}"],
            },
            tag("StudyInstanceUID"): {"vr": "UI", "Value": [STUDY]},
            tag("SeriesInstanceUID"): {"vr": "UI", "Value": [SERIES]},
            tag("SeriesNumber"): {"vr": "IS", "Value": [3]},
        }
        assert list(result) == sorted(result)

    def test_study_uid_filled_from_path(self) -> None:
        result = to_dicom_json(series_query(), response(SeriesInstanceUID=SERIES), None)
        assert result[tag("StudyInstanceUID")] == {"vr": "UI", "Value": [STUDY]}
        assert tag("RetrieveURL") not in result

    def test_empty_study_uid_filled_from_path(self) -> None:
        result = to_dicom_json(series_query(), response(StudyInstanceUID=""), None)
        assert result[tag("StudyInstanceUID")] == {"vr": "UI", "Value": [STUDY]}

    def test_instance_level_fills_both_uids(self) -> None:
        query = parse_qido("IMAGE", [], study_uid=STUDY, series_uid=SERIES)
        result = to_dicom_json(query, response(SOPInstanceUID="1.2.3.4.5.6"), None)
        assert result[tag("StudyInstanceUID")]["Value"] == [STUDY]
        assert result[tag("SeriesInstanceUID")]["Value"] == [SERIES]

    def test_uid_list_is_not_invented(self) -> None:
        query = parse_qido("STUDY", [("StudyInstanceUID", "1.2,1.3")])
        assert tag("StudyInstanceUID") not in to_dicom_json(query, response(), None)

    def test_missing_required_keys_are_not_invented(self) -> None:
        result = to_dicom_json(parse_qido("STUDY", []), response(PatientID="X"), None)
        assert result == {tag("PatientID"): {"vr": "LO", "Value": ["X"]}}

    def test_unrequested_and_protocol_attributes_dropped(self) -> None:
        ds = response(Modality="CT", StudyDescription="not asked", PatientName="DOE^J")
        ds.add_new(0x00000000, "UL", 4)
        ds.add_new(0x00020010, "UI", "1.2.840.10008.1.2")
        ds.RetrieveURL = "http://pacs/internal"
        result = to_dicom_json(series_query(), ds, None)
        assert set(result) == {tag("Modality"), tag("StudyInstanceUID")}

    def test_include_all_keeps_everything_but_protocol_and_binary(self) -> None:
        query = parse_qido("STUDY", [("includefield", "all")])
        ds = response(PatientName="DOE^J", Manufacturer="ACME")
        ds.add_new(0x00091010, "LO", "private")
        ds.add_new(0x7FE00010, "OW", b"\0\0")
        ds.add_new(0x00420011, "OB", b"pdf!")
        result = to_dicom_json(query, ds, None)
        assert result[tag("PatientName")] == {"vr": "PN", "Value": [{"Alphabetic": "DOE^J"}]}
        assert tag("Manufacturer") in result
        assert "00091010" in result
        assert tag("PixelData") not in result
        assert tag("EncapsulatedDocument") not in result
        assert tag("QueryRetrieveLevel") not in result

    def test_binary_inside_sequences_dropped(self) -> None:
        query = parse_qido("STUDY", [("includefield", "ProcedureCodeSequence")])
        item = Dataset()
        item.CodeValue = "X"
        item.add_new(0x00091011, "OB", b"\1\2")
        ds = response(ProcedureCodeSequence=Sequence([item]))
        result = to_dicom_json(query, ds, None)
        (json_item,) = result[tag("ProcedureCodeSequence")]["Value"]
        assert json_item == {tag("CodeValue"): {"vr": "SH", "Value": ["X"]}}

    def test_from_wire_encoded_implicit_identifier(self) -> None:
        query = parse_qido("STUDY", [("includefield", "all")])
        ds = response(PatientName="Müller^Hans", NumberOfStudyRelatedInstances="12")
        ds.SpecificCharacterSet = "ISO_IR 192"
        raw = encode(ds, True, True)
        assert raw is not None
        decoded = decode(BytesIO(raw), True, True)
        result = to_dicom_json(query, decoded, None)
        assert result[tag("PatientName")]["Value"] == [{"Alphabetic": "Müller^Hans"}]
        assert result[tag("NumberOfStudyRelatedInstances")] == {"vr": "IS", "Value": [12]}

    def test_ambiguous_vr_is_resolved(self) -> None:
        query = parse_qido("IMAGE", [("includefield", "all"), ("includefield", "00280106")])
        ds = response(PixelRepresentation=0)
        ds.add_new(0x00280106, "US or SS", b"\x05\x00")
        result = to_dicom_json(query, ds, None)
        assert result["00280106"] == {"vr": "US", "Value": [5]}


def encodes(ds: Dataset) -> None:
    """The identifier encodes in both transfer syntaxes a PACS may take for C-FIND."""
    for implicit in (True, False):
        fp = DicomBytesIO()
        fp.is_little_endian = True
        fp.is_implicit_VR = implicit
        write_dataset(fp, ds)


def refused(params: list[tuple[str, str]], *names: str, level: Any = "IMAGE") -> str:
    """parse_qido's 400 message; it must name each of ``names`` (keywords, tags, limits)."""
    with pytest.raises(BadRequest) as info:
        parse_qido(level, params)
    assert info.value.status == 400
    for name in names:
        assert name in info.value.message
    return info.value.message


FLOAT32_3_4E38 = struct.unpack("<f", struct.pack("<f", 3.4e38))[0]


class TestValueRanges:
    """Numbers a VR cannot hold are 400s naming the attribute (keyword and tag), never values
    that break the C-FIND encoder once the response has started."""

    @pytest.mark.parametrize(
        ("keyword", "value", "vr"),
        [
            ("Rows", "70000", "US"),
            ("Rows", "-1", "US"),
            ("Rows", "99999999999999999999", "US"),
            ("TagAngleSecondAxis", "32768", "SS"),
            ("TagAngleSecondAxis", "-32769", "SS"),
            ("SimpleFrameList", "4294967296", "UL"),
            ("SimpleFrameList", "-1", "UL"),
            ("ReferencePixelX0", "2147483648", "SL"),
            ("ReferencePixelX0", "-2147483649", "SL"),
            ("FileOffsetInContainer", str(2**64), "UV"),
            ("FileOffsetInContainer", "-1", "UV"),
            ("SelectorSVValue", str(2**63), "SV"),
            ("SelectorSVValue", str(-(2**63) - 1), "SV"),
            ("InstanceNumber", "2147483648", "IS"),
            ("InstanceNumber", "-2147483649", "IS"),
            ("SmallestImagePixelValue", "99999", "US"),  # "US or SS": US for a positive value
            ("SmallestImagePixelValue", "-40000", "SS"),  # ... SS for a negative one
            ("Rows", "1\\70000", "US"),  # every value of a list
        ],
    )
    def test_integer_out_of_range(self, keyword: str, value: str, vr: str) -> None:
        message = refused([(keyword, value)], keyword, tag(keyword), "out of range", vr)
        assert f"VR {vr}" in message

    @pytest.mark.parametrize(
        ("keyword", "value"),
        [
            ("RecommendedDisplayFrameRateInFloat", "1e39"),  # FL overflows
            ("RecommendedDisplayFrameRateInFloat", "-3.5e38"),
            ("TimeRange", "1e400"),  # FD: inf
            ("SliceThickness", "1e400"),  # DS
        ],
    )
    def test_float_out_of_range(self, keyword: str, value: str) -> None:
        refused([(keyword, value)], keyword, tag(keyword), "out of range")

    @pytest.mark.parametrize(
        "value", ["nan", "NaN", "inf", "-inf", "Infinity", "1_000", "١٢", "0x10"]
    )
    @pytest.mark.parametrize(
        "keyword", ["RecommendedDisplayFrameRateInFloat", "TimeRange", "SliceThickness"]
    )
    def test_not_a_finite_number(self, keyword: str, value: str) -> None:
        refused([(keyword, value)], keyword, tag(keyword))

    @pytest.mark.parametrize(
        ("keyword", "value", "vr", "expected"),
        [
            ("Rows", "65535", "US", 65535),
            ("Rows", "0", "US", 0),
            ("Rows", " +7 ", "US", 7),
            ("TagAngleSecondAxis", "-32768", "SS", -32768),
            ("SimpleFrameList", "4294967295", "UL", 4294967295),
            ("FileOffsetInContainer", str(2**64 - 1), "UV", 2**64 - 1),
            ("SelectorSVValue", str(-(2**63)), "SV", -(2**63)),
            ("SmallestImagePixelValue", "-1024", "SS", -1024),
            ("SmallestImagePixelValue", "65535", "US", 65535),
            ("RecommendedDisplayFrameRateInFloat", "3.4e38", "FL", FLOAT32_3_4E38),
            ("TimeRange", "1e300", "FD", 1e300),
        ],
    )
    def test_edges_are_accepted(self, keyword: str, value: str, vr: str, expected: Any) -> None:
        ds = parse_qido("IMAGE", [(keyword, value)]).identifier
        assert (ds[keyword].VR, wire(ds)[keyword].value) == (vr, expected)

    def test_is_range_edges(self) -> None:
        ds = wire(parse_qido("IMAGE", [("InstanceNumber", "-2147483648")]).identifier)
        assert ds.InstanceNumber == -2147483648


class TestTextValues:
    @pytest.mark.parametrize(
        ("keyword", "value", "rule"),
        [
            ("Modality", "X" * 17, "16 characters"),  # CS
            ("PatientID", "X" * 65, "64 characters"),  # LO
            ("AccessionNumber", "X" * 17, "16 characters"),  # SH
            ("RetrieveAETitle", "X" * 17, "16 characters"),  # AE
            ("InstitutionAddress", "X" * 1025, "1024 characters"),  # ST
            ("PatientName", "X" * 65, "PN"),
            ("PatientName", "A=B=C=D", "PN"),
            ("PatientName", "A=" + "X" * 65, "PN"),
            ("InstanceNumber", "0000000000001", "12 characters"),  # IS
            ("SliceThickness", "1.00000000000000001", "16 characters"),  # DS
            ("StudyDate", "202001011", "DA"),
            ("StudyDate", "2020-01-01", "DA"),
            ("StudyDate", "20200101-20201231-", "DA"),
            ("StudyDate", "2020010120200102", "DA"),
            ("StudyTime", "1200000", "TM"),
            ("StudyTime", "noon", "TM"),
            ("AcquisitionDateTime", "202001011", "DT"),
            ("AcquisitionDateTime", "20200101T12", "DT"),
            ("Modality", "ct", "code string"),
            ("Modality", "C-T", "code string"),
            ("Modality", "CÉ", "ASCII"),
            ("RetrieveAETitle", "PÄCS", "ASCII"),
            ("PatientAge", "30Y", "age string"),
            ("PatientAge", "030y", "age string"),
            ("PatientName", "A\x00B", "control"),
            ("PatientName", "A\ud800B", "Unicode"),
            ("StudyInstanceUID", "1" * 65, "invalid UID"),
            ("StudyInstanceUID", "1.2,,1.3", "invalid UID"),
            ("StudyInstanceUID", "1.2.\U0001f600", "invalid UID"),
            ("StudyInstanceUID", "*", "invalid UID"),
        ],
    )
    def test_refused(self, keyword: str, value: str, rule: str) -> None:
        refused([(keyword, value)], keyword, tag(keyword), rule)

    @pytest.mark.parametrize(
        ("keyword", "value"),
        [
            ("Modality", "C?"),
            ("ModalitiesInStudy", "CT\\MR\\SR"),
            ("RetrieveAETitle", "PACS*"),
            ("PatientName", "Müller*"),
            ("PatientName", "Yamada^Tarou=山田^太郎=やまだ^たろう"),
            ("PatientID", "X" * 64),
            ("StudyDate", "20200101"),
            ("StudyDate", "-20200101"),
            ("StudyTime", "08:00:00-17"),
            ("StudyTime", "080000.123456"),
            ("AcquisitionDateTime", "20200101120000.5+0100-20200102"),
            ("PatientAge", "030Y"),
            ("InstitutionAddress", "1 Main St\\2nd floor"),  # ST: a backslash is text
            ("ContentDescription", "ÀÉÎ " * 10),
        ],
    )
    def test_accepted(self, keyword: str, value: str) -> None:
        ds = wire(parse_qido("IMAGE", [(keyword, value)]).identifier)
        assert keyword in ds

    def test_binary_alternative_vr_is_not_a_matching_key(self) -> None:
        refused([("LUTData", "1")], "LUTData", tag("LUTData"), "binary")


BULK = ["PixelData", "7FE00010", "60003000", "54000100", "00420011", "FloatPixelData"]


class TestBulkData:
    @pytest.mark.parametrize("name", BULK)
    def test_includefield_of_bulk_data_is_refused(self, name: str) -> None:
        message = refused([("includefield", name)], "bulk data", "WADO-RS")
        assert name in message

    def test_in_a_list_and_inside_a_sequence(self) -> None:
        refused([("includefield", "StudyDescription,PixelData")], "PixelData", "7FE00010")
        refused([("includefield", "IconImageSequence.PixelData")], "IconImageSequence.PixelData")

    @pytest.mark.parametrize("name", [*BULK, "IconImageSequence"])
    def test_empty_matching_key_of_bulk_data_is_refused(self, name: str) -> None:
        """An empty matching key is a return key: the same rule as includefield."""
        refused([(name, "")], name, "bulk data")

    def test_attributes_inside_a_bulk_sequence_are_fine(self) -> None:
        query = parse_qido("IMAGE", [("includefield", "WaveformSequence.NumberOfWaveformChannels")])
        (item,) = wire(query.identifier).WaveformSequence
        assert "NumberOfWaveformChannels" in item


class TestBounds:
    def test_four_sequences_deep_is_fine(self) -> None:
        path = ".".join(["ReferencedSeriesSequence"] * MAX_SEQUENCE_DEPTH + ["SeriesInstanceUID"])
        query = parse_qido("STUDY", [("includefield", path), (path, "1.2.3")])
        encodes(query.identifier)

    @pytest.mark.parametrize("depth", [MAX_SEQUENCE_DEPTH + 1, 250, 5000])
    @pytest.mark.parametrize("where", ["includefield", "matching key"])
    def test_deeper_paths_are_refused(self, depth: int, where: str) -> None:
        path = ".".join(["ReferencedSeriesSequence"] * depth + ["SeriesInstanceUID"])
        params = [("includefield", path)] if where == "includefield" else [(path, "1.2")]
        refused(params, "MAX_SEQUENCE_DEPTH", str(MAX_SEQUENCE_DEPTH), level="STUDY")

    def test_depth_is_checked_before_any_component(self) -> None:
        """The bound comes before the work that grows with the path (here: name lookups)."""
        refused([("includefield", ".".join(["Nope"] * 300))], "MAX_SEQUENCE_DEPTH")

    def test_parameter_count(self) -> None:
        parse_qido("STUDY", [("accept", "application/dicom+json")] * MAX_PARAMETERS)
        refused([("charset", "utf-8")] * (MAX_PARAMETERS + 1), "MAX_PARAMETERS", "256")

    def test_includefield_count(self) -> None:
        fields = ["StudyDescription"] * MAX_INCLUDEFIELDS
        parse_qido("STUDY", [("includefield", ",".join(fields))])
        refused([("includefield", ",".join([*fields, "PatientAge"]))], "MAX_INCLUDEFIELDS")
        half = ",".join(fields[: MAX_INCLUDEFIELDS // 2 + 1])
        refused([("includefield", half), ("includefield", half)], "MAX_INCLUDEFIELDS")


class TestEncodingBelt:
    def test_unencodable_value_that_slipped_through_is_400_naming_it(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A value check that misses something: the encoder's failure is still a 400."""
        monkeypatch.setattr(query_module, "matching_value", lambda *_: ("US", 70000))
        refused([("Rows", "anything")], "Rows", "00280010", "cannot be encoded")

    def test_unencodable_text_is_named(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(query_module, "matching_value", lambda *_: ("DS", "\U0001f600"))
        refused([("SliceThickness", "1")], "SliceThickness", "00180050")

    def test_check_leaves_the_identifier_alone(self) -> None:
        params = [("PatientName", "Müller*"), ("includefield", "all")]
        first = parse_qido("STUDY", params).identifier
        encodes(first)
        assert first == parse_qido("STUDY", params).identifier


# --- Property: parse_qido returns an encodable identifier or raises BadRequest, nothing else ---


def parse_or_400(level: Any, params: list[tuple[str, str]], **uids: Any) -> QidoQuery | BadRequest:
    """parse_qido's query, or its BadRequest (a 400 with a message); anything else propagates."""
    try:
        return parse_qido(level, params, **uids)
    except BadRequest as exc:
        error = exc
    assert error.status == 400
    assert error.message
    return error


_SEQUENCES = sorted(k for k, t in keyword_dict.items() if dictionary_VR(t) == "SQ")
_KEYWORDS = sorted(keyword_dict)
_uids = st.lists(st.integers(0, 10**20), min_size=1, max_size=6).map(
    lambda parts: ".".join(map(str, parts))
)
_names = st.one_of(
    st.sampled_from(_KEYWORDS),
    st.sampled_from(sorted(keyword_dict.values())).map(lambda t: f"{t:08X}"),
    st.lists(st.sampled_from(_SEQUENCES), min_size=1, max_size=6).flatmap(
        lambda seqs: st.sampled_from(_KEYWORDS).map(lambda leaf: ".".join([*seqs, leaf]))
    ),
    st.sampled_from(["limit", "offset", "fuzzymatching", "includefield", "accept", ""]),
    st.text(max_size=20),
)
_numbers = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "1e400", "-0", "3.4028235e38", "1e-400", " 7 "]),
)
_atoms = st.one_of(
    _numbers,
    _uids,
    st.text(max_size=80),
    st.text(alphabet="0123456789-.:+ ", max_size=60),
    st.sampled_from(["", "*", "?", "A*", "DOE^JOHN", "CT", "030Y", "20200101-", "all"]),
)
_values = st.one_of(
    _atoms,
    st.lists(_atoms, min_size=2, max_size=4).map("\\".join),
    st.lists(_atoms, min_size=2, max_size=4).map(",".join),
)


@settings(max_examples=600, deadline=None, database=None)
@given(
    level=st.sampled_from(["STUDY", "SERIES", "IMAGE"]),
    params=st.lists(st.tuples(_names, _values), max_size=6),
    study=st.one_of(st.none(), _uids, st.text(max_size=70)),
    series=st.one_of(st.none(), _uids, st.text(max_size=70)),
)
def test_parse_qido_returns_an_encodable_query_or_a_400(
    level: Any, params: list[tuple[str, str]], study: str | None, series: str | None
) -> None:
    if level == "STUDY":
        study = None
    if level != "IMAGE" or study is None:
        series = None
    outcome = parse_or_400(level, params, study_uid=study, series_uid=series)
    event("400" if isinstance(outcome, BadRequest) else "encodable query")
    if isinstance(outcome, QidoQuery):
        encodes(outcome.identifier)
        assert wire(outcome.identifier) is not None


@settings(max_examples=1000, deadline=None, database=None)
@given(name=st.sampled_from(_KEYWORDS), value=_values)
def test_any_attribute_with_any_value_encodes_or_is_a_400(name: str, value: str) -> None:
    """One matching key of every VR of the dictionary, with edge values of every kind."""
    outcome = parse_or_400("IMAGE", [(name, value)])
    if isinstance(outcome, QidoQuery):
        event(f"encodable {dictionary_VR(keyword_dict[name])}")
        encodes(outcome.identifier)
