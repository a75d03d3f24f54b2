"""A WADO-RS retrieve read as it arrives, for tests that act while the response is under way.

download = Download(f"{running.http_url}/aets/PACS/studies/{uid}")
nursery.start_soon(download.run)
await download.flowing.wait()  # more than ``flowing_after`` bytes of body have arrived
...
await download.done.wait()
parts = download.parts()  # fails unless the multipart body is complete
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import httpx
import trio

from rst.backends.dimse.incoming import STREAM_AFTER
from rst.dicom.multipart import MultipartReader, parse_content_type

__all__ = ["AS_STORED", "DEFAULT", "Download", "download_all"]

DEFAULT = 'multipart/related; type="application/dicom"'
"""Instances in Explicit VR Little Endian."""
AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'


@dataclass
class Download:
    url: str
    accept: str = DEFAULT
    flowing_after: int = STREAM_AFTER
    status: int | None = None
    content_type: str = ""
    body: bytearray = field(default_factory=bytearray)
    error: httpx.RemoteProtocolError | None = None
    """Set when the body broke off (httpx: incomplete chunked read, connection closed)."""
    flowing: trio.Event = field(default_factory=trio.Event)
    """Set once the body holds more than ``flowing_after`` bytes."""
    done: trio.Event = field(default_factory=trio.Event)

    async def run(self) -> None:
        try:
            async with (
                httpx.AsyncClient(timeout=60) as http,
                http.stream("GET", self.url, headers={"Accept": self.accept}) as response,
            ):
                self.status = response.status_code
                self.content_type = response.headers.get("content-type", "")
                async for chunk in response.aiter_raw():
                    self.body += chunk
                    if len(self.body) > self.flowing_after:
                        self.flowing.set()
        except httpx.RemoteProtocolError as exc:
            self.error = exc
        finally:
            self.done.set()

    @property
    def boundary(self) -> str:
        media_type, params = parse_content_type(self.content_type)
        assert media_type == "multipart/related", self.content_type
        return params["boundary"]

    @property
    def closed(self) -> bool:
        """Whether the body holds the multipart close delimiter."""
        return f"--{self.boundary}--".encode() in self.body

    def parts(self) -> list[tuple[str, bytes]]:
        """(transfer-syntax parameter, data) of each part. Raises
        :class:`~rst.errors.BadRequest` unless the body is a complete multipart."""
        reader = MultipartReader(self.boundary, max_part_bytes=1 << 30, max_total_bytes=1 << 31)
        parts = reader.feed(bytes(self.body)) + reader.finish()
        found = []
        for part in parts:
            media_type, params = parse_content_type(part.content_type)
            assert media_type == "application/dicom", part.content_type
            found.append((params["transfer-syntax"], part.data))
        return found


async def download_all(urls: Iterable[str], *, within: float) -> list[Download]:
    """A :class:`Download` of each of *urls*, run concurrently (separate connections) until all
    are done; :class:`trio.TooSlowError` past *within* seconds."""
    downloads = [Download(url) for url in urls]
    with trio.fail_after(within):
        async with trio.open_nursery() as nursery:
            for download in downloads:
                nursery.start_soon(download.run)
    return downloads
