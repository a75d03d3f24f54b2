"""Worklist files for the Modality Worklist SCPs the tests run (Orthanc's ModalityWorklists
plugin, dcmtk's ``wlmscpfs``): each scheduled step a DICOM file ``<n>.wl``.

Both read Part 10 files; ``wlmscpfs`` rejects incomplete ones (by default) and answers only for
an AE title that is a folder holding a ``lockfile``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

__all__ = ["MWL_SOP_CLASS", "SAMPLE_STEPS", "Step", "write_worklist"]

MWL_SOP_CLASS = UID("1.2.840.10008.5.1.4.31")


@dataclass(frozen=True)
class Step:
    """One scheduled procedure step of one requested procedure."""

    patient_id: str
    patient_name: str
    accession: str
    modality: str
    station: str
    date: str
    time: str
    step_id: str
    description: str = "exam"
    physician: str = "Smith^Anna"
    study_uid: str = ""

    def dataset(self) -> Dataset:
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientName = self.patient_name
        ds.PatientID = self.patient_id
        ds.IssuerOfPatientID = "RST"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.AccessionNumber = self.accession
        ds.ReferringPhysicianName = "Ref^Doc"
        ds.RequestingPhysician = "Req^Doc"
        ds.StudyInstanceUID = self.study_uid or generate_uid()
        ds.RequestedProcedureID = f"RP-{self.accession}"
        ds.RequestedProcedureDescription = f"{self.modality} {self.description}"
        ds.RequestedProcedurePriority = "ROUTINE"
        ds.ReferencedStudySequence = []
        ds.ReferencedPatientSequence = []
        item = Dataset()
        item.ScheduledStationAETitle = self.station
        item.ScheduledStationName = self.station
        item.ScheduledProcedureStepStartDate = self.date
        item.ScheduledProcedureStepStartTime = self.time
        item.Modality = self.modality
        item.ScheduledPerformingPhysicianName = self.physician
        item.ScheduledProcedureStepDescription = self.description
        item.ScheduledProcedureStepID = self.step_id
        item.ScheduledProcedureStepLocation = "Room 1"
        ds.ScheduledProcedureStepSequence = [item]
        return ds


SAMPLE_STEPS = (
    Step("P-1", "Doe^Jane", "ACC1", "CT", "CT01", "20261130", "0800", "SPS1"),
    Step("P-1", "Doe^Jane", "ACC2", "MR", "MR01", "20261201", "0930", "SPS2"),
    Step("P-2", "Müller^Jörg", "ACC3", "CT", "CT01", "20261215", "1100", "SPS3"),
    Step("P-3", "Roe^Richard", "ACC4", "CT", "CT02", "20261231", "1400", "SPS4"),
    Step("P-4", "Poe^Edgar", "ACC5", "US", "US01", "20270102", "1600", "SPS5"),
)
"""Five steps over three modalities, around December 2026; P-1 has two, P-2's name is not
ASCII."""


def write_worklist(folder: Path, steps: Iterable[Step] = SAMPLE_STEPS) -> list[Path]:
    """Write each step as ``folder/<n>.wl`` (and the ``lockfile`` wlmscpfs wants)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "lockfile").touch()
    paths = []
    for n, step in enumerate(steps, 1):
        ds = step.dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = MWL_SOP_CLASS
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        path = folder / f"{n}.wl"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
