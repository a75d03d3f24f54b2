"""The URLs rst hands out (RetrieveURL, Warning headers) never come from an arbitrary Host."""

from __future__ import annotations

import pytest
from pydicom import Dataset

from tests.gateway.test_containment import serving
from tests.support.scripted_backend import ScriptedBackend

RETRIEVE_URL = "00081190"


def backend() -> ScriptedBackend:
    matches = []
    for uid in ("1.2.3", "1.2.4"):
        match = Dataset()
        match.StudyInstanceUID = uid
        matches.append(match)
    return ScriptedBackend(matches=matches)


@pytest.mark.parametrize(
    ("http", "host", "expected"),
    [
        ({}, "evil.example", "http://127.0.0.1:{port}/aets/X/studies/1.2.3"),
        ({}, "localhost:{port}", "http://localhost:{port}/aets/X/studies/1.2.3"),
        ({}, "127.0.0.1", "http://127.0.0.1:{port}/aets/X/studies/1.2.3"),
        ({"allowed_hosts": ("pacs.example",)}, "pacs.example:8443", "http://pacs.example:8443/"),
        ({"allowed_hosts": (".example.org",)}, "a.example.org", "http://a.example.org/aets/"),
        ({"allowed_hosts": ("pacs.example",)}, "evil.example", "http://127.0.0.1:{port}/"),
        ({"base_url": "https://rst.example/dicomweb"}, "evil.example", "https://rst.example/"),
    ],
    ids=["untrusted", "localhost", "no-port", "allowed", "subdomain", "not-allowed", "base-url"],
)
async def test_retrieve_urls(http: dict[str, object], host: str, expected: str) -> None:
    async with serving({"X": backend()}, **http) as client:
        port = client.base_url.port
        response = await client.get(
            "/aets/X/studies",
            params={"limit": "1"},
            headers={"Host": host.format(port=port)},
        )
        assert response.status_code == 200
        [row] = response.json()  # limit=1 of 2: a Warning names rst's host
        url = row[RETRIEVE_URL]["Value"][0]
        assert url.startswith(expected.format(port=port)), url
        warning = response.headers["Warning"]
        assert warning.startswith("299 ")
        assert "evil" not in warning
