"""OHIF v3 opens a study held by Orthanc through rst: the end-to-end test of the viewer path.

The prebuilt viewer (npm ``@ohif/app``, unpacked by scripts/install-deps) is served by a small
static server with ``/aets`` proxied to rst (:mod:`tests.support.viewer_host`); headless Chromium,
driven by playwright-core (``open_study.mjs``), opens the study list and then the study. The
test checks that the list shows the patient, that the viewer fetched metadata and frames through
rst and nothing failed, and that the first viewport shows the image: its screenshot has the
contrast of a CT slice, not a blank canvas. Screenshots are kept in ``tests/e2e/screenshots/``
for a person to look at.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import trio
from PIL import Image

from rst.config import AeConfig
from tests.support.gateway import run_gateway
from tests.support.orthanc import Orthanc, add_modality, upload
from tests.support.sample import write_ct_study
from tests.support.viewer_host import serve_viewer

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
SHOTS = HERE / "screenshots"
PATIENT = "RSTVIEWER^OHIF"


async def test_ohif_shows_a_study_from_orthanc_through_rst(
    orthanc: Orthanc, tmp_path: Path
) -> None:
    assert shutil.which("node"), "node is missing: run scripts/install-deps"
    study = write_ct_study(
        tmp_path / "study", images=8, rows=256, columns=256, series=1, patient_name=PATIENT
    )
    await upload(orthanc, study.paths)
    SHOTS.mkdir(exist_ok=True)
    ae = AeConfig(aet=orthanc.aet, host="127.0.0.1", port=orthanc.dicom_port)
    async with run_gateway(ae) as running:
        await add_modality(orthanc, "rst", "RST", *running.dimse_address)
        async with serve_viewer(running.http_url, orthanc.aet) as viewer:
            with trio.fail_after(240):
                done = await trio.run_process(
                    [
                        "node",
                        str(HERE / "open_study.mjs"),
                        viewer,
                        study.study_uid,
                        "RSTVIEWER",
                        str(SHOTS),
                    ],
                    cwd=HERE,
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    result = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert "error" not in result, (result["error"], result["failures"], result["console"][-5:])
    assert result["failures"] == [], result["failures"]
    urls = [r["url"] for r in result["requests"]]
    assert any(u.endswith("/metadata") for u in urls), urls
    assert any("/frames/" in u for u in urls), urls

    viewport = np.asarray(Image.open(SHOTS / "viewport.png").convert("L"), dtype=np.float64)
    height, width = viewport.shape
    centre = viewport[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4]
    assert centre.std() > 10, "the viewport is blank: OHIF did not render the image"
    assert len(np.unique(centre.astype(np.uint8))) > 16, "the viewport has no grey levels"
