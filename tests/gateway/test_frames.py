"""The frames route through the real app and listener, in front of an in-memory archive: what is
refused before the archive is asked, how parts are labelled, single-part answers."""

from __future__ import annotations

import numpy as np
import pytest

from rst.dicom.multipart import MultipartReader, parse_content_type
from rst.services.protocols import Instance
from tests.gateway.test_containment import serving
from tests.support.frames import (
    EVLE,
    JLS,
    OHIF_LOADER,
    OHIF_VIEWER,
    RLE,
    SOP_UID,
    decode,
    encapsulated,
    native,
    volume,
)
from tests.support.scripted_backend import ScriptedBackend

STUDY, SERIES, SOP = "1.2.3", "1.2.3.1", SOP_UID
INSTANCE = f"/aets/X/studies/{STUDY}/series/{SERIES}/instances/{SOP}"


def archive(data: bytes, syntax: str = EVLE) -> ScriptedBackend:
    return ScriptedBackend(instances=[Instance(data, "1.2.840.10008.5.1.4.1.1.7", SOP, syntax)])


def parts(body: bytes, content_type: str) -> list[tuple[dict[str, str], bytes]]:
    _, params = parse_content_type(content_type)
    reader = MultipartReader(params["boundary"], max_part_bytes=1 << 24, max_total_bytes=1 << 26)
    found = reader.feed(body) + reader.finish()
    return [(dict(part.headers), part.data) for part in found]


@pytest.mark.parametrize(
    "frames", ["0", "-1", "1,,2", "abc", "1.0", "%20", "1,0"], ids=lambda f: repr(f)
)
async def test_bad_frame_lists_are_refused_before_the_archive(frames: str) -> None:
    backend = archive(native(volume(2)))
    async with serving({"X": backend}) as client:
        response = await client.get(f"{INSTANCE}/frames/{frames}")
    assert response.status_code == 400
    assert "frame" in response.json()["error"]
    assert backend.opened == 0


async def test_unacceptable_accept_is_refused_before_the_archive() -> None:
    backend = archive(native(volume(2)))
    async with serving({"X": backend}) as client:
        response = await client.get(f"{INSTANCE}/frames/1", headers={"Accept": "application/dicom"})
        bad_uid = await client.get(f"/aets/X/studies/{STUDY}/series/x*/instances/{SOP}/frames/1")
    assert response.status_code == 406
    assert "application/octet-stream" in response.json()["error"]
    assert bad_uid.status_code == 400
    assert backend.opened == 0


@pytest.mark.parametrize("accept", [OHIF_VIEWER, OHIF_LOADER])
async def test_ohif_accept_headers(accept: str) -> None:
    frames = volume(3)
    data, encoded = encapsulated(frames)
    async with serving({"X": archive(data, RLE)}) as client:
        stored = await client.get(f"{INSTANCE}/frames/2", headers={"Accept": accept})
        plain = await client.get(
            f"{INSTANCE}/frames/2,3", headers={"Accept": accept.replace("*", EVLE)}
        )
    assert stored.status_code == 200
    content_type = stored.headers["Content-Type"]
    assert content_type.startswith('multipart/related; type="image/dicom-rle"')
    boundary = parse_content_type(content_type)[1]["boundary"]
    # Cornerstone reads the first part only, and finds its header by this exact prefix
    head = f"--{boundary}\r\nContent-Type: image/dicom-rle; transfer-syntax={RLE}\r\n".encode()
    assert stored.content.startswith(head)
    [(headers, body)] = parts(stored.content, content_type)
    assert body == encoded[1]
    assert headers["Content-Location"].endswith(f"{INSTANCE}/frames/2")
    assert headers["Content-Location"].startswith("http://")
    # the same frames decompressed
    assert plain.status_code == 200
    decoded = parts(plain.content, plain.headers["Content-Type"])
    assert [body for _, body in decoded] == [frames[1].tobytes(), frames[2].tobytes()]
    for headers, _ in decoded:
        assert headers["Content-Type"] == f"application/octet-stream; transfer-syntax={EVLE}"


async def test_default_is_uncompressed_and_every_part_is_labelled() -> None:
    frames = volume(4)
    async with serving({"X": archive(native(frames))}) as client:
        response = await client.get(f"{INSTANCE}/frames/4,1,4")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith(
        f'multipart/related; type="application/octet-stream"; transfer-syntax={EVLE}; boundary='
    )
    got = parts(response.content, response.headers["Content-Type"])
    assert [body for _, body in got] == [frames[i].tobytes() for i in (3, 0, 3)]
    assert [h["Content-Location"].rsplit("/", 1)[1] for h, _ in got] == ["4", "1", "4"]


async def test_out_of_range_is_404_with_a_message() -> None:
    async with serving({"X": archive(native(volume(2)))}) as client:
        response = await client.get(f"{INSTANCE}/frames/1,3")
    assert response.status_code == 404
    assert "has 2 frames" in response.json()["error"]


async def test_transcoded_into_jpeg_ls() -> None:
    frames = volume(2, rows=32, columns=32)
    accept = "multipart/related; type=image/jls"
    async with serving({"X": archive(native(frames))}) as client:
        response = await client.get(f"{INSTANCE}/frames/2", headers={"Accept": accept})
    assert response.status_code == 200
    [(headers, body)] = parts(response.content, response.headers["Content-Type"])
    assert headers["Content-Type"] == f"image/jls; transfer-syntax={JLS}"
    assert np.array_equal(decode(body, JLS, frames), frames[1])


async def test_single_part_for_one_frame() -> None:
    frames = volume(2)
    async with serving({"X": archive(native(frames))}) as client:
        one = await client.get(
            f"{INSTANCE}/frames/2", headers={"Accept": "application/octet-stream"}
        )
        two = await client.get(
            f"{INSTANCE}/frames/1,2", headers={"Accept": "application/octet-stream"}
        )
    assert one.status_code == 200
    assert one.headers["Content-Type"] == f"application/octet-stream; transfer-syntax={EVLE}"
    assert one.headers["Content-Location"].endswith(f"{INSTANCE}/frames/2")
    assert one.content == frames[1].tobytes()
    assert two.status_code == 406
