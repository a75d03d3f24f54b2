"""Several rst replicas as separate processes in front of the same archives, as on Kubernetes.

    async with open_replicas(tmp_path / "deployment", count=2) as deployment:
        a, b = deployment.replicas          # each: its own HTTP URL, C-STORE AE title and port
        deployment.orthanc                  # one Orthanc, knowing every replica as a modality
        deployment.s3_endpoint              # one moto bucket ...
        deployment.index_url                # ... indexed in one PostgreSQL database

Every replica reads the same configuration file (a ConfigMap) and differs only by ``RST_*``
environment variables, as the manifests in ``deploy/kubernetes/`` set them: its AE title
(``RST_DIMSE_AET``), its retrieve cache folder (``RST_CACHE_PATH``), and the secrets — the
PostgreSQL DSN of the S3 archive's index (``RST_AETS_S3_INDEX``) and the S3 credentials (the
variables ``access_key_env``/``secret_key_env`` name). ``[http] base_url`` is the same for all,
as behind one load balancer, so their answers can be compared byte for byte.

Each replica's output goes to ``{workdir}/{aet}.log``; :meth:`Deployment.tracebacks` reads them.
"""

from __future__ import annotations

import re
import string
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio

from .moto import create_bucket, open_moto
from .orthanc import Orthanc, add_modality, open_orthanc
from .postgres import open_postgres
from .rst_process import rst_process

__all__ = [
    "BASE_URL",
    "BUCKET",
    "DIMSE_AET",
    "S3_AET",
    "Deployment",
    "Replica",
    "open_replicas",
    "replica_aet",
]

S3_AET = "S3"
DIMSE_AET = "ORTHANC"
BUCKET = "dicom"
BASE_URL = "https://rst.example.org"
"""The public URL every replica names in its answers (``[http] base_url``)."""
READY_TIMEOUT = 30.0
_SERVING = re.compile(r"rst serving DICOMweb on (http://\S+), C-STORE receiver \S+ on [\d.]+:(\d+)")
_S3_ENV = {"RST_TEST_S3_KEY": "test", "RST_TEST_S3_SECRET": "test"}  # moto takes any key


@dataclass(frozen=True)
class Replica:
    aet: str
    """Its own C-STORE receiver's AE title (the C-MOVE destination the PACS calls back)."""
    url: str
    """``http://127.0.0.1:PORT``, no trailing slash."""
    dimse_port: int
    log: Path

    def archive(self, aet: str) -> str:
        """The service root of archive *aet* on this replica."""
        return f"{self.url}/aets/{aet}"


@dataclass(frozen=True)
class Deployment:
    replicas: tuple[Replica, ...]
    orthanc: Orthanc
    s3_endpoint: str
    index_url: str

    def tracebacks(self) -> list[str]:
        """The replicas' log lines that begin a Python traceback (none, in a healthy run)."""
        return [
            f"{replica.aet}: {line}"
            for replica in self.replicas
            for line in replica.log.read_text(errors="replace").splitlines()
            if line.startswith("Traceback")
        ]


def replica_aet(index: int) -> str:
    """``RST-A``, ``RST-B``, …: the AE title of replica *index*."""
    return f"RST-{string.ascii_uppercase[index]}"


def _config(orthanc: Orthanc, s3_endpoint: str) -> str:
    """The configuration every replica shares (nothing per replica, no secret)."""
    return f"""\
[http]
base_url = "{BASE_URL}"
graceful_timeout = 2.0

[health]
interval = 1.0
timeout = 2.0
max_age = 5.0

[cache]
revalidate_seconds = 0.0  # a cached study is checked with the PACS at every request: a store
                          # through one replica shows through the other's cache at once

[[aets]]
aet = "{DIMSE_AET}"
host = "127.0.0.1"
port = {orthanc.dicom_port}
retrieve = "move"

[[aets]]
aet = "{S3_AET}"
backend = "s3"
endpoint = "{s3_endpoint}"
bucket = "{BUCKET}"
access_key_env = "RST_TEST_S3_KEY"
secret_key_env = "RST_TEST_S3_SECRET"
max_attempts = 2
"""


@asynccontextmanager
async def open_replicas(workdir: Path, *, count: int = 2) -> AsyncIterator[Deployment]:
    """Start PostgreSQL, moto (bucket :data:`BUCKET`), Orthanc and *count* rst replicas on
    loopback; yield them once every replica answers ``/readyz`` with 200; stop all on exit."""
    async with AsyncExitStack() as stack:
        index_url = await stack.enter_async_context(open_postgres(workdir / "postgres"))
        s3_endpoint = await stack.enter_async_context(open_moto(workdir / "moto"))
        await create_bucket(s3_endpoint, BUCKET)
        orthanc = await stack.enter_async_context(open_orthanc(workdir / "orthanc", fast_stop=True))
        config = workdir / "rst.toml"
        config.write_text(_config(orthanc, s3_endpoint))
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)  # the log drains, once the replicas stopped
        replicas = []
        for index in range(count):
            aet = replica_aet(index)
            env = {
                **_S3_ENV,
                "RST_DIMSE_AET": aet,
                "RST_CACHE_PATH": str(workdir / f"cache-{aet}"),
                "RST_AETS_S3_INDEX": index_url,
            }
            process = await stack.enter_async_context(
                rst_process("serve", "--config", str(config), cwd=workdir, env=env)
            )
            log = workdir / f"{aet}.log"
            url, dimse_port = await nursery.start(_drain, process, log)
            # Orthanc learns each replica under its own AE title: the C-MOVE destinations.
            await add_modality(orthanc, aet, aet, "127.0.0.1", dimse_port)
            replicas.append(Replica(aet, url, dimse_port, log))
        for replica in replicas:
            await _ready(replica)
        yield Deployment(tuple(replicas), orthanc, s3_endpoint, index_url)


async def _drain(
    process: trio.Process,
    log: Path,
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Copy the replica's output into *log* until it ends (a full pipe would block the
    replica); report its HTTP URL and C-STORE port once it logs that it serves."""
    assert process.stdout is not None
    seen = ""
    started = False
    async with await trio.open_file(log, "w") as out:
        with trio.fail_after(READY_TIMEOUT):  # only until started: see below
            while not started:
                chunk = await process.stdout.receive_some()
                if not chunk:
                    raise AssertionError(f"replica ended while starting:\n{seen}")
                text = chunk.decode(errors="replace")
                seen += text
                await out.write(text)
                if match := _SERVING.search(seen):
                    task_status.started((match.group(1), int(match.group(2))))
                    started = True
        await out.flush()
        while chunk := await process.stdout.receive_some():
            await out.write(chunk.decode(errors="replace"))
            await out.flush()


async def _ready(replica: Replica) -> None:
    """Wait until the replica's ``/readyz`` answers 200 (its archives answered a check)."""
    async with httpx.AsyncClient(trust_env=False, timeout=5.0) as http:
        with trio.move_on_after(READY_TIMEOUT):
            while (await http.get(f"{replica.url}/readyz")).status_code != 200:  # noqa: ASYNC110
                await trio.sleep(0.1)  # bounded: another process's readiness offers no event
            return
    raise AssertionError(f"{replica.aet} never became ready; log:\n{replica.log.read_text()}")
