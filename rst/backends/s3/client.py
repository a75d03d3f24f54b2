"""S3 from trio: aiobotocore (asyncio) driven through trio-asyncio.

The only module that touches aiobotocore, botocore or asyncio. Every call into the asyncio client
crosses with :func:`trio_asyncio.aio_as_trio` — the client's own async context manager, each
request and each streamed body — so :func:`open_client` must be entered inside
``trio_asyncio.open_loop()``. botocore retries throttling (``SlowDown``, 503) and other 5xx and
connection errors itself, with exponential backoff (``retries.mode = "standard"``) up to
``max_attempts`` attempts per call; what still fails becomes an rst error here, with a message
naming the bucket, the key and the S3 error code.

Every call goes through :meth:`S3Client._call`, the one place that translates its errors and
counts it (``rst_s3_calls_total`` by AE, operation and outcome; ``rst_s3_call_duration_seconds``),
so a new call site is counted without a line of its own.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import trio
import trio_asyncio  # type: ignore[import-untyped]
from aiobotocore.session import get_session
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from rst.config import ConfigError, S3AeConfig
from rst.errors import (
    BackendTimeout,
    NotFound,
    StorageAccessError,
    StorageError,
    StorageUnreachable,
)
from rst.metrics import Metrics

__all__ = ["Listed", "Ranged", "S3Client", "call_outcome", "open_client"]

log = logging.getLogger(__name__)

aio_as_trio = trio_asyncio.aio_as_trio
CLOSE_TIMEOUT = 5.0

_CREDENTIAL_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}
)
_MISSING_OBJECT_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_CHANGED_CODES = frozenset({"PreconditionFailed", "412"})
RANGED_GET = "GetObjectRange"
"""The operation label of a ranged GetObject (S3 calls both GetObject; they cost alike per
request, not per byte, and a ranged one is what ``ranged_reads_above`` adds)."""


def call_outcome(error: BaseException | None) -> str:
    """The outcome label of an S3 call that raised *error* (already an rst error) or not."""
    if error is None:
        return "ok"
    if isinstance(error, NotFound):
        return "not_found"
    if isinstance(error, StorageAccessError):
        return "denied"
    if isinstance(error, BackendTimeout):
        return "timeout"
    if isinstance(error, StorageUnreachable):
        return "unreachable"
    if isinstance(error, Exception):
        return "error"
    return "cancelled"  # trio.Cancelled, GeneratorExit: the caller stopped waiting


class _Call:
    """One S3 call being made; :attr:`made` false when none went out after all (the end of a
    listing, known from the last page)."""

    __slots__ = ("made",)

    def __init__(self) -> None:
        self.made = True


@dataclass(frozen=True, slots=True)
class Listed:
    """One object of a listing: its key and its size in bytes."""

    key: str
    size: int


@dataclass(frozen=True, slots=True)
class Ranged:
    """The bytes of a ranged read and the ETag of the object they are from."""

    data: bytes
    etag: str


class S3Client:
    """One bucket of one S3 AE. Methods raise :class:`~rst.errors.StorageError` subclasses,
    :class:`~rst.errors.NotFound` (missing object) or :class:`~rst.errors.BackendTimeout`."""

    def __init__(self, client: Any, config: S3AeConfig, metrics: Metrics | None = None) -> None:
        self._client = client
        self.config = config
        self._read_bytes = metrics.s3_read_bytes.labels(config.aet) if metrics else None
        self._metrics = metrics
        self.bucket = config.bucket
        # what a client reads names the bucket and the AE; the endpoint goes to the log only
        self.where = f"bucket {config.bucket!r} of {config.aet}"
        self.endpoint = config.endpoint or "AWS S3"

    def _count_read(self, data: bytes) -> None:
        if self._read_bytes is not None:
            self._read_bytes.inc(len(data))

    async def head_bucket(self) -> None:
        """Check that the bucket exists and the credentials may use it."""
        with self._call("HeadBucket", bucket_call=True):
            await aio_as_trio(self._client.head_bucket)(Bucket=self.bucket)

    async def create_bucket(self) -> None:
        """Create the bucket (tests and first-time setup)."""
        with self._call("CreateBucket"):
            await aio_as_trio(self._client.create_bucket)(Bucket=self.bucket)

    async def list_objects(self, prefix: str) -> AsyncIterator[Listed]:
        """The objects under *prefix*, in S3's order (ascending UTF-8), page by page."""
        paginator = self._client.get_paginator("list_objects_v2")
        pages = aio_as_trio(paginator.paginate(Bucket=self.bucket, Prefix=prefix)).__aiter__()
        async with aclosing(pages):
            while True:
                with self._call("ListObjectsV2", bucket_call=True) as call:  # one per page
                    page = await anext(pages, None)
                    call.made = page is not None
                if page is None:
                    return
                for item in page.get("Contents", ()):
                    yield Listed(str(item["Key"]), int(item.get("Size", 0)))

    async def list_keys(self, prefix: str) -> AsyncIterator[str]:
        """The keys under *prefix*, in S3's order."""
        async for listed in self.list_objects(prefix):
            yield listed.key

    async def get(self, key: str) -> bytes:
        """The whole object at *key*."""
        with self._call("GetObject", key=key):
            response = await aio_as_trio(self._client.get_object)(Bucket=self.bucket, Key=key)
            async with aio_as_trio(response["Body"]) as body:
                data: bytes = await aio_as_trio(body.read)()
            self._count_read(data)
            return data

    async def get_range(
        self, key: str, start: int, length: int, *, etag: str | None = None
    ) -> Ranged:
        """*length* bytes of the object at *key* from *start* (a ranged GetObject, RFC 9110
        §14), fewer only where the object ends. With *etag*, only from that version of the
        object: a read of an object replaced since fails rather than mixing two versions."""
        if length <= 0:
            raise ValueError(f"a ranged read needs a positive length, not {length}")
        extra = {"IfMatch": etag} if etag is not None else {}
        what = f"bytes {start}-{start + length - 1} of"
        with self._call("GetObject", key=key, detail=what, counted_as=RANGED_GET):
            response = await aio_as_trio(self._client.get_object)(
                Bucket=self.bucket, Key=key, Range=f"bytes={start}-{start + length - 1}", **extra
            )
            async with aio_as_trio(response["Body"]) as body:
                data: bytes = await aio_as_trio(body.read)()
            self._count_read(data)
            return Ranged(data, str(response.get("ETag", "")))

    async def put(self, key: str, data: bytes) -> None:
        """Write *data* at *key* in one PutObject: S3 never shows a half-written object."""
        with self._call("PutObject", key=key):
            await aio_as_trio(self._client.put_object)(
                Bucket=self.bucket, Key=key, Body=data, ContentType="application/dicom"
            )

    async def delete(self, key: str) -> None:
        with self._call("DeleteObject", key=key):
            await aio_as_trio(self._client.delete_object)(Bucket=self.bucket, Key=key)

    @contextmanager
    def _call(
        self,
        operation: str,
        *,
        key: str | None = None,
        bucket_call: bool = False,
        detail: str = "",
        counted_as: str | None = None,
    ) -> Iterator[_Call]:
        """One call of *operation*: its errors translated, the call counted and timed (as
        *counted_as* if given) unless the block says none was :attr:`~_Call.made`."""
        call = _Call()
        outcome = "ok"
        started = time.monotonic()
        try:
            with self._errors(operation, key=key, bucket_call=bucket_call, detail=detail):
                yield call
        except BaseException as exc:
            outcome = call_outcome(exc)
            raise
        finally:
            if self._metrics is not None and call.made:
                label = counted_as or operation
                aet = self.config.aet
                self._metrics.s3_calls.labels(aet, label, outcome).inc()
                self._metrics.s3_duration.labels(aet, label).observe(time.monotonic() - started)

    @contextmanager
    def _errors(
        self,
        operation: str,
        *,
        key: str | None = None,
        bucket_call: bool = False,
        detail: str = "",
    ) -> Iterator[None]:
        """Translate botocore/aiohttp failures of *operation* into rst errors."""
        of = f"{detail} " if detail else ""
        what = (
            f"{operation} of {of}{key!r} in {self.where}" if key else f"{operation} on {self.where}"
        )
        try:
            yield
        except ClientError as exc:
            raise self._client_error(exc, what, key=key, bucket_call=bucket_call) from exc
        except ReadTimeoutError as exc:
            self._log(what, exc)
            raise BackendTimeout(f"S3 did not answer in time: {what}") from exc
        except (EndpointConnectionError, ConnectTimeoutError) as exc:
            self._log(what, exc)
            raise StorageUnreachable(
                f"cannot reach the S3 endpoint: {what} failed (the log has the endpoint and why)"
            ) from exc
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise StorageAccessError(f"no usable S3 credentials for {self.where}: {exc}") from exc
        except BotoCoreError as exc:  # its message may hold the endpoint URL
            self._log(what, exc)
            raise StorageError(f"{what} failed: {type(exc).__name__}") from exc
        except TimeoutError as exc:  # aiohttp's read timeout (a ClientError too): a timeout
            self._log(what, exc)
            raise BackendTimeout(f"S3 did not answer in time: {what}") from exc
        except aiohttp.ClientError as exc:
            self._log(what, exc)
            raise StorageError(f"{what} broke off: {type(exc).__name__}") from exc

    def _log(self, what: str, exc: BaseException) -> None:
        log.warning("S3 at %s: %s failed: %r", self.endpoint, what, exc)

    def _client_error(
        self, exc: ClientError, what: str, *, key: str | None, bucket_call: bool
    ) -> Exception:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "")) or None
        message = str(error.get("Message", "")) or str(exc)
        http = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _CREDENTIAL_CODES:
            return StorageAccessError(
                f"S3 rejected the credentials ({code}: {message}) for {self.where}; check "
                f"{self.config.access_key_env or 'the AWS credential chain'}"
                + (f" and {self.config.secret_key_env}" if self.config.secret_key_env else ""),
                code,
            )
        if code == "NoSuchBucket" or (bucket_call and code in ("404", "NotFound")):
            return StorageAccessError(f"{self.where.capitalize()} does not exist", code)
        if code in ("AccessDenied", "403") or http == 403:
            return StorageAccessError(
                f"S3 denied access ({code}): {what}; the credentials may be wrong or lack "
                "permission on the bucket",
                code,
            )
        if key is not None and code in _MISSING_OBJECT_CODES:
            return NotFound(f"no object {key!r} in {self.where}")
        if key is not None and (code in _CHANGED_CODES or http == 412):
            return StorageError(f"{what} failed: the object was replaced while rst read it", code)
        return StorageError(f"{what} failed: {code} ({message}; HTTP {http})", code)


def _credentials(config: S3AeConfig) -> dict[str, str]:
    """Credentials from the environment variables the configuration names (none: AWS chain)."""
    names = {
        "aws_access_key_id": config.access_key_env,
        "aws_secret_access_key": config.secret_key_env,
    }
    credentials: dict[str, str] = {}
    for argument, name in names.items():
        if name is None:
            continue
        value = os.environ.get(name)
        if not value:
            raise ConfigError(
                f"aets.{config.aet}: the environment variable {name} (named by "
                f"{'access_key_env' if argument == 'aws_access_key_id' else 'secret_key_env'}) "
                "is not set"
            )
        credentials[argument] = value
    return credentials


@asynccontextmanager
async def open_client(
    config: S3AeConfig, metrics: Metrics | None = None
) -> AsyncIterator[S3Client]:
    """An S3 client for *config*, counting what it reads into *metrics*; enter it inside
    ``trio_asyncio.open_loop()``."""
    boto_config = BotoConfig(
        region_name=config.region,
        s3={"addressing_style": config.addressing},
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        retries={"max_attempts": config.max_attempts, "mode": "standard"},
        max_pool_connections=max(10, config.max_concurrency),
    )
    session = get_session()
    manager = session.create_client(
        "s3",
        endpoint_url=config.endpoint,
        region_name=config.region,
        config=boto_config,
        **_credentials(config),
    )
    client = await aio_as_trio(manager.__aenter__)()
    try:
        yield S3Client(client, config, metrics)
    finally:
        # Closing must happen even when the server is being cancelled: shielded, time-boxed.
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
            await aio_as_trio(manager.__aexit__)(None, None, None)
