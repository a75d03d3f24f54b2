"""A real S3 HTTP endpoint for tests: moto in server mode on a free loopback port.

    async with open_moto(tmp_path / "moto") as endpoint:   # "http://127.0.0.1:PORT"
        await create_bucket(endpoint, "dicom")

``auth=True`` makes moto check credentials on every request (``INITIAL_NO_AUTH_ACTION_COUNT=0``):
any key is then unknown, so requests fail with ``InvalidAccessKeyId``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import boto3
import httpx
import trio

from .http_server import open_http_server

__all__ = ["MOTO_SERVER", "MotoError", "create_bucket", "get_object", "open_moto", "put_object"]

MOTO_SERVER = Path(sys.executable).parent / "moto_server"


class MotoError(RuntimeError):
    pass


@asynccontextmanager
async def open_moto(workdir: Path, *, auth: bool = False) -> AsyncIterator[str]:
    """Start ``moto_server`` on 127.0.0.1; yield its endpoint URL; stop it on exit."""
    if not MOTO_SERVER.exists():
        raise MotoError(f"{MOTO_SERVER} is missing: install moto[server] in the venv")
    await trio.Path(workdir).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"}
    if auth:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
    log_path = workdir / "moto.log"

    def command(port: int) -> list[str]:
        return [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)]

    async with open_http_server(
        "moto_server",
        command,
        log_path,
        probe="/moto-api/",
        ok=lambda status: status < 500,
        error=MotoError,
        env=env,
    ) as url:
        yield url


async def create_bucket(endpoint: str, bucket: str) -> None:
    """Create *bucket* with a path-style PUT (moto without auth takes unsigned requests)."""
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.put(f"{endpoint}/{bucket}")
        response.raise_for_status()


def _client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


async def get_object(endpoint: str, bucket: str, key: str) -> bytes:
    """The object's bytes, read with a signed request (boto3, in a thread)."""

    def get() -> bytes:
        data: bytes = _client(endpoint).get_object(Bucket=bucket, Key=key)["Body"].read()
        return data

    return await trio.to_thread.run_sync(get)


async def put_object(endpoint: str, bucket: str, key: str, data: bytes) -> None:
    await trio.to_thread.run_sync(
        lambda: _client(endpoint).put_object(Bucket=bucket, Key=key, Body=data)
    )
