"""The patient an instance or a match belongs to: Patient ID and Patient's Name, for the audit
trail's Patient participant object (PS3.15 A.5.3).

From a data set already parsed (a search match, an uploaded instance's header) they are two
lookups. From a retrieved instance they are read in place from the first bytes of its Part 10
file (:func:`rst.dicom.head.top_level_values`): element headers only, up to (0010,0020), never
the whole data set, so the patient of every instance that streams by costs microseconds and no
copy. Anything that does not add up (a deflated or Big Endian syntax, a head too short, element
headers that do not fit) gives ``None``: the trail then names no patient for that instance.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom import Dataset
from pydicom.charset import convert_encodings, decode_bytes
from pydicom.valuerep import TEXT_VR_DELIMS, PersonName

from rst.dicom.head import NeedMore, dataset_start, top_level_values
from rst.dicom.uids import NOT_IN_PLACE

__all__ = ["Patient", "PatientReader", "patient_in_dataset", "patient_in_part10"]

SPECIFIC_CHARACTER_SET = 0x00080005
PATIENT_NAME = 0x00100010
PATIENT_ID = 0x00100020
_TAGS = frozenset({SPECIFIC_CHARACTER_SET, PATIENT_NAME, PATIENT_ID})
_IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
_PADDING = b" \0"


@dataclass(frozen=True, slots=True)
class Patient:
    """A patient as an instance names them; ``name`` None when it does not."""

    id: str
    name: str | None = None


def patient_in_dataset(dataset: Dataset) -> Patient | None:
    """The patient of a parsed data set, or None when it has no (non-empty) Patient ID."""
    try:
        patient_id = _text(dataset.get("PatientID"))
        name = _text(dataset.get("PatientName"))
    except Exception:  # pydicom decodes lazily: a value a hostile peer spoilt
        return None
    return Patient(patient_id, name) if patient_id else None


def patient_in_part10(data: bytes, transfer_syntax: str) -> Patient | None:
    """The patient of the Part 10 file whose first bytes are *data*, read in place."""
    return PatientReader()(data, transfer_syntax)


class PatientReader:
    """:func:`patient_in_part10` for the instances of one retrieve, one after another: the
    values are decoded once while they stay the same (the instances of a study name the same
    patient), and nothing outlives the retrieve."""

    def __init__(self) -> None:
        self._last: tuple[_Raw, Patient | None] | None = None

    def __call__(self, data: bytes, transfer_syntax: str) -> Patient | None:
        raw = _raw_values(data, transfer_syntax)
        if raw is None:
            return None
        if self._last is None or self._last[0] != raw:
            self._last = (raw, _decoded(*raw))
        return self._last[1]


_Raw = tuple[bytes, bytes, bytes]
"""Patient ID, Patient's Name and Specific Character Set, as stored (padding stripped)."""


def _raw_values(data: bytes, transfer_syntax: str) -> _Raw | None:
    if transfer_syntax in NOT_IN_PLACE:
        return None
    try:
        start = dataset_start(data)
        values = top_level_values(
            data, start, _TAGS, implicit=transfer_syntax == _IMPLICIT_VR_LITTLE_ENDIAN
        )
    except (NeedMore, ValueError):
        return None
    raw_id = values.get(PATIENT_ID, b"").rstrip(_PADDING)
    if not raw_id:
        return None
    name = values.get(PATIENT_NAME, b"").rstrip(_PADDING)
    return raw_id, name, values.get(SPECIFIC_CHARACTER_SET, b"")


def _decoded(raw_id: bytes, raw_name: bytes, charsets: bytes) -> Patient | None:
    try:
        text = charsets.decode("ascii")
        encodings = convert_encodings([c.strip(" \0") for c in text.split("\\")])
        patient_id = decode_bytes(raw_id, encodings, TEXT_VR_DELIMS).strip()
        name = str(PersonName(raw_name, encodings)).strip() if raw_name else ""
    except Exception:  # an unknown character set, bytes it cannot decode: as ASCII, marked
        patient_id = raw_id.decode("ascii", "replace").strip()
        name = raw_name.decode("ascii", "replace").strip()
    return Patient(patient_id, name or None) if patient_id else None


def _text(value: object) -> str | None:
    """A value as the text it shows, None when empty or absent."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None
