"""MWL-RS query parameters → Modality Worklist C-FIND identifier, and its matches → DICOM JSON."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom import Dataset
from pydicom.datadict import tag_for_keyword
from pynetdicom.dsutils import decode, encode

from rst.dicom.query import MAX_PARAMETERS, to_dicom_json
from rst.dicom.worklist import (
    SPS_DEFAULT,
    SPS_OPTIONAL,
    WORKLIST_DEFAULT,
    WORKLIST_OPTIONAL,
    parse_worklist,
)
from rst.errors import BadRequest


def wire(ds: Dataset) -> Dataset:
    """Encode and decode the identifier as it goes to the PACS; fails on unencodable values."""
    raw = encode(ds, False, True)
    assert raw is not None, "pynetdicom could not encode the identifier"
    return decode(BytesIO(raw), False, True)


def identifier(params: list[tuple[str, str]]) -> Dataset:
    return wire(parse_worklist(params).identifier)


def step(ds: Dataset) -> Dataset:
    """The one ScheduledProcedureStepSequence item of an identifier."""
    assert len(ds.ScheduledProcedureStepSequence) == 1
    item: Dataset = ds.ScheduledProcedureStepSequence[0]
    return item


def refused(params: list[tuple[str, str]], *names: str) -> str:
    with pytest.raises(BadRequest) as info:
        parse_worklist(params)
    assert info.value.status == 400
    for name in names:
        assert name in info.value.message, info.value.message
    return info.value.message


def test_tables_use_known_keywords_once() -> None:
    for keywords in (WORKLIST_DEFAULT, WORKLIST_OPTIONAL, SPS_DEFAULT, SPS_OPTIONAL):
        assert all(tag_for_keyword(k) is not None for k in keywords)
    top = WORKLIST_DEFAULT + WORKLIST_OPTIONAL
    item = SPS_DEFAULT + SPS_OPTIONAL
    assert len(set(top)) == len(top)
    assert len(set(item)) == len(item)
    assert not set(top) & set(item)


class TestDefaults:
    def test_no_parameters_ask_for_what_a_modality_needs(self) -> None:
        query = parse_worklist([])
        ds = wire(query.identifier)
        assert query.model == "worklist"
        assert (query.limit, query.offset, query.fuzzymatching) == (None, 0, False)
        assert "QueryRetrieveLevel" not in ds  # the worklist model has no levels
        assert {e.keyword for e in ds} == {*WORKLIST_DEFAULT, "ScheduledProcedureStepSequence"}
        assert {e.keyword for e in step(ds)} == set(SPS_DEFAULT)
        assert all(e.value in ("", None, []) for e in ds if e.VR != "SQ")
        assert all(e.value in ("", None, []) for e in step(ds) if e.VR != "SQ")

    def test_includefield_all_adds_the_optional_keys(self) -> None:
        ds = identifier([("includefield", "all")])
        assert {e.keyword for e in ds} >= set(WORKLIST_OPTIONAL)
        assert {e.keyword for e in step(ds)} == {*SPS_DEFAULT, *SPS_OPTIONAL}
        assert parse_worklist([("includefield", "all")]).include_all

    def test_includefield_names_top_level_and_item_keys(self) -> None:
        ds = identifier(
            [
                ("includefield", "PatientWeight,ScheduledProcedureStepSequence.PreMedication"),
                ("includefield", "CommentsOnTheScheduledProcedureStep"),
                ("includefield", "00101020"),
            ]
        )
        assert "PatientWeight" in ds
        assert "PatientSize" in ds
        assert {"PreMedication", "CommentsOnTheScheduledProcedureStep"} <= set(step(ds).dir())
        assert "PreMedication" not in ds  # a short form goes into the item


class TestMatching:
    def test_top_level_keys(self) -> None:
        ds = identifier(
            [
                ("PatientID", "P-1"),
                ("PatientName", "DOE^*"),
                ("AccessionNumber", "ACC?1"),
                ("RequestedProcedureID", "RP1"),
                ("StudyInstanceUID", "1.2.3,1.2.4"),
            ]
        )
        assert ds.PatientID == "P-1"
        assert str(ds.PatientName) == "DOE^*"
        assert ds.AccessionNumber == "ACC?1"
        assert ds.RequestedProcedureID == "RP1"
        assert list(ds.StudyInstanceUID) == ["1.2.3", "1.2.4"]

    def test_item_keys_in_one_item_with_ranges(self) -> None:
        item = step(
            identifier(
                [
                    ("ScheduledProcedureStepSequence.Modality", "CT"),
                    ("ScheduledProcedureStepSequence.ScheduledStationAETitle", "CT01"),
                    (
                        "ScheduledProcedureStepSequence.ScheduledProcedureStepStartDate",
                        "20261201-20261231",
                    ),
                    ("ScheduledProcedureStepSequence.ScheduledProcedureStepStartTime", "0800-1200"),
                    ("ScheduledProcedureStepSequence.ScheduledPerformingPhysicianName", "SMITH*"),
                ]
            )
        )
        assert item.Modality == "CT"
        assert item.ScheduledStationAETitle == "CT01"
        assert item.ScheduledProcedureStepStartDate == "20261201-20261231"
        assert item.ScheduledProcedureStepStartTime == "0800-1200"
        assert str(item.ScheduledPerformingPhysicianName) == "SMITH*"
        assert "ScheduledProcedureStepID" in item  # the item's return keys stay beside them

    @pytest.mark.parametrize("value", ["20261201-", "-20261231", "20261201"])
    def test_open_and_single_dates(self, value: str) -> None:
        item = step(identifier([("ScheduledProcedureStepStartDate", value)]))
        assert item.ScheduledProcedureStepStartDate == value

    def test_short_forms_mean_the_item_attribute(self) -> None:
        short = parse_worklist([("Modality", "MR"), ("ScheduledStationAETitle", "MR1")])
        dotted = parse_worklist(
            [
                ("ScheduledProcedureStepSequence.Modality", "MR"),
                ("ScheduledProcedureStepSequence.ScheduledStationAETitle", "MR1"),
            ]
        )
        assert short.identifier == dotted.identifier
        ds = wire(short.identifier)
        assert "Modality" not in ds
        assert step(ds).Modality == "MR"

    def test_tags_work_as_keywords(self) -> None:
        item = step(identifier([("00400100.00080060", "US"), ("00400002", "20260101")]))
        assert (item.Modality, item.ScheduledProcedureStepStartDate) == ("US", "20260101")

    def test_non_ascii_names_declare_utf8(self) -> None:
        ds = identifier([("ScheduledPerformingPhysicianName", "Müller*")])
        assert ds.SpecificCharacterSet == "ISO_IR 192"
        assert str(step(ds).ScheduledPerformingPhysicianName) == "Müller*"

    def test_paging_and_fuzzy(self) -> None:
        query = parse_worklist([("limit", "5"), ("offset", "10"), ("fuzzymatching", "true")])
        assert (query.limit, query.offset, query.fuzzymatching) == (5, 10, True)


class TestRefused:
    @pytest.mark.parametrize(
        ("params", "names"),
        [
            (
                [("ScheduledProcedureStepStartDate", "2026-12-01")],
                ("ScheduledProcedureStepStartDate", "00400002"),
            ),
            (
                [("ScheduledProcedureStepSequence.ScheduledProcedureStepStartDate", "2026120")],
                ("ScheduledProcedureStepStartDate",),
            ),
            ([("ScheduledProcedureStepStartTime", "8 am")], ("ScheduledProcedureStepStartTime",)),
            ([("ScheduledStationAETitle", "A" * 17)], ("ScheduledStationAETitle",)),
            ([("StudyInstanceUID", "1.2.x")], ("StudyInstanceUID",)),
            ([("Bogus", "1")], ("Bogus",)),
            ([("PatientID.Modality", "CT")], ("PatientID", "not a sequence")),
            (
                [("Modality", "CT"), ("ScheduledProcedureStepSequence.Modality", "MR")],
                ("Modality", "more than once"),
            ),
            ([("includefield", "PixelData")], ("PixelData",)),
            ([("limit", "0")], ("limit",)),
            ([("offset", "-1")], ("offset",)),
            ([("fuzzymatching", "yes")], ("fuzzymatching",)),
            ([("limit", "1")] * (MAX_PARAMETERS + 1), ("MAX_PARAMETERS",)),
        ],
    )
    def test_bad_parameters_are_400s_naming_them(
        self, params: list[tuple[str, str]], names: tuple[str, ...]
    ) -> None:
        refused(params, *names)


class TestResults:
    def match(self) -> Dataset:
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientName = "Doe^Jane"
        ds.PatientID = "P-1"
        ds.AccessionNumber = "ACC1"
        ds.StudyInstanceUID = "1.2.3"
        ds.PatientComments = "not asked for"
        item = Dataset()
        item.Modality = "CT"
        item.ScheduledStationAETitle = "CT01"
        item.ScheduledProcedureStepStartDate = "20261201"
        ds.ScheduledProcedureStepSequence = [item]
        return ds

    def test_rows_hold_what_was_asked_and_the_whole_step(self) -> None:
        query = parse_worklist([("Modality", "CT")])
        row = to_dicom_json(query, self.match(), None)
        assert row["00100020"] == {"vr": "LO", "Value": ["P-1"]}
        assert row["00080050"] == {"vr": "SH", "Value": ["ACC1"]}
        assert "00104000" not in row  # PatientComments was not a key
        assert "00081190" not in row  # no RetrieveURL: an order, not a stored study
        sps = row["00400100"]["Value"][0]
        assert sps["00080060"] == {"vr": "CS", "Value": ["CT"]}
        assert sps["00400001"] == {"vr": "AE", "Value": ["CT01"]}

    def test_includefield_all_keeps_everything(self) -> None:
        row = to_dicom_json(parse_worklist([("includefield", "all")]), self.match(), None)
        assert row["00104000"]["Value"] == ["not asked for"]
