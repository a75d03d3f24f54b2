"""A study larger than an association's read buffer, from a real Orthanc, byte for byte.

The receiver (C-MOVE) and a C-GET association keep each instance's fragments where they were
read until the instance is joined (``Association.keep_fragments``), and the read buffer is
reused under them when it runs out: 16 CT images of 512² (8.4 MB) come through one 4 MiB
buffer, which starts again from its front twice per association with an instance's fragments
kept. (That a reuse would overwrite kept fragments, and that they are copied out first, the
unit tests in ``tests/unit/test_ul_hot_path.py`` force with a small buffer.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pydicom
import pytest
import trio
from dicomweb_client.api import DICOMwebClient

from rst.config import AeConfig
from tests.support.gateway import run_gateway
from tests.support.orthanc import Orthanc, add_modality, upload
from tests.support.sample import write_ct_study

BUFFER = 4 * 1024 * 1024  # Association's default buffer_size


@pytest.mark.parametrize("mode", ["move", "get"])
async def test_a_study_larger_than_the_read_buffer_is_byte_identical(
    orthanc: Orthanc, tmp_path: Path, mode: Literal["move", "get"]
) -> None:
    study = write_ct_study(
        tmp_path / "big", images=16, rows=512, columns=512, seed=5, patient_id="BUFFER"
    )
    assert study.total_bytes > 2 * BUFFER
    await upload(orthanc, study.paths)
    expected = {
        uid: bytes(pydicom.dcmread(path).PixelData)
        for uid, path in zip(study.sop_uids, study.paths, strict=True)
    }
    config = AeConfig(aet=orthanc.aet, host="127.0.0.1", port=orthanc.dicom_port, retrieve=mode)
    async with run_gateway(config) as running:
        await add_modality(orthanc, "rst", "RST", *running.dimse_address)
        client = DICOMwebClient(url=f"{running.http_url}/aets/{orthanc.aet}")
        got = await trio.to_thread.run_sync(lambda: client.retrieve_study(study.study_uid))
    assert {ds.SOPInstanceUID: bytes(ds.PixelData) for ds in got} == expected
