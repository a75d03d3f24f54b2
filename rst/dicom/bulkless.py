"""The pixel data an instance retrieved without bulk data had: its tag and VR, from the rest.

Composite Instance Retrieve Without Bulk Data (PS3.4 Annex Z) sends an instance without its
Pixel Data, Float Pixel Data and Double Float Pixel Data (and its other bulk data), and pydicom,
like rst's encoder (:mod:`rst.dicom.dicom_json`), writes no JSON for an element that is not
there: the metadata would have no ``BulkDataURI`` for the pixel data, and a viewer nothing to ask
frames by. The data set still says what was there: an image (Rows and Columns) with none of the
three elements had one of them, and :func:`removed_pixel_data` says which and with what VR, so
that the metadata carries the URI a full retrieve would have given it.

The VR follows PS3.5 (A.1, A.4 and 8.2): OB where the pixel data is encapsulated (any transfer
syntax but the native ones) or Bits Allocated is 8 or less, else OW — what pydicom gives an
implicit VR file, and what an explicit VR file of the same instance holds; a Parametric Map of
32 or 64 bits allocated had Float Pixel Data (OF) or Double Float Pixel Data (OD). The transfer
syntax is the one the instance came in: a PACS that sends an encapsulated instance without its
pixel data in an uncompressed syntax makes it OW where the stored file says OB.

An image that never had pixel data is not one a conformant archive holds, except one whose
pixels are referenced by Pixel Data Provider URL (JPIP), which Annex Z also removes: its
metadata then names a URI that a frame request cannot resolve (the full retrieve finds no
pixel data). Other removed bulk data (overlays, curves, audio, waveforms, encapsulated
documents, spectroscopy data) get no URI: they are simply absent from such metadata.
"""

from __future__ import annotations

from pydicom import Dataset

from rst.dicom import uids

__all__ = ["PIXEL_DATA", "removed_pixel_data"]

PIXEL_DATA = 0x7FE00010
FLOAT_PIXEL_DATA = 0x7FE00008
DOUBLE_FLOAT_PIXEL_DATA = 0x7FE00009
_ROWS = 0x00280010
_COLUMNS = 0x00280011
_BITS_ALLOCATED = 0x00280100
_SOP_CLASS = 0x00080016


def removed_pixel_data(dataset: Dataset, transfer_syntax: str) -> tuple[int, str] | None:
    """(tag, VR) of the pixel data the image *dataset* (in *transfer_syntax*) lacks; ``None``
    if it is no image or has its pixel data."""
    if any(tag in dataset for tag in (PIXEL_DATA, FLOAT_PIXEL_DATA, DOUBLE_FLOAT_PIXEL_DATA)):
        return None
    if _ROWS not in dataset or _COLUMNS not in dataset:
        return None
    bits = _integer(dataset, _BITS_ALLOCATED)
    if _text(dataset, _SOP_CLASS) == uids.PARAMETRIC_MAP_STORAGE:
        if bits == 32:
            return FLOAT_PIXEL_DATA, "OF"
        if bits == 64:
            return DOUBLE_FLOAT_PIXEL_DATA, "OD"
    encapsulated = transfer_syntax not in uids.NATIVE_SYNTAXES
    if encapsulated or bits is None or bits <= 8:
        return PIXEL_DATA, "OB"
    return PIXEL_DATA, "OW"


def _integer(dataset: Dataset, tag: int) -> int | None:
    try:
        value = dataset[tag].value
    except (KeyError, ValueError, TypeError):
        return None
    return value if isinstance(value, int) else None


def _text(dataset: Dataset, tag: int) -> str:
    try:
        value = dataset[tag].value
    except (KeyError, ValueError, TypeError):
        return ""
    return str(value).strip("\0 ") if value is not None else ""
