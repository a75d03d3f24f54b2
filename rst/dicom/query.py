"""QIDO-RS (PS3.18 §10.6, §8.3.4) ↔ C-FIND (PS3.4 Annex C): build identifiers, render results.

:func:`parse_qido` turns a QIDO-RS request's query parameters (already percent-decoded) into the
C-FIND identifier to send, together with the paging and flag parameters; :func:`to_dicom_json`
turns each C-FIND response identifier into a DICOM JSON object (PS3.18 Annex F) holding the
requested attributes. Both are pure: no IO, no global state.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydicom import Dataset, config
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement, empty_value_for_VR
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from rst.dicom.dicom_json import encode_dataset
from rst.dicom.uid import check_uid
from rst.dicom.vr import BINARY_VRS, is_bulk, matching_value, shown
from rst.errors import BadRequest

__all__ = [
    "IMAGE_KEYS",
    "MAX_INCLUDEFIELDS",
    "MAX_PARAMETERS",
    "MAX_SEQUENCE_DEPTH",
    "SERIES_KEYS",
    "STUDY_KEYS",
    "Level",
    "Model",
    "Path",
    "QidoQuery",
    "decode_match",
    "decoded_form",
    "default_keys",
    "encode_match",
    "parse_qido",
    "parse_search",
    "resolve_path",
    "to_dicom_json",
]

log = logging.getLogger(__name__)

Level = Literal["STUDY", "SERIES", "IMAGE"]
Model = Literal["study-root", "worklist"]
"""The C-FIND information model a search runs in: Study Root Query/Retrieve (QIDO-RS) or
Modality Worklist (MWL-RS); the backend maps it to its SOP class."""
Path = tuple[int, ...]
"""An attribute: its tag, after the tags of the sequences it lies in."""
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

_HEX_TAG_RE = re.compile(r"[0-9A-Fa-f]{8}")
_DIGITS_RE = re.compile(r"[0-9]{1,18}")
_ITEM_GROUP = 0xFFFE
_BULK_SEQUENCES = frozenset({0x54000100, 0x00880200})
"""WaveformSequence and IconImageSequence: requested whole, their items bring bulk data."""

# --- Bounds on a query (each a 400 naming it when exceeded) ------------------------------------

MAX_SEQUENCE_DEPTH = 4
"""Sequences an attribute path may pass through (``A.B.C.D.Attr``). A C-FIND identifier has no
use for more, and pydicom's encoder costs grow with the square of the depth; at ~250 levels it
exhausts the stack and builds its error message exponentially (a 6 KB query took 19 GB)."""
MAX_PARAMETERS = 256
"""Query parameters of one request (matching keys and reserved parameters together)."""
MAX_INCLUDEFIELDS = 256
"""``includefield`` entries of one request (comma-separated or repeated)."""


@dataclass(frozen=True)
class QidoQuery:
    """A parsed QIDO-RS request.

    ``identifier`` is the C-FIND identifier to send (with QueryRetrieveLevel). ``limit`` is
    ``None`` when unlimited; ``fuzzymatching`` records that the client asked for fuzzy matching,
    which rst does not perform (the caller adds the Warning header); ``include_all`` is
    ``includefield=all``.

    ``model`` is the information model; a worklist query has no query levels (its identifier
    holds no QueryRetrieveLevel) and its ``level`` is ``STUDY``, the level its keys would have
    in a study-root query: whatever looks at ``level`` checks ``model`` first.
    """

    level: Level
    identifier: Dataset
    limit: int | None
    offset: int
    fuzzymatching: bool
    include_all: bool
    model: Model = "study-root"


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
                f"unknown query parameter or attribute {shown(name)}: {shown(component)} is "
                "neither a DICOM keyword nor an 8-digit hex tag (reserved parameters: "
                "limit, offset, fuzzymatching, includefield)"
            )
        tag = found
    try:
        dictionary_VR(tag)
    except KeyError:
        raise BadRequest(
            f"unknown attribute {component!r} in {shown(name)}: rst only queries public "
            "attributes of the DICOM data dictionary"
        ) from None
    group = tag >> 16
    if (
        group in (0x0000, 0x0002, _ITEM_GROUP)
        or group & 1
        or tag & 0xFFFF == 0  # group lengths
        or tag == _QUERY_RETRIEVE_LEVEL
    ):
        raise BadRequest(f"{shown(name)} cannot be used as a query key")
    return tag


def resolve_path(name: str) -> Path:
    """Parse ``Keyword``, ``GGGGEEEE`` or a dotted sequence path into a tuple of tags.

    The depth is checked first, before any work that grows with it."""
    if name.count(".") > MAX_SEQUENCE_DEPTH:
        raise BadRequest(
            f"the attribute path {shown(name)} is nested deeper than {MAX_SEQUENCE_DEPTH} "
            "sequences (rst's limit MAX_SEQUENCE_DEPTH)"
        )
    components = name.split(".")
    if any(not c for c in components):
        raise BadRequest(f"malformed attribute path {shown(name)}")
    path = tuple(_resolve_component(c, name) for c in components)
    for tag in path[:-1]:
        if _vr_of(tag) != "SQ":
            raise BadRequest(f"{shown(name)}: {_name(tag)} is not a sequence attribute")
    return path


def _name(tag: int) -> str:
    return keyword_for_tag(tag) or f"{tag:08X}"


def _path_name(path: tuple[int, ...]) -> str:
    return ".".join(_name(t) for t in path)


def _describe(path: tuple[int, ...]) -> str:
    """An attribute for messages: keywords and tags, e.g. ``Rows (00280010)``."""
    return f"{_path_name(path)} ({'.'.join(f'{t:08X}' for t in path)})"


def _element(tag: int, vr: str, value: Any) -> DataElement:
    """A DataElement with pydicom's value validation off (query values are not stored values)."""
    return DataElement(tag, vr, value, validation_mode=config.IGNORE)


def _empty_element(tag: int) -> DataElement:
    vr = _vr_of(tag)
    value: Any = [] if vr == "SQ" else empty_value_for_VR(vr)
    return _element(tag, vr, value)


class _Builder:
    """Accumulates the identifier: matching keys (each at most once) and return keys.

    ``level`` is the query level of a study-root query; ``None`` for a model without levels
    (no QueryRetrieveLevel, no level checks)."""

    def __init__(self, level: Level | None) -> None:
        self.level = level
        self.identifier = Dataset()
        if level is not None:
            self.identifier.add(_element(_QUERY_RETRIEVE_LEVEL, "CS", level))
        self.matched: set[tuple[int, ...]] = set()
        self.values: list[tuple[tuple[int, ...], DataElement]] = []
        """The matching keys holding a client's value, for :func:`_check_encodable`."""

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

    def match(self, path: tuple[int, ...], value: str) -> None:
        if path in self.matched:
            raise BadRequest(f"the attribute {_path_name(path)} is given more than once")
        rank = _level_of(path[0])
        if self.level is not None and rank is not None and rank > _RANK[self.level]:
            raise BadRequest(
                f"{_path_name(path)} is a {_level_name(rank)}-level attribute and cannot be a "
                f"matching key of a {self.level.lower()}-level query"
            )
        self.matched.add(path)
        tag = path[-1]
        if value == "":
            _check_returnable(path)  # an empty matching key is a return key too
            elem = _empty_element(tag)
        else:
            attr = _describe(path)
            vr, converted = matching_value(attr, dictionary_VR(tag), value)
            try:
                elem = _element(tag, vr, converted)
            except (ValueError, TypeError, OverflowError) as err:
                raise BadRequest(f"{attr}: invalid value {shown(value)} for VR {vr}") from err
            self.values.append((path, elem))
        container = self._container(path)
        existing = container.get(tag)
        if existing is not None and existing.VR == "SQ" and elem.VR == "SQ":
            return  # an empty sequence matching key already holding item keys
        container.add(elem)

    def match_uid(self, tag: int, uid: str, where: str) -> None:
        """A UID from the URL path: a single-value matching key."""
        check_uid(where, uid)
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
        if self.level is not None and rank is not None and rank > _RANK[self.level]:
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

    Every value taken from the client is encoded once, in both transfer syntaxes a PACS may
    accept, before the query is returned: whatever passed the VR checks but cannot be encoded is
    a 400 here, not a broken response stream later.

    :raises BadRequest: malformed path UIDs, unknown parameters or attributes, values their VR
        cannot hold, repeated matching keys, keys below the query level, bulk data in
        ``includefield``, invalid ``limit``/``offset``/``fuzzymatching``, a query over the
        bounds (:data:`MAX_PARAMETERS`, :data:`MAX_INCLUDEFIELDS`, :data:`MAX_SEQUENCE_DEPTH`).
    """
    if level not in _RANK:
        raise ValueError(f"invalid query level {level!r}")
    if series_uid is not None and study_uid is None and level == "IMAGE":
        raise ValueError("a series UID in the path needs the study UID")
    if study_uid is not None:
        check_uid("study", study_uid)
    if series_uid is not None:
        check_uid("series", series_uid)
    builder = _Builder(level)
    reserved = _read_params(params, builder, resolve_path)

    if study_uid is not None:
        builder.match_uid(_STUDY_UID, study_uid, "study")
    if series_uid is not None:
        builder.match_uid(_SERIES_UID, series_uid, "series")

    defaults = default_keys(level, study_uid=study_uid, series_uid=series_uid)
    optional = _optional_keys(level, study_uid, series_uid)
    return _finish(
        builder,
        reserved,
        level=level,
        model="study-root",
        defaults=[(_tag(keyword),) for keyword in defaults],
        optional=[(_tag(keyword),) for keyword in optional],
    )


def parse_search(
    params: Sequence[tuple[str, str]],
    *,
    model: Model,
    resolve: Callable[[str], Path],
    defaults: Iterable[Path],
    optional: Iterable[Path],
) -> QidoQuery:
    """Build the C-FIND request of a search in an information model without query levels (the
    Modality Worklist): the same parameters, checks and bounds as :func:`parse_qido`.

    ``resolve`` maps a parameter name to an attribute path (:func:`resolve_path`, or a model's
    own short forms around it); ``defaults`` are the return keys always asked for,
    ``optional`` those ``includefield=all`` adds."""
    builder = _Builder(None)
    reserved = _read_params(params, builder, resolve)
    return _finish(
        builder, reserved, level="STUDY", model=model, defaults=defaults, optional=optional
    )


@dataclass
class _Reserved:
    """The reserved parameters of a search (PS3.18 §8.3.4)."""

    limit: int | None = None
    offset: int = 0
    fuzzy: bool = False
    include_all: bool = False
    includes: list[Path] = field(default_factory=list)


def _read_params(
    params: Sequence[tuple[str, str]], builder: _Builder, resolve: Callable[[str], Path]
) -> _Reserved:
    """Add each matching key to *builder*; return the reserved parameters."""
    if len(params) > MAX_PARAMETERS:
        raise BadRequest(
            f"the query has {len(params)} parameters; rst takes at most {MAX_PARAMETERS} "
            "(its limit MAX_PARAMETERS)"
        )
    reserved = _Reserved()
    seen: set[str] = set()

    for name, value in params:
        if name in _RESERVED:
            if name == "limit":
                _single(name, seen)
                reserved.limit = _non_negative(name, value)
                if reserved.limit == 0:
                    raise BadRequest("limit must be a positive integer, not 0")
            elif name == "offset":
                _single(name, seen)
                reserved.offset = _non_negative(name, value)
            elif name == "fuzzymatching":
                _single(name, seen)
                if value not in ("true", "false"):
                    raise BadRequest(f"fuzzymatching must be 'true' or 'false', not {value!r}")
                reserved.fuzzy = value == "true"
            elif name == "includefield":
                for item in value.split(","):
                    item = item.strip()
                    if not item:
                        continue
                    if item == "all":
                        reserved.include_all = True
                    else:
                        path = resolve(item)
                        _check_returnable(path)
                        reserved.includes.append(path)
                    if len(reserved.includes) > MAX_INCLUDEFIELDS:
                        raise BadRequest(
                            f"more than {MAX_INCLUDEFIELDS} includefield entries "
                            "(rst's limit MAX_INCLUDEFIELDS)"
                        )
            continue  # accept / charset belong to the HTTP layer
        if not name:
            raise BadRequest("a query parameter has an empty name")
        builder.match(resolve(name), value)
    return reserved


def _finish(
    builder: _Builder,
    reserved: _Reserved,
    *,
    level: Level,
    model: Model,
    defaults: Iterable[Path],
    optional: Iterable[Path],
) -> QidoQuery:
    """Add the return keys and the character set; check that every client value encodes."""
    for path in defaults:
        builder.include(path)
    if reserved.include_all:
        for path in optional:
            builder.include(path)
    for path in reserved.includes:
        builder.include(path)

    if _needs_utf8(builder.identifier):
        builder.identifier.add(_element(_SPECIFIC_CHARACTER_SET, "CS", "ISO_IR 192"))
    _check_encodable(builder.values, builder.identifier.get(_SPECIFIC_CHARACTER_SET))
    return QidoQuery(
        level=level,
        identifier=builder.identifier,
        limit=reserved.limit,
        offset=reserved.offset,
        fuzzymatching=reserved.fuzzy,
        include_all=reserved.include_all,
        model=model,
    )


def _check_returnable(path: tuple[int, ...]) -> None:
    """Refuse bulk data as a return key: a PACS would send it with every match (or give up)."""
    tag = path[-1]
    vr = dictionary_VR(tag)
    if is_bulk(vr) or tag in _BULK_SEQUENCES:
        what = f"VR {vr}" if is_bulk(vr) else "a sequence of bulk data"
        raise BadRequest(
            f"{_describe(path)} is bulk data ({what}), which cannot be requested in a search; "
            "use WADO-RS"
        )


def _encode(dataset: Dataset, *, implicit: bool) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = implicit
    write_dataset(fp, dataset)
    return fp.getvalue()


def _check_encodable(
    values: Iterable[tuple[tuple[int, ...], DataElement]], charset: DataElement | None
) -> None:
    """Encode each client value as Explicit and Implicit VR Little Endian, or raise BadRequest.

    The belt under the value checks (a failure here means a check is missing, so it is logged).
    Only the elements holding a client's value are encoded, each with the character set: the
    rest of the identifier is rst's own (empty return keys, sequences of bounded depth, UIDs
    checked by :func:`check_uid`), and pydicom spends ~20 µs per element, which for
    ``includefield=all`` would be 3 ms per request.
    """
    for path, elem in values:
        alone = Dataset()
        if charset is not None:
            alone.add(copy.copy(charset))
        alone.add(copy.copy(elem))
        try:
            for implicit in (False, True):
                _encode(alone, implicit=implicit)
        except Exception as exc:
            log.warning("a QIDO value passed the VR checks but cannot be encoded: %r", exc)
            raise BadRequest(
                f"{_describe(path)}: the value cannot be encoded in a C-FIND identifier"
            ) from None


def _needs_utf8(dataset: Dataset) -> bool:
    """Whether any text value is outside ASCII (then the identifier declares UTF-8)."""
    for elem in dataset.iterall():
        values = elem.value if isinstance(elem.value, MultiValue | list) else [elem.value]
        for value in values:
            if isinstance(value, str | PersonName) and not str(value).isascii():
                return True
    return False


# --- Results → DICOM JSON ----------------------------------------------------------------------

_ENCODED = "_rst_dicom_json"
"""The attribute of a C-FIND match holding its DICOM JSON form (see :func:`decode_match`)."""
_DROPPED = frozenset(f"{tag:08X}" for tag in (_QUERY_RETRIEVE_LEVEL, _RETRIEVE_URL))


def _strip_binary(json_value: dict[str, Any]) -> None:
    """Drop binary-VR attributes inside sequence items of a DICOM JSON element (in place)."""
    if json_value.get("vr") != "SQ":
        return
    for item in json_value.get("Value", []):
        for key in [k for k, v in item.items() if v.get("vr") in BINARY_VRS]:
            del item[key]
        for value in item.values():
            _strip_binary(value)


def _no_uri(path: tuple[tuple[int, int], ...], tag: int) -> str:
    return ""  # binary values are dropped: no need to base64 them first


def encode_match(identifier: Dataset) -> dict[str, Any]:
    """Every returnable attribute of a C-FIND response identifier as DICOM JSON, whatever the
    query: groups 0000/0002, QueryRetrieveLevel, RetrieveURL, binary VRs and ambiguous VRs
    pydicom cannot resolve are left out.

    Encoded by :mod:`rst.dicom.dicom_json` from the raw elements (pydicom's writer for what it
    does not handle itself), strictly: a value that cannot be read raises.
    """
    encoded = encode_dataset(identifier, _always_bulk, _no_uri, strict=True)
    for key in list(encoded):
        value = encoded[key]
        vr = value.get("vr", "")
        if key[:4] in ("0000", "0002") or key in _DROPPED or vr in BINARY_VRS or " or " in vr:
            del encoded[key]
        else:
            _strip_binary(value)
    return encoded


def _always_bulk(path: tuple[tuple[int, int], ...], tag: int, length: int) -> bool:
    return True


def decode_match(identifier: Dataset) -> None:
    """Encode a C-FIND match as it arrives (:func:`encode_match`) and keep that form with it for
    :func:`to_dicom_json`: one decoding, and a value that cannot be read fails now rather than
    while the response streams. The match must not be changed afterwards.

    :raises Exception: whatever pydicom raises on a value it cannot read.
    """
    setattr(identifier, _ENCODED, encode_match(identifier))


def decoded_form(identifier: Dataset) -> dict[str, Any] | None:
    """The DICOM JSON form :func:`decode_match` kept with a match, if it did."""
    encoded: dict[str, Any] | None = getattr(identifier, _ENCODED, None)
    return encoded


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
    Uses the form :func:`decode_match` kept with the match, else encodes it now.
    """
    encoded = decoded_form(identifier)
    if encoded is None:
        encoded = encode_match(identifier)
    if query.include_all:
        out = dict(encoded)
    else:
        wanted = {f"{tag:08X}" for tag in query.identifier.keys()}  # noqa: SIM118 (no decoding)
        out = {key: value for key, value in encoded.items() if key in wanted}
    for uid_tag in (_STUDY_UID, _SERIES_UID):
        key = f"{uid_tag:08X}"
        if uid_tag in query.identifier and not out.get(key, {}).get("Value"):
            uid = _single_uid(query, uid_tag)
            if uid is not None:
                out[key] = {"vr": "UI", "Value": [uid]}
    if retrieve_url is not None:
        out[f"{_RETRIEVE_URL:08X}"] = {"vr": "UR", "Value": [retrieve_url]}
    return dict(sorted(out.items()))
