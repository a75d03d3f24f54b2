"""MWL-RS ↔ Modality Worklist C-FIND (PS3.4 Annex K): the worklist's keys and short forms.

A worklist search is a QIDO-RS search in another information model: the same parameters, checks
and bounds (:func:`rst.dicom.query.parse_search`), without query levels, with the return keys a
modality needs to start an exam — who the patient is, what was ordered, and the Scheduled
Procedure Step it is to perform (PS3.4 Table K.6-1; IHE RAD-5 Modality Worklist Provided).

**Short forms.** The attributes of a Scheduled Procedure Step exist only inside
ScheduledProcedureStepSequence (0040,0100). A client may name them bare — ``Modality=CT``,
``ScheduledProcedureStepStartDate=20261201-20261231``, ``includefield=ScheduledStationName`` —
and rst reads them as the item's attribute (``ScheduledProcedureStepSequence.Modality``), as
DICOM-RST and OHIF-style clients mean them: at the top level of a worklist item Modality matches
nothing, so the bare form can mean nothing else. The dotted form and the 8-hex tags work too.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydicom.datadict import tag_for_keyword

from rst.dicom.query import Path, QidoQuery, parse_search, resolve_path

__all__ = [
    "SPS_DEFAULT",
    "SPS_OPTIONAL",
    "WORKLIST_DEFAULT",
    "WORKLIST_OPTIONAL",
    "parse_worklist",
    "resolve_worklist_path",
]

WORKLIST_DEFAULT = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "ReferringPhysicianName",
    "RequestingPhysician",
    "StudyInstanceUID",
    "RequestedProcedureID",
    "RequestedProcedureDescription",
    "RequestedProcedureCodeSequence",
    "RequestedProcedurePriority",
    "AdmissionID",
)
"""Top-level return keys of every worklist search: patient, order, requested procedure."""
WORKLIST_OPTIONAL = (
    "OtherPatientIDsSequence",
    "PatientWeight",
    "PatientSize",
    "MedicalAlerts",
    "Allergies",
    "PregnancyStatus",
    "SpecialNeeds",
    "PatientState",
    "ConfidentialityConstraintOnPatientDataDescription",
    "CurrentPatientLocation",
    "ReferencedStudySequence",
    "ReferencedPatientSequence",
    "ReasonForTheRequestedProcedure",
    "RequestedProcedureComments",
    "RequestedProcedureLocation",
    "PatientTransportArrangements",
    "NamesOfIntendedRecipientsOfResults",
    "ImagingServiceRequestComments",
    "PlacerOrderNumberImagingServiceRequest",
    "FillerOrderNumberImagingServiceRequest",
)
"""Top-level keys ``includefield=all`` adds."""
SPS_DEFAULT = (
    "ScheduledStationAETitle",
    "ScheduledStationName",
    "ScheduledProcedureStepLocation",
    "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime",
    "Modality",
    "ScheduledPerformingPhysicianName",
    "ScheduledProcedureStepDescription",
    "ScheduledProtocolCodeSequence",
    "ScheduledProcedureStepID",
    "ScheduledProcedureStepStatus",
)
"""Return keys inside each ScheduledProcedureStepSequence item, always asked for."""
SPS_OPTIONAL = (
    "ScheduledProcedureStepEndDate",
    "ScheduledProcedureStepEndTime",
    "PreMedication",
    "RequestedContrastAgent",
    "CommentsOnTheScheduledProcedureStep",
    "ScheduledPerformingPhysicianIdentificationSequence",
)
"""Item keys ``includefield=all`` adds."""


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:  # pragma: no cover - guarded by a unit test
        raise RuntimeError(f"unknown keyword {keyword} in rst's worklist tables")
    return tag


_SPS = _tag("ScheduledProcedureStepSequence")
_SPS_ITEM_TAGS = frozenset(_tag(keyword) for keyword in SPS_DEFAULT + SPS_OPTIONAL)
_DEFAULT_PATHS: tuple[Path, ...] = (
    *((_tag(keyword),) for keyword in WORKLIST_DEFAULT),
    *((_SPS, _tag(keyword)) for keyword in SPS_DEFAULT),
)
_OPTIONAL_PATHS: tuple[Path, ...] = (
    *((_tag(keyword),) for keyword in WORKLIST_OPTIONAL),
    *((_SPS, _tag(keyword)) for keyword in SPS_OPTIONAL),
)


def resolve_worklist_path(name: str) -> Path:
    """:func:`~rst.dicom.query.resolve_path`, with a bare Scheduled Procedure Step attribute
    read as the attribute of ScheduledProcedureStepSequence's item (see the module's doc)."""
    path = resolve_path(name)
    if len(path) == 1 and path[0] in _SPS_ITEM_TAGS:
        return (_SPS, path[0])
    return path


def parse_worklist(params: Sequence[tuple[str, str]]) -> QidoQuery:
    """Build the Modality Worklist C-FIND of an MWL-RS search from its decoded query
    parameters (matching keys, ``includefield``, ``limit``, ``offset``, ``fuzzymatching``).

    :raises BadRequest: as :func:`~rst.dicom.query.parse_qido`, naming the attribute.
    """
    return parse_search(
        params,
        model="worklist",
        resolve=resolve_worklist_path,
        defaults=_DEFAULT_PATHS,
        optional=_OPTIONAL_PATHS,
    )
