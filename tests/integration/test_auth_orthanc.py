"""``[auth]`` in front of a real Orthanc: a bearer token signed by a key from ``jwks_file``, a
static token for a machine, and a DICOMweb client (dicomweb-client) that sends its token."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio
from dicomweb_client.api import DICOMwebClient

from rst.auth import AuthConfig
from rst.config import AeConfig
from rst.server import Running
from tests.support.gateway import run_gateway
from tests.support.idp import ISSUER, claims, ec_key, mint
from tests.support.orthanc import Orthanc, add_modality
from tests.support.sample import StudyFiles

pytestmark = pytest.mark.integration

KEY = ec_key("orthanc-test")
MACHINE = "machine-token-for-the-orthanc-test"


@pytest.fixture
async def protected_gateway(orthanc_with_study: Orthanc, tmp_path: Path) -> AsyncIterator[Running]:
    orthanc = orthanc_with_study
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [KEY.jwk()]}))
    auth = AuthConfig.model_validate(
        {
            "issuer": ISSUER,
            "audience": "rst",
            "jwks_file": str(jwks),
            "tokens": [
                {
                    "name": "pipeline",
                    "sha256": hashlib.sha256(MACHINE.encode()).hexdigest(),
                    "roles": ["reader"],
                }
            ],
            "grants": [{"role": "reader", "aets": [orthanc.aet], "allow": ["search", "retrieve"]}],
        }
    )
    ae = AeConfig(aet=orthanc.aet, host="127.0.0.1", port=orthanc.dicom_port, retrieve="get")
    async with run_gateway(ae, auth=auth) as running:
        await add_modality(orthanc, "rst", "RST", *running.dimse_address)
        yield running


async def test_tokens_in_front_of_orthanc(protected_gateway: Running, ct_study: StudyFiles) -> None:
    base = f"{protected_gateway.http_url}/aets/ORTHANC"
    jwt = mint(KEY, claims(roles=["reader"]))
    async with httpx.AsyncClient(timeout=30) as http:
        anonymous = await http.get(f"{base}/studies")
        machine = await http.get(f"{base}/studies", headers={"Authorization": f"Bearer {MACHINE}"})
        store = await http.post(f"{base}/studies", headers={"Authorization": f"Bearer {jwt}"})
        echo = await http.get(base, headers={"Authorization": f"Bearer {jwt}"})
    assert anonymous.status_code == 401
    assert machine.status_code == 200
    assert [row["0020000D"]["Value"][0] for row in machine.json()] == [ct_study.study_uid]
    assert store.status_code == 403
    assert echo.json()["status"] == "ok"

    client = DICOMwebClient(url=base, headers={"Authorization": f"Bearer {jwt}"})
    instances = await trio.to_thread.run_sync(client.retrieve_study, ct_study.study_uid)
    assert sorted(ds.SOPInstanceUID for ds in instances) == sorted(ct_study.sop_uids)
