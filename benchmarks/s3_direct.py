"""The S3 benchmark's reference: aiobotocore on plain asyncio, no rst, no trio.

Run as a script (one process per measurement, started by ``benchmarks/s3.py``)::

    python benchmarks/s3_direct.py get --endpoint URL --bucket B --prefix STUDY/ [--concurrency 16]
    python benchmarks/s3_direct.py put --endpoint URL --bucket B --manifest FILE [--concurrency 1]

Credentials come from the environment variables named by ``--access-key-env`` and
``--secret-key-env`` (as rst's ``access_key_env``/``secret_key_env``). The client is created
before the clock starts (rst's client is open before the request arrives, too).

- ``get``: list the objects under the prefix (ListObjectsV2, paginated), then fetch every one with
  GetObject, at most ``--concurrency`` at a time, each body read whole and written to
  ``/dev/null``. Prints JSON: objects, bytes, list_s, first_object_s (clock start to the first
  whole object), total_s, cpu_s (this process).
- ``put``: PutObject of every ``key<TAB>path`` line of the manifest (the file read inside the
  timing), at most ``--concurrency`` at a time. Prints JSON: objects, bytes, total_s, cpu_s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

from aiobotocore.session import get_session
from botocore.config import Config


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _client(args: argparse.Namespace) -> Any:
    config = Config(
        region_name="us-east-1",
        s3={"addressing_style": "path"},
        connect_timeout=10.0,
        read_timeout=60.0,
        retries={"max_attempts": 5, "mode": "standard"},
        max_pool_connections=max(10, args.concurrency),  # as rst's client
    )
    return get_session().create_client(
        "s3",
        endpoint_url=args.endpoint,
        region_name="us-east-1",
        config=config,
        aws_access_key_id=os.environ[args.access_key_env],
        aws_secret_access_key=os.environ[args.secret_key_env],
    )


async def get(args: argparse.Namespace) -> dict[str, Any]:
    async with _client(args) as client:
        limit = asyncio.Semaphore(args.concurrency)
        first: list[float] = []
        total_bytes = 0
        devnull = os.open(os.devnull, os.O_WRONLY)

        async def fetch(key: str) -> None:
            nonlocal total_bytes
            async with limit:
                response = await client.get_object(Bucket=args.bucket, Key=key)
                async with response["Body"] as body:
                    data = await body.read()
            os.write(devnull, data)
            total_bytes += len(data)
            if not first:
                first.append(time.perf_counter() - started)

        try:
            cpu = _cpu_s()
            started = time.perf_counter()
            keys: list[str] = []
            paginator = client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=args.bucket, Prefix=args.prefix):
                keys += [item["Key"] for item in page.get("Contents", ())]
            listed = time.perf_counter() - started
            async with asyncio.TaskGroup() as group:
                for key in sorted(keys):
                    group.create_task(fetch(key))
            total = time.perf_counter() - started
            cpu = _cpu_s() - cpu
        finally:
            os.close(devnull)
    return {
        "objects": len(keys),
        "bytes": total_bytes,
        "list_s": listed,
        "first_object_s": first[0] if first else float("nan"),
        "total_s": total,
        "cpu_s": cpu,
    }


def _read(path: str) -> bytes:
    """A file's bytes (from the page cache: the same files curl reads for rst)."""
    with open(path, "rb") as f:
        return f.read()


async def put(args: argparse.Namespace, entries: list[list[str]]) -> dict[str, Any]:
    async with _client(args) as client:
        limit = asyncio.Semaphore(args.concurrency)
        total_bytes = 0

        async def store(key: str, path: str) -> None:
            nonlocal total_bytes
            async with limit:
                data = _read(path)
                await client.put_object(
                    Bucket=args.bucket, Key=key, Body=data, ContentType="application/dicom"
                )
            total_bytes += len(data)

        cpu = _cpu_s()
        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for key, path in entries:
                group.create_task(store(key, path))
        total = time.perf_counter() - started
        cpu = _cpu_s() - cpu
    return {"objects": len(entries), "bytes": total_bytes, "total_s": total, "cpu_s": cpu}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("action", choices=("get", "put"))
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--prefix", default="")
    parser.add_argument("--manifest", help="put: key<TAB>path lines")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--access-key-env", default="BENCH_S3_KEY")
    parser.add_argument("--secret-key-env", default="BENCH_S3_SECRET")
    args = parser.parse_args(argv)
    if args.action == "put" and not args.manifest:
        parser.error("put needs --manifest")
    if args.action == "get":
        result = asyncio.run(get(args))
    else:
        text = Path(args.manifest).read_text()
        result = asyncio.run(put(args, [line.split("\t", 1) for line in text.splitlines()]))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
