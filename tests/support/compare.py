"""Compare what rst returned with the instances that were stored, element by element.

``retrieved(response)`` reads a WADO-RS multipart response into data sets; ``differences``
lists every top-level element (File Meta Information aside) that was lost, added or changed,
sequences and pixel data included. An empty list means the PACS and rst handed the instance
back as it was stored.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path

import httpx
import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from rst.dicom.multipart import MultipartReader, parse_content_type

__all__ = ["decompressed", "differences", "originals", "retrieved"]


def retrieved(response: httpx.Response) -> dict[str, Dataset]:
    """The instances of a ``multipart/related; type="application/dicom"`` body, by SOP
    Instance UID (each part must be a whole Part 10 file)."""
    media_type, params = parse_content_type(response.headers["Content-Type"])
    assert media_type == "multipart/related", response.headers["Content-Type"]
    reader = MultipartReader(params["boundary"], max_part_bytes=1 << 28, max_total_bytes=1 << 30)
    found: dict[str, Dataset] = {}
    for part in reader.feed(response.content) + reader.finish():
        ds = pydicom.dcmread(io.BytesIO(part.data))
        uid = str(ds.SOPInstanceUID)
        assert uid not in found, f"instance {uid} sent twice"
        found[uid] = ds
    return found


def originals(paths: list[Path]) -> dict[str, Dataset]:
    """The stored files, by SOP Instance UID."""
    found: dict[str, Dataset] = {}
    for path in paths:
        ds = pydicom.dcmread(path)
        found[str(ds.SOPInstanceUID)] = ds
    return found


def differences(original: Dataset, got: Dataset) -> list[str]:
    """What differs between two data sets, one line per element (group 0002 ignored)."""
    lines: list[str] = []
    tags = {elem.tag for elem in original if elem.tag.group != 2}
    tags |= {elem.tag for elem in got if elem.tag.group != 2}
    for tag in sorted(tags):
        if tag not in got:
            lines.append(f"{tag} {original[tag].keyword or ''}: missing")
        elif tag not in original:
            lines.append(f"{tag} {got[tag].keyword or ''}: added ({got[tag].value!r:.60})")
        elif _value(original[tag].value) != _value(got[tag].value):
            lines.append(
                f"{tag} {original[tag].keyword or ''}: "
                f"{original[tag].value!r:.60} became {got[tag].value!r:.60}"
            )
    return lines


def _value(value: object) -> object:
    """A value as compared: sequences item by item, multi-values as lists, bytes as bytes."""
    if isinstance(value, Sequence):
        return [[(e.tag, _value(e.value)) for e in item] for item in value]
    if isinstance(value, MultiValue):
        return list(value)
    return value


def decompressed(ds: Dataset) -> Dataset:
    """A copy of *ds* with its pixel data decoded (what a PACS or rst that decompresses an
    instance should send), the original untouched."""
    copied = copy.deepcopy(ds)
    copied.decompress(generate_instance_uid=False)
    return copied
