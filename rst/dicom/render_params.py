"""What a rendered resource is asked for (PS3.18 §8.3.5): the media type, negotiated from
``Accept`` and the ``accept`` parameter, and the rendering parameters of the query (quality,
viewport, window, annotation), each malformed value a 400 before the archive is asked for
anything. Sans-IO and free of trio; :mod:`rst.dicom.render` makes the image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rst.dicom.accept import MediaRange, parse_accept
from rst.errors import BadRequest, NotAcceptable

__all__ = [
    "DEFAULT_QUALITY",
    "GIF",
    "JPEG",
    "MAX_VIEWPORT",
    "PNG",
    "RENDERED_TYPES",
    "WINDOW_FUNCTIONS",
    "Region",
    "RenderedFormat",
    "Rendering",
    "Viewport",
    "Window",
    "WindowFunction",
    "negotiate_rendered",
    "parse_number",
    "parse_rendering",
]

JPEG, PNG, GIF = "image/jpeg", "image/png", "image/gif"
RENDERED_TYPES = (JPEG, PNG, GIF)
"""What rst renders into, in the order it prefers them (JPEG is PS3.18's default)."""
DEFAULT_QUALITY = 90
"""JPEG quality when the request names none (what Orthanc uses too)."""
MAX_VIEWPORT = 8192
"""Largest viewport side rst renders to: a bigger one is a 400, not gigabytes of canvas."""

WindowFunction = Literal["LINEAR", "LINEAR_EXACT", "SIGMOID"]
WINDOW_FUNCTIONS: dict[str, WindowFunction] = {
    "LINEAR": "LINEAR",
    "LINEAR_EXACT": "LINEAR_EXACT",
    "LINEAR-EXACT": "LINEAR_EXACT",
    "SIGMOID": "SIGMOID",
}
_ANNOTATIONS = frozenset({"patient", "technique"})

# -- Parameters ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """``window=center,width,function`` (PS3.18 §8.3.5.1.4; PS3.3 C.11.2.1.2 and C.11.2.1.3)."""

    center: float
    width: float
    function: WindowFunction = "LINEAR"


@dataclass(frozen=True)
class Region:
    """The source region of ``viewport=vw,vh,sx,sy,sw,sh``, in pixels of the source image.

    ``width``/``height`` are ``None`` for "to the edge"; negative ones flip the image."""

    x: int = 0
    y: int = 0
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class Viewport:
    """What the image is scaled to fit (aspect ratio kept); ``None`` leaves that side free."""

    width: int | None
    height: int | None
    region: Region | None = None


@dataclass(frozen=True)
class Rendering:
    """How to render: the media type and the PS3.18 §8.3.5 rendering parameters."""

    media_type: str = JPEG
    quality: int = DEFAULT_QUALITY
    viewport: Viewport | None = None
    window: Window | None = None


@dataclass(frozen=True)
class RenderedFormat:
    """The representation negotiated: one image of *media_type*, or a ``multipart/related``
    body with one such image per part."""

    media_type: str
    multipart: bool = False


def negotiate_rendered(
    accept: str | None, accept_param: str | None = None, *, multipart: bool = True
) -> RenderedFormat:
    """Choose the representation of a rendered (or, with ``multipart=False``, thumbnail)
    resource from ``Accept`` and the ``accept`` query parameter (which replaces it).

    ``image/jpeg``, ``image/png``, ``image/gif``; ``image/*``, ``*/*`` and no preference mean
    JPEG (or the first of the three not refused with ``q=0``);
    ``multipart/related; type="image/…"`` asks for one image per part.

    :raises NotAcceptable: the client accepts none of these.
    """
    source = accept_param if accept_param is not None and accept_param.strip() else accept
    if source is None or not source.strip():
        return RenderedFormat(JPEG)
    ranges = parse_accept(source)
    refused = {r.media_type for r in ranges if r.q == 0}
    for media_range in sorted((r for r in ranges if r.q > 0), key=lambda r: -r.q):
        chosen = _rendered_choice(media_range, refused, multipart)
        if chosen is not None:
            return chosen
    offer = ", ".join(RENDERED_TYPES)
    if multipart:
        offer += ' (or multipart/related; type="image/…" of them)'
    shown = source if len(source) <= 200 else source[:200] + "..."
    raise NotAcceptable(f"cannot produce any media type in Accept {shown!r}; rst renders {offer}")


def _rendered_choice(
    media_range: MediaRange, refused: set[str], multipart: bool
) -> RenderedFormat | None:
    media_type = media_range.media_type
    if media_type in RENDERED_TYPES:
        return RenderedFormat(media_type)
    if media_type in ("image/*", "*/*"):
        for candidate in RENDERED_TYPES:
            if candidate not in refused:
                return RenderedFormat(candidate)
        return None
    if multipart and media_type == "multipart/related":
        part_type = media_range.params.get("type", JPEG).strip().lower()
        if part_type in RENDERED_TYPES:
            return RenderedFormat(part_type, multipart=True)
    return None


def parse_rendering(
    params: Sequence[tuple[str, str]],
    media_type: str = JPEG,
    *,
    default_viewport: Viewport | None = None,
) -> Rendering:
    """The rendering parameters of a request's query (PS3.18 Table 8.3.5-1).

    ``quality`` (1-100; JPEG only), ``viewport``, ``window``; ``annotation`` is checked and
    ignored (rst burns nothing into images: patient data stays out of them); ``accept``,
    ``charset``, ``iccprofile`` and unknown parameters are ignored, as §8.3 asks.

    :raises BadRequest: a malformed or repeated value.
    """
    seen: set[str] = set()
    quality, viewport, window = DEFAULT_QUALITY, default_viewport, None
    for name, value in params:
        if name not in ("quality", "viewport", "window", "annotation"):
            continue
        if name in seen:
            raise BadRequest(f"the {name} parameter is given more than once")
        seen.add(name)
        if name == "quality":
            quality = _parse_quality(value)
        elif name == "viewport":
            viewport = _parse_viewport(value)
        elif name == "window":
            window = _parse_window(value)
        else:
            _check_annotation(value)
    return Rendering(media_type, quality, viewport, window)


def _parse_quality(value: str) -> int:
    if not _is_uint(value) or not 1 <= int(value) <= 100:
        raise BadRequest(f"quality must be an integer from 1 to 100, not {value!r}")
    return int(value)


def _is_uint(value: str) -> bool:
    """ASCII digits only (``str.isdigit`` also takes "²", which ``int`` refuses)."""
    value = value.strip()
    return value.isascii() and value.isdigit()


def parse_number(value: str, what: str, kind: str = "a number") -> float:
    """*value* as a finite float; else 400 saying *what* must be *kind*."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise BadRequest(f"{what} must be {kind}, not {value!r}")
    return number


def _parse_viewport(value: str) -> Viewport:
    """``vw,vh`` or ``vw,vh,sx,sy,sw,sh`` (PS3.18 §8.3.5.1.3); empty values take defaults."""
    pieces = [p.strip() for p in value.split(",")]
    if len(pieces) not in (2, 6):
        raise BadRequest(
            f"viewport must be vw,vh or vw,vh,sx,sy,sw,sh, not {value!r} ({len(pieces)} values)"
        )
    sides: list[int | None] = []
    for name, piece in zip(("vw", "vh"), pieces[:2], strict=True):
        if not piece:
            sides.append(None)
            continue
        if not _is_uint(piece) or not 1 <= int(piece) <= MAX_VIEWPORT:
            raise BadRequest(
                f"viewport {name} must be an integer from 1 to {MAX_VIEWPORT}, not {piece!r}"
            )
        sides.append(int(piece))
    if sides == [None, None]:
        raise BadRequest("viewport needs vw or vh")
    region = None
    if len(pieces) == 6:
        sx, sy, sw, sh = (
            None if not p else round(parse_number(p, f"viewport {n}"))
            for n, p in zip(("sx", "sy", "sw", "sh"), pieces[2:], strict=True)
        )
        if (sx or 0) < 0 or (sy or 0) < 0:
            raise BadRequest(f"viewport sx and sy must not be negative: {value!r}")
        if sw == 0 or sh == 0:
            raise BadRequest(f"viewport sw and sh must not be 0: {value!r}")
        region = Region(sx or 0, sy or 0, sw, sh)
    return Viewport(sides[0], sides[1], region)


def _parse_window(value: str) -> Window:
    """``center,width[,function]``; the function as PS3.18 spells it (``linear-exact``) or
    as PS3.3 does (``LINEAR_EXACT``), in any case; LINEAR when left out."""
    pieces = [p.strip() for p in value.split(",")]
    if len(pieces) not in (2, 3):
        raise BadRequest(f"window must be center,width,function, not {value!r}")
    center = parse_number(pieces[0], "window center")
    width = parse_number(pieces[1], "window width")
    function = WINDOW_FUNCTIONS.get(pieces[2].upper()) if len(pieces) == 3 else "LINEAR"
    if function is None:
        raise BadRequest(
            f"window function must be linear, linear-exact or sigmoid, not {pieces[2]!r}"
        )
    if function == "LINEAR" and width < 1:
        raise BadRequest(f"a LINEAR window needs a width of at least 1, not {pieces[1]!r}")
    if width <= 0:
        raise BadRequest(f"window width must be greater than 0, not {pieces[1]!r}")
    return Window(center, width, function)


def _check_annotation(value: str) -> None:
    keywords = [k.strip() for k in value.split(",")]
    unknown = [k for k in keywords if k not in _ANNOTATIONS]
    if unknown:
        raise BadRequest(f"annotation takes patient and/or technique, not {', '.join(unknown)!r}")
