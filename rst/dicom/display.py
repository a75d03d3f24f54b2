"""One decoded frame as an 8-bit image (PS3.4 N.2 up to the presentation LUT), by its
photometric interpretation: palette colour through its LUT, RGB (and YBR, which pydicom
decodes to RGB) scaled to 8 bits, monochrome through :mod:`rst.dicom.voi` (MONOCHROME1
inverted).
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from pydicom import Dataset
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut
from pydicom.pixels.utils import pixel_array

from rst.dicom.render_params import Window
from rst.dicom.voi import frame_view, voi
from rst.errors import NotSupported

__all__ = ["display_frame"]


def display_frame(ds: Dataset, index: int, window: Window | None, at: int) -> Image.Image:
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
    view = frame_view(ds, index)
    grey = voi(apply_modality_lut(stored, view), view, window)
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
