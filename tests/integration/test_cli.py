"""The ``rst`` command as a user runs it: a real process, real signals."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import trio

from rst.devpacs import DevPacs, Faults, FolderArchive, write_sample_study
from tests.support.rst_process import read_until, rst_process


async def test_dev_serves_the_sample_study_and_stops_on_sigint(tmp_path: Path) -> None:
    async with rst_process("dev", "--data", str(tmp_path / "pacs")) as process:
        match = await read_until(process, r"curl (http://127\.0\.0\.1:\d+)/aets\n")
        base = f"{match.group(1)}/aets/DEVPACS"
        async with httpx.AsyncClient(timeout=30) as http:
            studies = (await http.get(f"{base}/studies")).json()
            assert len(studies) == 1
            study = studies[0]["0020000D"]["Value"][0]
            retrieved = await http.get(f"{base}/studies/{study}")
        assert retrieved.status_code == 200
        assert retrieved.content.count(b"Content-Type: application/dicom") == 12
        process.send_signal(signal.SIGINT)
        with trio.fail_after(15):
            assert await process.wait() == 0


def test_invalid_config_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "rst.toml"
    config.write_text('[http]\nport = "eighty"\n\n[[aets]]\naet = "X"\nretrieve = "fetch"\n')
    result = subprocess.run(
        [sys.executable, "-m", "rst", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "http.port" in result.stderr
    assert "aets.0.retrieve" in result.stderr


async def test_sigterm_cancels_in_flight_retrieves_within_the_grace_period(
    tmp_path: Path,
) -> None:
    write_sample_study(tmp_path / "pacs", images=4, rows=32, columns=32)
    gate = threading.Event()
    pacs = DevPacs(
        FolderArchive(tmp_path / "pacs"), aet="HANG", faults=Faults(hang_after_move=gate)
    )
    pacs.start()
    config = tmp_path / "rst.toml"
    config.write_text(
        "[http]\ngraceful_timeout = 1.0\n\n"
        f'[[aets]]\naet = "HANG"\nhost = "127.0.0.1"\nport = {pacs.port}\ncancel_timeout = 1.0\n'
    )
    try:
        async with rst_process("serve", "--config", str(config)) as process:
            match = await read_until(process, r"serving DICOMweb on (http://\S+),")
            study = pacs.archive.instances()[0].study_uid
            url = f"{match.group(1)}/aets/HANG/studies/{study}"
            async with trio.open_nursery() as nursery, httpx.AsyncClient(timeout=30) as http:

                async def client() -> None:
                    # The server goes away mid-request: the response breaks off.
                    try:
                        await http.get(url)
                    except httpx.HTTPError:
                        return

                nursery.start_soon(client)
                assert await trio.to_thread.run_sync(pacs.wait_for, "hang", 10.0)
                process.send_signal(signal.SIGTERM)
                with trio.fail_after(10):  # graceful 1 s + cancel 1 s + hypercorn's shutdown
                    assert await process.wait() == 0
        assert await trio.to_thread.run_sync(pacs.wait_for, "cancel", 5.0), pacs.events
    finally:
        gate.set()
        pacs.stop()
