"""A study stored compressed (RLE Lossless, JPEG-LS Lossless, JPEG 2000 Lossless), retrieved
through both routes, as stored (``transfer-syntax=*``) and as Explicit VR Little Endian, from
each PACS.

What each PACS can do differs, and each outcome is pinned down here:

- C-MOVE: the PACS proposes what it sends; rst's receiver accepts compressed syntaxes first.
  Orthanc and pynetdicom send the instances as stored, and rst decompresses them for a client
  that wants Explicit VR Little Endian. dcmqrscp proposes only uncompressed syntaxes unless told
  otherwise (``-xr``, ``-xt``, ``-xv``) and cannot decompress: every sub-operation fails, and
  rst says so.
- C-GET: rst asks the PACS for the study's SOP Classes in Study first. Orthanc and pynetdicom
  answer, and rst proposes for the CT class one context per compressed syntax plus one
  uncompressed (:mod:`rst.backends.dimse.proposal`): pynetdicom, which does not decompress,
  sends each instance on the context of its stored syntax, Orthanc prefers it too. dcmqrscp
  does not answer SOP Classes in Study; rst proposes one context per class with every syntax,
  and dcmqrscp accepts its own preference (``+xr``, ``+xt``, ``+xv``: the stored syntax; without
  one, only uncompressed ones, and it cannot decompress: a 502 with the PACS's status and
  counts). Whatever arrives compressed, rst decompresses for a client that wants Explicit VR
  Little Endian.

Whatever arrives is compared with the stored file: element by element when it came as stored,
after decoding the stored pixel data when it came decompressed.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from rst.dicom import uids
from tests.interop.peers import Kind, open_archive, open_gateway
from tests.support.compare import decompressed, differences, originals, retrieved
from tests.support.sample import write_ct_study, write_multiframe

pytestmark = pytest.mark.integration

AS_STORED = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
FAILED = "status 0xA702 after 0 instance(s) (0 completed, 2 failed)"
REQUESTS = ("MOVE *", "MOVE default", "GET *", "GET default")
STORED = {"rle": str(RLELossless), "jpeg-ls": str(JPEGLSLossless), "j2k": str(JPEG2000Lossless)}
"""The syntaxes a study is stored in, each a case."""
DCMQRSCP_PREFERS = {"rle": "r", "jpeg-ls": "t", "j2k": "v"}
"""dcmqrscp's option letter for each: ``-x?`` proposes it on C-MOVE, ``+x?`` prefers it."""

SETUPS: dict[str, tuple[Kind, bool, frozenset[str]]] = {
    "orthanc": ("orthanc", False, frozenset()),
    "pynetdicom": ("pynetdicom", False, frozenset()),
    "dcmqrscp": ("dcmqrscp", False, frozenset(REQUESTS)),
    "dcmqrscp-prefers": ("dcmqrscp", True, frozenset()),
}
"""Per PACS set-up: its kind, whether (dcmqrscp) it is told to use the stored syntax, and the
requests that fail (the PACS cannot send: a 502 naming its status and counts). Every other
request gives each instance in the stored syntax for ``*``, in Explicit VR Little Endian
otherwise."""


@pytest.mark.parametrize("stored", list(STORED))
@pytest.mark.parametrize("setup", list(SETUPS))
async def test_a_compressed_study(setup: str, stored: str, tmp_path: Path) -> None:
    kind, prefers, failing = SETUPS[setup]
    syntax = STORED[stored]
    letter = DCMQRSCP_PREFERS[stored]
    options = (f"-x{letter}", f"+x{letter}") if prefers else ()
    study = write_ct_study(tmp_path / stored, images=2, transfer_syntax=syntax, seed=5)
    originals_by_uid = originals(study.paths)
    assert {str(ds.file_meta.TransferSyntaxUID) for ds in originals_by_uid.values()} == {syntax}
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

    for request in REQUESTS:
        response = responses[request]
        if request in failing:
            assert response.status_code == 502, f"{request}: {response.text}"
            assert FAILED in response.json()["error"], request
            continue
        assert response.status_code == 200, f"{request}: {response.text}"
        as_stored = request.endswith("*")
        expected = syntax if as_stored else uids.EXPLICIT_VR_LITTLE_ENDIAN
        got = retrieved(response)
        assert sorted(got) == sorted(originals_by_uid), request
        for uid, original in originals_by_uid.items():
            assert str(got[uid].file_meta.TransferSyntaxUID) == expected, request
            reference = original if as_stored else decompressed(original)
            assert differences(reference, got[uid]) == [], f"{request}: {uid}"


@pytest.mark.parametrize("kind", ["orthanc", "pynetdicom"])
async def test_a_study_of_two_classes_in_three_syntaxes(kind: Kind, tmp_path: Path) -> None:
    """CT images stored as RLE, an Enhanced CT as JPEG 2000 and one uncompressed: the PACS
    names both classes, rst proposes each syntax for each, and every instance comes by C-GET as
    stored (or decompressed), whatever the PACS's own preference."""
    ct = write_ct_study(tmp_path / "ct", images=2, transfer_syntax=RLELossless, seed=7)
    j2k = write_multiframe(
        tmp_path / "j2k", study_uid=ct.study_uid, transfer_syntax=JPEG2000Lossless, seed=7
    )
    plain = write_multiframe(tmp_path / "plain", study_uid=ct.study_uid, seed=8)
    paths = ct.paths + j2k.paths + plain.paths
    stored = originals(paths)
    assert len(stored) == 4
    async with (
        open_archive(kind, tmp_path, paths) as archive,
        open_gateway(archive, cache=False) as gateway,
        httpx.AsyncClient(base_url=gateway.http_url, timeout=60) as http,
    ):
        url = f"/aets/GET/studies/{ct.study_uid}"
        as_stored = await http.get(url, headers=AS_STORED)
        default = await http.get(url)

    for response, keep in ((as_stored, True), (default, False)):
        assert response.status_code == 200, response.text
        got = retrieved(response)
        assert sorted(got) == sorted(stored)
        for uid, original in stored.items():
            syntax = original.file_meta.TransferSyntaxUID
            expected = syntax if keep else uids.EXPLICIT_VR_LITTLE_ENDIAN
            assert got[uid].file_meta.TransferSyntaxUID == expected, (keep, uid)
            reference = original if keep or not syntax.is_compressed else decompressed(original)
            assert differences(reference, got[uid]) == [], (keep, uid)
