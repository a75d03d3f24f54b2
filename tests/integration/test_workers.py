"""``http.workers = 2``: two rst processes on the same ports, in front of a real Orthanc."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
import trio
from pydicom.filebase import DicomBytesIO

from tests.support.download import Download
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
    )
    async with rst_process("serve", "--config", str(config)) as process:
        match = await read_until(
            process, r"serving DICOMweb on (http://\S+), C-STORE receiver \S+ on [\d.]+:(\d+)"
        )
        await add_modality(orthanc, "RST", "RST", "127.0.0.1", int(match.group(2)))
        # both workers up: each logs its own start-up line
        for _ in range(2):
            await read_until(process, r"\[worker [01]\] rst.server: rst serving")
        yield Supervisor(process, f"{match.group(1)}/aets/{orthanc.aet}")


async def test_concurrent_retrieves_are_complete_whichever_worker_serves_them(
    supervisor: Supervisor, ct_study: StudyFiles
) -> None:
    # 12 concurrent C-MOVEs from two workers: about half of the PACS's associations reach the
    # worker that did not send the C-MOVE and must be passed on, or instances would be missing.
    expected = {
        str(pydicom.dcmread(path).SOPInstanceUID): bytes(pydicom.dcmread(path).PixelData)
        for path in ct_study.paths
    }
    downloads = [Download(f"{supervisor.url}/studies/{ct_study.study_uid}") for _ in range(12)]
    async with trio.open_nursery() as nursery:
        for download in downloads:
            nursery.start_soon(download.run)

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


async def test_a_dead_worker_stops_the_gateway(supervisor: Supervisor) -> None:
    # Half a gateway would refuse the instances of the dead worker's C-MOVEs: all or nothing.
    workers = supervisor.workers()
    os.kill(workers[0], signal.SIGKILL)

    with trio.fail_after(20):
        assert await supervisor.process.wait() == 1
    assert _gone(workers[1])


async def test_workers_do_not_outlive_a_killed_supervisor(supervisor: Supervisor) -> None:
    # SIGKILL leaves the supervisor no chance to stop them: they see EOF on their stdin.
    workers = supervisor.workers()
    supervisor.process.kill()
    await supervisor.process.wait()

    await wait_until(
        lambda: all(_gone(pid) for pid in workers), within=20, what="the workers to exit"
    )


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
