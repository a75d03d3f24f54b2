"""STOW-RS tells the truth in front of a real Orthanc: a data set cut short in its pixel data
(which used to stall Orthanc's C-STORE until the upload failed with 504) and a malformed SOP
Instance UID (which used to be a 500) fail alone, never sent; the good instances are stored."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from rst.config import AeConfig
from tests.support.gateway import run_gateway
from tests.support.orthanc import Orthanc, http_client
from tests.support.stow import (
    ct_instances,
    fates,
    multipart,
    truncated_pixel_data,
    with_sop_instance,
)

pytestmark = pytest.mark.integration

STORE_TIMEOUT = 5.0


async def test_bad_parts_fail_alone_and_are_never_sent(orthanc: Orthanc, tmp_path: Path) -> None:
    first, cut, misnamed, last = ct_instances(tmp_path, 4, seed=21)
    headers, body = multipart(
        first.data,
        truncated_pixel_data(cut.data),
        with_sop_instance(b"1.2.3\\4")(misnamed.data),
        last.data,
    )
    config = AeConfig(
        aet=orthanc.aet, host="127.0.0.1", port=orthanc.dicom_port, store_timeout=STORE_TIMEOUT
    )
    async with run_gateway(config) as running:
        url = f"{running.http_url}/aets/{orthanc.aet}"
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            started = trio.current_time()
            response = await http.post("/studies", content=body, headers=headers)
            assert trio.current_time() - started < STORE_TIMEOUT
            result = fates(response)
            assert result.status == 202, response.text
            assert result.referenced == [first.uid, last.uid]
            assert result.failed == [(cut.uid, 0xC000), (None, 0xC000)]
            later = await http.get("/instances")  # the next request is served
            assert later.status_code == 200
    async with http_client(orthanc) as rest:
        stored = await rest.get("/instances", params={"expand": "1"})
    on_orthanc = {item["MainDicomTags"]["SOPInstanceUID"] for item in stored.json()}
    assert on_orthanc == {first.uid, last.uid}
