"""multipart_body: the one place that frames a response body."""

from __future__ import annotations

import pytest
import trio

from rst.dicom.multipart import MultipartReader, MultipartWriter, parse_content_type
from rst.errors import IncompleteRetrieve
from rst.http import multipart_body
from rst.http.multipart_body import PartSender, one_part, ready_multipart, start_multipart
from rst.http.streaming import StreamBrokenOff


def parts_of(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    _, params = parse_content_type(content_type)
    reader = MultipartReader(params["boundary"], max_part_bytes=1 << 20, max_total_bytes=1 << 30)
    parts = reader.feed(body) + reader.finish()
    return [(part.content_type or "", part.data) for part in parts]


async def test_a_small_part_travels_with_its_head_a_large_one_apart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(multipart_body, "JOIN_BELOW", 10)
    sent: list[tuple[bytes, ...]] = []

    async def send(item: tuple[bytes, ...]) -> None:
        sent.append(item)

    parts = PartSender(MultipartWriter(), send)
    await parts.part("application/dicom", b"small", location="/a")
    await parts.part("application/dicom", b"larger than ten")
    await parts.more(b"more")

    assert [len(item) for item in sent] == [2, 1, 1, 1]
    assert b"Content-Location: /a" in sent[0][0]
    assert sent[0][1] == b"small"
    assert sent[2:] == [(b"larger than ten",), (b"more",)]


async def test_a_streamed_body_ends_with_the_close_delimiter() -> None:
    async def produce(parts: PartSender) -> None:
        await parts.part("application/dicom", b"one")
        await parts.part("application/dicom", b"two")
        await parts.more(b"+")

    async with trio.open_nursery() as nursery:
        started = await start_multipart(nursery, produce)
        body = b"".join([chunk async for chunk in started.body])

    content_type = started.content_type("application/dicom")
    assert parts_of(content_type, body) == [
        ("application/dicom", b"one"),
        ("application/dicom", b"two+"),
    ]


async def test_a_broken_off_body_has_no_close_delimiter() -> None:
    async def produce(parts: PartSender) -> None:
        await parts.part("application/dicom", b"one")
        raise IncompleteRetrieve("the PACS went away")

    chunks: list[bytes] = []
    with pytest.RaisesGroup(StreamBrokenOff, allow_unwrapped=True, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            started = await start_multipart(nursery, produce)
            async for chunk in started.body:
                chunks.append(chunk)

    sent = b"".join(chunks)
    assert sent.startswith(b"--" + started.writer.boundary.encode())  # the part went out
    assert started.writer.boundary.encode() + b"--" not in sent  # never the close delimiter


def test_one_part_is_the_body_with_the_part_headers() -> None:
    response = one_part(b"x", "application/octet-stream", "/frames/1")

    assert response.content_type == "application/octet-stream"
    assert response.headers["Content-Location"] == "/frames/1"


@pytest.mark.parametrize("join_below", [1 << 20, 1])
async def test_a_ready_body_is_the_same_joined_or_streamed(
    monkeypatch: pytest.MonkeyPatch, join_below: int
) -> None:
    monkeypatch.setattr(multipart_body, "JOIN_BELOW", join_below)

    def pieces(writer: MultipartWriter) -> list[bytes]:
        return [writer.part_head("application/octet-stream"), b"frame", writer.close()]

    response = ready_multipart(lambda w: iter(pieces(w)), 5, "application/octet-stream")
    body = await response.get_data()
    assert isinstance(body, bytes)

    assert parts_of(response.content_type or "", body) == [("application/octet-stream", b"frame")]
