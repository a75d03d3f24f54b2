"""A folder of DICOM Part 10 files indexed for Query/Retrieve.

:class:`FolderArchive` keeps the header (everything before Pixel Data) of every instance in
memory, organised as study → series → instance, and answers Study/Patient Root C-FIND
identifiers (:meth:`FolderArchive.match`) and C-MOVE/C-GET identifiers
(:meth:`FolderArchive.locate`, :meth:`FolderArchive.paths`).  It is thread-safe: pynetdicom
runs each association's handlers on its own thread.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError

from rst.dicom.matching import DEPTH, LEVELS, find, query_level, sort_key, values

__all__ = ["LEVELS", "FolderArchive", "StoredInstance"]

_PIXEL_DATA = 0x7FE00010


@dataclass(frozen=True, slots=True, eq=False)
class StoredInstance:
    """One indexed Part 10 file."""

    path: Path
    patient_id: str
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    header: Dataset  # the dataset up to (not including) Pixel Data, without file meta


class FolderArchive:
    """An in-memory index over a folder of DICOM Part 10 files (searched recursively)."""

    def __init__(self, root: Path | str, *, scan: bool = True) -> None:
        self.root = Path(root)
        self._lock = threading.RLock()
        # study uid -> series uid -> sop instance uid -> instance
        self._studies: dict[str, dict[str, dict[str, StoredInstance]]] = {}
        self._by_sop: dict[str, StoredInstance] = {}
        if scan:
            self.scan()

    # ------------------------------------------------------------------ indexing

    def scan(self) -> int:
        """Index every readable DICOM file under :attr:`root`; return how many were added."""
        self.root.mkdir(parents=True, exist_ok=True)
        added = 0
        for path in sorted(self.root.rglob("*")):
            if path.is_file() and not path.name.startswith(".") and self.add_file(path):
                added += 1
        return added

    def add_file(self, path: Path | str) -> bool:
        """Index one Part 10 file; return False (and index nothing) if it is not DICOM."""
        path = Path(path)
        try:
            ds = dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            return False
        return self._index(path, ds)

    def _index(self, path: Path, ds: Dataset) -> bool:
        meta = getattr(ds, "file_meta", None)
        try:
            sop_uid = str(ds.SOPInstanceUID)
            study_uid = str(ds.StudyInstanceUID)
            series_uid = str(ds.SeriesInstanceUID)
            sop_class = str(ds.SOPClassUID)
            syntax = str(meta.TransferSyntaxUID) if meta is not None else ""
        except AttributeError:
            return False
        if not syntax:
            return False
        header = ds[:_PIXEL_DATA]
        inst = StoredInstance(
            path=path,
            patient_id=str(ds.get("PatientID", "") or ""),
            study_uid=study_uid,
            series_uid=series_uid,
            sop_instance_uid=sop_uid,
            sop_class_uid=sop_class,
            transfer_syntax_uid=syntax,
            header=header,
        )
        with self._lock:
            old = self._by_sop.pop(sop_uid, None)
            if old is not None:
                self._remove(old)
            self._by_sop[sop_uid] = inst
            series = self._studies.setdefault(study_uid, {}).setdefault(series_uid, {})
            series[sop_uid] = inst
        return True

    def _remove(self, inst: StoredInstance) -> None:
        series = self._studies.get(inst.study_uid, {}).get(inst.series_uid)
        if series is None:
            return
        series.pop(inst.sop_instance_uid, None)
        if not series:
            del self._studies[inst.study_uid][inst.series_uid]
            if not self._studies[inst.study_uid]:
                del self._studies[inst.study_uid]

    def store(self, dataset: Dataset, file_meta: FileMetaDataset | None = None) -> Path:
        """Write `dataset` as a Part 10 file (using `file_meta`'s transfer syntax) and index it.

        The file goes to ``root/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``;
        an instance with the same SOP Instance UID is replaced.
        """
        meta = file_meta if file_meta is not None else getattr(dataset, "file_meta", None)
        if meta is None or "TransferSyntaxUID" not in meta:
            raise ValueError("a file meta TransferSyntaxUID is needed to store an instance")
        dataset.file_meta = FileMetaDataset(meta)
        path = self._path_for(dataset)
        buf = io.BytesIO()
        dataset.save_as(buf, enforce_file_format=True)
        self._write(path, buf.getvalue())
        self._index(path, dataset)
        return path

    def store_bytes(self, data: bytes) -> Path:
        """Store an encoded Part 10 file (preamble + file meta + dataset) as is and index it."""
        ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
        path = self._path_for(ds)
        self._write(path, data)
        if not self._index(path, ds):
            raise ValueError("the file lacks UIDs or a transfer syntax")
        return path

    def _path_for(self, ds: Dataset) -> Path:
        parts = [str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)]
        for part in parts:
            if not re.fullmatch(r"[0-9.]{1,64}", part):
                raise ValueError(f"refusing to store an instance with UID {part!r}")
        return self.root.joinpath(parts[0], parts[1], parts[2] + ".dcm")

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_sop)

    def instances(self) -> list[StoredInstance]:
        """All indexed instances in a stable order (study, series number, instance number)."""
        with self._lock:
            snapshot = list(self._by_sop.values())
        return sorted(snapshot, key=_sort_key)

    def locate(self, identifier: Dataset) -> list[StoredInstance]:
        """Instances addressed by a C-MOVE/C-GET identifier.

        Uses the unique keys (PatientID, StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID)
        down to the QueryRetrieveLevel; each UID key may be a list.  Raises ValueError when
        the level is unknown or the identifier carries none of the keys.
        """
        level = query_level(identifier)
        keys = [key for key in LEVELS.values() if key in identifier]
        keys = [key for key in keys if DEPTH[_key_level(key)] <= DEPTH[level]]
        wanted = {key: set(values(identifier[key])) for key in keys}
        wanted = {key: values for key, values in wanted.items() if values}
        if not wanted:
            raise ValueError(f"no unique key for a {level} level retrieve")
        found = []
        for inst in self.instances():
            attrs = {
                "PatientID": inst.patient_id,
                "StudyInstanceUID": inst.study_uid,
                "SeriesInstanceUID": inst.series_uid,
                "SOPInstanceUID": inst.sop_instance_uid,
            }
            if all(attrs[key] in values for key, values in wanted.items()):
                found.append(inst)
        return found

    def paths(self, identifier: Dataset) -> list[Path]:
        """File paths addressed by a C-MOVE/C-GET identifier (see :meth:`locate`)."""
        return [inst.path for inst in self.locate(identifier)]

    def match(self, identifier: Dataset) -> Iterator[Dataset]:
        """Answer a C-FIND identifier: yield one response identifier per matching entity.

        Supports single value, UID list, wildcard (``*``, ``?``), range (``a-b``, ``-b``,
        ``a-``) and universal matching.  Responses carry the requested keys (values from the
        archive, empty when unknown), the unique keys of the level and above, and the computed
        NumberOf*Related* / ModalitiesInStudy attributes when asked for.
        """
        query_level(identifier)  # raises now, not on the first next()
        return self._match(identifier)

    def _match(self, identifier: Dataset) -> Iterator[Dataset]:
        return find(identifier, [inst.header for inst in self.instances()])


# ---------------------------------------------------------------------- helpers


def _sort_key(inst: StoredInstance) -> tuple[str, str, str, int, str, int, str]:
    return sort_key(inst.header)


def _key_level(key: str) -> str:
    return next(level for level, unique in LEVELS.items() if unique == key)
