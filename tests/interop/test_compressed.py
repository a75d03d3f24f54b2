"""A study stored compressed (RLE Lossless), retrieved through both routes, as stored
(``transfer-syntax=*``) and as Explicit VR Little Endian, from each PACS.

What each PACS can do differs, and each outcome is pinned down here:

- C-MOVE: the PACS proposes what it sends; rst's receiver accepts compressed syntaxes first.
  Orthanc and pynetdicom send the instances as stored, and rst decompresses them for a client
  that wants Explicit VR Little Endian. dcmqrscp proposes only uncompressed syntaxes unless told
  otherwise (``-xr``) and cannot decompress: every sub-operation fails, and rst says so.
- C-GET: rst proposes, in one presentation context per storage class, the syntaxes the client
  allows (compressed first for ``*``, only uncompressed otherwise) and the PACS picks one per
  class. Orthanc picks Explicit VR Little Endian and decompresses; dcmqrscp picks by its own
  preference (``+xr``: RLE) and does not decompress; pynetdicom takes the first syntax of its
  own list that rst proposes (Implicit VR Little Endian) and does not decompress either. A
  PACS that cannot send is a 502 with the PACS's status and counts.

Whatever arrives is compared with the stored file: element by element when it came as stored,
after decoding the stored pixel data when it came decompressed.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from tests.interop.peers import Kind, open_archive, open_gateway
from tests.support.compare import decompressed, differences, originals, retrieved
from tests.support.sample import write_ct_study

pytestmark = pytest.mark.integration

AS_STORED = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
RLE, EVLE = str(RLELossless), str(ExplicitVRLittleEndian)
FAILED = "status 0xA702 after 0 instance(s) (0 completed, 2 failed)"
REQUESTS = ("MOVE *", "MOVE default", "GET *", "GET default")

OUTCOMES: dict[str, tuple[Kind, tuple[str, ...], dict[str, str]]] = {
    "orthanc": (
        "orthanc",
        (),
        {"MOVE *": RLE, "MOVE default": EVLE, "GET *": EVLE, "GET default": EVLE},
    ),
    "pynetdicom": (
        "pynetdicom",
        (),
        {"MOVE *": RLE, "MOVE default": EVLE, "GET *": FAILED, "GET default": FAILED},
    ),
    "dcmqrscp": (
        "dcmqrscp",
        (),
        {"MOVE *": FAILED, "MOVE default": FAILED, "GET *": FAILED, "GET default": FAILED},
    ),
    "dcmqrscp-rle": (
        "dcmqrscp",
        ("-xr", "+xr"),  # propose RLE on its C-MOVE associations, prefer it on others' C-GET
        {"MOVE *": RLE, "MOVE default": EVLE, "GET *": RLE, "GET default": FAILED},
    ),
}
"""Per PACS set-up: what each request must give — the transfer syntax of every instance, or
the error of a PACS that cannot send them."""


@pytest.mark.parametrize("setup", list(OUTCOMES))
async def test_a_compressed_study(setup: str, tmp_path: Path) -> None:
    kind, options, expected = OUTCOMES[setup]
    study = write_ct_study(tmp_path / "rle", images=2, transfer_syntax=RLELossless, seed=5)
    stored = originals(study.paths)
    responses: dict[str, httpx.Response] = {}
    async with (
        open_archive(kind, tmp_path, study.paths, options=options) as archive,
        open_gateway(archive, cache=False) as gateway,  # each request asks the PACS
        httpx.AsyncClient(base_url=gateway.http_url, timeout=60) as http,
    ):
        for request in REQUESTS:
            route, accept = request.split()
            headers = AS_STORED if accept == "*" else {}
            url = f"/aets/{route}/studies/{study.study_uid}"
            responses[request] = await http.get(url, headers=headers)

    for request, outcome in expected.items():
        response = responses[request]
        if outcome == FAILED:
            assert response.status_code == 502, f"{request}: {response.text}"
            assert outcome in response.json()["error"], request
            continue
        assert response.status_code == 200, f"{request}: {response.text}"
        got = retrieved(response)
        assert sorted(got) == sorted(stored), request
        for uid, original in stored.items():
            assert str(got[uid].file_meta.TransferSyntaxUID) == outcome, request
            reference = original if outcome == RLE else decompressed(original)
            assert differences(reference, got[uid]) == [], f"{request}: {uid}"
