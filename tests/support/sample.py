"""Synthetic DICOM data for tests and benchmarks (pydicom + numpy, no network, deterministic).

``write_ct_study`` writes a CT study as Part 10 files (one file per instance, CT Image Storage);
``write_multiframe`` writes one small Enhanced CT instance with several frames.

Everything — UIDs included — is a function of the arguments: the same call twice writes the same
study (handy for caching the benchmark study). For two distinct studies pass a different ``seed`` or
an explicit ``study_uid``.

Sizes: 200 images of 512x512 -> ~105 MB (the benchmark study); the default 10 of 64x64 -> ~85 kB.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

__all__ = [
    "CT_IMAGE_STORAGE",
    "ENHANCED_CT_IMAGE_STORAGE",
    "StudyFiles",
    "write_ct_study",
    "write_multiframe",
]

CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")
ENHANCED_CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2.1")

_UNCOMPRESSED = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}


@dataclass(frozen=True)
class StudyFiles:
    study_uid: str
    series_uids: list[str]
    sop_uids: list[str]  # parallel to ``paths``
    paths: list[Path]
    # series_uid of each instance, parallel to ``paths``
    instance_series: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.paths)

    def series_paths(self, series_uid: str) -> list[Path]:
        return [p for p, s in zip(self.paths, self.instance_series, strict=True) if s == series_uid]


def _uid(*parts: object) -> str:
    return str(generate_uid(entropy_srcs=["rst-test-sample", *(str(p) for p in parts)]))


def _phantom(rng: np.random.Generator, rows: int, columns: int, z: float) -> np.ndarray:
    """A water disc with a few denser blobs plus noise, in Hounsfield units, as int16."""
    y, x = np.ogrid[-1.0 : 1.0 : rows * 1j, -1.0 : 1.0 : columns * 1j]
    radius2 = x * x + y * y
    image = np.full((rows, columns), -1000.0, dtype=np.float32)  # air
    image[radius2 < 0.8] = 0.0  # water
    for _ in range(3):
        cx, cy = rng.uniform(-0.5, 0.5, size=2)
        r = rng.uniform(0.05, 0.2)
        image[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.uniform(40, 1200)
    image += np.float32(30.0 * np.sin(z / 7.0))
    image += rng.normal(0.0, 20.0, size=(rows, columns)).astype(np.float32)
    return np.clip(image, -1024, 3071).astype(np.int16)


def _file_meta(sop_class: str, sop_uid: str, transfer_syntax: UID) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "RST_TEST_SAMPLE"
    return meta


def _patient_study(
    ds: Dataset,
    *,
    study_uid: str,
    patient_id: str,
    patient_name: str,
    seed: int,
) -> None:
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = f"2024{1 + seed % 12:02d}{1 + seed % 28:02d}"
    ds.StudyTime = f"{8 + seed % 10:02d}3000"
    ds.StudyID = f"S{seed % 100000}"
    ds.AccessionNumber = f"ACC{seed:06d}"[:16]
    ds.StudyDescription = "RST synthetic CT"
    ds.ReferringPhysicianName = "REFERRER^RST"
    ds.Manufacturer = "rst-tests"
    ds.InstitutionName = "RST TEST"


def _write(ds: FileDataset, path: Path, transfer_syntax: UID) -> None:
    if transfer_syntax in _UNCOMPRESSED:
        ds.save_as(path, enforce_file_format=True, implicit_vr=transfer_syntax.is_implicit_VR)
    else:
        # Needs an encoder for that syntax (pydicom ships RLE Lossless; others need plugins).
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.compress(transfer_syntax, generate_instance_uid=False)  # keep the UIDs returned
        ds.save_as(path, enforce_file_format=True)


def write_ct_study(
    folder: Path,
    *,
    images: int = 10,
    rows: int = 64,
    columns: int = 64,
    series: int = 1,
    study_uid: str | None = None,
    patient_id: str = "RST-TEST",
    patient_name: str = "TEST^PATIENT",
    transfer_syntax: str = ExplicitVRLittleEndian,
    seed: int = 0,
) -> StudyFiles:
    """Write ``images`` CT Image Storage instances split evenly over ``series`` series.

    Files are ``folder/ct-S{series:02d}-{instance:04d}.dcm`` (Part 10, with file meta), 16-bit
    signed pixel data. ``paths``/``sop_uids`` are ordered series by series, then by InstanceNumber.
    """
    if images < 1 or series < 1 or series > images:
        raise ValueError("need images >= series >= 1")
    ts = UID(transfer_syntax)
    folder.mkdir(parents=True, exist_ok=True)
    key = (seed, patient_id, images, rows, columns, series, str(ts))
    study_uid = study_uid or _uid("study", *key)
    series_uids = [_uid("series", study_uid, seed, n) for n in range(series)]
    # Split evenly: the first (images % series) series get one more image.
    per_series = [images // series + (1 if n < images % series else 0) for n in range(series)]

    paths: list[Path] = []
    sop_uids: list[str] = []
    instance_series: list[str] = []
    for s_index, (series_uid, count) in enumerate(zip(series_uids, per_series, strict=True)):
        for i in range(count):
            instance_number = i + 1
            sop_uid = _uid("instance", study_uid, seed, s_index, instance_number)
            rng = np.random.default_rng([seed, s_index, instance_number])
            z = float(i) * 2.5
            pixels = _phantom(rng, rows, columns, z)

            ds = FileDataset("", Dataset(), file_meta=_file_meta(CT_IMAGE_STORAGE, sop_uid, ts))
            _patient_study(
                ds, study_uid=study_uid, patient_id=patient_id, patient_name=patient_name, seed=seed
            )
            ds.SOPClassUID = CT_IMAGE_STORAGE
            ds.SOPInstanceUID = sop_uid
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
            ds.Modality = "CT"
            ds.SeriesInstanceUID = series_uid
            ds.SeriesNumber = s_index + 1
            ds.SeriesDescription = f"Synthetic series {s_index + 1}"
            ds.SeriesDate = ds.StudyDate
            ds.SeriesTime = ds.StudyTime
            ds.BodyPartExamined = "CHEST"
            ds.FrameOfReferenceUID = _uid("frame-of-reference", study_uid, seed)
            ds.PositionReferenceIndicator = ""
            ds.InstanceNumber = instance_number
            ds.ContentDate = ds.StudyDate
            ds.ContentTime = ds.StudyTime
            ds.AcquisitionNumber = 1
            ds.ImagePositionPatient = [-125.0, -125.0, -z]
            ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
            ds.SliceLocation = -z
            ds.SliceThickness = 2.5
            ds.PixelSpacing = [250.0 / rows, 250.0 / columns]
            ds.KVP = 120
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows = rows
            ds.Columns = columns
            ds.BitsAllocated = 16
            ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = 1
            ds.RescaleIntercept = 0
            ds.RescaleSlope = 1
            ds.RescaleType = "HU"
            ds.WindowCenter = 40
            ds.WindowWidth = 400
            ds.PixelData = pixels.tobytes()

            path = folder / f"ct-S{s_index + 1:02d}-{instance_number:04d}.dcm"
            _write(ds, path, ts)
            paths.append(path)
            sop_uids.append(sop_uid)
            instance_series.append(series_uid)
    return StudyFiles(study_uid, series_uids, sop_uids, paths, instance_series)


def write_multiframe(
    folder: Path,
    *,
    frames: int = 4,
    rows: int = 32,
    columns: int = 32,
    study_uid: str | None = None,
    patient_id: str = "RST-TEST",
    patient_name: str = "TEST^PATIENT",
    transfer_syntax: str = ExplicitVRLittleEndian,
    seed: int = 0,
) -> StudyFiles:
    """Write one Enhanced CT Image Storage instance with ``frames`` frames (NumberOfFrames > 1).

    16-bit signed pixels; frame ``k`` (1-based) reads back as
    ``pydicom.dcmread(path).pixel_array[k - 1]``.
    """
    if frames < 2:
        raise ValueError("a multi-frame instance needs frames >= 2")
    ts = UID(transfer_syntax)
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or _uid("mf-study", seed, patient_id, frames, rows, columns, str(ts))
    series_uid = _uid("mf-series", study_uid, seed)
    sop_uid = _uid("mf-instance", study_uid, seed)
    rng = np.random.default_rng([seed, 1_000_003])
    volume = np.stack([_phantom(rng, rows, columns, k * 2.5) for k in range(frames)])

    ds = FileDataset("", Dataset(), file_meta=_file_meta(ENHANCED_CT_IMAGE_STORAGE, sop_uid, ts))
    _patient_study(
        ds, study_uid=study_uid, patient_id=patient_id, patient_name=patient_name, seed=seed
    )
    ds.SOPClassUID = ENHANCED_CT_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.Modality = "CT"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 1
    ds.SeriesDescription = "Synthetic multi-frame"
    ds.FrameOfReferenceUID = _uid("mf-frame-of-reference", study_uid, seed)
    ds.PositionReferenceIndicator = ""
    ds.InstanceNumber = 1
    ds.ContentDate = ds.StudyDate
    ds.ContentTime = ds.StudyTime
    ds.AcquisitionNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.NumberOfFrames = frames
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1

    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [250.0 / rows, 250.0 / columns]
    measures.SliceThickness = 2.5
    shared.PixelMeasuresSequence = [measures]
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    shared.PlaneOrientationSequence = [orientation]
    voi = Dataset()
    voi.WindowCenter = 40
    voi.WindowWidth = 400
    shared.FrameVOILUTSequence = [voi]
    transform = Dataset()
    transform.RescaleIntercept = 0
    transform.RescaleSlope = 1
    transform.RescaleType = "HU"
    shared.PixelValueTransformationSequence = [transform]
    ds.SharedFunctionalGroupsSequence = [shared]

    per_frame: list[Dataset] = []
    for k in range(frames):
        item = Dataset()
        content = Dataset()
        content.InStackPositionNumber = k + 1
        content.StackID = "1"
        content.DimensionIndexValues = [1, k + 1]
        item.FrameContentSequence = [content]
        position = Dataset()
        position.ImagePositionPatient = [-125.0, -125.0, -2.5 * k]
        item.PlanePositionSequence = [position]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.PixelData = volume.tobytes()

    path = folder / f"mf-{sop_uid}.dcm"
    _write(ds, path, ts)
    return StudyFiles(study_uid, [series_uid], [sop_uid], [path], [series_uid])
