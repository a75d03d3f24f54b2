"""One gateway for a whole fuzz module: rst in front of the dev PACS, run in a thread of its own.

hypothesis runs each example of a test as a fresh call, so the gateway cannot live in the
test's trio run: it runs in a background thread (its own ``trio.run``) for the module, and each
example sends its request from the test's thread with a ``trio.run`` of its own. Two AEs:

- ``DEV``: the dev PACS (C-FIND, C-MOVE into rst's receiver, C-STORE for STOW), whose archive
  tells what a STOW really stored;
- ``DOWN``: an archive whose port refuses connections (502/503/504 are right answers there).

Every ERROR logged by rst (or by the dev PACS) while the module runs is collected
(:attr:`FuzzGateway.log`): an error logged is something not foreseen, even when the client got a
proper answer.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from rst.config import AeConfig
from rst.devpacs import DevPacs, FolderArchive, write_sample_study
from rst.server import Running
from tests.support.gateway import run_gateway
from tests.support.hostile_http import Answer, HostileRequest, Target, exchange

REQUEST_DEADLINE = 10.0
"""Seconds any one exchange may take (the invariant "never a hang")."""
START_DEADLINE = 30.0
TIMEOUTS: dict[str, Any] = {
    "connect_timeout": 2.0,
    "find_timeout": 5.0,
    "first_store_timeout": 5.0,
    "idle_timeout": 5.0,
    "store_timeout": 5.0,
    "queue_timeout": 2.0,
}
HTTP: dict[str, Any] = {"body_timeout": 1.0, "send_timeout": 5.0, "keep_alive_timeout": 2.0}
"""A request that stops sending its body ends after 1 s (408), a request head that never ends
after 2 s (hypercorn's keep-alive timer): such examples stay quick, and the bounds are checked."""


LOGGERS = ("rst", "pynetdicom")
"""Whose ERRORs count: rst's, and the dev PACS's (pynetdicom logs "Exception in handler" when
the dev PACS's own code raised)."""


class _Collector(logging.Handler):
    """Keeps the ERROR (and worse) records of rst's loggers, from any thread."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("pynetdicom") and not record.getMessage().startswith(
            "Exception in handler"
        ):
            return  # pynetdicom's own complaints about what rst sent: rst's answer tells
        self.records.append(record)  # under the handler's own lock (Handler.handle)

    def take(self) -> list[str]:
        with self.lock:  # type: ignore[union-attr]
            records, self.records = self.records, []
        return [
            f"{r.name}: {r.getMessage()} ({r.exc_info[1]!r})"
            if r.exc_info
            else f"{r.name}: {r.getMessage()}"
            for r in records
        ]


class FuzzGateway:
    """rst and the dev PACS, running in a background thread until :meth:`stop`."""

    def __init__(self, pacs: DevPacs, spool: Path, down_port: int) -> None:
        self.pacs = pacs
        self.spool = spool
        self.down_port = down_port
        self.running: Running | None = None
        self._target: Target | None = None
        self.failure: BaseException | None = None
        self.log = _Collector()
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="fuzz-gateway", daemon=True)

    # -- life ----------------------------------------------------------------------------------

    def start(self) -> None:
        for name in LOGGERS:
            logging.getLogger(name).addHandler(self.log)
        self._thread.start()
        if not self._ready.wait(START_DEADLINE) or self.running is None:
            raise RuntimeError(f"the gateway did not start: {self.failure!r}")

    def stop(self) -> None:
        if self._token is not None and self._stop is not None and self._thread.is_alive():
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(START_DEADLINE)
        for name in LOGGERS:
            logging.getLogger(name).removeHandler(self.log)

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:  # reported by alive() and at teardown
            self.failure = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        aes = (
            AeConfig(aet="DEV", host="127.0.0.1", port=self.pacs.port, **TIMEOUTS),
            AeConfig(aet="DOWN", host="127.0.0.1", port=self.down_port, **TIMEOUTS),
        )
        dimse = {"spool_dir": str(self.spool)}
        async with run_gateway(*aes, dimse=dimse, http=HTTP) as running:
            self.pacs.add_destination("RST", *running.dimse_address)
            self.running = running
            self._ready.set()
            await self._stop.wait()

    # -- use -----------------------------------------------------------------------------------

    @property
    def target(self) -> Target:
        if self._target is None:
            self._target = self._make_target()
        return self._target

    def _make_target(self) -> Target:
        assert self.running is not None
        first = self.pacs.archive.instances()[0]
        host, port = self.running.http_url.removeprefix("http://").rsplit(":", 1)
        return Target(
            host=host,
            port=int(port),
            aet="DEV",
            study=first.study_uid,
            series=first.series_uid,
            sop=first.sop_instance_uid,
            broken_aets=("DOWN",),
        )

    def send(self, request: HostileRequest) -> Answer:
        """One exchange, from the calling thread; fails if it takes longer than the deadline."""

        async def run() -> Answer:
            with trio.fail_after(REQUEST_DEADLINE):
                return await exchange(self.target.address, request)

        try:
            return trio.run(run)
        except trio.TooSlowError:
            raise AssertionError(
                f"no complete answer within {REQUEST_DEADLINE} s (a hang): {request}"
            ) from None

    def alive(self) -> None:
        """The gateway still serves: its thread runs and GET /aets answers 200."""
        assert self.failure is None, f"the gateway died: {self.failure!r}"
        assert self._thread.is_alive(), "the gateway's thread ended"
        probe = HostileRequest(
            kind="good",
            label="GET /aets",
            method="GET",
            raw=b"GET /aets HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            route="aets",
            must_succeed=True,
        )
        answer = self.send(probe)
        assert answer.status == 200, f"GET /aets answered {answer}"
        assert answer.complete, f"GET /aets answered {answer}"

    def stored(self, sop_uid: str) -> bool:
        """Whether the dev PACS holds the instance."""
        return any(i.sop_instance_uid == sop_uid for i in self.pacs.archive.instances())


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzGateway]:
    folder = tmp_path_factory.mktemp("fuzz-pacs")
    write_sample_study(folder, images=4, rows=16, columns=16, series=2)
    spool = tmp_path_factory.mktemp("fuzz-spool")
    pacs = DevPacs(FolderArchive(folder), aet="DEV", port=0)
    # A connection rst closes before its A-ASSOCIATE-RQ (an upload it cannot send) keeps a
    # pynetdicom acceptor thread until this timeout; stop() would wait for it.
    pacs.ae.acse_timeout = 2
    pacs.start()
    # A bound socket that never listens: connections to its port are refused, and no other
    # process can take the port while the module runs.
    down = socket.socket()
    down.bind(("127.0.0.1", 0))
    server = FuzzGateway(pacs, spool, down.getsockname()[1])
    try:
        server.start()
        yield server
    finally:
        server.stop()
        pacs.stop()
        down.close()
    assert server.failure is None, f"the gateway ended with {server.failure!r}"
