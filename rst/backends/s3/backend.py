"""The S3 backend: WADO-RS from objects, STOW-RS into objects, QIDO-RS through an index."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
from dataclasses import replace
from io import BytesIO
from typing import Protocol

import trio
from pydicom import Dataset
from pydicom.filereader import _read_file_meta_info, read_preamble

from rst.backends.s3 import layout
from rst.backends.s3.client import Listed, S3Client
from rst.config import S3AeConfig
from rst.dicom.part10 import Upload, part10_header, transfer_syntax_of
from rst.dicom.query import QidoQuery
from rst.dicom.statuses import CANNOT_UNDERSTAND, OUT_OF_RESOURCES, PROCESSING_FAILURE, SUCCESS
from rst.dicom.uids import IMPLEMENTATION_CLASS_UID
from rst.errors import (
    BadRequest,
    IncompleteRetrieve,
    NotFound,
    NotSupported,
    RstError,
    StorageAccessError,
    StorageError,
    StorageUnreachable,
)
from rst.groups import collapse
from rst.services.protocols import Instance, RetrieveKeys, StoreResult

__all__ = ["S3Backend", "S3Index", "S3StoreSession"]

log = logging.getLogger(__name__)

_RESOURCE_CODES = frozenset(
    {"SlowDown", "ServiceUnavailable", "503", "EntityTooLarge", "QuotaExceeded", "TooManyBuckets"}
)
HEAD_BYTES = 64 << 10
"""What a large object's first read fetches: its file meta and, mostly, the data set up to the
pixel data (:mod:`rst.services.ranged` reads further where that is longer)."""
REST_CHUNK = 8 << 20
"""The rest of a large object, when a service wants it whole, comes in ranged reads this big."""


class S3Index(Protocol):
    """The QIDO-RS index of a bucket (kept up to date by STOW-RS)."""

    async def add(self, key: str, header: Dataset) -> None: ...

    def search(self, query: QidoQuery) -> AbstractAsyncContextManager[AsyncIterator[Dataset]]: ...


class S3Backend:
    """One bucket (under a key prefix) served as an archive."""

    def __init__(self, config: S3AeConfig, client: S3Client, index: S3Index | None = None) -> None:
        self.config = config
        self.client = client
        self.index = index
        self.name = config.aet

    async def echo(self) -> None:
        await self.client.head_bucket()

    # -- QIDO-RS -------------------------------------------------------------------------------

    def search(self, query: QidoQuery) -> AbstractAsyncContextManager[AsyncIterator[Dataset]]:
        if self.index is None:
            raise NotSupported("QIDO-RS on S3 needs the index")
        return self.index.search(query)

    # -- WADO-RS -------------------------------------------------------------------------------

    def retrieve(
        self, keys: RetrieveKeys, prefer: str | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[Instance]]:
        """The objects under *keys*, in key order, fetched ``max_concurrency`` at a time.

        Objects are sent as stored (*prefer* is left to the WADO service's re-encoding).
        At most ``max_concurrency`` objects are fetched or held at once: each fetch gets a
        one-item channel (its slot), and slots queue in key order in a channel of
        ``max_concurrency - 1`` places, so the fetch of key *n + max_concurrency* starts only
        once the caller has taken instance *n*."""
        return self._retrieve(keys)

    async def _keys(self, keys: RetrieveKeys) -> list[Listed]:
        prefix = layout.listing_prefix(self.config.prefix, keys)
        found: list[Listed] = []
        async for listed in self.client.list_objects(prefix):
            key = listed.key
            if keys.sop_uid is not None and key != prefix:
                continue
            if layout.parse_key(self.config.prefix, key) is None:
                log.debug("skipping %r: not in the {study}/{series}/{instance}.dcm layout", key)
                continue
            found.append(listed)
        return sorted(found, key=lambda listed: listed.key)

    @asynccontextmanager
    async def _retrieve(self, keys: RetrieveKeys) -> AsyncIterator[AsyncIterator[Instance]]:
        try:
            object_keys = await self._keys(keys)
        except BadRequest as exc:  # a malformed UID names nothing in the bucket
            raise NotFound(f"{exc.message}: nothing to retrieve") from None
        if not object_keys:
            raise NotFound(
                f"no {keys.level.lower()} {keys.uid} in {self.client.where} "
                f"(prefix {self.config.prefix!r})"
            )
        window = self.config.max_concurrency
        slots_send, slots_receive = trio.open_memory_channel[
            trio.MemoryReceiveChannel[Instance | RstError]
        ](window - 1)
        with collapse():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._dispatch, object_keys, slots_send, nursery)
                try:
                    async with aclosing(self._in_order(slots_receive, keys)) as instances:
                        yield instances
                finally:
                    nursery.cancel_scope.cancel()

    async def _dispatch(
        self,
        object_keys: list[Listed],
        slots: trio.MemorySendChannel[trio.MemoryReceiveChannel[Instance | RstError]],
        nursery: trio.Nursery,
    ) -> None:
        async with slots:
            for listed in object_keys:
                send, receive = trio.open_memory_channel[Instance | RstError](1)
                await slots.send(receive)  # waits while the window is full
                nursery.start_soon(self._fetch, listed, send)

    async def _fetch(
        self, listed: Listed, send: trio.MemorySendChannel[Instance | RstError]
    ) -> None:
        async with send:
            send.send_nowait(await self._get(listed))

    async def _get(self, listed: Listed) -> Instance | RstError:
        """The instance *listed* names, or the error fetching it met: returned from its
        handler, so that no frame its traceback holds keeps it (a reference cycle).

        An object above ``ranged_reads_above`` bytes is not fetched whole: its head is, and
        the instance carries :class:`ObjectRanges` for the services to read what they need."""
        key = listed.key
        try:
            if listed.size <= self.config.ranged_reads_above:
                return _instance(key, await self.client.get(key))
            head = await self.client.get_range(key, 0, min(listed.size, HEAD_BYTES))
            ranges = ObjectRanges(self.client, key, listed.size, head.etag)
            return replace(
                _instance(key, head.data), rest=ranges.after(len(head.data)), ranges=ranges
            )
        except NotFound:
            return IncompleteRetrieve(f"object {key!r} was listed but is gone from S3")
        except RstError as exc:
            return exc

    async def _in_order(
        self,
        slots: trio.MemoryReceiveChannel[trio.MemoryReceiveChannel[Instance | RstError]],
        keys: RetrieveKeys,
    ) -> AsyncGenerator[Instance]:
        delivered = 0
        async with slots:
            async for slot in slots:
                async with slot:
                    result = await slot.receive()
                if isinstance(result, RstError):
                    log.warning(
                        "retrieve of %s %s from %s broke off after %d instances: %s",
                        keys.level.lower(),
                        keys.uid,
                        self.name,
                        delivered,
                        result.message,
                    )
                    try:
                        raise result
                    finally:
                        del result  # this frame is in its traceback: no cycle through it
                yield result
                delivered += 1

    # -- STOW-RS -------------------------------------------------------------------------------

    @asynccontextmanager
    async def store(self) -> AsyncIterator[S3StoreSession]:
        yield S3StoreSession(self)


class ObjectRanges:
    """Ranged reads of one object (:class:`~rst.services.protocols.ByteRanges`), all of the
    version whose head was read (its ETag): an object replaced meanwhile fails the read."""

    def __init__(self, client: S3Client, key: str, size: int, etag: str) -> None:
        self.client = client
        self.key = key
        self._size = size
        self.etag = etag or None

    @property
    def size(self) -> int:
        return self._size

    async def read(self, start: int, length: int) -> bytes:
        length = min(length, self._size - start)
        if start < 0 or length <= 0:
            return b""
        try:
            ranged = await self.client.get_range(self.key, start, length, etag=self.etag)
        except NotFound:
            raise IncompleteRetrieve(f"object {self.key!r} is gone from S3") from None
        if len(ranged.data) != length:
            raise IncompleteRetrieve(
                f"object {self.key!r} sent {len(ranged.data)} bytes from {start}, not {length}"
            )
        return ranged.data

    async def after(self, start: int) -> AsyncGenerator[bytes]:
        """The object's bytes from *start* to its end, :data:`REST_CHUNK` at a time."""
        while start < self._size:
            chunk = await self.read(start, REST_CHUNK)
            start += len(chunk)
            yield chunk


class S3StoreSession:
    """Stores each upload as one object; a PutObject either lands whole or not at all."""

    def __init__(self, backend: S3Backend) -> None:
        self.backend = backend

    async def store(self, upload: Upload) -> StoreResult:
        header = upload.header
        uids = (upload.study_uid, upload.series_uid, upload.sop_instance_uid)
        try:
            key = layout.instance_key(self.backend.config.prefix, *uids)
        except BadRequest as exc:
            return StoreResult(CANNOT_UNDERSTAND, f"cannot name the object: {exc.message}")
        data = upload.data
        if upload.dataset_offset == 0:  # a bare dataset: store a Part 10 file, as WADO needs
            data = (
                part10_header(
                    sop_class_uid=upload.sop_class_uid,
                    sop_instance_uid=uids[2],
                    transfer_syntax=upload.transfer_syntax,
                    implementation_uid=IMPLEMENTATION_CLASS_UID,
                )
                + data
            )
        try:
            await self.backend.client.put(key, data)
        except (StorageAccessError, StorageUnreachable):
            raise  # the bucket is unusable for every instance: 502 (or failures after the first)
        except StorageError as exc:
            status = OUT_OF_RESOURCES if exc.code in _RESOURCE_CODES else PROCESSING_FAILURE
            log.warning("S3 refused %s: %s", key, exc.message)
            return StoreResult(status, exc.message)
        if self.backend.index is not None:
            try:
                await self.backend.index.add(key, header)
            except RstError as exc:
                log.warning("%s stored, but the index update failed: %s", key, exc.message)
                return StoreResult(
                    PROCESSING_FAILURE, f"stored at {key}, but the index update failed"
                )
        return StoreResult(SUCCESS)


def _instance(key: str, data: bytes) -> Instance:
    """An object's bytes as an :class:`Instance`; a clear error if it is not a Part 10 file."""
    try:
        syntax = transfer_syntax_of(data)
        fp = BytesIO(data)
        read_preamble(fp, False)
        meta = _read_file_meta_info(fp)
    except BadRequest as exc:
        raise StorageError(f"object {key!r} is not a DICOM file: {exc.message}") from None
    except Exception as exc:  # pydicom raises many kinds on garbage
        raise StorageError(f"object {key!r} has unreadable file meta information: {exc}") from None
    sop_class = str(meta.get("MediaStorageSOPClassUID", "")).strip("\0 ")
    sop_instance = str(meta.get("MediaStorageSOPInstanceUID", "")).strip("\0 ")
    if not sop_class:
        raise StorageError(f"object {key!r} has no Media Storage SOP Class UID")
    if not sop_instance:  # the key names it too
        sop_instance = key.rsplit("/", 1)[-1].removesuffix(layout.SUFFIX)
    return Instance(data, sop_class, sop_instance, syntax)
