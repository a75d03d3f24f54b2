"""Rendered images of DICOM pixel data (PS3.18 §8.3.5, §8.7.4): a data set in, JPEG/PNG/GIF out.

Sans-IO and free of trio: the WADO-RS rendered and thumbnail resources parse their parameters
with :mod:`rst.dicom.render_params` (every malformed value is a 400 before the archive is asked
for anything) and call :func:`render` on a worker thread. The pixel pipeline is PS3.4 N.2's,
built from pydicom's own transforms — decoding (any transfer syntax its plugins handle, YBR
converted to RGB), palette colour (:mod:`rst.dicom.display`), Modality LUT / rescale, VOI LUT or
window (LINEAR, LINEAR_EXACT, SIGMOID; :mod:`rst.dicom.voi`) — then, as §8.3.5.1 orders, the
source region, then the viewport (:mod:`rst.dicom.viewport`, Pillow), then the encoder (Pillow,
here). Nothing here writes a codec or LUT arithmetic of its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from io import BytesIO

import numpy as np
from pydicom import Dataset, dcmread

from rst.dicom.display import display_frame
from rst.dicom.render_params import GIF, JPEG, PNG, Rendering, Viewport
from rst.dicom.viewport import fit_viewport
from rst.errors import NotAcceptable, NotFound, NotSupported

__all__ = [
    "GIF",
    "Rendering",
    "Viewport",
    "frame_indices",
    "has_pixels",
    "number_of_frames",
    "read_dataset",
    "render",
    "require_pixels",
]
# GIF, Rendering and Viewport are re-exported for rst/services/rendered.py, which imports them
# from here; every other caller imports them from rst.dicom.render_params.

FRAME_TIME_MS = 100
"""Time per frame of an animated GIF when the instance gives no Frame Time (0018,1063)."""
_PIL_FORMATS = {JPEG: "JPEG", PNG: "PNG", GIF: "GIF"}


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
    viewport, window = rendering.viewport, rendering.window
    if len(indices) != 1 and rendering.media_type != GIF:
        raise NotAcceptable(f"{len(indices)} frames make one image only as {GIF}")
    # Extreme windows or rescale values overflow to inf and NaN: they render black or white,
    # they do not warn.
    with np.errstate(all="ignore"):
        images = [
            fit_viewport(display_frame(ds, i, window, i if held is None else held[i]), viewport)
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
