"""Which rst error each failure of an S3 call becomes: a timeout is a 504 and only a timeout; a
connection that breaks off, an endpoint that cannot be reached, an S3 error code are 502s."""

from __future__ import annotations

import aiohttp
import pytest
from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError

from rst.backends.s3.client import S3Client
from rst.config import S3AeConfig
from rst.errors import BackendTimeout, RstError, StorageError, StorageUnreachable


def s3_client() -> S3Client:
    return S3Client(None, S3AeConfig(aet="BUCKET", backend="s3", bucket="rst-test"))


@pytest.mark.parametrize(
    ("failure", "error", "status"),
    [
        (ReadTimeoutError(endpoint_url="http://s3"), BackendTimeout, 504),
        (aiohttp.ServerTimeoutError("read timed out"), BackendTimeout, 504),
        (TimeoutError(), BackendTimeout, 504),
        (aiohttp.ServerDisconnectedError(), StorageError, 502),
        (aiohttp.ClientPayloadError("cut short"), StorageError, 502),
        (ConnectTimeoutError(endpoint_url="http://s3"), StorageUnreachable, 502),
    ],
    ids=["read-timeout", "aiohttp-timeout", "timeout", "disconnected", "payload", "connect"],
)
def test_each_failure_becomes_one_error(
    failure: Exception, error: type[RstError], status: int
) -> None:
    with pytest.raises(RstError) as info, s3_client()._errors("GetObject", key="a/b"):
        raise failure

    assert type(info.value) is error
    assert info.value.status == status
    assert "'a/b'" in info.value.message
    assert "rst-test" in info.value.message
