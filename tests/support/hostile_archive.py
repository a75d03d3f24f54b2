"""The archive of the hostile peers: a few small CT instances, deterministic."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from io import BytesIO

import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

from .hostile_wire import IMPLEMENTATION_UID

__all__ = ["SampleInstance", "sample_instances"]


@dataclass(frozen=True)
class SampleInstance:
    dataset: Dataset
    part10: bytes

    @property
    def sop_class_uid(self) -> str:
        return str(self.dataset.SOPClassUID)

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)

    @property
    def study_uid(self) -> str:
        return str(self.dataset.StudyInstanceUID)

    @property
    def series_uid(self) -> str:
        return str(self.dataset.SeriesInstanceUID)


@functools.cache
def sample_instances(count: int = 2) -> tuple[SampleInstance, ...]:
    """*count* small CT instances (8x8) of one series of one study; deterministic."""

    def uid(*parts: object) -> UID:
        return generate_uid(entropy_srcs=["rst-hostile-pacs", *map(str, parts)])

    instances = []
    for number in range(1, count + 1):
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = uid("instance", number)
        ds.StudyDate = "20240315"
        ds.StudyTime = "101500"
        ds.AccessionNumber = "HOSTILE1"
        ds.Modality = "CT"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "hostile"
        ds.PatientName = "HOSTILE^PACS"
        ds.PatientID = "HOSTILE"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.StudyInstanceUID = uid("study")
        ds.SeriesInstanceUID = uid("series")
        ds.StudyID = "1"
        ds.SeriesNumber = 1
        ds.InstanceNumber = number
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = 8
        ds.Columns = 8
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.PixelData = np.arange(64, dtype="<i2").tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = UID(IMPLEMENTATION_UID)
        ds.file_meta = meta
        buffer = BytesIO()
        dcmwrite(buffer, ds, enforce_file_format=True)
        del ds.file_meta
        instances.append(SampleInstance(ds, buffer.getvalue()))
    return tuple(instances)
