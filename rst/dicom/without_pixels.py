"""A Part 10 file's data set as pydicom reads it, but for the value of its pixel data.

An instance's metadata (:mod:`rst.services.metadata`) names its pixel data by ``BulkDataURI``:
the value itself is never part of the answer. Read whole, a 512x512 CT image's data set is a few
kilobytes of elements and half a megabyte of pixels, which pydicom copies into a fresh bytes
object — when the allocator hands out fresh pages (a new mapping, or pages ``malloc_trim`` gave
back: :mod:`rst.malloc`) that copy costs 128 page faults and more CPU than the rest of the read,
all under the GIL — for the JSON encoder to drop it.

Here pydicom's own reader of the data set skips long top-level values instead of reading them
(its ``defer_size``: it seeks past them, finding the end of encapsulated pixel data its own way,
and reads on — elements after the pixel data too). The pixel data element is then kept as read
(tag, VR, length field, position) with :data:`STAND_IN` for its value: everything derived from it
— the VR pydicom gives an implicit VR file's pixel data depends on its length being undefined —
is what the whole file gives. Any other long value is read from the bytes (the copy the reader
would have made). Anything else — a syntax whose data set cannot be read in place, another
long value of undefined length, a file pydicom's reader of the data set alone cannot read — is
read whole (:func:`~rst.dicom.part10.read_part10`): the same answer, the old cost.
``tests/unit/test_without_pixels.py`` compares the metadata both ways on pydicom's test files and
on generated instances.
"""

from __future__ import annotations

from io import BytesIO

from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.dataset import FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag

from rst.dicom.head import PIXEL_DATA_TAGS, UNDEFINED
from rst.dicom.part10 import data_set_start, read_part10
from rst.dicom.uids import IMPLICIT_VR_LITTLE_ENDIAN, NOT_IN_PLACE

__all__ = ["DEFER_BYTES", "STAND_IN", "read_without_pixels"]

STAND_IN = bytes(8)
"""The value the pixel data is read with: not empty (so it is bulk data, like the real value),
a whole number of samples of any width."""
_SYNTAX = BaseTag(0x00020010)
DEFER_BYTES = 64 * 1024
"""Top-level values longer than this are skipped by the reader (pydicom's ``defer_size``): the
pixel data's gets :data:`STAND_IN`, any other is then read from the bytes (a copy of those
bytes only, as the reader would have made). Below this, pixel data is read as before: a copy
of that size costs nothing worth saving."""


def read_without_pixels(data: bytes) -> Dataset:
    """The data set of the Part 10 file *data* as :func:`~rst.dicom.part10.read_part10` reads
    it (group 0002: the transfer syntax alone), but the value of its top-level Pixel Data, Float
    or Double Float Pixel Data is :data:`STAND_IN` (where it has a value: an empty one stays
    empty), not read. Raises what ``read_part10`` raises."""
    start = data_set_start(data)
    if start is None or start[1] in NOT_IN_PLACE:
        return read_part10(data)
    offset, syntax = start
    try:
        dataset = _read(data, offset, implicit=syntax == IMPLICIT_VR_LITTLE_ENDIAN)
    except Exception:  # odd files: read whole, whatever that makes of them
        dataset = None
    if dataset is None:
        return read_part10(data)
    # the transfer syntax as read_part10 gives it, kept raw (converted when first asked for:
    # setting it as a UID costs more than a tenth of the rest)
    value = syntax.encode("ascii")
    meta = RawDataElement(_SYNTAX, "UI", len(value), value, 0, False, True)
    dataset.file_meta = FileMetaDataset({_SYNTAX: meta})
    return dataset


def _read(data: bytes, offset: int, *, implicit: bool) -> Dataset | None:
    """The data set from *offset* with the pixel data's value :data:`STAND_IN`, read as
    pydicom's ``read_dataset`` reads it (what :func:`~rst.dicom.part10.read_part10` calls);
    ``None``: read it whole."""
    fp = BytesIO(data)  # shares the bytes: only what is read is copied
    fp.seek(offset)
    head = read_dataset(fp, implicit, True, defer_size=DEFER_BYTES)
    read: dict[BaseTag, RawDataElement] = {}  # skipped values, as the reader would read them
    for tag, element in head.items():
        if not isinstance(element, RawDataElement) or element.value is not None:
            continue
        length, start = element.length, element.value_tell
        if not length:
            continue  # an empty binary value: None as read
        if tag in PIXEL_DATA_TAGS and (length == UNDEFINED or start + length <= len(data)):
            read[tag] = element._replace(value=STAND_IN)
        elif length != UNDEFINED:  # another long value: read it (cut short where the file is)
            read[tag] = element._replace(value=data[start : start + length])
        else:
            return None
    if all(tag in PIXEL_DATA_TAGS for tag in read):  # the common case: in place
        for pixel_tag, stand_in in read.items():
            head[pixel_tag] = stand_in  # (not private: kept raw, in its place)
        return head
    # a private element would be converted by ``head[tag] = …``: a data set made as the
    # reader makes it, from the raw elements in their order
    dataset = Dataset({**dict(head.items()), **read})
    dataset.set_original_encoding(head.original_encoding[0], True, head.original_character_set)
    return dataset
