"""gzip for JSON responses (QIDO-RS results, WADO-RS metadata), when the client accepts it.

DICOM JSON is verbose — tag keys, VR names, repeated structure — and compresses about tenfold;
a viewer's series metadata call is often the largest JSON it fetches. Streamed responses stay
streamed: each chunk is compressed and sync-flushed as it goes out (the compressor's dictionary
carries over, so the ratio stays good), so the first rows still reach the client before the
archive has finished answering. Pixel data and other binary parts are left alone: they are
compressed already or do not gain enough to pay for the CPU.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

from quart import Request, Response
from quart.wrappers.response import DataBody, IterableBody, ResponseBody

__all__ = ["COMPRESSIBLE", "MIN_SIZE", "accepts_gzip", "gzip_response"]

COMPRESSIBLE = frozenset({"application/dicom+json", "application/json"})
MIN_SIZE = 1024
"""A body known to be smaller than this is sent as it is (the gzip header alone is 18 bytes)."""
_GZIP = 16 + zlib.MAX_WBITS  # zlib's way to say: gzip header and trailer
_LEVEL = 6


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether ``Accept-Encoding`` admits gzip (RFC 9110 §12.5.3: ``gzip`` or ``*`` with a
    non-zero q-value, unless gzip itself is refused with ``q=0``)."""
    if not accept_encoding:
        return False
    weights: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        weights[coding.strip().lower()] = q
    if "gzip" in weights:
        return weights["gzip"] > 0
    return weights.get("*", 0.0) > 0


async def gzip_response(request: Request, response: Response) -> Response:
    """*response*, gzip-encoded if it is JSON and the client accepts gzip."""
    response.vary.add("Accept-Encoding")
    if (
        response.mimetype not in COMPRESSIBLE
        or "Content-Encoding" in response.headers
        or not accepts_gzip(request.headers.get("Accept-Encoding"))
    ):
        return response
    body = response.response
    if isinstance(body, DataBody):
        if len(body.data) < MIN_SIZE:
            return response
        compressor = zlib.compressobj(_LEVEL, zlib.DEFLATED, _GZIP)
        response.set_data(compressor.compress(body.data) + compressor.flush())
    else:
        response.response = IterableBody(_compressed(body))
        response.headers.pop("Content-Length", None)
    response.headers["Content-Encoding"] = "gzip"
    return response


async def _compressed(body: ResponseBody) -> AsyncIterator[bytes]:
    compressor = zlib.compressobj(_LEVEL, zlib.DEFLATED, _GZIP)
    async with body as chunks:
        async for chunk in chunks:
            data = chunk.encode() if isinstance(chunk, str) else chunk
            out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
            if out:
                yield out
    yield compressor.flush()
