"""QIDO-RS (PS3.18 §10.6, §8.3.4) ↔ C-FIND (PS3.4 Annex C): build identifiers, render results.

:func:`parse_qido` turns a QIDO-RS request's query parameters (already percent-decoded) into the
C-FIND identifier to send, together with the paging and flag parameters; :func:`to_dicom_json`
turns each C-FIND response identifier into a DICOM JSON object (PS3.18 Annex F) holding the
requested attributes. Both are pure: no IO, no global state.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydicom import Dataset, config
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement, empty_value_for_VR
from pydicom.filewriter import correct_ambiguous_vr_element
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from rst.errors import BadRequest

__all__ = [
    "IMAGE_KEYS",
    "SERIES_KEYS",
    "STUDY_KEYS",
    "Level",
    "QidoQuery",
    "default_keys",
    "parse_qido",
    "to_dicom_json",
]

Level = Literal["STUDY", "SERIES", "IMAGE"]
_RANK: dict[str, int] = {"STUDY": 0, "SERIES": 1, "IMAGE": 2}

# --- Attribute tables (PS3.18 Tables 10.6.3-3/-4/-5; PS3.4 C.6.1.1) ---------------------------

STUDY_DEFAULT = (
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ModalitiesInStudy",
    "ReferringPhysicianName",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
STUDY_OPTIONAL = (
    "StudyDescription",
    "InstanceAvailability",
    "TimezoneOffsetFromUTC",
    "SOPClassesInStudy",
    "IssuerOfAccessionNumberSequence",
    "NameOfPhysiciansReadingStudy",
    "PhysiciansOfRecord",
    "AdmittingDiagnosesDescription",
    "ProcedureCodeSequence",
    "IssuerOfPatientID",
    "OtherPatientIDsSequence",
    "PatientBirthTime",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "EthnicGroup",
    "Occupation",
    "AdditionalPatientHistory",
    "PatientComments",
)
SERIES_DEFAULT = (
    "Modality",
    "SeriesDescription",
    "SeriesInstanceUID",
    "SeriesNumber",
    "NumberOfSeriesRelatedInstances",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
)
SERIES_OPTIONAL = (
    "SeriesDate",
    "SeriesTime",
    "BodyPartExamined",
    "Laterality",
    "ProtocolName",
    "OperatorsName",
    "PerformingPhysicianName",
    "PerformedProcedureStepID",
    "PerformedProcedureStepDescription",
    "RequestAttributesSequence",
)
IMAGE_DEFAULT = (
    "SOPClassUID",
    "SOPInstanceUID",
    "InstanceNumber",
    "Rows",
    "Columns",
    "BitsAllocated",
    "NumberOfFrames",
)
IMAGE_OPTIONAL = (
    "AvailableTransferSyntaxUID",
    "ContentDate",
    "ContentTime",
    "AcquisitionDate",
    "AcquisitionTime",
    "AcquisitionNumber",
    "ImageType",
    "InstanceCreationDate",
    "InstanceCreationTime",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "ImageComments",
    "ContentLabel",
    "ContentDescription",
)


def _tag(keyword: str) -> int:
    """The tag of a keyword of rst's own tables."""
    tag = tag_for_keyword(keyword)
    if tag is None:  # pragma: no cover - guarded by a unit test
        raise RuntimeError(f"unknown keyword {keyword} in rst's QIDO tables")
    return tag


def _tags(keywords: Iterable[str]) -> frozenset[int]:
    return frozenset(_tag(keyword) for keyword in keywords)


STUDY_KEYS = _tags(STUDY_DEFAULT + STUDY_OPTIONAL)
"""Patient- and study-level attributes rst knows as keys (for level checks)."""
SERIES_KEYS = _tags(SERIES_DEFAULT + SERIES_OPTIONAL)
"""Series-level attributes: refused as matching keys of a STUDY query."""
IMAGE_KEYS = _tags(IMAGE_DEFAULT + IMAGE_OPTIONAL)
"""Instance-level attributes: refused as matching keys of STUDY and SERIES queries."""

_STUDY_UID = 0x0020000D
_SERIES_UID = 0x0020000E
_QUERY_RETRIEVE_LEVEL = 0x00080052
_SPECIFIC_CHARACTER_SET = 0x00080005
_RETRIEVE_URL = 0x00081190
_RESERVED = frozenset({"limit", "offset", "fuzzymatching", "includefield", "accept", "charset"})

_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_INT_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV"})
_FLOAT_VRS = frozenset({"FL", "FD"})
_DATE_TIME_VRS = frozenset({"DA", "TM", "DT"})
_TEXT_WITH_CONTROLS = frozenset({"LT", "ST", "UT"})
_UID_RE = re.compile(r"[0-9]+(\.[0-9]+)*")
_HEX_TAG_RE = re.compile(r"[0-9A-Fa-f]{8}")
_DIGITS_RE = re.compile(r"[0-9]{1,18}")
_IS_RE = re.compile(r" *[+-]?[0-9]{1,12} *")
_DATE_TIME_RE = re.compile(r"[0-9.+\- :]*")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1a\x1c-\x1f\x7f]")
_CONTROL_TEXT_RE = re.compile(r"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")


@dataclass(frozen=True)
class QidoQuery:
    """A parsed QIDO-RS request.

    ``identifier`` is the C-FIND identifier to send (with QueryRetrieveLevel). ``limit`` is
    ``None`` when unlimited; ``fuzzymatching`` records that the client asked for fuzzy matching,
    which rst does not perform (the caller adds the Warning header); ``include_all`` is
    ``includefield=all``.
    """

    level: Level
    identifier: Dataset
    limit: int | None
    offset: int
    fuzzymatching: bool
    include_all: bool


def _level_of(tag: int) -> int | None:
    """The query level (rank) an attribute belongs to, if rst knows it."""
    if tag in IMAGE_KEYS:
        return _RANK["IMAGE"]
    if tag in SERIES_KEYS:
        return _RANK["SERIES"]
    if tag in STUDY_KEYS:
        return _RANK["STUDY"]
    return None


def _vr_of(tag: int) -> str:
    """The dictionary VR of a public tag; ambiguous VRs resolve to their first choice."""
    vr = dictionary_VR(tag)
    return vr.split(" or ")[0]


def _resolve_component(component: str, name: str) -> int:
    """Map one path component (keyword or 8-hex tag) to a known public tag."""
    if _HEX_TAG_RE.fullmatch(component):
        tag = int(component, 16)
    else:
        found = tag_for_keyword(component)
        if found is None:
            raise BadRequest(
                f"unknown query parameter or attribute {name!r}: {component!r} is neither a "
                "DICOM keyword nor an 8-digit hex tag (reserved parameters: "
                "limit, offset, fuzzymatching, includefield)"
            )
        tag = found
    try:
        dictionary_VR(tag)
    except KeyError:
        raise BadRequest(
            f"unknown attribute {component!r} in {name!r}: rst only queries public attributes "
            "of the DICOM data dictionary"
        ) from None
    group = tag >> 16
    if group in (0x0000, 0x0002) or tag == _QUERY_RETRIEVE_LEVEL or group & 1:
        raise BadRequest(f"{name!r} cannot be used as a query key")
    return tag


def _resolve_path(name: str) -> tuple[int, ...]:
    """Parse ``Keyword``, ``GGGGEEEE`` or a dotted sequence path into a tuple of tags."""
    components = name.split(".")
    if any(not c for c in components):
        raise BadRequest(f"malformed attribute path {name!r}")
    path = tuple(_resolve_component(c, name) for c in components)
    for tag in path[:-1]:
        if _vr_of(tag) != "SQ":
            raise BadRequest(f"{name!r}: {_name(tag)} is not a sequence attribute")
    return path


def _name(tag: int) -> str:
    return keyword_for_tag(tag) or f"{tag:08X}"


def _path_name(path: tuple[int, ...]) -> str:
    return ".".join(_name(t) for t in path)


def _check_text(name: str, vr: str, value: str) -> None:
    pattern = _CONTROL_TEXT_RE if vr in _TEXT_WITH_CONTROLS else _CONTROL_RE
    if pattern.search(value):
        raise BadRequest(f"{name!r}: the value contains control characters")


def _matching_value(name: str, vr: str, value: str) -> Any:
    """Convert a query value into a value pydicom can encode for ``vr``.

    Text values (wildcards, date/time ranges, backslash multi-values) pass through; UIDs may be
    a comma or backslash separated list; numbers are parsed.
    """
    if vr == "SQ":
        raise BadRequest(f"{name!r} is a sequence: match on an attribute inside it (Seq.Attr=v)")
    if vr in _BINARY_VRS:
        raise BadRequest(f"{name!r} has a binary VR ({vr}) and cannot be a matching key")
    if vr == "AT":
        raise BadRequest(f"{name!r} has VR AT and cannot be a matching key")
    if vr == "UI":
        uids = [u.strip() for u in re.split(r"[,\\]", value)]
        bad = [u for u in uids if len(u) > 64 or not _UID_RE.fullmatch(u)]
        if bad:
            raise BadRequest(f"{name!r}: invalid UID {bad[0]!r}")
        return uids[0] if len(uids) == 1 else uids
    values = value.split("\\")
    if vr in _INT_VRS:
        if not all(re.fullmatch(r"[+-]?[0-9]{1,19}", v.strip()) for v in values):
            raise BadRequest(f"{name!r}: {value!r} is not an integer (VR {vr})")
        ints = [int(v) for v in values]
        return ints[0] if len(ints) == 1 else ints
    if vr in _FLOAT_VRS:
        try:
            floats = [float(v) for v in values]
        except ValueError:
            raise BadRequest(f"{name!r}: {value!r} is not a number (VR {vr})") from None
        return floats[0] if len(floats) == 1 else floats
    if vr == "IS" and not all(_IS_RE.fullmatch(v) for v in values):
        raise BadRequest(f"{name!r}: {value!r} is not an integer string (VR IS)")
    if vr == "DS":
        for v in values:
            try:
                number = float(v)
            except ValueError:
                raise BadRequest(f"{name!r}: {value!r} is not a decimal string (VR DS)") from None
            if len(v.strip()) > 16 or number != number or number in (float("inf"), -float("inf")):
                raise BadRequest(f"{name!r}: {value!r} is not a valid decimal string (VR DS)")
    if vr in _DATE_TIME_VRS and not _DATE_TIME_RE.fullmatch(value):
        raise BadRequest(f"{name!r}: {value!r} is not a {vr} value or range")
    _check_text(name, vr, value)
    return value


def _element(tag: int, vr: str, value: Any) -> DataElement:
    """A DataElement with pydicom's value validation off (query values are not stored values)."""
    return DataElement(tag, vr, value, validation_mode=config.IGNORE)


def _empty_element(tag: int) -> DataElement:
    vr = _vr_of(tag)
    value: Any = [] if vr == "SQ" else empty_value_for_VR(vr)
    return _element(tag, vr, value)


class _Builder:
    """Accumulates the identifier: matching keys (each at most once) and return keys."""

    def __init__(self, level: Level) -> None:
        self.level = level
        self.identifier = Dataset()
        self.identifier.add(_element(_QUERY_RETRIEVE_LEVEL, "CS", level))
        self.matched: set[tuple[int, ...]] = set()

    def _container(self, path: tuple[int, ...]) -> Dataset:
        """The dataset that holds the last tag of ``path``, creating sequence items as needed."""
        dataset = self.identifier
        for tag in path[:-1]:
            elem = dataset.get(tag)
            if elem is None or elem.VR != "SQ":
                elem = _element(tag, "SQ", [])
                dataset.add(elem)
            if len(elem.value) == 0:
                elem.value.append(Dataset())
            dataset = elem.value[0]
        return dataset

    def match(self, path: tuple[int, ...], name: str, value: str) -> None:
        if path in self.matched:
            raise BadRequest(f"the attribute {_path_name(path)} is given more than once")
        rank = _level_of(path[0])
        if rank is not None and rank > _RANK[self.level]:
            raise BadRequest(
                f"{_path_name(path)} is a {_level_name(rank)}-level attribute and cannot be a "
                f"matching key of a {self.level.lower()}-level query"
            )
        self.matched.add(path)
        tag = path[-1]
        vr = _vr_of(tag)
        if value == "":
            elem = _empty_element(tag)
        else:
            converted = _matching_value(name, vr, value)
            try:
                elem = _element(tag, vr, converted)
            except (ValueError, TypeError, OverflowError) as err:
                raise BadRequest(f"{name!r}: invalid value {value!r} for VR {vr}") from err
        container = self._container(path)
        existing = container.get(tag)
        if existing is not None and existing.VR == "SQ" and elem.VR == "SQ":
            return  # an empty sequence matching key already holding item keys
        container.add(elem)

    def match_uid(self, tag: int, uid: str, where: str) -> None:
        """A UID from the URL path: a single-value matching key."""
        if len(uid) > 64 or not _UID_RE.fullmatch(uid):
            raise BadRequest(f"invalid {where} UID in the URL: {uid!r}")
        path = (tag,)
        existing = self.identifier.get(tag)
        if existing is not None and path in self.matched:
            given = existing.value
            if given and given != uid:
                raise BadRequest(
                    f"{_name(tag)}={given!r} in the query contradicts the URL's {uid!r}"
                )
        self.matched.add(path)
        self.identifier.add(_element(tag, "UI", uid))

    def include(self, path: tuple[int, ...]) -> None:
        """Add a return key (empty element) unless the attribute is already there."""
        rank = _level_of(path[0])
        if rank is not None and rank > _RANK[self.level]:
            return  # keys below the query level are not allowed in a C-FIND identifier
        container = self._container(path)
        if path[-1] not in container:
            container.add(_empty_element(path[-1]))


def _level_name(rank: int) -> str:
    return ("study", "series", "instance")[rank]


def default_keys(
    level: Level, *, study_uid: str | None = None, series_uid: str | None = None
) -> tuple[str, ...]:
    """The return keys always present in results of this QIDO-RS resource (PS3.18 §10.6.3.3).

    All-series queries also return the study-level keys; all-instances queries the study- and
    series-level keys; a study's instances the series-level keys.
    """
    if level == "STUDY":
        return STUDY_DEFAULT
    if level == "SERIES":
        series: tuple[str, ...] = (*SERIES_DEFAULT, "StudyInstanceUID")
        return series if study_uid else (*STUDY_DEFAULT, *series)
    keys: tuple[str, ...] = (*IMAGE_DEFAULT, "StudyInstanceUID", "SeriesInstanceUID")
    if not series_uid:
        keys = (*SERIES_DEFAULT, *keys)
    if not study_uid:
        keys = (*STUDY_DEFAULT, *keys)
    return keys


def _optional_keys(level: Level, study_uid: str | None, series_uid: str | None) -> tuple[str, ...]:
    """The optional keys ``includefield=all`` adds, for the same levels as :func:`default_keys`."""
    if level == "STUDY":
        return STUDY_OPTIONAL
    if level == "SERIES":
        return SERIES_OPTIONAL if study_uid else (*STUDY_OPTIONAL, *SERIES_OPTIONAL)
    keys: tuple[str, ...] = IMAGE_OPTIONAL
    if not series_uid:
        keys = (*SERIES_OPTIONAL, *keys)
    if not study_uid:
        keys = (*STUDY_OPTIONAL, *keys)
    return keys


def _single(name: str, seen: set[str]) -> None:
    if name in seen:
        raise BadRequest(f"the parameter {name!r} is given more than once")
    seen.add(name)


def _non_negative(name: str, value: str) -> int:
    if not _DIGITS_RE.fullmatch(value):
        raise BadRequest(f"{name} must be a non-negative integer, not {value!r}")
    return int(value)


def parse_qido(
    level: Level,
    params: Sequence[tuple[str, str]],
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
) -> QidoQuery:
    """Build the C-FIND request of a QIDO-RS search.

    ``level`` and the path UIDs identify the resource: ``/studies`` (STUDY), ``/series`` or
    ``/studies/{s}/series`` (SERIES), ``/instances``, ``/studies/{s}/instances`` or
    ``/studies/{s}/series/{se}/instances`` (IMAGE). ``params`` are the decoded query parameters
    in order, repeats allowed.

    :raises BadRequest: unknown parameters or attributes, invalid values, repeated matching keys,
        keys below the query level, invalid ``limit``/``offset``/``fuzzymatching``.
    """
    if level not in _RANK:
        raise ValueError(f"invalid query level {level!r}")
    if series_uid and not study_uid and level == "IMAGE":
        raise ValueError("a series UID in the path needs the study UID")
    builder = _Builder(level)
    limit: int | None = None
    offset = 0
    fuzzy = False
    include_all = False
    includes: list[tuple[int, ...]] = []
    seen: set[str] = set()

    for name, value in params:
        if name in _RESERVED:
            if name == "limit":
                _single(name, seen)
                limit = _non_negative(name, value)
                if limit == 0:
                    raise BadRequest("limit must be a positive integer, not 0")
            elif name == "offset":
                _single(name, seen)
                offset = _non_negative(name, value)
            elif name == "fuzzymatching":
                _single(name, seen)
                if value not in ("true", "false"):
                    raise BadRequest(f"fuzzymatching must be 'true' or 'false', not {value!r}")
                fuzzy = value == "true"
            elif name == "includefield":
                for item in value.split(","):
                    item = item.strip()
                    if not item:
                        continue
                    if item == "all":
                        include_all = True
                    else:
                        includes.append(_resolve_path(item))
            continue  # accept / charset belong to the HTTP layer
        if not name:
            raise BadRequest("a query parameter has an empty name")
        builder.match(_resolve_path(name), name, value)

    if study_uid:
        builder.match_uid(_STUDY_UID, study_uid, "study")
    if series_uid:
        builder.match_uid(_SERIES_UID, series_uid, "series")

    for keyword in default_keys(level, study_uid=study_uid, series_uid=series_uid):
        builder.include((_tag(keyword),))
    if include_all:
        for keyword in _optional_keys(level, study_uid, series_uid):
            builder.include((_tag(keyword),))
    for path in includes:
        builder.include(path)

    if _needs_utf8(builder.identifier):
        builder.identifier.add(_element(_SPECIFIC_CHARACTER_SET, "CS", "ISO_IR 192"))
    return QidoQuery(
        level=level,
        identifier=builder.identifier,
        limit=limit,
        offset=offset,
        fuzzymatching=fuzzy,
        include_all=include_all,
    )


def _needs_utf8(dataset: Dataset) -> bool:
    """Whether any text value is outside ASCII (then the identifier declares UTF-8)."""
    for elem in dataset.iterall():
        values = elem.value if isinstance(elem.value, MultiValue | list) else [elem.value]
        for value in values:
            if isinstance(value, str | PersonName) and not str(value).isascii():
                return True
    return False


# --- Results → DICOM JSON ----------------------------------------------------------------------


def _strip_binary(json_value: dict[str, Any]) -> None:
    """Drop binary-VR attributes inside sequence items of a DICOM JSON element (in place)."""
    if json_value.get("vr") != "SQ":
        return
    for item in json_value.get("Value", []):
        for key in [k for k, v in item.items() if v.get("vr") in _BINARY_VRS]:
            del item[key]
        for value in item.values():
            _strip_binary(value)


def _single_uid(query: QidoQuery, tag: int) -> str | None:
    """The UID the query pins ``tag`` to (path or single-valued matching key), if any."""
    elem = query.identifier.get(tag)
    if elem is None or elem.VM != 1:
        return None
    value = str(elem.value)
    return value if value else None


def to_dicom_json(
    query: QidoQuery, identifier: Dataset, retrieve_url: str | None
) -> dict[str, Any]:
    """Render one C-FIND response identifier as a DICOM JSON object.

    Keeps the attributes of the request identifier (matching and return keys, which include the
    resource's default keys) or everything with ``includefield=all``; drops QueryRetrieveLevel,
    groups 0000/0002 and binary VRs; adds RetrieveURL when ``retrieve_url`` is given. Missing
    attributes are not invented, except Study/Series Instance UID when the query pins them.
    """
    wanted = set(query.identifier.keys()) - {_QUERY_RETRIEVE_LEVEL}
    out: dict[str, Any] = {}
    for tag in list(identifier.keys()):
        group = tag >> 16
        if group in (0x0000, 0x0002) or tag in (_QUERY_RETRIEVE_LEVEL, _RETRIEVE_URL):
            continue
        if not query.include_all and tag not in wanted:
            continue
        elem: DataElement = identifier[tag]
        if " or " in elem.VR:
            try:
                correct_ambiguous_vr_element(elem, identifier, True)  # fixes elem.VR in place
            except Exception:  # pydicom cannot decide: leave the attribute out
                continue
        if elem.VR in _BINARY_VRS or " or " in elem.VR:
            continue
        value = elem.to_json_dict(bulk_data_element_handler=None, bulk_data_threshold=1024)
        _strip_binary(value)
        out[f"{tag:08X}"] = value
    for uid_tag in (_STUDY_UID, _SERIES_UID):
        key = f"{uid_tag:08X}"
        if uid_tag in wanted and not out.get(key, {}).get("Value"):
            uid = _single_uid(query, uid_tag)
            if uid is not None:
                out[key] = {"vr": "UI", "Value": [uid]}
    if retrieve_url is not None:
        out[f"{_RETRIEVE_URL:08X}"] = {"vr": "UR", "Value": [retrieve_url]}
    return dict(sorted(out.items()))
