"""``http.workers = 2``: two rst processes on the same ports, in front of a real Orthanc."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from pydicom.filebase import DicomBytesIO

from tests.support.download import download_all
from tests.support.gateway import wait_until
from tests.support.orthanc import Orthanc, add_modality
from tests.support.rst_process import child_pids, read_until, rst_process
from tests.support.sample import StudyFiles

pytestmark = pytest.mark.integration


@dataclass
class Supervisor:
    process: trio.Process
    url: str  # .../aets/ORTHANC

    def workers(self) -> list[int]:
        return child_pids(self.process.pid)


@pytest.fixture
async def supervisor(orthanc_with_study: Orthanc, tmp_path: Path) -> AsyncIterator[Supervisor]:
    orthanc = orthanc_with_study
    config = tmp_path / "rst.toml"
    config.write_text(
        "[http]\nworkers = 2\ngraceful_timeout = 2.0\n\n"
        f'[[aets]]\naet = "{orthanc.aet}"\nhost = "127.0.0.1"\nport = {orthanc.dicom_port}\n'
        'retrieve = "move"\n'
        # every retrieve a C-MOVE (no cache): the C-STOREs must be passed between the workers
        "cache = false\n"
    )
    async with rst_process("serve", "--config", str(config)) as process:
        match = await read_until(
            process, r"serving DICOMweb on (http://\S+), C-STORE receiver \S+ on [\d.]+:(\d+)"
        )
        await add_modality(orthanc, "RST", "RST", "127.0.0.1", int(match.group(2)))
        # both workers up: each logs its own start-up line
        for _ in range(2):
            await read_until(process, r"\[worker [01]\] rst\.server\b[^:]*: rst serving")
        yield Supervisor(process, f"{match.group(1)}/aets/{orthanc.aet}")


async def test_concurrent_retrieves_are_complete_whichever_worker_serves_them(
    supervisor: Supervisor, ct_study: StudyFiles
) -> None:
    # 12 concurrent C-MOVEs from two workers: about half of the PACS's associations reach the
    # worker that did not send the C-MOVE and must be passed on, or instances would be missing.
    await retrieve_all(supervisor, ct_study, 12)


async def retrieve_all(supervisor: Supervisor, study: StudyFiles, count: int) -> None:
    """*count* concurrent WADO-RS retrieves of *study*, each complete and exact."""
    expected = {
        str(pydicom.dcmread(path).SOPInstanceUID): bytes(pydicom.dcmread(path).PixelData)
        for path in study.paths
    }
    url = f"{supervisor.url}/studies/{study.study_uid}"
    downloads = await download_all([url] * count, within=60)

    for download in downloads:
        assert download.status == 200
        datasets = [pydicom.dcmread(DicomBytesIO(data)) for _, data in download.parts()]
        assert {str(ds.SOPInstanceUID): bytes(ds.PixelData) for ds in datasets} == expected


async def test_sigterm_stops_every_worker(supervisor: Supervisor) -> None:
    workers = supervisor.workers()
    assert len(workers) == 2

    supervisor.process.send_signal(signal.SIGTERM)
    with trio.fail_after(20):
        assert await supervisor.process.wait() == 0
    assert all(_gone(pid) for pid in workers)


async def test_a_killed_worker_is_replaced_and_the_gateway_goes_on(
    supervisor: Supervisor, ct_study: StudyFiles
) -> None:
    process = supervisor.process
    qido = f"{supervisor.url}/studies?StudyInstanceUID={ct_study.study_uid}"
    victim, survivor = supervisor.workers()
    descriptors = _descriptors(process.pid)
    os.kill(victim, signal.SIGKILL)

    # The victim can accept nothing more once killed (the accept queue is shared): this query,
    # whether its slot is filled again yet or not, reaches a live worker.
    await query(qido)
    crash = await read_until(
        process,
        rf"WARNING +rst\.workers\b[^:]*: worker (\d) \(pid {victim}\) was killed by SIGKILL "
        r"after [\d.]+ s: starting another at once",
    )
    slot = int(crash.group(1))
    replacement = await replaced(process, slot)
    assert sorted(supervisor.workers()) == sorted([survivor, replacement])

    # killed again soon after its start: replaced after the back-off's first wait
    os.kill(replacement, signal.SIGKILL)
    await read_until(
        process,
        rf"WARNING +rst\.workers\b[^:]*: worker {slot} \(pid {replacement}\) was killed by SIGKILL "
        r"after [\d.]+ s: starting another in 0\.5 s \(2 crashes in a row\)",
    )
    replacement = await replaced(process, slot)
    assert sorted(supervisor.workers()) == sorted([survivor, replacement])
    assert _descriptors(process.pid) == descriptors  # nothing of the dead ones is left open

    for _ in range(20):  # new connections: the kernel spreads them over both workers
        await query(qido)

    # Retrieves through the replacement alone (the survivor stopped: it accepts neither the
    # HTTP connections nor the PACS's C-STORE associations): its C-MOVE message ids are its
    # slot's. Then through both: C-STOREs are passed on between them, both ways.
    os.kill(survivor, signal.SIGSTOP)
    try:
        await retrieve_all(supervisor, ct_study, 4)
    finally:
        os.kill(survivor, signal.SIGCONT)
    await retrieve_all(supervisor, ct_study, 12)

    process.send_signal(signal.SIGTERM)
    with trio.fail_after(20):
        assert await process.wait() == 0
    assert _gone(survivor)
    assert _gone(replacement)


async def replaced(process: trio.Process, slot: int) -> int:
    """Wait for worker *slot*'s replacement to serve; its pid."""
    started = await read_until(process, rf"worker {slot} started again: pid (\d+)")
    await read_until(process, rf"\[worker {slot}\] rst\.server\b[^:]*: rst serving")
    return int(started.group(1))


async def query(url: str) -> None:
    """One QIDO-RS on a new connection: one study found."""
    async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
        response = await http.get(url)
    assert response.status_code == 200, response.text
    assert len(response.json()) == 1


async def test_workers_do_not_outlive_a_killed_supervisor(supervisor: Supervisor) -> None:
    # SIGKILL leaves the supervisor no chance to stop them: they see EOF on their stdin.
    workers = supervisor.workers()
    supervisor.process.kill()
    await supervisor.process.wait()

    await wait_until(
        lambda: all(_gone(pid) for pid in workers), within=20, what="the workers to exit"
    )


async def test_the_workers_report_their_metrics_as_one_gateway(
    supervisor: Supervisor, ct_study: StudyFiles
) -> None:
    await retrieve_all(supervisor, ct_study, 6)
    root = supervisor.url.rsplit("/aets/", 1)[0]
    for _ in range(4):  # new connections: whichever worker answers, it sums them all
        async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
            response = await http.get(f"{root}/metrics")
        assert response.status_code == 200
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples
        }
        retrieves = ("rst_retrieves_total", (("aet", "ORTHANC"), ("outcome", "complete")))
        assert samples[retrieves] == 6
        route = (("method", "GET"), ("route", "/aets/{aet}/studies/{study}"), ("status", "200"))
        assert samples[("rst_http_requests_total", route)] == 6

    # the folder the workers count into belongs to the supervisor: gone when it stops
    folders = {_metrics_dir(pid) for pid in supervisor.workers()}
    assert len(folders) == 1
    (folder,) = folders
    assert folder is not None
    assert _exists(folder)
    supervisor.process.send_signal(signal.SIGTERM)
    with trio.fail_after(20):
        assert await supervisor.process.wait() == 0
    assert not _exists(folder)


def _exists(folder: str) -> bool:
    return Path(folder).exists()


def _metrics_dir(pid: int) -> str | None:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    found = [v for v in environ if v.startswith(b"PROMETHEUS_MULTIPROC_DIR=")]
    return found[0].split(b"=", 1)[1].decode() if found else None


def _descriptors(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def _gone(pid: int) -> bool:
    """The process has exited (reaped, or a zombie waiting for its parent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except FileNotFoundError:
        return True


def test_a_worker_started_by_hand_says_what_it_is() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rst", "worker"],
        input=b"",
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert b"started by `rst serve` when http.workers > 1" in result.stderr
