"""WADO-URI requests (PS3.18 chapter 9, the URI Service): a query string in, what to answer out.

Sans-IO, like :mod:`rst.dicom.render`: the route hands over the query parameters and the
``Accept`` header and gets back one of the two transactions of the service, checked whole —
a missing, repeated or malformed parameter is a 400, a media type or transfer syntax rst cannot
produce a 406 — before anything reaches the archive:

- :class:`DicomRequest`, Retrieve DICOM Instance (§9.4): the instance as a Part 10 file, in
  Explicit VR Little Endian unless ``transferSyntax`` names another (§9.4.2.4, §8.7.3.4);
- :class:`RenderedRequest`, Retrieve Rendered Instance (§9.5): a JPEG (the default, §9.3), PNG
  or GIF. Its parameters map onto those of the WADO-RS rendered resources (``rows`` and
  ``columns`` onto the viewport, ``region`` onto its source region, ``windowCenter`` and
  ``windowWidth`` onto the window), so that one pipeline renders both.

The media type comes from ``contentType`` (the service's accept query parameter, §9.1.2.2.1),
which replaces the ``Accept`` header: OHIF's image loader sends ``contentType=application/dicom``
along with an ``Accept`` meant for WADO-RS frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from pydicom.uid import UID

from rst.dicom.accept import MediaRange, parse_accept
from rst.dicom.part10 import encodable_syntaxes
from rst.dicom.render_params import (
    DEFAULT_QUALITY,
    GIF,
    JPEG,
    MAX_VIEWPORT,
    PNG,
    Region,
    Rendering,
    Viewport,
    Window,
    parse_number,
)
from rst.dicom.uid import check_uid
from rst.dicom.uids import EXPLICIT_VR_LITTLE_ENDIAN
from rst.errors import BadRequest, NotAcceptable, NotSupported

__all__ = [
    "AS_STORED",
    "DICOM",
    "URI_MEDIA_TYPES",
    "DicomRequest",
    "RenderedRequest",
    "SourceRegion",
    "WadoUriRequest",
    "negotiate_uri",
    "parse_wado_uri",
    "transcodable",
]

DICOM = "application/dicom"
URI_MEDIA_TYPES = (JPEG, PNG, GIF, DICOM)
"""What the URI service of rst answers with, JPEG first: it is the default (§9.3)."""
AS_STORED = "*"
"""``transferSyntax=*``: the instance as the archive sent it. PS3.18 defines ``*`` for the
``transfer-syntax`` media type parameter only, but OHIF's ``wadouri`` loader sends it here."""

_PARAMETERS = frozenset(
    {
        "requestType",
        "studyUID",
        "seriesUID",
        "objectUID",
        "contentType",
        "charset",
        "anonymize",
        "transferSyntax",
        "frameNumber",
        "rows",
        "columns",
        "region",
        "windowCenter",
        "windowWidth",
        "imageQuality",
        "annotation",
        "imageAnnotation",
        "presentationUID",
        "presentationSeriesUID",
    }
)
"""The parameters of PS3.18 §9.1.2, §9.4.1 and §9.5.1 (names are case-sensitive). Each may be
given once; other names are ignored (§8.3), such as the ``frame`` Cornerstone keeps in its
image ids."""
_MAX_FRAME_DIGITS = 9


@cache
def transcodable() -> frozenset[str]:
    """The transfer syntaxes rst can send any instance in: Explicit VR Little Endian (the
    default of web services) and the lossless encodings whose encoder is installed. Any other
    syntax only for an instance stored in it."""
    return frozenset({EXPLICIT_VR_LITTLE_ENDIAN, *encodable_syntaxes()})


@dataclass(frozen=True)
class WadoUriRequest:
    """The instance a WADO-URI request names (``studyUID``, ``seriesUID``, ``objectUID``)."""

    study_uid: str
    series_uid: str
    sop_uid: str


@dataclass(frozen=True)
class DicomRequest(WadoUriRequest):
    """Retrieve DICOM Instance (§9.4): the instance as a Part 10 file (``application/dicom``)."""

    transfer_syntax: str | None = EXPLICIT_VR_LITTLE_ENDIAN
    """The syntax to send the instance in; ``None`` for as stored (``transferSyntax=*``)."""


@dataclass(frozen=True)
class SourceRegion:
    """``region=left,top,right,bottom`` (§9.5.1.2.5): a rectangle of the image in coordinates
    relative to its size, 0.0 the first row or column, 1.0 the far edge of the last."""

    left: float
    top: float
    right: float
    bottom: float

    def pixels(self, rows: int, columns: int) -> Region:
        """The region in pixels of an image of *rows* x *columns*: every pixel the rectangle
        touches, at least one."""
        x, y = math.floor(self.left * columns), math.floor(self.top * rows)
        right, bottom = math.ceil(self.right * columns), math.ceil(self.bottom * rows)
        return Region(x, y, max(1, right - x), max(1, bottom - y))


@dataclass(frozen=True)
class RenderedRequest(WadoUriRequest):
    """Retrieve Rendered Instance (§9.5): one image of the instance."""

    media_type: str = JPEG
    frame: int | None = None
    """``frameNumber``, 1-based; ``None``: the first frame (all of them for a GIF)."""
    rows: int | None = None
    columns: int | None = None
    region: SourceRegion | None = None
    window: Window | None = None
    quality: int = DEFAULT_QUALITY

    def rendering(self, rows: int, columns: int) -> Rendering:
        """The rendering parameters for an image of *rows* x *columns* pixels.

        ``rows`` and ``columns`` are maxima, the aspect ratio kept (§9.5.1.2.4): the viewport
        the image is fitted into. Without them the image, or its region, keeps its size.
        """
        region = None if self.region is None else self.region.pixels(rows, columns)
        viewport = None
        if self.rows is not None or self.columns is not None:
            viewport = Viewport(self.columns, self.rows, region)
        elif region is not None:
            viewport = Viewport(region.width, region.height, region)
        return Rendering(self.media_type, self.quality, viewport, self.window)


def parse_wado_uri(
    params: Sequence[tuple[str, str]], accept: str | None = None
) -> DicomRequest | RenderedRequest:
    """The transaction a WADO-URI query asks for (PS3.18 §9.1.2, §9.4.1, §9.5.1).

    *params* are the query parameters in order (repeated ones repeated); *accept* is the
    ``Accept`` header, used when there is no ``contentType``.

    :raises BadRequest: ``requestType`` is not ``WADO``; a UID is missing or malformed; a
        parameter is repeated or malformed; ``transferSyntax`` with a rendered media type.
    :raises NotAcceptable: no media type (or transfer syntax) asked for can be produced.
    :raises NotSupported: ``anonymize`` or a presentation state, which rst does not apply.
    """
    values = _single_values(params)
    request_type = values.get("requestType")
    if request_type is None:
        raise BadRequest("a WADO-URI request needs requestType=WADO (PS3.18 §9.1.2)")
    if request_type != "WADO":
        raise BadRequest(f"requestType must be WADO, not {request_type!r} (PS3.18 §9.1.2)")
    uids = (
        _uid(values, "studyUID", "study"),
        _uid(values, "seriesUID", "series"),
        _uid(values, "objectUID", "SOP instance"),
    )
    media_type = negotiate_uri(values.get("contentType"), accept)
    if media_type == DICOM:
        if "anonymize" in values:
            raise NotSupported(
                "rst does not de-identify instances (anonymize, PS3.18 §9.4): ask without "
                "anonymize for the instance as it is"
            )
        return DicomRequest(*uids, transfer_syntax=_transfer_syntax(values.get("transferSyntax")))
    if "transferSyntax" in values:
        raise BadRequest(
            f"transferSyntax applies to contentType={DICOM} only, not to {media_type} "
            "(PS3.18 §9.4.2.4)"
        )
    for name in ("presentationUID", "presentationSeriesUID"):
        if name in values:
            raise NotSupported(
                f"rst does not apply presentation states ({name}, PS3.18 §9.5.1.2.7): ask "
                "without it for the instance rendered with its own window"
            )
    return RenderedRequest(
        *uids,
        media_type=media_type,
        frame=_frame_number(values.get("frameNumber")),
        rows=_side(values.get("rows"), "rows"),
        columns=_side(values.get("columns"), "columns"),
        region=_region(values.get("region")),
        window=_window(values.get("windowCenter"), values.get("windowWidth")),
        quality=_quality(values.get("imageQuality")),
    )


def negotiate_uri(content_type: str | None, accept: str | None = None) -> str:
    """The media type to answer with: from ``contentType`` (which replaces the ``Accept``
    header), else from ``Accept``; ``image/jpeg`` when neither expresses a preference (§9.3).

    q-values are honoured; ``image/*`` and ``*/*`` mean the first of JPEG, PNG, GIF (and then
    DICOM, for ``*/*``) not refused with ``q=0``; ``application/*`` means ``application/dicom``.

    :raises NotAcceptable: nothing acceptable is among :data:`URI_MEDIA_TYPES`.
    :raises BadRequest: ``application/dicom`` with a ``transfer-syntax`` parameter, which the
        URI service forbids (PS3.18 §8.7.3.5.2): ``transferSyntax`` says it.
    """
    source = content_type if content_type is not None and content_type.strip() else accept
    if source is None or not source.strip():
        return JPEG
    ranges = parse_accept(source)
    refused = {r.media_type for r in ranges if r.q == 0}
    for media_range in sorted((r for r in ranges if r.q > 0), key=lambda r: -r.q):
        chosen = _uri_choice(media_range, refused)
        if chosen is None:
            continue
        if chosen == DICOM and "transfer-syntax" in media_range.params:
            raise BadRequest(
                "the URI service takes no transfer-syntax media type parameter (PS3.18 "
                "§8.7.3.5.2): give it as transferSyntax=<uid>"
            )
        return chosen
    shown = source if len(source) <= 200 else source[:200] + "..."
    raise NotAcceptable(
        f"cannot produce any media type in {shown!r}; the URI service of rst answers "
        f"{', '.join(URI_MEDIA_TYPES)}"
    )


def _uri_choice(media_range: MediaRange, refused: set[str]) -> str | None:
    media_type = media_range.media_type
    if media_type in URI_MEDIA_TYPES:
        return media_type
    candidates: tuple[str, ...] = ()
    if media_type == "image/*":
        candidates = (JPEG, PNG, GIF)
    elif media_type == "*/*":
        candidates = URI_MEDIA_TYPES
    elif media_type == "application/*":
        candidates = (DICOM,)
    return next((c for c in candidates if c not in refused), None)


def _single_values(params: Sequence[tuple[str, str]]) -> dict[str, str]:
    values: dict[str, str] = {}
    for name, value in params:
        if name not in _PARAMETERS:
            continue
        if name in values:
            raise BadRequest(f"the {name} parameter is given more than once")
        values[name] = value
    return values


def _uid(values: dict[str, str], name: str, what: str) -> str:
    value = values.get(name)
    if value is None:
        raise BadRequest(
            f"a WADO-URI request needs {name}: studyUID, seriesUID and objectUID name the "
            "instance (PS3.18 §9.1.2)"
        )
    return check_uid(what, value)


def _transfer_syntax(value: str | None) -> str | None:
    """``transferSyntax`` (§9.4.2.4): absent is Explicit VR Little Endian, ``*`` as stored.

    A value that is not a UID is a 400. A UID rst cannot send an instance in is a 406 at once
    (Implicit VR and Big Endian shall not be used in web services, PS3.18 §8.7.3); a compressed
    syntax rst cannot encode into passes here and is a 406 later unless the instance is stored
    in it.
    """
    if value is None:
        return EXPLICIT_VR_LITTLE_ENDIAN
    value = value.strip()
    if value == AS_STORED:
        return None
    syntax = UID(check_uid("transfer syntax", value))
    if value in transcodable() or (syntax.is_transfer_syntax and syntax.is_encapsulated):
        return value
    named = syntax.name if syntax.is_transfer_syntax else "not a transfer syntax rst knows"
    raise NotAcceptable(
        f"rst does not send instances in transfer syntax {value} ({named}): ask for "
        f"{', '.join(sorted(transcodable()))}, * (as stored) or a compressed syntax the "
        "instance is stored in"
    )


def _is_uint(value: str) -> bool:
    """ASCII digits only (``str.isdigit`` also takes "²", which ``int`` refuses)."""
    return value.isascii() and value.isdigit()


def _frame_number(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    if not _is_uint(value) or len(value) > _MAX_FRAME_DIGITS or int(value) == 0:
        raise BadRequest(
            f"frameNumber must be a frame number (1, 2, ...; PS3.18 §9.5.1.2.1), not {value!r}"
        )
    return int(value)


def _side(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    value = value.strip()
    if not _is_uint(value) or not 1 <= int(value) <= MAX_VIEWPORT:
        raise BadRequest(
            f"{name} must be an integer from 1 to {MAX_VIEWPORT} (PS3.18 §9.5.1.2.4), not {value!r}"
        )
    return int(value)


def _quality(value: str | None) -> int:
    if value is None:
        return DEFAULT_QUALITY
    value = value.strip()
    if not _is_uint(value) or not 1 <= int(value) <= 100:
        raise BadRequest(
            f"imageQuality must be an integer from 1 to 100 (PS3.18 §9.5.1.2.3), not {value!r}"
        )
    return int(value)


def _decimal(value: str, what: str) -> float:
    return parse_number(value, what, "a decimal number")


def _region(value: str | None) -> SourceRegion | None:
    """``left,top,right,bottom``, each from 0.0 to 1.0, right of left and below top."""
    if value is None:
        return None
    pieces = value.split(",")
    if len(pieces) != 4:
        raise BadRequest(
            f"region must be four decimals left,top,right,bottom from 0.0 to 1.0 "
            f"(PS3.18 §9.5.1.2.5), not {value!r}"
        )
    left, top, right, bottom = (_decimal(p.strip(), "each region value") for p in pieces)
    if not all(0.0 <= v <= 1.0 for v in (left, top, right, bottom)):
        raise BadRequest(f"region values must be from 0.0 to 1.0: {value!r}")
    if not (left < right and top < bottom):
        raise BadRequest(
            f"region must have its right of its left and its bottom below its top: {value!r}"
        )
    return SourceRegion(left, top, right, bottom)


def _window(center: str | None, width: str | None) -> Window | None:
    """``windowCenter`` and ``windowWidth`` (§9.5.1.2.6), both or neither: a LINEAR window
    (PS3.3 C.11.2.1.2), so a width of at least 1."""
    if center is None and width is None:
        return None
    if center is None or width is None:
        given, missing = (
            ("windowCenter", "windowWidth") if width is None else ("windowWidth", "windowCenter")
        )
        raise BadRequest(f"{given} needs {missing} too (PS3.18 §9.5.1.2.6)")
    window_center = _decimal(center.strip(), "windowCenter")
    window_width = _decimal(width.strip(), "windowWidth")
    if window_width < 1:
        raise BadRequest(f"windowWidth must be at least 1 (PS3.3 C.11.2.1.2), not {width!r}")
    return Window(window_center, window_width, "LINEAR")
