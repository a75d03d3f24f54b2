"""WADO-RS metadata: each instance as DICOM JSON (PS3.18 Annex F), streamed as it arrives.

A DIMSE archive has no metadata service: the instances themselves are retrieved (as stored)
and each is turned into one object of the JSON array as soon as it has arrived, so a viewer
sees the first instances of a series while the PACS still sends the rest. pydicom's own DICOM
JSON writer does the encoding; bulk data values (the rule and their URIs are in
:mod:`rst.services.bulkdata`) become ``BulkDataURI`` entries that rst itself resolves. Group
0002 (file meta) is never part of the answer.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from functools import partial

from pydicom.dataelem import DataElement
from pydicom.uid import ExplicitVRBigEndian

from rst.bridge import run_sync
from rst.dicom.accept import EXPLICIT_VR_LITTLE_ENDIAN, RetrieveFormat
from rst.errors import NotFound
from rst.services.bulkdata import (
    BULK_MIN_BYTES,
    PIXEL_DATA_TAGS,
    InstanceAddress,
    bulk_elements,
    read_dataset,
    readable,
)
from rst.services.protocols import Backend, RetrieveKeys
from rst.services.wado import as_requested, whole

__all__ = ["instance_metadata", "produce_metadata"]

_PYDICOM_THRESHOLD = (BULK_MIN_BYTES - 1) // 3 * 4
"""pydicom's threshold is in base64 characters: a value is bulk data when it is longer than
``threshold // 4 * 3`` bytes, here ``BULK_MIN_BYTES - 1``, the rule of :mod:`.bulkdata`."""
assert _PYDICOM_THRESHOLD // 4 * 3 == BULK_MIN_BYTES - 1


def instance_metadata(data: bytes, *, base: str, keys: RetrieveKeys, sop_uid: str) -> bytes:
    """One instance (a Part 10 file, Little Endian) as an encoded DICOM JSON object.

    Bulk data values carry the BulkDataURI of :class:`~rst.services.bulkdata.InstanceAddress`
    under *base* (``…/aets/{aet}``); smaller binary values are inline.

    :raises UnreadableInstance: the instance cannot be read.
    """
    with readable(sop_uid):
        dataset = read_dataset(data)
        address = InstanceAddress.of(base, dataset, keys, sop_uid)
        uris = {id(element): address.value(path) for path, element in bulk_elements(dataset)}

        def uri(element: DataElement) -> str:
            return uris[id(element)]

        result = dataset.to_json_dict(_PYDICOM_THRESHOLD, uri, suppress_invalid_tags=True)
        for tag in PIXEL_DATA_TAGS:  # pixel data is bulk data, however small
            entry = result.get(f"{tag:08X}")
            if entry is not None and "InlineBinary" in entry:
                result[f"{tag:08X}"] = {"vr": entry["vr"], "BulkDataURI": address.pixeldata}
        return json.dumps(result, separators=(",", ":")).encode()


async def produce_metadata(
    backend: Backend,
    keys: RetrieveKeys,
    base: str,
    send: Callable[[tuple[bytes, ...]], Awaitable[None]],
) -> None:
    """Send the JSON array of the metadata of every instance *keys* names, piece by piece:
    ``[`` with the first object, ``,`` with each next one, then ``]``. Each instance is parsed
    on a worker thread (pydicom's JSON writer takes milliseconds even for a small one).

    :raises NotFound: the archive has no such instance.
    """
    sent = 0
    async with backend.retrieve(keys) as instances:
        async for received in instances:
            instance = await whole(received)
            if instance.transfer_syntax == str(ExplicitVRBigEndian):  # InlineBinary is LE
                instance = await as_requested(instance, RetrieveFormat(EXPLICIT_VR_LITTLE_ENDIAN))
            encoded = await run_sync(
                partial(
                    instance_metadata,
                    instance.data,
                    base=base,
                    keys=keys,
                    sop_uid=instance.sop_instance_uid,
                )
            )
            await send((b"," if sent else b"[", encoded))
            sent += 1
    if not sent:  # a backend raises NotFound itself; this keeps the array well-formed
        raise NotFound(f"no {keys.level.lower()} {keys.uid} in the archive")
    await send((b"]",))
