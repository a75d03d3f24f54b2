"""The generated studies, cached between invocations, and loading them into the PACS.

Generated studies are deterministic (``tests/support/sample.py``), so they are kept under
``<system temp dir>/rst-bench-cache/<key>/``, one folder per set of parameters (and per version of
``sample.py``): the ~1 GB study takes ~20 s to write, then seconds to reuse. Remove the folder to
reclaim the space; a partly written study (interrupted run) is never reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import trio

from tests.support import sample
from tests.support.dcmtk import storescu
from tests.support.orthanc import Orthanc
from tests.support.sample import StudyFiles, write_ct_study, write_multiframe

from .common import ORTHANC_AET, BenchmarkError, Study

CACHE = Path(tempfile.gettempdir()) / "rst-bench-cache"
STORE_CHUNK = 500  # files per storescu run (argument list length)


def _sample_version() -> str:
    return hashlib.sha256(Path(sample.__file__).read_bytes()).hexdigest()[:12]


def spec(key: str, images: int) -> tuple[str, str, str, dict[str, int]]:
    if key == "ct":
        label = f"{images} x 512² CT, 2 series"
        return label, "BENCH-CT", "ct", {"images": images, "rows": 512, "columns": 512, "series": 2}
    if key == "big":
        return "2000 x 512² CT", "BENCH-BIG", "ct", {"images": 2000, "rows": 512, "columns": 512}
    if key == "small":
        return "2000 x 64² CT", "BENCH-SMALL", "ct", {"images": 2000, "rows": 64, "columns": 64}
    if key == "mf":
        label = "1 x 200-frame 512² Enhanced CT"
        return label, "BENCH-MF", "mf", {"frames": 200, "rows": 512, "columns": 512}
    raise ValueError(key)


def _generate(folder: Path, kind: str, patient_id: str, params: dict[str, int]) -> StudyFiles:
    if kind == "ct":
        return write_ct_study(
            folder,
            images=params["images"],
            rows=params["rows"],
            columns=params["columns"],
            series=params.get("series", 1),
            patient_id=patient_id,
            seed=params["images"],
        )
    return write_multiframe(
        folder,
        frames=params["frames"],
        rows=params["rows"],
        columns=params["columns"],
        patient_id=patient_id,
        seed=1,
    )


def cached_study(key: str, images: int) -> Study:
    """The study ``key`` from the cache, written first if missing (blocking: run in a thread)."""
    label, patient_id, kind, params = spec(key, images)
    name = "-".join([kind, patient_id, *(f"{k}{v}" for k, v in params.items()), _sample_version()])
    folder = CACHE / name
    manifest = folder / "manifest.json"
    if manifest.is_file():
        data = json.loads(manifest.read_text())
        files = StudyFiles(
            study_uid=data["study_uid"],
            series_uids=data["series_uids"],
            sop_uids=data["sop_uids"],
            paths=[folder / p for p in data["paths"]],
            instance_series=data["instance_series"],
        )
        if all(p.is_file() for p in files.paths):
            return Study(key, label, files, patient_id)
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=CACHE))
    try:
        written = _generate(partial, kind, patient_id, params)
        record = asdict(written)
        record["paths"] = [p.name for p in written.paths]
        (partial / "manifest.json").write_text(json.dumps(record))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(partial, folder)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    return cached_study(key, images)


async def load(orthanc: Orthanc, study: Study) -> None:
    """C-STORE the study into the PACS with dcmtk's storescu (faster than REST uploads)."""
    paths = study.files.paths
    for start in range(0, len(paths), STORE_CHUNK):
        result = await storescu(
            "127.0.0.1", orthanc.dicom_port, ORTHANC_AET, paths[start : start + STORE_CHUNK]
        )
        if not result.ok:
            raise BenchmarkError(f"loading {study.key} into Orthanc:\n{result.output[-3000:]}")


async def prepare(keys: list[str], images: int) -> dict[str, Study]:
    studies: dict[str, Study] = {}
    for key in keys:
        print(f"study {key}: generating or reusing from {CACHE}", flush=True)
        studies[key] = await trio.to_thread.run_sync(cached_study, key, images)
    return studies
