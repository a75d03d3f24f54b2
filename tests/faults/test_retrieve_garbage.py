"""A retrieve that ends early leaves no reference cycles behind (issue 8).

A client abandons it: it never reads (rst takes it for gone after ``http.send_timeout``) or it
hangs up after the first bytes; the retrieve is cancelled wherever it is: C-MOVE or C-GET on the
association, instances on their way into the retrieve cache, or served from it. Or the PACS
breaks it off midway. Whatever that leaves must be freed by reference counting alone: a cycle
through an exception's traceback holds the frames it passed through and the instances they
held, until a full collection (see :mod:`tests.support.garbage`). The same for a scripted
backend in ``tests/fuzz/test_hostile_clients.py``, for S3 in ``tests/s3/test_s3_backend.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import httpx
import pydicom
import pytest

from rst.config import AeConfig
from rst.devpacs import DevPacs, Faults, FolderArchive, write_sample_study
from tests.support.garbage import (
    Abandon,
    abandon,
    cyclic_collection_paused,
    cyclic_garbage,
    live_tasks,
    read_all,
    wait_for_tasks,
)
from tests.support.gateway import run_gateway

SEND_TIMEOUT = 0.3


class Study:
    def __init__(self, folder: Path) -> None:
        paths = write_sample_study(folder, images=12, rows=512, columns=512, series=1)
        self.folder = folder
        self.uid = str(pydicom.dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)
        self.size = sum(path.stat().st_size for path in paths)
        """More than the sockets between rst and a client that does not read can hold."""


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    return Study(tmp_path_factory.mktemp("abandoned-retrieve"))


@pytest.fixture
def pacs(study: Study) -> DevPacs:
    return DevPacs(FolderArchive(study.folder), aet="PACS")


@pytest.mark.parametrize("how", ["never-reads", "hangs-up"])
@pytest.mark.parametrize("retrieve", ["move", "get"])
async def test_an_abandoned_retrieve_leaves_no_cyclic_garbage(
    study: Study, pacs: DevPacs, retrieve: Literal["move", "get"], how: Abandon
) -> None:
    pacs.start()
    try:
        ae = AeConfig(aet="PACS", host="127.0.0.1", port=pacs.port, retrieve=retrieve)
        with cyclic_collection_paused():
            async with run_gateway(ae, http={"send_timeout": SEND_TIMEOUT}) as running:
                pacs.add_destination("RST", *running.dimse_address)
                host, port = running.http_url.removeprefix("http://").rsplit(":", 1)
                baseline = live_tasks()
                target = f"/aets/PACS/studies/{study.uid}"
                received = await abandon(host, int(port), target, how, baseline)
                garbage = cyclic_garbage()
    finally:
        pacs.stop()
    assert pacs.events.count(retrieve) == 1
    assert received < study.size
    assert not garbage, garbage.describe()


@pytest.mark.parametrize("how", ["never-reads", "hangs-up"])
async def test_an_abandoned_retrieve_from_the_cache_leaves_no_cyclic_garbage(
    study: Study, pacs: DevPacs, how: Abandon
) -> None:
    pacs.start()
    try:
        ae = AeConfig(aet="PACS", host="127.0.0.1", port=pacs.port)
        async with run_gateway(ae, http={"send_timeout": SEND_TIMEOUT}) as running:
            pacs.add_destination("RST", *running.dimse_address)
            host, port = running.http_url.removeprefix("http://").rsplit(":", 1)
            target = f"/aets/PACS/studies/{study.uid}"
            baseline = live_tasks()
            async with httpx.AsyncClient(base_url=running.http_url, timeout=30) as http:
                assert (await http.get(target)).status_code == 200  # into the cache
            await wait_for_tasks(baseline)
            with cyclic_collection_paused():
                received = await abandon(host, int(port), target, how, baseline)
                garbage = cyclic_garbage()
    finally:
        pacs.stop()
    assert pacs.events.count("move") == 1  # the abandoned retrieve was served by the cache
    assert received < study.size
    assert not garbage, garbage.describe()


@pytest.mark.parametrize("retrieve", ["move", "get"])
async def test_a_retrieve_the_pacs_breaks_off_leaves_no_cyclic_garbage(
    study: Study, retrieve: Literal["move", "get"]
) -> None:
    """The error travels from the association through the sink to the response, which it
    breaks off; every holder lets go of it."""
    pacs = DevPacs(FolderArchive(study.folder), aet="PACS", faults=Faults(die_after=4))
    pacs.start()
    try:
        ae = AeConfig(aet="PACS", host="127.0.0.1", port=pacs.port, retrieve=retrieve)
        with cyclic_collection_paused():
            async with run_gateway(ae) as running:
                pacs.add_destination("RST", *running.dimse_address)
                host, port = running.http_url.removeprefix("http://").rsplit(":", 1)
                baseline = live_tasks()
                response = await read_all(host, int(port), f"/aets/PACS/studies/{study.uid}")
                await wait_for_tasks(baseline)
                garbage = cyclic_garbage()
    finally:
        pacs.stop()
    assert response.startswith(b"HTTP/1.1 200")
    assert not response.endswith(b"0\r\n\r\n")  # broken off, not a complete chunked body
    assert not garbage, garbage.describe()
