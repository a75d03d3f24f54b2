"""A throwaway PostgreSQL server for tests, on 127.0.0.1 and a free port.

    async with open_postgres(tmp_path / "pg") as url:  # "postgresql://rst@127.0.0.1:PORT/rst"
        index = await Index.open(url)

The server comes from Debian's ``postgresql`` package (``/usr/lib/postgresql/*/bin``): ``initdb``
with trust authentication and no fsync, then ``postgres`` listening on loopback only (its Unix
socket in the data folder's parent, never ``/var/run/postgresql``). PostgreSQL refuses to run as
root: under root (CI) both run as the package's ``postgres`` system user through ``setpriv``, with
the data folder in a fresh directory under the system temp dir owned by that user (pytest's
``tmp_path`` is not traversable by other users). The log is ``workdir/postgres.log``.

``serve_in_thread`` keeps one server for a whole pytest session (pytest-trio fixtures are
per-test); ``create_database`` / ``create_schema`` then give each test a fresh namespace in it.
"""

from __future__ import annotations

import itertools
import os
import pwd
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import TypeVar

import psycopg
import trio

from .loopback import free_port, log_tail

__all__ = [
    "PostgresError",
    "create_database",
    "create_schema",
    "open_postgres",
    "postgres_bin",
    "serve_in_thread",
]

USER = "rst"
DATABASE = "rst"
READY_TIMEOUT = 30.0
STOP_GRACE = 10.0
START_ATTEMPTS = 3  # free_port() is racy: retry with a fresh port when the bind failed
_SYSTEM_USER = "postgres"  # created by the Debian package

T = TypeVar("T")


class PostgresError(RuntimeError):
    pass


def postgres_bin() -> Path:
    """The newest ``/usr/lib/postgresql/*/bin`` with initdb and postgres; raises (never skips)."""
    candidates = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if p.name == "bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else -1,
    )
    for bin_dir in reversed(candidates):
        if (bin_dir / "initdb").is_file() and (bin_dir / "postgres").is_file():
            return bin_dir
    raise PostgresError(
        "PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb, postgres) are missing: "
        "run scripts/install-deps (installs Debian's postgresql)"
    )


def _as_server_user(argv: list[str]) -> list[str]:
    """``argv`` run as the ``postgres`` system user when we are root (exec, no extra process)."""
    if os.getuid() != 0:
        return argv
    return ["setpriv", f"--reuid={_SYSTEM_USER}", f"--regid={_SYSTEM_USER}", "--init-groups", *argv]


def _make_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="rst-postgres-"))
    if os.getuid() == 0:
        try:
            user = pwd.getpwnam(_SYSTEM_USER)
        except KeyError:
            shutil.rmtree(root)
            raise PostgresError(
                f"running as root and there is no {_SYSTEM_USER!r} system user to run PostgreSQL "
                "as: run scripts/install-deps (installs Debian's postgresql)"
            ) from None
        os.chown(root, user.pw_uid, user.pw_gid)
    return root


def _try_connect(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


async def _ready(proc: trio.Process, url: str, deadline: float) -> bool:
    """Poll a connection until the server accepts one; False if it exited first."""
    while True:
        if proc.poll() is not None:
            return False
        if await trio.to_thread.run_sync(_try_connect, url):
            return True
        if trio.current_time() > deadline:
            raise PostgresError("PostgreSQL did not accept connections in time")
        await trio.sleep(0.05)  # bounded readiness polling of a freshly started server


async def _stop(proc: trio.Process) -> None:
    """SIGINT (PostgreSQL's fast shutdown), then SIGKILL after a grace period. Shielded."""
    with trio.CancelScope(shield=True):
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            with trio.move_on_after(STOP_GRACE):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
        await proc.wait()


@asynccontextmanager
async def open_postgres(
    workdir: Path, *, ready_timeout: float = READY_TIMEOUT
) -> AsyncIterator[str]:
    """Start PostgreSQL on 127.0.0.1 (free port), yield the URL of a fresh database ``rst``
    (user ``rst``, trust auth); on exit stop the server and remove its data folder.

    Cleanup is shielded: a cancelled caller never leaves a server behind.
    """
    bin_dir = postgres_bin()
    await trio.Path(workdir).mkdir(parents=True, exist_ok=True)
    log_path = workdir / "postgres.log"
    root = _make_root()
    data = root / "data"
    proc: trio.Process | None = None
    try:
        initdb = _as_server_user(
            [
                str(bin_dir / "initdb"),
                *("-D", str(data), "-U", USER, "-A", "trust", "-E", "UTF8", "--locale=C"),
                *("--no-sync", "--no-instructions"),
            ]
        )
        done = await trio.run_process(initdb, capture_stdout=True, capture_stderr=True, check=False)
        if done.returncode != 0:
            raise PostgresError(f"initdb failed:\n{done.stderr.decode(errors='replace')}")
        url = ""
        for _attempt in range(START_ATTEMPTS):
            port = free_port()
            argv = _as_server_user(
                [
                    str(bin_dir / "postgres"),
                    *("-D", str(data), "-k", str(root), "-h", "127.0.0.1", "-p", str(port)),
                    *("-c", "fsync=off", "-c", "synchronous_commit=off"),
                    *("-c", "full_page_writes=off", "-c", "max_connections=50"),
                ]
            )
            with log_path.open("ab") as log:
                offset = log.tell()
                proc = await trio.lowlevel.open_process(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
                )
            admin = f"postgresql://{USER}@127.0.0.1:{port}/postgres"
            try:
                ready = await _ready(proc, admin, trio.current_time() + ready_timeout)
            except PostgresError as exc:
                raise PostgresError(f"{exc}; log tail:\n{log_tail(log_path)}") from None
            if ready:
                url = await trio.to_thread.run_sync(create_database, admin, DATABASE)
                break
            await _stop(proc)
            with log_path.open("rb") as log:
                log.seek(offset)
                if b"could not bind" not in log.read():
                    break  # a real error: retrying cannot help
        if not url:
            raise PostgresError(
                f"PostgreSQL exited during start-up; log tail:\n{log_tail(log_path)}"
            )
        yield url
    finally:
        if proc is not None:
            await _stop(proc)
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(shutil.rmtree, root, True)


_names = itertools.count()


def create_database(url: str, name: str | None = None) -> str:
    """Create database ``name`` (default: a fresh ``rst_N``) on the server of ``url`` and return
    its URL. Blocking (a few tens of ms)."""
    name = name or f"rst_{os.getpid()}_{next(_names)}"
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as db:
        db.execute(f'CREATE DATABASE "{name}"'.encode())
    return url.rsplit("/", 1)[0] + f"/{name}"


def create_schema(url: str) -> str:
    """Create a fresh schema in the database of ``url`` and return a URL whose connections use
    it (``search_path``): a clean namespace in milliseconds, where a database takes ~0.3 s."""
    name = f"rst_{os.getpid()}_{next(_names)}"
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as db:
        db.execute(f'CREATE SCHEMA "{name}"'.encode())
    return f"{url}?options=-csearch_path%3D{name}"


@contextmanager
def serve_in_thread(server: AbstractAsyncContextManager[T]) -> Iterator[T]:
    """Enter the async context manager ``server`` in its own trio run on a thread; yield what
    it yields, exit it (in that thread) when the ``with`` block ends. For session and module
    fixtures (a PostgreSQL server; the replicas of :mod:`tests.support.replicas`)."""
    started: queue.Queue[tuple[T, trio.lowlevel.TrioToken, trio.Event] | BaseException]
    started = queue.Queue()
    failure: list[BaseException] = []

    async def run() -> None:
        done = trio.Event()
        try:
            async with server as value:
                started.put((value, trio.lowlevel.current_trio_token(), done))
                await done.wait()
        except BaseException as exc:
            started.put(exc)  # read by the caller unless it already has the value
            failure.append(exc)

    thread = threading.Thread(target=trio.run, args=(run,), name="served-in-thread", daemon=True)
    thread.start()
    first = started.get()
    if isinstance(first, BaseException):
        thread.join()
        raise first
    value, token, done = first
    try:
        yield value
    finally:
        trio.from_thread.run_sync(done.set, trio_token=token)
        thread.join()
        if failure:
            raise failure[0]
