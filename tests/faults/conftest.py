"""Fault-injection PACS: rst's development PACS with faults switched on, on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rst.devpacs import DevPacs, Faults, FolderArchive, write_sample_study


@pytest.fixture(scope="session")
def sample_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("devpacs-sample")
    write_sample_study(folder, images=12, rows=64, columns=64, series=2)
    return folder


@pytest.fixture
def faults() -> Faults:
    return Faults()


@pytest.fixture
def pacs(sample_folder: Path, faults: Faults) -> Iterator[DevPacs]:
    server = DevPacs(FolderArchive(sample_folder), aet="FAULTY", port=0, faults=faults)
    server.start()
    try:
        yield server
    finally:
        server.stop()
