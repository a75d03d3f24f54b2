"""Rendered images of DICOM pixel data (PS3.18 §8.3.5, §8.7.4): a data set in, JPEG/PNG/GIF out.

Sans-IO and free of trio: the WADO-RS rendered and thumbnail resources parse their parameters
here (every malformed value is a 400 before the archive is asked for anything) and call
:func:`render` on a worker thread. The pixel pipeline is PS3.4 N.2's, built from pydicom's own
transforms — decoding (any transfer syntax its plugins handle, YBR converted to RGB), Modality
LUT / rescale, VOI LUT or window (LINEAR, LINEAR_EXACT, SIGMOID), palette colour — then, as
§8.3.5.1 orders, the source region, then the viewport (Pillow), then the encoder (Pillow).
Nothing here writes a codec or LUT arithmetic of its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Literal, cast

import numpy as np
from PIL import Image
from pydicom import Dataset, dcmread
from pydicom.multival import MultiValue
from pydicom.pixels.processing import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi,
    apply_windowing,
)
from pydicom.pixels.utils import pixel_array

from rst.dicom.accept import MediaRange, parse_accept
from rst.errors import BadRequest, NotAcceptable, NotFound, NotSupported

__all__ = [
    "DEFAULT_QUALITY",
    "GIF",
    "JPEG",
    "MAX_VIEWPORT",
    "PNG",
    "RENDERED_TYPES",
    "Region",
    "RenderedFormat",
    "Rendering",
    "Viewport",
    "Window",
    "frame_indices",
    "has_pixels",
    "negotiate_rendered",
    "number_of_frames",
    "parse_rendering",
    "read_dataset",
    "render",
    "require_pixels",
]

JPEG, PNG, GIF = "image/jpeg", "image/png", "image/gif"
RENDERED_TYPES = (JPEG, PNG, GIF)
"""What rst renders into, in the order it prefers them (JPEG is PS3.18's default)."""
DEFAULT_QUALITY = 90
"""JPEG quality when the request names none (what Orthanc uses too)."""
MAX_VIEWPORT = 8192
"""Largest viewport side rst renders to: a bigger one is a 400, not gigabytes of canvas."""
FRAME_TIME_MS = 100
"""Time per frame of an animated GIF when the instance gives no Frame Time (0018,1063)."""

WindowFunction = Literal["LINEAR", "LINEAR_EXACT", "SIGMOID"]
_FUNCTIONS: dict[str, WindowFunction] = {
    "LINEAR": "LINEAR",
    "LINEAR_EXACT": "LINEAR_EXACT",
    "LINEAR-EXACT": "LINEAR_EXACT",
    "SIGMOID": "SIGMOID",
}
_ANNOTATIONS = frozenset({"patient", "technique"})
_PIL_FORMATS = {JPEG: "JPEG", PNG: "PNG", GIF: "GIF"}


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


def _number(value: str, what: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise BadRequest(f"{what} must be a number, not {value!r}")
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
            None if not p else round(_number(p, f"viewport {n}"))
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
    center = _number(pieces[0], "window center")
    width = _number(pieces[1], "window width")
    function = _FUNCTIONS.get(pieces[2].upper()) if len(pieces) == 3 else "LINEAR"
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


# -- Pixels -------------------------------------------------------------------------------------


def read_dataset(data: bytes) -> Dataset:
    """A Part 10 instance as pydicom reads it (pixel data decoded later, frame by frame).

    :raises NotSupported: pydicom cannot read it.
    """
    try:
        return dcmread(BytesIO(data))
    except Exception as err:  # pydicom raises many kinds on damaged data
        raise NotSupported(f"rst cannot read the instance to render it: {err}") from err


def has_pixels(ds: Dataset) -> bool:
    """Whether *ds* holds an image rst can render (pixel data and its description)."""
    return "PixelData" in ds and "Rows" in ds and "Columns" in ds


def require_pixels(ds: Dataset) -> None:
    """:raises NotAcceptable: *ds* holds no image (an SR, a key object selection, ...)."""
    if not has_pixels(ds):
        raise NotAcceptable(
            f"the instance {ds.get('SOPInstanceUID', '')} (SOP class "
            f"{ds.get('SOPClassUID', 'unknown')}) has no pixel data to render as an image"
        )


def number_of_frames(ds: Dataset) -> int:
    return max(1, int(ds.get("NumberOfFrames") or 1))


def frame_indices(ds: Dataset, frames: Sequence[int]) -> list[int]:
    """0-based indices of the 1-based *frames* of *ds*.

    :raises NotFound: a frame past the last one.
    """
    count = number_of_frames(ds)
    beyond = [f for f in frames if f > count]
    if beyond:
        raise NotFound(
            f"the instance {ds.get('SOPInstanceUID', '')} has {count} frame(s); there is no "
            f"frame {', '.join(map(str, beyond))}"
        )
    return [f - 1 for f in frames]


def render(
    ds: Dataset,
    indices: Sequence[int],
    rendering: Rendering,
    held: Mapping[int, int] | None = None,
) -> bytes:
    """Render the frames *indices* (0-based) of *ds* as one image: a single frame in any of the
    media types, several as an animated GIF. *held*: where *ds*'s pixel data holds only some
    frames (read by ranges), the position of each frame index in it (the index itself still
    picks the frame's functional groups).

    :raises NotAcceptable: *ds* holds no image, or several frames are asked of a single-frame
        media type.
    :raises NotSupported: the pixel data cannot be decoded (no decoder for its syntax, or
        damaged).
    :raises BadRequest: the viewport's source region lies outside the image.
    """
    require_pixels(ds)
    viewport = rendering.viewport
    if len(indices) != 1 and rendering.media_type != GIF:
        raise NotAcceptable(f"{len(indices)} frames make one image only as {GIF}")
    # Extreme windows or rescale values overflow to inf and NaN: they render black or white,
    # they do not warn.
    with np.errstate(all="ignore"):
        images = [
            _scaled(_display(ds, i, rendering.window, i if held is None else held[i]), viewport)
            for i in indices
        ]
    out = BytesIO()
    first, rest = images[0], images[1:]
    if rendering.media_type == JPEG:
        first.save(out, "JPEG", quality=rendering.quality)  # baseline, as §8.7.4 requires
    elif rest:
        duration = round(float(ds.get("FrameTime") or FRAME_TIME_MS))
        first.save(out, "GIF", save_all=True, append_images=rest, duration=duration, loop=0)
    else:
        first.save(out, _PIL_FORMATS[rendering.media_type])
    return out.getvalue()


def _display(ds: Dataset, index: int, window: Window | None, at: int) -> Image.Image:
    """Frame *index* of *ds* (at *at* in its pixel data) as 8-bit grey or RGB: PS3.4 N.2 up to
    the presentation LUT."""
    try:
        stored = pixel_array(ds, index=at)  # YBR_* arrive converted to RGB
    except Exception as err:  # no decoder plugin, or damaged pixel data
        meta = getattr(ds, "file_meta", None)
        syntax = "unknown" if meta is None else meta.get("TransferSyntaxUID", "unknown")
        raise NotSupported(
            f"rst cannot decode frame {index + 1} of the instance {ds.get('SOPInstanceUID', '')} "
            f"(transfer syntax {syntax}): {err}"
        ) from err
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric == "PALETTE COLOR":
        return Image.fromarray(_to_8bit(apply_color_lut(stored, ds)))
    if stored.ndim == 3:  # RGB, or YBR decoded to RGB
        bits = int(ds.get("BitsStored") or 8)
        return Image.fromarray(_to_8bit(stored, bits))
    view = _frame_view(ds, index)
    grey = _voi(apply_modality_lut(stored, view), view, window)
    if photometric == "MONOCHROME1":
        grey = 255 - grey
    return Image.fromarray(grey)  # uint8: mode L


def _to_8bit(array: np.ndarray, bits: int | None = None) -> np.ndarray:
    """Colour samples to 8 bits: uint8 as they are, wider ones scaled from *bits* (their
    Bits Stored) or from their type's full range."""
    if array.dtype == np.uint8:
        return array
    top = float(2**bits - 1) if bits else float(np.iinfo(array.dtype).max)
    return np.clip(np.rint(array.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)


def _voi(values: np.ndarray, view: Dataset, window: Window | None) -> np.ndarray:
    """Modality values to 0-255: the request's window, else the data set's first VOI LUT or
    window preset, else the frame's own min/max."""
    if window is not None:
        return _windowed(values, window)
    if view.get("VOILUTSequence"):
        item = view.VOILUTSequence[0]
        if item.get("LUTDescriptor") and item.get("LUTData") is not None:
            mapped = apply_voi(np.rint(values).astype(np.int64), view).astype(np.float64)
            lut = apply_voi(np.arange(*_lut_inputs(item)), view)  # its whole output range
            return _stretch(mapped, float(lut.min()), float(lut.max()))
    preset = _preset(view)
    if preset is not None:
        return _windowed(values, preset)
    return _stretch(values.astype(np.float64), float(values.min()), float(values.max()))


def _lut_inputs(item: Dataset) -> tuple[int, int]:
    entries, first = int(item.LUTDescriptor[0]) or 2**16, int(item.LUTDescriptor[1])
    return first, first + entries


def _preset(view: Dataset) -> Window | None:
    """The first window preset of the data set, if it makes a valid window."""
    if view.get("WindowCenter") is None or view.get("WindowWidth") is None:
        return None
    center, width = view["WindowCenter"].value, view["WindowWidth"].value
    center = center[0] if isinstance(center, MultiValue) else center
    width = width[0] if isinstance(width, MultiValue) else width
    function = _FUNCTIONS.get(str(view.get("VOILUTFunction") or "LINEAR").strip().upper())
    try:
        center, width = float(center), float(width)
    except (TypeError, ValueError):
        return None
    if function is None or width <= 0 or (function == "LINEAR" and width < 1):
        return None
    return Window(center, width, function)


def _windowed(values: np.ndarray, window: Window) -> np.ndarray:
    """pydicom's windowing, told that its output is 8 bits unsigned: 0-255 directly."""
    target = Dataset()
    target.PhotometricInterpretation = "MONOCHROME2"
    target.BitsStored = 8
    target.PixelRepresentation = 0
    target.WindowCenter = window.center
    target.WindowWidth = window.width
    target.VOILUTFunction = window.function
    out = np.asarray(apply_windowing(values.astype(np.float64), target), dtype=np.float64)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _stretch(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


_VIEW_KEYWORDS = (
    "PhotometricInterpretation",
    "BitsStored",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "ModalityLUTSequence",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "VOILUTSequence",
)


def _frame_view(ds: Dataset, index: int) -> Dataset:
    """The Modality LUT and VOI LUT attributes that apply to frame *index*: the top level,
    overridden by the shared and then the per-frame functional groups of enhanced multi-frame
    objects (Pixel Value Transformation, Frame VOI LUT)."""
    view = Dataset()
    for keyword in _VIEW_KEYWORDS:
        if keyword in ds:
            view[keyword] = ds[keyword]
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        view.file_meta = meta  # the byte order of OW LUT data
    implicit, little = ds.original_encoding
    view.set_original_encoding(implicit, little, ds.original_character_set)
    groups = []
    if ds.get("SharedFunctionalGroupsSequence"):
        groups.append(ds.SharedFunctionalGroupsSequence[0])
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if index < len(per_frame):
        groups.append(per_frame[index])
    for group in groups:
        for sequence in ("PixelValueTransformationSequence", "FrameVOILUTSequence"):
            for item in cast(list[Dataset], group.get(sequence) or [])[:1]:
                for element in item:
                    view[element.tag] = element
    return view


def _scaled(image: Image.Image, viewport: Viewport | None) -> Image.Image:
    """The source region of *image*, then scaled to fit the viewport (PS3.18 §8.3.5.1.3)."""
    if viewport is None:
        return image
    if viewport.region is not None:
        image = _region(image, viewport.region)
    width, height = image.size
    scales = []
    if viewport.width is not None:
        scales.append(viewport.width / width)
    if viewport.height is not None:
        scales.append(viewport.height / height)
    scale = min(scales)
    size = (
        min(MAX_VIEWPORT, max(1, round(width * scale))),
        min(MAX_VIEWPORT, max(1, round(height * scale))),
    )
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS)


def _region(image: Image.Image, region: Region) -> Image.Image:
    width, height = image.size
    if region.x >= width or region.y >= height:
        raise BadRequest(
            f"the viewport's source region starts at ({region.x}, {region.y}), outside the "
            f"{width}x{height} image"
        )
    right = width if region.width is None else min(width, region.x + abs(region.width))
    bottom = height if region.height is None else min(height, region.y + abs(region.height))
    image = image.crop((region.x, region.y, right, bottom))
    if region.width is not None and region.width < 0:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if region.height is not None and region.height < 0:
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return image
