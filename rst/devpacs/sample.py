"""Synthetic, deterministic CT study used to seed the development PACS and tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, CTImageStorage, ExplicitVRLittleEndian
from pydicom.uid import generate_uid as _generate_uid

__all__ = ["SAMPLE_PATIENT_ID", "SAMPLE_PATIENT_NAME", "write_sample_study"]

SAMPLE_PATIENT_NAME = "RST^DEMO"
SAMPLE_PATIENT_ID = "RST-DEMO"
_STUDY_DATE = "20240315"
_STUDY_TIME = "101500"


def _uid(seed: int, *parts: object) -> UID:
    """A UID derived deterministically from `seed` and `parts` (same inputs → same UID)."""
    return _generate_uid(entropy_srcs=["rst-devpacs-sample", str(seed), *map(str, parts)])


def _pixels(rng: np.random.Generator, rows: int, columns: int, z: float) -> np.ndarray:
    """A noisy elliptical phantom slice in stored values (HU + 1024) as int16."""
    y, x = np.mgrid[0:rows, 0:columns]
    cy, cx = (rows - 1) / 2, (columns - 1) / 2
    r2 = ((y - cy) / (rows * 0.42)) ** 2 + ((x - cx) / (columns * 0.45)) ** 2
    hu = np.full((rows, columns), -1000.0)
    hu[r2 <= 1.0] = 40.0  # soft tissue
    inner = ((y - cy) / (rows * 0.12)) ** 2 + (
        (x - cx - columns * 0.1 * np.sin(z / 10)) / (columns * 0.12)
    ) ** 2
    hu[inner <= 1.0] = 700.0  # "bone" that moves along z
    hu += rng.normal(0.0, 12.0, size=hu.shape)
    return np.clip(np.rint(hu + 1024.0), -32768, 32767).astype("<i2")


def write_sample_study(
    folder: Path,
    *,
    images: int = 12,
    rows: int = 128,
    columns: int = 128,
    series: int = 2,
    seed: int = 0,
) -> list[Path]:
    """Write one CT study of `images` instances split over `series` series into `folder`.

    Files are CT Image Storage, Explicit VR Little Endian, 16-bit signed pixels from a numpy RNG
    seeded with `seed`; UIDs are derived from `seed`, so the same call writes the same study.
    Returns the written paths (``folder/CT<series>-<instance>.dcm``), in series/instance order.
    """
    if images < 1 or series < 1 or series > images:
        raise ValueError("need images >= series >= 1")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    study_uid = _uid(seed, "study")
    frame_uid = _uid(seed, "frame")
    counts = [images // series + (1 if i < images % series else 0) for i in range(series)]
    thickness = 2.5
    paths: list[Path] = []
    for s_index, count in enumerate(counts):
        series_number = s_index + 1
        series_uid = _uid(seed, "series", series_number)
        for i in range(count):
            instance_number = i + 1
            z = -i * thickness
            ds = _instance(study_uid, series_uid, frame_uid, seed, series_number, instance_number)
            ds.SliceThickness = f"{thickness:.1f}"
            ds.ImagePositionPatient = [f"{-columns * 0.35:.2f}", f"{-rows * 0.35:.2f}", f"{z:.2f}"]
            ds.SliceLocation = f"{z:.2f}"
            ds.Rows = rows
            ds.Columns = columns
            ds.PixelData = _pixels(rng, rows, columns, z).tobytes()
            path = folder / f"CT{series_number}-{instance_number:04d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
    return paths


def _instance(
    study_uid: UID,
    series_uid: UID,
    frame_uid: UID,
    seed: int,
    series_number: int,
    instance_number: int,
) -> Dataset:
    """The non-pixel attributes of one sample CT instance."""
    sop_uid = _uid(seed, "instance", series_number, instance_number)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = _STUDY_DATE
    ds.SeriesDate = _STUDY_DATE
    ds.ContentDate = _STUDY_DATE
    ds.StudyTime = _STUDY_TIME
    ds.SeriesTime = f"{10 + series_number:02d}2000"
    ds.ContentTime = f"{10 + series_number:02d}2000.{instance_number:06d}"
    ds.AccessionNumber = f"RSTACC{seed:04d}"
    ds.Modality = "CT"
    ds.Manufacturer = "rst devpacs"
    ds.InstitutionName = "rst"
    ds.ReferringPhysicianName = "RST^REFERRER"
    ds.StudyDescription = "RST demo CT"
    ds.SeriesDescription = f"Demo series {series_number}"
    ds.PatientName = SAMPLE_PATIENT_NAME
    ds.PatientID = SAMPLE_PATIENT_ID
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.BodyPartExamined = "CHEST"
    ds.KVP = "120"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = f"{seed + 1}"
    ds.SeriesNumber = series_number
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = instance_number
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelSpacing = ["0.700", "0.700"]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    return ds
