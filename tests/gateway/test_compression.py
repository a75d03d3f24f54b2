"""JSON responses are gzip-encoded for clients that accept it; nothing else is."""

from __future__ import annotations

import gzip

import pytest
from pydicom import Dataset

from rst.http.compression import accepts_gzip
from tests.gateway.test_containment import serving
from tests.support.scripted_backend import ScriptedBackend, part10


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, False),
        ("", False),
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("br;q=1.0, gzip;q=0.8", True),
        ("gzip;q=0", False),
        ("*", True),
        ("*;q=0", False),
        ("gzip;q=0, *", False),
        ("identity", False),
        ("gzip;q=nonsense", False),
    ],
)
def test_accept_encoding(header: str | None, expected: bool) -> None:
    assert accepts_gzip(header) is expected


def matches(count: int) -> list[Dataset]:
    rows = []
    for n in range(count):
        ds = Dataset()
        ds.StudyInstanceUID = f"1.2.3.{n}"
        ds.PatientName = f"PATIENT^NUMBER{n}"
        ds.StudyDescription = "a study description that repeats, as DICOM JSON does"
        rows.append(ds)
    return rows


async def test_a_search_is_gzipped_as_it_streams_and_decodes_to_the_same_json() -> None:
    backend = ScriptedBackend(matches=matches(200))
    async with serving({"X": backend}) as client:
        plain = await client.get("/aets/X/studies", headers={"Accept-Encoding": "identity"})
        async with client.stream(
            "GET", "/aets/X/studies", headers={"Accept-Encoding": "gzip"}
        ) as zipped:
            raw = b"".join([chunk async for chunk in zipped.aiter_raw()])
    assert "content-encoding" not in plain.headers
    assert zipped.headers["content-encoding"] == "gzip"
    assert "Accept-Encoding" in zipped.headers["vary"]
    assert "content-length" not in zipped.headers
    assert gzip.decompress(raw) == plain.content
    assert len(raw) < len(plain.content) / 5


async def test_binary_and_small_bodies_are_left_alone() -> None:
    backend = ScriptedBackend(instances=[part10("1.2.3.1", size=4096)])
    async with serving({"X": backend}) as client:
        headers = {"Accept-Encoding": "gzip"}
        retrieved = await client.get("/aets/X/studies/1.2.3", headers=headers)
        listed = await client.get("/aets", headers=headers)
    assert retrieved.status_code == 200
    assert "content-encoding" not in retrieved.headers
    assert "content-encoding" not in listed.headers  # "[]": smaller than the gzip header
