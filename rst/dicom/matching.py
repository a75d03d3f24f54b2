"""C-FIND matching (PS3.4 C.2.2.2) over instance headers: one set of rules for every archive.

:func:`find` answers a Patient/Study Root C-FIND identifier from the headers of the instances
it is given (each the dataset before Pixel Data): it groups them at the QueryRetrieveLevel,
computes the aggregate attributes (NumberOf*Related*, ModalitiesInStudy, SOPClassesInStudy),
applies the matching keys and builds one response identifier per matching entity. The dev PACS
(:mod:`rst.devpacs.archive`) and the S3 index (:mod:`rst.backends.s3.index`) both use it, so
they match exactly alike. Pure: no IO, no global state.

Rules: single value, UID list, wildcard (``*``, ``?``; case-insensitive for PN), DA/TM/DT
range (``a-b``, ``-b``, ``a-``), universal (empty value) matching; a key the entity lacks
does not match; sequence keys match universally; computed counts are return-only.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Iterator, Sequence

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID

__all__ = [
    "DEPTH",
    "LEVELS",
    "SERIES_COMPUTED",
    "SKIP_KEYS",
    "STUDY_COMPUTED",
    "aggregates",
    "find",
    "matcher",
    "matches",
    "normalise",
    "query_level",
    "response",
    "sort_key",
    "values",
]

#: Query/Retrieve levels and their unique keys, from the top.
LEVELS: dict[str, str] = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}
DEPTH: dict[str, int] = {level: depth for depth, level in enumerate(LEVELS)}
SKIP_KEYS = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet"})
"""Identifier attributes that are neither matching nor return keys."""
STUDY_COMPUTED = frozenset(
    {
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "ModalitiesInStudy",
        "SOPClassesInStudy",
    }
)
"""Attributes computed over all instances of a study (returned at study level and below)."""
SERIES_COMPUTED = frozenset({"NumberOfSeriesRelatedInstances"})
"""Attributes computed over all instances of a series (returned at series level and below)."""
_PATIENT_COMPUTED = frozenset(
    {
        "NumberOfPatientRelatedStudies",
        "NumberOfPatientRelatedSeries",
        "NumberOfPatientRelatedInstances",
    }
)
_MATCHABLE_COMPUTED = frozenset({"ModalitiesInStudy"})
_WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
_RANGE_VRS = frozenset({"DA", "TM", "DT"})
_LOWER_PAD = {"DA": "00000000", "TM": "000000.000000", "DT": "00000000000000.000000"}
_UPPER_PAD = {"DA": "99999999", "TM": "235959.999999", "DT": "99991231235959.999999"}


def query_level(identifier: Dataset) -> str:
    """The identifier's QueryRetrieveLevel. :raises ValueError: missing or unknown."""
    level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if level not in LEVELS:
        raise ValueError(f"unsupported QueryRetrieveLevel {level!r}")
    return level


def values(elem: DataElement) -> list[str]:
    """The non-empty values of an element as strings (multi-valued → several)."""
    value = elem.value
    if value is None or elem.VR == "SQ" or isinstance(value, bytes | bytearray):
        return []
    items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    out = [str(item).strip() for item in items if item is not None]
    return [item for item in out if item]


def _text(header: Dataset, keyword: str) -> str:
    return str(header.get(keyword, "") or "").strip()


def _int(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def sort_key(header: Dataset) -> tuple[str, str, str, int, str, int, str]:
    """A stable order: study date/time and UID, series number and UID, instance number, SOP UID."""
    return (
        _text(header, "StudyDate"),
        _text(header, "StudyTime"),
        _text(header, "StudyInstanceUID"),
        _int(header.get("SeriesNumber")),
        _text(header, "SeriesInstanceUID"),
        _int(header.get("InstanceNumber")),
        _text(header, "SOPInstanceUID"),
    )


def aggregates(level: str, entity: Sequence[Dataset], scope: str) -> Dataset:
    """The attributes computed over ``entity`` (all instances of one patient, study or series,
    as ``scope`` says) that rows at ``level`` return."""
    ds = Dataset()
    if scope == "PATIENT" and level == "PATIENT":
        ds.NumberOfPatientRelatedStudies = len({_text(h, "StudyInstanceUID") for h in entity})
        ds.NumberOfPatientRelatedSeries = len({_text(h, "SeriesInstanceUID") for h in entity})
        ds.NumberOfPatientRelatedInstances = len(entity)
    elif scope == "STUDY" and DEPTH[level] >= DEPTH["STUDY"]:
        ds.NumberOfStudyRelatedSeries = len({_text(h, "SeriesInstanceUID") for h in entity})
        ds.NumberOfStudyRelatedInstances = len(entity)
        ds.ModalitiesInStudy = sorted({_text(h, "Modality") for h in entity} - {""})
        classes = sorted({_text(h, "SOPClassUID") for h in entity} - {""})
        ds.SOPClassesInStudy = [UID(uid) for uid in classes]
    elif scope == "SERIES" and DEPTH[level] >= DEPTH["SERIES"]:
        ds.NumberOfSeriesRelatedInstances = len(entity)
    return ds


def _group(headers: Iterable[Dataset], keyword: str) -> dict[str, list[Dataset]]:
    groups: dict[str, list[Dataset]] = {}
    for header in headers:
        groups.setdefault(_text(header, keyword), []).append(header)
    return groups


def find(identifier: Dataset, headers: Iterable[Dataset]) -> Iterator[Dataset]:
    """Answer a C-FIND identifier from instance headers: one response per matching entity.

    ``headers`` must hold every instance of each entity whose aggregates the identifier asks for
    (the whole study for study-level counts); entities come out in the order of their first
    instance. :raises ValueError: the QueryRetrieveLevel is missing or unknown (at once).
    """
    level = query_level(identifier)
    return _find(identifier, level, list(headers))


def _find(identifier: Dataset, level: str, headers: list[Dataset]) -> Iterator[Dataset]:
    keys = [e for e in identifier if e.keyword not in SKIP_KEYS]
    asked = {e.keyword for e in keys}
    scopes = [level] if level == "PATIENT" else []
    if level != "PATIENT" and asked & STUDY_COMPUTED:
        scopes.append("STUDY")
    if DEPTH[level] >= DEPTH["SERIES"] and asked & SERIES_COMPUTED:
        scopes.append("SERIES")
    by_scope = {scope: _group(headers, LEVELS[scope]) for scope in scopes}
    cache: dict[tuple[str, str], Dataset] = {}

    def computed_for(record: Dataset) -> Dataset:
        ds = Dataset()
        for scope in scopes:
            uid = _text(record, LEVELS[scope])
            if (scope, uid) not in cache:
                cache[scope, uid] = aggregates(level, by_scope[scope][uid], scope)
            ds.update(cache[scope, uid])
        return ds

    for group in _group(headers, LEVELS[level]).values():
        record = group[0]
        computed = computed_for(record)
        if all(matches(elem, record, computed) for elem in keys):
            yield response(identifier, level, record, computed)


def matches(key: DataElement, record: Dataset, computed: Dataset) -> bool:
    """Whether one identifier key matches an entity (PS3.4 C.2.2.2).

    ``record`` holds the entity's stored attributes, ``computed`` its aggregate ones.
    """
    wanted = values(key)
    if not wanted or key.VR == "SQ":
        return True  # universal matching (sequence matching is not supported: universal)
    if key.keyword in STUDY_COMPUTED | SERIES_COMPUTED | _PATIENT_COMPUTED:
        if key.keyword not in _MATCHABLE_COMPUTED:
            return True  # return-only attributes
        have = values(computed[key.tag]) if key.tag in computed else []
    elif key.tag in record:
        have = values(record[key.tag])
    else:
        return False
    if not have:
        return False
    test = matcher(key.VR, wanted)
    return any(test(value) for value in have)


def matcher(vr: str, wanted: list[str]) -> Callable[[str], bool]:
    """A test for one stored value against the values of a matching key of VR ``vr``."""
    if vr in _RANGE_VRS and len(wanted) == 1 and "-" in wanted[0]:
        low, _, high = wanted[0].partition("-")
        lo = normalise(vr, low, upper=False) if low.strip() else None
        hi = normalise(vr, high, upper=True) if high.strip() else None

        def in_range(value: str) -> bool:
            v = normalise(vr, value, upper=False)
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
        exact = {normalise(vr, w, upper=False) for w in wanted}
        return lambda value: normalise(vr, value, upper=False) in exact
    exact_set = set(wanted)
    return lambda value: value in exact_set


def _wildcard_regex(pattern: str) -> str:
    return "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)


def normalise(vr: str, value: str, *, upper: bool) -> str:
    """Make a DA/TM/DT value comparable as a string; a partial value is padded to the start
    (or, with ``upper``, the end) of the period it names."""
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


def response(identifier: Dataset, level: str, record: Dataset, computed: Dataset) -> Dataset:
    """One C-FIND response identifier: the identifier's keys filled from the entity, plus the
    unique keys of its level and above."""
    rsp = Dataset()
    if "SpecificCharacterSet" in record:
        rsp.SpecificCharacterSet = record.SpecificCharacterSet
    rsp.QueryRetrieveLevel = level
    for elem in identifier:
        if elem.keyword in SKIP_KEYS:
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
        if DEPTH[lvl] <= DEPTH[level] and unique in record:
            rsp[unique] = copy.deepcopy(record[unique])
    return rsp
