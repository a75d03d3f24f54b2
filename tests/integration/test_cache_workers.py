"""The retrieve cache shared by ``http.workers = 2`` processes and kept across a restart, and
single flight across processes (two ``rst serve`` sharing one cache folder, so that the test
chooses which process each request reaches): the real ``rst serve`` in front of the
development PACS, which counts the C-MOVEs it serves and holds them at a gate."""

from __future__ import annotations

import signal
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from rst.devpacs import DevPacs, FolderArchive, write_sample_study
from tests.support.download import Download, download_all
from tests.support.frames import OHIF_LOADER
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
    downloads = await download_all([url] * count, within=60)
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
        assert moves == 1  # single flight across the workers

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


@asynccontextmanager
async def one_process(
    pacs: DevPacs, tmp_path: Path, aet: str
) -> AsyncIterator[tuple[str, trio.Process]]:
    """``rst serve`` (one worker) calling the PACS as *aet*, its cache in ``tmp_path/cache``
    (shared by every such process of the test); its root URL and the process."""
    config = tmp_path / f"{aet}.toml"
    config.write_text(
        f'[dimse]\naet = "{aet}"\n\n[cache]\npath = "{tmp_path / "cache"}"\n'
        f'\n[[aets]]\naet = "CACHED"\nhost = "127.0.0.1"\nport = {pacs.port}\n'
    )
    async with rst_process("serve", "--config", str(config)) as process:
        match = await read_until(
            process, r"serving DICOMweb on (http://\S+), C-STORE receiver \S+ on [\d.]+:(\d+)"
        )
        pacs.add_destination(aet, "127.0.0.1", int(match.group(2)))
        yield f"{match.group(1)}/aets/CACHED", process


async def hang(pacs: DevPacs, count: int) -> None:
    """Until *count* C-MOVEs wait at the PACS's gate."""
    assert await trio.to_thread.run_sync(lambda: pacs.wait_for("hang", count=count, timeout=30))


async def test_two_processes_share_one_retrieve(pacs: DevPacs, tmp_path: Path) -> None:
    """A series retrieve in one process; the same series, and a frame of it, asked of another
    process meanwhile: they wait for the first one's C-MOVE instead of making their own."""
    gate = threading.Event()
    pacs.faults.hang_after_move = gate
    first = pacs.archive.instances()[0]
    series = f"studies/{first.study_uid}/series/{first.series_uid}"
    frame = f"{series}/instances/{first.sop_instance_uid}/frames/1"
    async with (
        one_process(pacs, tmp_path, "RST1") as (one, _),
        one_process(pacs, tmp_path, "RST2") as (two, other),
    ):
        leader = Download(f"{one}/{series}")
        follower = Download(f"{two}/{series}")
        frame_follower = Download(f"{two}/{frame}", accept=OHIF_LOADER)
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(leader.run)
                await hang(pacs, 1)
                nursery.start_soon(follower.run)
                await read_until(other, r"another process is retrieving series \S+; waiting")
                nursery.start_soon(frame_follower.run)
                await read_until(other, r"waiting for instance " + first.sop_instance_uid)
                gate.set()
        assert pacs.events.count("move") == 1
        assert [leader.status, follower.status, frame_follower.status] == [200, 200, 200]
        assert sorted(leader.parts()) == sorted(follower.parts())
        assert len(leader.parts()) == 4
        assert frame_follower.content_type.startswith("multipart/related")
        assert len(frame_follower.body) > 32 * 32 * 2  # one 32x32 16-bit frame and its head


async def test_a_killed_retriever_leaves_no_lock(pacs: DevPacs, tmp_path: Path) -> None:
    """The process retrieving a series is killed mid-C-MOVE: the one waiting on it retrieves
    the series itself, at once (the kernel dropped the dead one's lock)."""
    gate = threading.Event()
    pacs.faults.hang_after_move = gate
    first = pacs.archive.instances()[0]
    series = f"studies/{first.study_uid}/series/{first.series_uid}"
    async with (
        one_process(pacs, tmp_path, "RST1") as (one, doomed),
        one_process(pacs, tmp_path, "RST2") as (two, other),
    ):
        lost = Download(f"{one}/{series}")
        follower = Download(f"{two}/{series}")
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lost.run)
                await hang(pacs, 1)
                nursery.start_soon(follower.run)
                await read_until(other, r"another process is retrieving series \S+; waiting")
                doomed.kill()
                await doomed.wait()
                await hang(pacs, 2)  # the follower's own C-MOVE
                gate.set()
        assert pacs.events.count("move") == 2
        assert follower.status == 200
        assert len(follower.parts()) == 4
