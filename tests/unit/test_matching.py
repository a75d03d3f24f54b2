"""rst.dicom.matching: the C-FIND matching rules, one by one, on hand-made headers."""

from __future__ import annotations

from typing import Any

import pytest
from pydicom import config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from rst.dicom.matching import aggregates, find, matcher, matches, normalise, query_level, sort_key


def _header(study: str, series: str, sop: str, **attrs: Any) -> Dataset:
    ds = Dataset()
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.SOPInstanceUID = sop
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    return ds


def _key(keyword: str, vr: str, value: Any) -> DataElement:
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    assert tag is not None
    return DataElement(tag, vr, value, validation_mode=config.IGNORE)


def _match(keyword: str, vr: str, value: Any, record: Dataset) -> bool:
    return matches(_key(keyword, vr, value), record, Dataset())


RECORD = _header(
    "1.2",
    "1.2.3",
    "1.2.3.4",
    PatientName="Doe^John",
    PatientID="P1",
    Modality="CT",
    StudyDate="20240315",
    StudyTime="101500",
    AcquisitionDateTime="20240315101500.25",
    ImageType=["ORIGINAL", "PRIMARY"],
    SeriesNumber=2,
)


def test_single_value_matching_is_exact_and_case_sensitive() -> None:
    assert _match("PatientID", "LO", "P1", RECORD)
    assert not _match("PatientID", "LO", "p1", RECORD)
    assert not _match("PatientID", "LO", "P", RECORD)
    assert _match("Modality", "CS", "CT", RECORD)
    assert _match("SeriesNumber", "IS", "2", RECORD)


def test_person_names_match_case_insensitively() -> None:
    assert _match("PatientName", "PN", "DOE^JOHN", RECORD)
    assert _match("PatientName", "PN", "doe*", RECORD)
    assert not _match("PatientName", "PN", "Smith*", RECORD)


def test_wildcards() -> None:
    assert _match("PatientID", "LO", "P?", RECORD)
    assert _match("PatientID", "LO", "*", RECORD)
    assert not _match("PatientID", "LO", "P??", RECORD)
    assert _match("Modality", "CS", "C*", RECORD)
    assert not _match("Modality", "CS", "c*", RECORD)  # only PN folds case
    assert _match("PatientName", "PN", "D?e^*", RECORD)
    assert not matcher("UI", ["1.2*"])("1.2.3")  # no wildcards for UIDs


def test_uid_lists() -> None:
    assert _match("StudyInstanceUID", "UI", ["1.9", "1.2"], RECORD)
    assert not _match("StudyInstanceUID", "UI", ["1.9", "1.2.3"], RECORD)


def test_multiple_values_match_any() -> None:
    assert _match("Modality", "CS", ["MR", "CT"], RECORD)
    assert _match("ImageType", "CS", "PRIMARY", RECORD)  # any stored value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20240315", True),
        ("20240101-20241231", True),
        ("20240316-", False),
        ("20240315-", True),
        ("-20240315", True),
        ("-20240314", False),
        ("2024.03.15", True),
    ],
)
def test_date_ranges(value: str, expected: bool) -> None:
    assert _match("StudyDate", "DA", value, RECORD) is expected


def test_time_and_datetime_ranges() -> None:
    assert _match("StudyTime", "TM", "10-11", RECORD)  # partial times cover their hour
    assert _match("StudyTime", "TM", "1015-", RECORD)
    assert not _match("StudyTime", "TM", "1016-", RECORD)
    assert _match("StudyTime", "TM", "-10", RECORD)  # up to 10:59:59.999999
    assert _match("AcquisitionDateTime", "DT", "20240315-20240315", RECORD)
    assert not _match("AcquisitionDateTime", "DT", "202403151016-", RECORD)


def test_normalise_pads_partial_values() -> None:
    assert normalise("DA", "2024", upper=False) == "20240000"
    assert normalise("DA", "2024", upper=True) == "20249999"
    assert normalise("TM", "10:15", upper=False) == "101500.000000"
    assert normalise("DT", "20240315101500+0100", upper=False) == "20240315101500.000000"


def test_universal_and_missing_attributes() -> None:
    assert _match("PatientID", "LO", "", RECORD)  # universal
    assert _match("ReferencedStudySequence", "SQ", [], RECORD)  # sequences: universal
    assert not _match("AccessionNumber", "SH", "A1", RECORD)  # the entity lacks it
    assert _match("AccessionNumber", "SH", "", RECORD)


def _study() -> list[Dataset]:
    return [
        _header("1.1", "1.1.1", "1.1.1.1", Modality="CT", InstanceNumber=1, StudyDate="20240101"),
        _header("1.1", "1.1.1", "1.1.1.2", Modality="CT", InstanceNumber=2, StudyDate="20240101"),
        _header("1.1", "1.1.2", "1.1.2.1", Modality="SR", InstanceNumber=1, StudyDate="20240101"),
        _header("2.1", "2.1.1", "2.1.1.1", Modality="MR", InstanceNumber=1, StudyDate="20230101"),
    ]


def _identifier(level: str, **keys: Any) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def test_aggregates() -> None:
    study = _study()[:3]
    computed = aggregates("STUDY", study, "STUDY")
    assert computed.NumberOfStudyRelatedSeries == 2
    assert computed.NumberOfStudyRelatedInstances == 3
    assert list(computed.ModalitiesInStudy) == ["CT", "SR"]
    assert aggregates("SERIES", study[:2], "SERIES").NumberOfSeriesRelatedInstances == 2
    assert "NumberOfSeriesRelatedInstances" not in aggregates("STUDY", study[:2], "SERIES")


def test_find_groups_by_level_and_computes_counts() -> None:
    headers = sorted(_study(), key=sort_key)
    studies = list(
        find(
            _identifier("STUDY", NumberOfStudyRelatedInstances=None, ModalitiesInStudy=""),
            headers,
        )
    )
    assert [r.StudyInstanceUID for r in studies] == ["2.1", "1.1"]  # by StudyDate
    assert [r.NumberOfStudyRelatedInstances for r in studies] == [1, 3]
    series = list(
        find(
            _identifier(
                "SERIES", NumberOfSeriesRelatedInstances=None, NumberOfStudyRelatedSeries=None
            ),
            headers,
        )
    )
    assert [(r.SeriesInstanceUID, r.StudyInstanceUID) for r in series] == [
        ("2.1.1", "2.1"),
        ("1.1.1", "1.1"),
        ("1.1.2", "1.1"),
    ]
    assert [r.NumberOfSeriesRelatedInstances for r in series] == [1, 2, 1]
    assert [r.NumberOfStudyRelatedSeries for r in series] == [1, 2, 2]
    images = list(find(_identifier("IMAGE", SeriesInstanceUID="1.1.1"), headers))
    assert [r.SOPInstanceUID for r in images] == ["1.1.1.1", "1.1.1.2"]
    assert all("PatientID" not in r for r in images)  # a unique key only at PATIENT level


def test_find_matches_modalities_in_study_and_ignores_counts() -> None:
    headers = _study()
    by_modality = find(_identifier("STUDY", ModalitiesInStudy="SR"), headers)
    assert [r.StudyInstanceUID for r in by_modality] == ["1.1"]
    return_only = find(_identifier("STUDY", NumberOfStudyRelatedInstances=99), headers)
    assert len(list(return_only)) == 2


def test_find_returns_requested_keys_empty_when_unknown() -> None:
    (row,) = find(_identifier("STUDY", StudyInstanceUID="2.1", StudyDescription=""), _study())
    assert "StudyDescription" in row
    assert row.StudyDescription in (None, "")
    assert row.QueryRetrieveLevel == "STUDY"


def test_query_level() -> None:
    assert query_level(_identifier(" SERIES ")) == "SERIES"
    with pytest.raises(ValueError, match="QueryRetrieveLevel"):
        query_level(_identifier("FRAME"))
    with pytest.raises(ValueError, match="QueryRetrieveLevel"):
        find(Dataset(), [])
