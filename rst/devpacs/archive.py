"""A folder of DICOM Part 10 files indexed for Query/Retrieve.

:class:`FolderArchive` keeps the header (everything before Pixel Data) of every instance in
memory, organised as study → series → instance, and answers Study/Patient Root C-FIND
identifiers (:meth:`FolderArchive.match`) and C-MOVE/C-GET identifiers
(:meth:`FolderArchive.locate`, :meth:`FolderArchive.paths`).  It is thread-safe: pynetdicom
runs each association's handlers on its own thread.
"""

from __future__ import annotations

import copy
import io
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import UID

__all__ = ["LEVELS", "FolderArchive", "StoredInstance"]

#: Query/Retrieve levels and their unique keys.
LEVELS: dict[str, str] = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}
_DEPTH = {level: depth for depth, level in enumerate(LEVELS)}
_PIXEL_DATA = 0x7FE00010
_WILDCARD_VRS = {"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"}
_RANGE_VRS = {"DA", "TM", "DT"}
_SKIP_KEYS = {"QueryRetrieveLevel", "SpecificCharacterSet"}


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
        level = _level(identifier)
        keys = [key for key in LEVELS.values() if key in identifier]
        keys = [key for key in keys if _DEPTH[_key_level(key)] <= _DEPTH[level]]
        wanted = {key: set(_values(identifier[key])) for key in keys}
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
        level = _level(identifier)  # raises now, not on the first next()
        return self._match(identifier, level)

    def _match(self, identifier: Dataset, level: str) -> Iterator[Dataset]:
        keys = [e for e in identifier if e.keyword not in _SKIP_KEYS]
        for group in self._groups(level):
            rep = group[0].header
            computed = _computed(level, group)
            if all(_matches(elem, rep, computed) for elem in keys):
                yield _response(identifier, level, rep, computed)

    def _groups(self, level: str) -> list[list[StoredInstance]]:
        groups: dict[str, list[StoredInstance]] = {}
        for inst in self.instances():
            key = {
                "PATIENT": inst.patient_id,
                "STUDY": inst.study_uid,
                "SERIES": inst.series_uid,
                "IMAGE": inst.sop_instance_uid,
            }[level]
            groups.setdefault(key, []).append(inst)
        return list(groups.values())


# ---------------------------------------------------------------------- helpers


def _sort_key(inst: StoredInstance) -> tuple[str, str, str, int, str, int, str]:
    h = inst.header
    return (
        str(h.get("StudyDate", "") or ""),
        str(h.get("StudyTime", "") or ""),
        inst.study_uid,
        _int(h.get("SeriesNumber")),
        inst.series_uid,
        _int(h.get("InstanceNumber")),
        inst.sop_instance_uid,
    )


def _int(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def _level(identifier: Dataset) -> str:
    level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if level not in LEVELS:
        raise ValueError(f"unsupported QueryRetrieveLevel {level!r}")
    return level


def _key_level(key: str) -> str:
    return next(level for level, unique in LEVELS.items() if unique == key)


def _values(elem: DataElement) -> list[str]:
    """The non-empty values of an element as strings (multi-valued → several)."""
    value = elem.value
    if value is None or elem.VR == "SQ" or isinstance(value, bytes | bytearray):
        return []
    items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    out = [str(item).strip() for item in items if item is not None]
    return [item for item in out if item]


def _computed(level: str, group: list[StoredInstance]) -> Dataset:
    """The computed return keys for one matching entity."""
    ds = Dataset()
    studies = {inst.study_uid for inst in group}
    series = {inst.series_uid for inst in group}
    if level == "PATIENT":
        ds.NumberOfPatientRelatedStudies = len(studies)
        ds.NumberOfPatientRelatedSeries = len(series)
        ds.NumberOfPatientRelatedInstances = len(group)
    if level == "STUDY":
        ds.NumberOfStudyRelatedSeries = len(series)
        ds.NumberOfStudyRelatedInstances = len(group)
        modalities = sorted({str(i.header.get("Modality", "") or "") for i in group} - {""})
        ds.ModalitiesInStudy = modalities
        classes = sorted({i.sop_class_uid for i in group})
        ds.SOPClassesInStudy = [UID(uid) for uid in classes]
    if level == "SERIES":
        ds.NumberOfSeriesRelatedInstances = len(group)
    return ds


def _matches(key: DataElement, record: Dataset, computed: Dataset) -> bool:
    """Whether one identifier key matches an entity (PS3.4 C.2.2.2)."""
    wanted = _values(key)
    if not wanted or key.VR == "SQ":
        return True  # universal matching (sequence matching is not supported: universal)
    if key.tag in computed:
        if key.keyword != "ModalitiesInStudy":
            return True  # return-only attributes
        have = _values(computed[key.tag])
    elif key.tag in record:
        have = _values(record[key.tag])
    else:
        return False
    if not have:
        return False
    test = _matcher(key.VR, wanted)
    return any(test(value) for value in have)


def _matcher(vr: str, wanted: list[str]) -> Callable[[str], bool]:
    if vr in _RANGE_VRS and len(wanted) == 1 and "-" in wanted[0]:
        low, _, high = wanted[0].partition("-")
        norm = _normaliser(vr)
        lo = norm(low, False) if low.strip() else None
        hi = norm(high, True) if high.strip() else None

        def in_range(value: str) -> bool:
            v = norm(value, False)
            return (lo is None or lo <= v) and (hi is None or v <= hi)

        return in_range
    if vr in _WILDCARD_VRS and any("*" in w or "?" in w for w in wanted):
        flags = re.IGNORECASE if vr == "PN" else 0
        patterns = [re.compile(_wildcard_regex(w), flags | re.DOTALL) for w in wanted]
        return lambda value: any(p.fullmatch(value) for p in patterns)
    if vr == "PN":
        folded = {w.casefold() for w in wanted}
        return lambda value: value.casefold() in folded
    if vr in _RANGE_VRS:
        norm = _normaliser(vr)
        exact = {norm(w, False) for w in wanted}
        return lambda value: norm(value, False) in exact
    exact_set = set(wanted)
    return lambda value: value in exact_set


def _wildcard_regex(pattern: str) -> str:
    return "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)


def _normaliser(vr: str) -> Callable[[str, bool], str]:
    """A function making DA/TM/DT values comparable as strings (`upper` pads a range end)."""

    def norm(value: str, upper: bool) -> str:
        value = value.strip().replace(":", "")
        if vr == "DA":
            value = value.replace(".", "")
            width = 8
        elif vr == "TM":
            width = 13  # HHMMSS.FFFFFF
            if "." not in value:
                value = value + "." if len(value) >= 6 else value
        else:
            value = re.split(r"[+-]", value, maxsplit=1)[0]  # drop a UTC offset
            width = 21  # YYYYMMDDHHMMSS.FFFFFF
            if len(value) >= 14 and "." not in value:
                value += "."
        if len(value) < width:
            pad = (_UPPER_PAD if upper else _LOWER_PAD)[vr]
            value = value + pad[len(value) :]
        return value

    return norm


_LOWER_PAD = {"DA": "00000000", "TM": "000000.000000", "DT": "00000000000000.000000"}
_UPPER_PAD = {"DA": "99999999", "TM": "235959.999999", "DT": "99991231235959.999999"}


def _response(identifier: Dataset, level: str, record: Dataset, computed: Dataset) -> Dataset:
    """Build one C-FIND response identifier."""
    rsp = Dataset()
    if "SpecificCharacterSet" in record:
        rsp.SpecificCharacterSet = record.SpecificCharacterSet
    rsp.QueryRetrieveLevel = level
    for elem in identifier:
        if elem.keyword in _SKIP_KEYS:
            continue
        if elem.tag in computed:
            rsp[elem.tag] = copy.deepcopy(computed[elem.tag])
        elif elem.tag in record:
            rsp[elem.tag] = copy.deepcopy(record[elem.tag])
        else:
            rsp[elem.tag] = DataElement(elem.tag, elem.VR, None)
    for lvl, unique in LEVELS.items():
        if lvl == "PATIENT" and level != "PATIENT":
            continue  # PatientID is a unique key only at PATIENT level
        if _DEPTH[lvl] <= _DEPTH[level] and unique in record:
            rsp[unique] = copy.deepcopy(record[unique])
    return rsp
