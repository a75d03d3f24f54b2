"""compose.yaml: it parses, every file it mounts exists, and the services agree with each other.

No container engine here (no registry either): the file is parsed, rst's configuration is
loaded as the container would load it — ``deploy/compose/rst.toml`` overlaid by the image's
and the service's environment — and checked against the other services: the PACS rst calls is
the Orthanc service, Orthanc calls rst's receiver back under rst's AE title and port, the S3
archive is the MinIO service with its keys and the bucket the ``bucket`` service makes, the
index is the PostgreSQL service's database.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from rst.auth.exposure import exposure_problem, exposure_warnings
from rst.config import AeConfig, Config, S3AeConfig, load_config
from tests.support.deploy import ROOT, image_environment, yaml_documents

COMPOSE = ROOT / "compose.yaml"


def compose() -> dict[str, Any]:
    (doc,) = yaml_documents(COMPOSE)
    return doc


def service(name: str) -> dict[str, Any]:
    found: dict[str, Any] = compose()["services"][name]
    return found


def binds(name: str) -> dict[str, Path]:
    """The service's bind mounts: {path in the container: file in the checkout}."""
    out = {}
    for volume in service(name).get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            out[target] = ROOT / source
    return out


def rst_config(tmp_path: Path) -> Config:
    """rst's configuration in its container: the mounted file, the image's ENV, the service's
    environment (the command line names the file: the image's CMD)."""
    file = binds("rst")["/etc/rst/rst.toml"]
    containerfile = (ROOT / "Containerfile").read_text(encoding="utf-8")
    assert 'CMD ["serve", "--config", "/etc/rst/rst.toml"]' in containerfile
    environ = {**image_environment(), **service("rst")["environment"]}
    return load_config(file, environ=environ)


def archive(config: Config, kind: type[AeConfig] | type[S3AeConfig]) -> Any:
    (found,) = [ae for ae in config.aets if isinstance(ae, kind)]
    return found


def published(name: str) -> dict[int, tuple[str, int]]:
    """{container port: (host address, host port)}."""
    out = {}
    for spec in service(name).get("ports", []):
        host, host_port, container_port = spec.split(":")
        out[int(container_port)] = (host, int(host_port))
    return out


def test_compose_has_rst_and_its_peers_and_every_mounted_file_exists() -> None:
    assert set(compose()["services"]) == {"rst", "orthanc", "minio", "bucket", "postgres"}
    build = service("rst")["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).is_file()
    for name in compose()["services"]:
        for path in binds(name).values():
            assert path.is_file(), path
    named = {
        volume.split(":")[0]
        for spec in compose()["services"].values()
        for volume in spec.get("volumes", [])
        if not volume.startswith(".")
    }
    assert named == set(compose()["volumes"])


def test_rst_config_is_valid_and_safe_on_the_containers_network(tmp_path: Path) -> None:
    config = rst_config(tmp_path)

    assert (config.http.host, config.dimse.host) == ("0.0.0.0", "0.0.0.0")  # the image's
    assert exposure_problem(config) is None
    assert exposure_warnings(config) == []
    assert config.dimse.accept_unknown_callers is False
    assert config.auth is not None
    assert config.auth.tokens
    assert config.auth.open_endpoints == ("livez",)


def test_rst_healthcheck_asks_livez_on_its_port_and_every_port_is_on_loopback(
    tmp_path: Path,
) -> None:
    config = rst_config(tmp_path)
    check = " ".join(service("rst")["healthcheck"]["test"])
    assert f"http://127.0.0.1:{config.http.port}/livez" in check
    assert "/readyz" not in check  # a PACS that is down is no reason to restart rst
    assert published("rst") == {
        config.http.port: ("127.0.0.1", config.http.port),
        config.dimse.port: ("127.0.0.1", config.dimse.port),
    }
    for name in compose()["services"]:
        assert all(host == "127.0.0.1" for host, _ in published(name).values()), name
    grace = service("rst")["stop_grace_period"]
    assert config.http.graceful_timeout < int(grace.removesuffix("s"))


def test_rst_writes_only_to_volumes(tmp_path: Path) -> None:
    config = rst_config(tmp_path)
    targets = [volume.split(":")[1] for volume in service("rst")["volumes"]]
    assert config.dimse.spool_dir in targets
    assert config.cache.path is not None
    assert any(Path(config.cache.path).is_relative_to(target) for target in targets)


def test_orthanc_is_the_pacs_and_calls_rst_back_under_its_ae_title(tmp_path: Path) -> None:
    config = rst_config(tmp_path)
    orthanc = json.loads(binds("orthanc")["/etc/orthanc/rst.json"].read_text())
    pacs = archive(config, AeConfig)

    assert (pacs.aet, pacs.host, pacs.port) == (orthanc["DicomAet"], "orthanc", 4242)
    assert orthanc["DicomPort"] == pacs.port
    destinations = [m for m in orthanc["DicomModalities"].values() if m["AET"] == config.dimse.aet]
    assert [(m["Host"], m["Port"]) for m in destinations] == [("rst", config.dimse.port)]
    assert orthanc["DicomWeb"]["Enable"] is True
    # rst's receiver takes Orthanc's C-STOREs: it calls with the AE title rst knows it by
    assert orthanc["DicomAet"] in pacs.callers
    assert "/probes/test-aliveness.py" in service("orthanc")["healthcheck"]["test"]


def test_the_s3_archive_is_minio_with_its_keys_and_the_bucket_made_for_it(
    tmp_path: Path,
) -> None:
    config = rst_config(tmp_path)
    s3 = archive(config, S3AeConfig)
    environment = service("rst")["environment"]
    minio = service("minio")["environment"]

    assert urlsplit(s3.endpoint).hostname == "minio"
    assert environment[s3.access_key_env] == minio["MINIO_ROOT_USER"]
    assert environment[s3.secret_key_env] == minio["MINIO_ROOT_PASSWORD"]
    script = shlex.split(service("bucket")["entrypoint"][-1])
    assert f"local/{s3.bucket}" in script
    assert script[script.index("alias") + 3 : script.index("alias") + 6] == [
        s3.endpoint,
        minio["MINIO_ROOT_USER"],
        minio["MINIO_ROOT_PASSWORD"],
    ]


def test_the_index_is_the_postgres_service_database(tmp_path: Path) -> None:
    s3 = archive(rst_config(tmp_path), S3AeConfig)
    postgres = service("postgres")["environment"]
    dsn = urlsplit(s3.index)

    assert dsn.scheme == "postgresql"
    assert (dsn.hostname, dsn.port) == ("postgres", 5432)
    assert (dsn.username, dsn.password) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
    )
    assert dsn.path == f"/{postgres['POSTGRES_DB']}"


@pytest.mark.parametrize(
    ("dependency", "condition"),
    [
        ("orthanc", "service_healthy"),
        ("postgres", "service_healthy"),
        ("bucket", "service_completed_successfully"),
    ],
)
def test_rst_starts_once_its_peers_are_ready(dependency: str, condition: str) -> None:
    assert service("rst")["depends_on"][dependency] == {"condition": condition}
    assert "healthcheck" in service(dependency) or condition.endswith("successfully")


def test_the_secrets_stay_out_of_the_rst_config_file() -> None:
    text = re.sub(r"#.*", "", binds("rst")["/etc/rst/rst.toml"].read_text())
    for value in service("rst")["environment"].values():
        assert value not in text
