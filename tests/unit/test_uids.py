"""rst.dicom.uids, checked against pydicom's UID registry (an independent oracle): every name
holds a well-formed UID of the kind it claims, and rst's implementation name fits its VR."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom import dcmread
from pydicom.uid import UID

from rst.dicom import uids
from rst.dicom.part10 import part10_header
from rst.dicom.uid import is_valid_uid

NAMED = {
    name: value
    for name, value in vars(uids).items()
    if name.isupper() and isinstance(value, str) and name != "IMPLEMENTATION_VERSION"
}


@pytest.mark.parametrize(("name", "value"), NAMED.items())
def test_each_named_uid_is_well_formed(name: str, value: str) -> None:
    assert is_valid_uid(value), name


COMPRESSED = [
    uid
    for name, uid in NAMED.items()
    if name.startswith(("JPEG", "RLE", "HTJ2K")) and not name.startswith("JPEG_XL")
]
"""JPEG XL is left out: pydicom's registry predates it."""


@pytest.mark.parametrize("value", COMPRESSED)
def test_compressed_syntaxes_are_encapsulated(value: str) -> None:
    assert UID(value).is_transfer_syntax
    assert UID(value).is_encapsulated


@pytest.mark.parametrize("value", sorted(uids.NATIVE_SYNTAXES))
def test_native_syntaxes_are_not_encapsulated(value: str) -> None:
    assert UID(value).is_transfer_syntax
    assert not UID(value).is_encapsulated


def test_query_retrieve_and_verification_classes_are_what_pydicom_calls_them() -> None:
    assert UID(uids.VERIFICATION).name == "Verification SOP Class"
    assert "Study Root" in UID(uids.STUDY_ROOT_MOVE).name
    assert "MOVE" in UID(uids.STUDY_ROOT_MOVE).name
    assert "Patient Root" in UID(uids.PATIENT_ROOT_GET).name
    assert "Worklist" in UID(uids.MODALITY_WORKLIST_FIND).name


def test_storage_classes_are_distinct_and_the_get_subset_fits_an_association() -> None:
    assert len(set(uids.STORAGE_CLASSES)) == len(uids.STORAGE_CLASSES)
    assert uids.GET_STORAGE_CLASSES + 1 <= 128  # one context for C-GET itself


def test_the_implementation_version_is_one_sh_value_in_the_file_meta() -> None:
    assert 0 < len(uids.IMPLEMENTATION_VERSION) <= 16
    header = part10_header(
        sop_class_uid="1.2.840.10008.5.1.4.1.1.7",
        sop_instance_uid="1.2.3",
        transfer_syntax=uids.EXPLICIT_VR_LITTLE_ENDIAN,
        implementation_uid=uids.IMPLEMENTATION_CLASS_UID,
    )
    meta = dcmread(BytesIO(header + b"\x08\x00\x18\x00UI\x06\x001.2.3\x00"))
    assert meta.file_meta.ImplementationVersionName == uids.IMPLEMENTATION_VERSION
    assert meta.file_meta.ImplementationClassUID == uids.IMPLEMENTATION_CLASS_UID
