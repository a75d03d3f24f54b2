"""The patient of an instance, read in place from its first bytes (and of a parsed data set),
for the audit trail; and the bound on how many one event names."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import Dataset

from rst.audit.record import MAX_PATIENTS, AuditRecord
from rst.dicom.head import dataset_start
from rst.dicom.patient import Patient, PatientReader, patient_in_dataset, patient_in_part10
from tests.support.scripted_backend import part10

EXPLICIT, IMPLICIT = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"
DEFLATED, BIG_ENDIAN = "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"


@pytest.mark.parametrize("syntax", [EXPLICIT, IMPLICIT])
def test_read_in_place_past_a_sequence(syntax: str) -> None:
    instance = part10("1.2.3.4.1", patient_id="PAT-1 ", patient_name="DOE^JANE", syntax=syntax)
    assert patient_in_part10(instance.data, syntax) == Patient("PAT-1", "DOE^JANE")


def test_a_name_in_another_character_set() -> None:
    instance = part10("1.2.3.4.1", patient_id="P", patient_name="Wang^XiaoDong=王^小東",
                      charset="ISO_IR 192")  # fmt: skip
    assert patient_in_part10(instance.data, EXPLICIT) == Patient("P", "Wang^XiaoDong=王^小東")


def test_no_patient_id_no_patient() -> None:
    instance = part10("1.2.3.4.1")  # a name, no ID
    assert patient_in_part10(instance.data, EXPLICIT) is None


def test_only_the_first_bytes_are_needed() -> None:
    data = part10("1.2.3.4.1", patient_id="PAT-1", size=100_000).data
    end = data.index(b"PAT-1") + len(b"PAT-1")
    assert patient_in_part10(data[: end + 1], EXPLICIT) == Patient("PAT-1", "CONTAINMENT^TEST")
    # a head that ends inside the patient's elements names nobody; it does not fail
    assert patient_in_part10(data[: end - 2], EXPLICIT) is None
    assert patient_in_part10(data[:140], EXPLICIT) is None


@pytest.mark.parametrize("syntax", [DEFLATED, BIG_ENDIAN])
def test_syntaxes_that_cannot_be_read_in_place_name_nobody(syntax: str) -> None:
    data = part10("1.2.3.4.1", patient_id="PAT-1").data
    assert patient_in_part10(data, syntax) is None


def test_the_walk_stops_past_the_patient_id() -> None:
    """Elements come in ascending order: the walk ends at the first one past (0010,0020), so a
    Patient ID out of place (after the document) is not read, nor anything after it."""
    data = part10("1.2.3.4.1").data + b"\x10\x00\x20\x00LO\x02\x00XX"
    assert patient_in_part10(data, EXPLICIT) is None


@settings(max_examples=300, deadline=None, database=None)
@given(cut=st.integers(0, 600), noise=st.binary(max_size=64), at=st.integers(0, 600))
def test_spoilt_heads_name_nobody_or_someone_but_never_fail(
    cut: int, noise: bytes, at: int
) -> None:
    data = part10("1.2.3.4.1", patient_id="PAT-1").data
    spoilt = data[:at] + noise + data[at + len(noise) : cut + 600]
    found = patient_in_part10(spoilt, EXPLICIT)
    assert found is None or isinstance(found.id, str)


def test_from_a_parsed_data_set() -> None:
    ds = Dataset()
    assert patient_in_dataset(ds) is None
    ds.PatientName = "DOE^JANE"
    assert patient_in_dataset(ds) is None
    ds.PatientID = "  "
    assert patient_in_dataset(ds) is None
    ds.PatientID = "PAT-1"
    assert patient_in_dataset(ds) == Patient("PAT-1", "DOE^JANE")
    del ds.PatientName
    assert patient_in_dataset(ds) == Patient("PAT-1", None)


def test_a_record_names_a_bounded_number_of_patients() -> None:
    record = AuditRecord(started=0.0, client=None)
    record.saw(None)
    record.saw(Patient("P0"))
    record.saw(Patient("P0", "LATE^NAME"))  # the name, once known, is kept
    for n in range(1, MAX_PATIENTS + 5):
        record.saw(Patient(f"P{n}"))
    record.saw(Patient("P0", "OTHER"))  # a name already known is not replaced
    assert len(record.patients) == MAX_PATIENTS
    assert record.patients["P0"] == "LATE^NAME"
    assert record.patients["P1"] is None
    assert f"P{MAX_PATIENTS}" not in record.patients
    assert record.patients_omitted == 5


def test_the_file_meta_is_walked_by_its_elements_not_its_group_length() -> None:
    data = part10("1.2.3.4.1", patient_id="PAT-1").data
    assert data[132:140] == b"\x02\x00\x00\x00UL\x04\x00"
    without = data[:132] + data[144:]
    assert dataset_start(without) == dataset_start(data) - 12
    assert patient_in_part10(without, EXPLICIT) == Patient("PAT-1", "CONTAINMENT^TEST")
    wrong = data[:140] + (10).to_bytes(4, "little") + data[144:]  # a group length that lies
    assert dataset_start(wrong) == dataset_start(data)


def test_a_reader_follows_the_instances_of_a_retrieve() -> None:
    read = PatientReader()
    first = part10("1.2.3.4.1", patient_id="PAT-1", patient_name="DOE^JANE").data
    again = part10("1.2.3.4.2", patient_id="PAT-1", patient_name="DOE^JANE").data
    other = part10("1.2.3.4.3", patient_id="PAT-2", patient_name="ROE^RICHARD").data
    renamed = part10("1.2.3.4.4", patient_id="PAT-2", patient_name="ROE^RICK").data
    assert [read(data, EXPLICIT) for data in (first, again, other, renamed, first)] == [
        Patient("PAT-1", "DOE^JANE"),
        Patient("PAT-1", "DOE^JANE"),
        Patient("PAT-2", "ROE^RICHARD"),
        Patient("PAT-2", "ROE^RICK"),
        Patient("PAT-1", "DOE^JANE"),
    ]
    assert read(part10("1.2.3.4.5").data, EXPLICIT) is None
