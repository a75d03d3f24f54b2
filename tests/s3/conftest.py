"""S3 fixtures: moto in server mode on loopback, and rst with one S3 AE in front of it.

- ``moto``: a fresh moto S3 endpoint (URL) with the bucket ``dicom``; credentials come from the
  fake environment variables ``RST_S3_KEY`` / ``RST_S3_SECRET``.
- ``s3_gateway``: rst serving that bucket as the AE ``S3`` (``max_concurrency = 3``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rst.config import S3AeConfig
from rst.server import Running
from tests.support.gateway import run_gateway
from tests.support.moto import create_bucket, open_moto
from tests.support.sample import StudyFiles, write_ct_study

BUCKET = "dicom"
AET = "S3"
MAX_CONCURRENCY = 3


def s3_config(endpoint: str, **overrides: object) -> S3AeConfig:
    values: dict[str, object] = {
        "aet": AET,
        "backend": "s3",
        "endpoint": endpoint,
        "bucket": BUCKET,
        "access_key_env": "RST_S3_KEY",
        "secret_key_env": "RST_S3_SECRET",
        "max_concurrency": MAX_CONCURRENCY,
        "max_attempts": 2,
        "connect_timeout": 2.0,
        **overrides,
    }
    return S3AeConfig.model_validate(values)


@pytest.fixture(autouse=True)
def s3_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RST_S3_KEY", "test")
    monkeypatch.setenv("RST_S3_SECRET", "test")
    # the QIDO index defaults to {aet}.sqlite3 in the current directory
    monkeypatch.chdir(tmp_path)


@pytest.fixture
async def moto(tmp_path: Path) -> AsyncIterator[str]:
    async with open_moto(tmp_path / "moto") as endpoint:
        await create_bucket(endpoint, BUCKET)
        yield endpoint


@pytest.fixture
async def s3_gateway(moto: str) -> AsyncIterator[Running]:
    async with run_gateway(s3_config(moto)) as running:
        yield running


@pytest.fixture
def study(tmp_path: Path) -> StudyFiles:
    return write_ct_study(tmp_path / "study", images=8, series=2)
