"""Grey frames to 8-bit display values: PS3.4 N.2's Modality LUT and VOI LUT stages.

:func:`frame_view` gathers the attributes that apply to one frame (top level, then the shared
and per-frame functional groups of enhanced multi-frame objects); :func:`voi` maps modality
values to 0-255 with the request's window, else the data set's VOI LUT or window preset, else
the frame's own range. The arithmetic is pydicom's (``apply_voi``, ``apply_windowing``).
"""

from __future__ import annotations

from typing import cast

import numpy as np
from pydicom import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels.processing import apply_voi, apply_windowing

from rst.dicom.render_params import WINDOW_FUNCTIONS, Window

__all__ = ["frame_view", "voi"]


def voi(values: np.ndarray, view: Dataset, window: Window | None) -> np.ndarray:
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
    function = WINDOW_FUNCTIONS.get(str(view.get("VOILUTFunction") or "LINEAR").strip().upper())
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


def frame_view(ds: Dataset, index: int) -> Dataset:
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
