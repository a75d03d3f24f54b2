"""Two rst replicas as separate processes, sharing one Orthanc, one bucket and one index.

``deployment`` is started once for the folder (PostgreSQL, moto, Orthanc and two ``rst serve``
processes take a few seconds on a loaded machine) in its own trio run on a thread
(:func:`~tests.support.postgres.serve_in_thread`); each test stores studies of its own, with
UIDs no other test uses, and talks to the replicas over HTTP. After each test the replicas'
logs must hold no traceback.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.postgres import serve_in_thread
from tests.support.replicas import Deployment, open_replicas


@pytest.fixture(scope="package")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with serve_in_thread(open_replicas(tmp_path_factory.mktemp("deployment"))) as running:
        yield running


@pytest.fixture(autouse=True)
def no_tracebacks(deployment: Deployment) -> Iterator[None]:
    yield
    assert deployment.tracebacks() == []
