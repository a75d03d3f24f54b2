"""The retrieve cache shared by ``http.workers = 2`` processes and kept across a restart: the
real ``rst serve`` in front of the development PACS, which counts the C-MOVEs it serves."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from rst.devpacs import DevPacs, FolderArchive, write_sample_study
from tests.support.download import Download
from tests.support.rst_process import read_until, rst_process


@pytest.fixture
def pacs(tmp_path: Path) -> Iterator[DevPacs]:
    write_sample_study(tmp_path / "pacs", images=8, rows=32, columns=32, series=2)
    server = DevPacs(FolderArchive(tmp_path / "pacs"), aet="CACHED", port=0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@asynccontextmanager
async def gateway(pacs: DevPacs, tmp_path: Path) -> AsyncIterator[str]:
    """``rst serve`` with two workers and its cache in ``tmp_path/cache``; the series URL."""
    config = tmp_path / "rst.toml"
    config.write_text(
        f'[http]\nworkers = 2\ngraceful_timeout = 2.0\n\n[cache]\npath = "{tmp_path / "cache"}"\n'
        f'\n[[aets]]\naet = "CACHED"\nhost = "127.0.0.1"\nport = {pacs.port}\n'
    )
    async with rst_process("serve", "--config", str(config)) as process:
        match = await read_until(
            process, r"serving DICOMweb on (http://\S+), C-STORE receiver \S+ on [\d.]+:(\d+)"
        )
        pacs.add_destination("RST", "127.0.0.1", int(match.group(2)))
        for _ in range(2):
            await read_until(process, r"\[worker [01]\] rst\.server\b[^:]*: rst serving")
        first = pacs.archive.instances()[0]
        yield f"{match.group(1)}/aets/CACHED/studies/{first.study_uid}/series/{first.series_uid}"
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            assert await process.wait() == 0


async def fetch(url: str, count: int) -> list[bytes]:
    """*count* concurrent retrieves of *url*, on separate connections (both workers serve)."""
    downloads = [Download(url) for _ in range(count)]
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for download in downloads:
                nursery.start_soon(download.run)
    for download in downloads:
        assert download.status == 200
        assert len(download.parts()) == 4
    return [b"".join(data for _, data in sorted(d.parts())) for d in downloads]


async def test_workers_share_the_cache_and_a_restart_keeps_it(
    pacs: DevPacs, tmp_path: Path
) -> None:
    async with gateway(pacs, tmp_path) as url:
        first = await fetch(url, 8)
        moves = pacs.events.count("move")
        assert 1 <= moves <= 2  # single flight is per process: at most one per worker

        again = await fetch(url, 8)
        assert pacs.events.count("move") == moves  # whichever worker: from the shared cache

    async with gateway(pacs, tmp_path) as url:
        after_restart = await fetch(url, 4)

    assert pacs.events.count("move") == moves
    assert len(set(first + again + after_restart)) == 1


async def test_a_cache_folder_that_cannot_be_used_stops_rst(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file, not a folder")
    config = tmp_path / "rst.toml"
    config.write_text(
        f'[cache]\npath = "{tmp_path / "taken" / "cache"}"\n\n[[aets]]\naet = "PACS"\n'
    )
    async with rst_process("serve", "--config", str(config)) as process:
        await read_until(process, r"rst: cannot start: cannot open the cache folder")
        with trio.fail_after(20):
            assert await process.wait() == 1
