"""WADO-RS metadata: each instance as DICOM JSON (PS3.18 Annex F), streamed as it arrives.

A DIMSE archive has no metadata service: the instances themselves are retrieved (as stored)
and each is turned into one object of the JSON array as soon as it has arrived, so a viewer
sees the first instances of a series while the PACS still sends the rest. Where the archive
reads parts of a stored instance (a large S3 object), only its head and tail are read
(:func:`~rst.services.ranged.metadata_file`). pydicom reads the instance — all but its pixel
data's value, which the metadata names by URI (:mod:`rst.dicom.without_pixels`) — and
:mod:`rst.dicom.dicom_json` encodes its raw elements (pydicom's own JSON writer costs several
times more, and gives the same answer); bulk data values (the rule and their URIs are in
:mod:`rst.services.bulkdata`) become ``BulkDataURI`` entries that rst itself resolves. Group
0002 (file meta) is never part of the answer. An image that came without its pixel data (a
retrieve without bulk data, :mod:`rst.backends.dimse.without_bulk_data`) still gets the pixel
data's ``BulkDataURI`` (:mod:`rst.dicom.bulkless`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial

from pydicom import Dataset
from pydicom.uid import ExplicitVRBigEndian

from rst.bridge import run_sync
from rst.dicom.accept import RetrieveFormat
from rst.dicom.bulkless import removed_pixel_data
from rst.dicom.dicom_json import Path, encode_dataset
from rst.dicom.head import NeedMore, locate_pixel_data
from rst.dicom.part10 import data_set_start
from rst.dicom.uids import EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN, NOT_IN_PLACE
from rst.errors import NotFound
from rst.services.bulkdata import (
    BULK_MIN_BYTES,
    PIXEL_DATA_TAGS,
    InstanceAddress,
    TagPath,
    read_dataset,
    readable,
    top_string,
)
from rst.services.protocols import METADATA_ONLY, Backend, Instance, RetrieveKeys
from rst.services.ranged import metadata_file
from rst.services.wado import as_requested, whole

__all__ = ["METADATA", "instance_metadata", "produce_metadata", "relative_metadata", "under"]

METADATA = "metadata.json"
"""The sidecar kind of an instance's DICOM JSON (see :class:`~rst.services.protocols.Sidecars`):
kept with ``BulkDataURI`` values relative to the AE's URL, so one copy serves any base."""
_URI_KEY = b'"BulkDataURI":"'
"""How every BulkDataURI starts in the compact encoding. It cannot occur inside a JSON string,
where every ``"`` is escaped, so it marks exactly the places where the base URL goes."""
INLINE_BYTES = 16 << 10
"""The most bytes of an instance's data set, but for its pixel data's value, whose metadata is
derived on trio's thread (where it has no sidecars: their lookup may block): a CT image's few
kilobytes take about half a millisecond, a worker thread's round trip a quarter of that again
(CPU, under the GIL) — and on a cold series the instances come one at a time, so there is
never a batch to share a trip. Larger ones (a structured report, an RT structure set, an odd
syntax read whole) go to a worker thread."""


def instance_metadata(data: bytes, *, base: str, keys: RetrieveKeys, sop_uid: str) -> bytes:
    """One instance (a Part 10 file, Little Endian) as an encoded DICOM JSON object.

    Bulk data values carry the BulkDataURI of :class:`~rst.services.bulkdata.InstanceAddress`
    under *base* (``…/aets/{aet}``); smaller binary values are inline.

    :raises UnreadableInstance: the instance cannot be read.
    """
    return under(base, _derive(data, keys, sop_uid)[0])


def under(base: str, relative: bytes) -> bytes:
    """Relative metadata (from :func:`_derive`) with its BulkDataURIs under *base*."""
    escaped = json.dumps(base)[1:-1].encode()
    return relative.replace(_URI_KEY, _URI_KEY + escaped) if escaped else relative


def _derive(data: bytes, keys: RetrieveKeys, sop_uid: str) -> tuple[bytes, bool]:
    """The metadata of an instance with BulkDataURIs relative to the AE's URL (``/studies/…``),
    and whether the instance names itself (its own study, series and SOP Instance UIDs; only
    then are its URIs the same whatever the request, and may be kept)."""
    with readable(sop_uid):
        dataset = read_dataset(data, pixels=False)  # named by URI: its value is not read
        address = InstanceAddress.of("", dataset, keys, sop_uid)
        named = all(top_string(dataset, tag) for tag in (0x0020000D, 0x0020000E, 0x00080018))

        def uri(path: Path, tag: int) -> str:
            return address.value(TagPath(path, tag))

        result = encode_dataset(dataset, _is_bulk, uri)
        removed = None
        if not any(f"{tag:08X}" in result for tag in PIXEL_DATA_TAGS):  # the syntax: only then
            removed = removed_pixel_data(dataset, _syntax_of(dataset))
        if removed is not None:  # retrieved without bulk data (:mod:`rst.dicom.bulkless`)
            tag, vr = removed
            result[f"{tag:08X}"] = {"vr": vr, "BulkDataURI": uri((), tag)}
        return json.dumps(result, separators=(",", ":")).encode(), named


def _syntax_of(dataset: Dataset) -> str:
    """The transfer syntax the instance was read in (its file meta, as read)."""
    meta = getattr(dataset, "file_meta", None)
    syntax = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    return str(syntax) if syntax else EXPLICIT_VR_LITTLE_ENDIAN


def _is_bulk(path: Path, tag: int, length: int) -> bool:
    """The rule of :mod:`.bulkdata`: the top-level pixel data always, else by size."""
    return (not path and tag in PIXEL_DATA_TAGS) or length >= BULK_MIN_BYTES


def _derived_inline(data: bytes) -> bool:
    """Whether the metadata of the Part 10 file *data* is cheap enough to derive on trio's
    thread: it is read in place (:mod:`rst.dicom.without_pixels`) and its elements but the pixel
    data's value (of a known length: skipping encapsulated fragments walks them) come to at most
    :data:`INLINE_BYTES`. One walk over the element headers, a twentieth of the derivation."""
    start = data_set_start(data)
    if start is None or start[1] in NOT_IN_PLACE:
        return False
    offset, syntax = start
    try:
        pixels = locate_pixel_data(
            data, offset, implicit=syntax == IMPLICIT_VR_LITTLE_ENDIAN, size=len(data)
        )
    except (NeedMore, ValueError):  # the derivation reports it, on a worker thread
        return False
    if pixels is None:
        return len(data) <= INLINE_BYTES
    if pixels.length is None:
        return False
    return len(data) - pixels.length <= INLINE_BYTES


def relative_metadata(instance: Instance, keys: RetrieveKeys) -> bytes:
    """The relative metadata of a whole *instance*: kept from before, or made (and kept, where
    the instance has a home for sidecars). Blocking."""
    sidecars = instance.sidecars
    if sidecars is not None and (kept := sidecars.load(METADATA)) is not None:
        return kept
    relative, named = _derive(instance.data, keys, instance.sop_instance_uid)
    if sidecars is not None and named:
        sidecars.save(METADATA, relative)
    return relative


async def produce_metadata(
    backend: Backend,
    keys: RetrieveKeys,
    base: str,
    send: Callable[[tuple[bytes, ...]], Awaitable[None]],
) -> None:
    """Send the JSON array of the metadata of every instance *keys* names, piece by piece:
    ``[`` with the first object, ``,`` with each next one, then ``]``. An instance's metadata
    kept in memory is taken as it is; one with a small data set and either no home for sidecars
    or one still in memory (an instance on its way into the cache) is derived on trio's thread
    (:data:`INLINE_BYTES`); any other is read or derived, and kept, on
    a worker thread (a kept copy may have to be read from disk).

    :raises NotFound: the archive has no such instance.
    """
    sent = 0
    async with backend.retrieve(keys, METADATA_ONLY) as instances:
        async for received in instances:
            head = await metadata_file(received) if received.ranges is not None else None
            instance = await whole(received) if head is None else replace(received, data=head)
            if instance.transfer_syntax == str(ExplicitVRBigEndian):  # InlineBinary is LE
                instance = await as_requested(instance, RetrieveFormat(EXPLICIT_VR_LITTLE_ENDIAN))
            sidecars = instance.sidecars
            relative = sidecars.peek(METADATA) if sidecars is not None else None
            if (
                relative is None
                and (sidecars is None or sidecars.arriving)
                and _derived_inline(instance.data)
            ):
                relative, named = _derive(instance.data, keys, instance.sop_instance_uid)
                if sidecars is not None and named and not sidecars.keep_nowait(METADATA, relative):
                    await run_sync(partial(sidecars.save, METADATA, relative))  # cached meanwhile
            elif relative is None:  # not remembered: read or made on a worker thread
                relative = await run_sync(partial(relative_metadata, instance, keys))
            await send((b"," if sent else b"[", under(base, relative)))
            sent += 1
    if not sent:  # a backend raises NotFound itself; this keeps the array well-formed
        raise NotFound(f"no {keys.level.lower()} {keys.uid} in the archive")
    await send((b"]",))
