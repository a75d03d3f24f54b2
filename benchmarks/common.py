"""What every benchmark shares: the run context, rst as a subprocess, curl, dcmtk references.

Everything listens on 127.0.0.1; every process started here is stopped in a ``finally`` (shielded
from cancellation); every wait is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # ``tests.support`` is not an installed package
    sys.path.insert(0, str(ROOT))

from tests.support.dcmtk import (  # noqa: E402
    DcmtkError,
    ToolResult,
    dcmtk_tool,
    require_dcmtk,
)
from tests.support.loopback import (  # noqa: E402
    default_build_dir,
    free_port,
    listening_sockets,
    log_tail,
    loopback_preload,
    preload_env,
    stop_process,
)
from tests.support.orthanc import Orthanc, add_modality, http_client  # noqa: E402
from tests.support.sample import StudyFiles  # noqa: E402

from .procfs import peak_rss_kib, tree  # noqa: E402

MAX_PDU = 131072
ORTHANC_AET = "ORTHANC"
RST_AET = "RST"
# storescp --ignore, one association at a time: DCMTK_AET quiet (throughput), DCMTK_TIMED_AET
# verbose (its log gives the time of the first C-STORE)
DCMTK_AET = "DCMTK"
DCMTK_TIMED_AET = "DCMTKV"
DCMTK_FORK_AET = "DCMTKFORK"  # storescp --ignore --fork (concurrent associations)
ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
READY_TIMEOUT = 30.0  # rst start-up
RETRIEVE_TIMEOUT = 300.0  # one retrieve, rst or dcmtk
STOP_GRACE = 15.0  # rst's graceful shutdown (http.graceful_timeout is 10 s)
POLL = 0.001  # storescp log polling, until the first C-STORE shows up
# What dcmtk logs with -v when a C-STORE request arrives (storescp, and getscu's sub-operations).
STORE_MARKS = (b"Received Store Request", b"Received C-STORE Request")


class BenchmarkError(RuntimeError):
    """A measurement could not be made or is not trustworthy: the benchmark stops."""


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


# -- the run context -------------------------------------------------------------------------


@dataclass(frozen=True)
class Study:
    """A generated study loaded into the PACS Orthanc."""

    key: str  # "ct", "mf", "small", "big"
    label: str  # for tables: "200 x 512² CT"
    files: StudyFiles
    patient_id: str

    @property
    def bytes(self) -> int:
        return self.files.total_bytes

    @property
    def count(self) -> int:
        return len(self.files.paths)


@dataclass
class Context:
    orthanc: Orthanc  # the PACS
    studies: dict[str, Study]
    workdir: Path  # temporary, removed at the end
    out: Path  # benchmarks/results
    stamp: str
    runs: int
    quick: bool
    storescp_port: int  # DCMTK_AET
    timed_storescp_port: int  # DCMTK_TIMED_AET
    timed_storescp_log: Path
    fork_storescp_port: int  # DCMTK_FORK_AET
    logs: list[str] = field(default_factory=list)  # rst logs written, relative to ROOT
    options: argparse.Namespace = field(default_factory=argparse.Namespace)
    """The command line, for the options a benchmark adds (its ``add_arguments``)."""


# -- rst as a subprocess ---------------------------------------------------------------------


@dataclass(frozen=True)
class Rst:
    url: str  # http://127.0.0.1:PORT
    dimse_port: int
    pid: int
    log: Path

    def peak_rss_kib(self) -> int:
        """VmHWM of rst, summed over its worker processes if it has some."""
        return sum(peak_rss_kib(p) for p in tree(self.pid))

    def ae_url(self, path: str) -> str:
        return f"{self.url}/aets/{ORTHANC_AET}/{path}"


def _rst_config(
    ctx: Context,
    name: str,
    mode: str,
    http_port: int,
    dimse_port: int,
    max_associations: int,
    workers: int = 1,
    cache: bool = False,
) -> str:
    """rst's configuration for one benchmark: *cache* turns the retrieve cache on (in a folder
    of its own), else every retrieve goes to the PACS."""
    spool = ctx.workdir / f"spool-{name}"
    spool.mkdir(exist_ok=True)
    cache_section = f"\n[cache]\npath = {json.dumps(str(ctx.workdir / f'cache-{name}'))}\n"
    return f"""[log]
level = "INFO"

[http]
host = "127.0.0.1"
port = {http_port}
workers = {workers}

[dimse]
aet = "{RST_AET}"
host = "127.0.0.1"
port = {dimse_port}
max_pdu = {MAX_PDU}
spool_dir = {json.dumps(str(spool))}

[[aets]]
aet = "{ORTHANC_AET}"
host = "127.0.0.1"
port = {ctx.orthanc.dicom_port}
retrieve = "{mode}"
max_associations = {max_associations}
cache = {"true" if cache else "false"}
{cache_section if cache else ""}"""


def _rst_env() -> dict[str, str]:
    # RST_* variables would overlay the generated configuration: leave them out.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RST_")}
    env["TCP_NODELAY"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def _wait_ready(proc: trio.Process, url: str, log: Path) -> bool:
    """Poll GET /aets until it answers 200; False if rst exited (port taken?).

    The same loop as ``tests.support.http_server.wait_http_ready``, kept here on purpose: the
    benchmarks are not to grow new dependencies on ``tests/``."""
    deadline = trio.current_time() + READY_TIMEOUT
    async with httpx.AsyncClient(trust_env=False, timeout=2.0) as client:
        while proc.poll() is None:
            try:
                response = await client.get(f"{url}/aets")
                if response.status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            if trio.current_time() > deadline:
                raise BenchmarkError(f"rst not ready after {READY_TIMEOUT} s:\n{log_tail(log)}")
            await trio.sleep(0.05)  # bounded readiness polling of a freshly started process
    return False


@asynccontextmanager
async def open_rst(
    ctx: Context,
    name: str,
    *,
    mode: str = "move",
    max_associations: int = 16,
    workers: int = 1,
    cache: bool = False,
    config: Callable[[int, int], str] | None = None,
    env: dict[str, str] | None = None,
) -> AsyncIterator[Rst]:
    """``python -m rst serve`` in front of the PACS; Orthanc learns it as C-MOVE destination.

    ``config(http_port, dimse_port)`` replaces the generated configuration (then Orthanc is not
    told about rst); ``env`` is added to rst's environment. Its log goes to
    ``<out>/bench-<stamp>-rst-<name>.log``. On exit rst is stopped (SIGTERM, then SIGKILL after
    STOP_GRACE s) and must have exited with 0.
    """
    log = ctx.out / f"bench-{ctx.stamp}-rst-{name}.log"
    ctx.logs.append(rel(log))
    config_path = ctx.workdir / f"rst-{name}.toml"
    proc: trio.Process | None = None
    try:
        for _attempt in range(3):  # free_port() is racy: retry with fresh ports
            http_port, dimse_port = free_port(), free_port()
            while dimse_port == http_port:
                dimse_port = free_port()
            config_path.write_text(
                _rst_config(
                    ctx, name, mode, http_port, dimse_port, max_associations, workers, cache
                )
                if config is None
                else config(http_port, dimse_port)
            )
            with log.open("ab") as log_file:
                proc = await trio.lowlevel.open_process(
                    [sys.executable, "-m", "rst", "serve", "--config", str(config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env={**_rst_env(), **(env or {})},
                    cwd=str(ctx.workdir),
                )
            url = f"http://127.0.0.1:{http_port}"
            if await _wait_ready(proc, url, log):
                break
            await stop_process(proc, kill=True)
        else:
            raise BenchmarkError(f"rst exited during start-up:\n{log_tail(log)}")
        if config is None:
            await add_modality(ctx.orthanc, "RST", RST_AET, "127.0.0.1", dimse_port)
        yield Rst(url=url, dimse_port=dimse_port, pid=proc.pid, log=log)
    finally:
        if proc is not None:
            await stop_process(proc, grace=STOP_GRACE)
    if proc.returncode != 0:
        raise BenchmarkError(f"rst exited with {proc.returncode}:\n{log_tail(log)}")


# -- curl ------------------------------------------------------------------------------------


@dataclass
class CurlRun:
    ttfb_s: float
    total_s: float
    bytes: int

    @property
    def mbps(self) -> float:
        return self.bytes / self.total_s / 1e6

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "mbps": self.mbps}


CURL = ["curl", "-s", "-S", "--noproxy", "*"]
CURL_WRITE_OUT = "%{http_code} %{time_starttransfer} %{time_total} %{size_download}"


async def curl_get(
    url: str, *, min_bytes: int, accept: str = ACCEPT, log: Path | None = None
) -> CurlRun:
    """GET ``url`` into /dev/null; raises unless 200 with more than ``min_bytes`` bytes."""
    argv = [*CURL, "-o", "/dev/null", "-w", CURL_WRITE_OUT, "-H", f"Accept: {accept}", url]
    with trio.fail_after(RETRIEVE_TIMEOUT):
        proc = await trio.run_process(
            argv, stdin=subprocess.DEVNULL, capture_stdout=True, capture_stderr=True, check=False
        )
    out = proc.stdout.decode().strip()
    problem = None
    try:
        code, ttfb, total, size = out.split()
        run = CurlRun(ttfb_s=float(ttfb), total_s=float(total), bytes=int(size))
    except ValueError:
        problem = f"unreadable curl output {out!r}"
    else:
        if proc.returncode != 0:
            problem = f"curl exited {proc.returncode}: {proc.stderr.decode().strip()}"
        elif code != "200":
            problem = f"HTTP {code}"
        elif run.bytes <= min_bytes:
            problem = f"{run.bytes} bytes, no more than the expected {min_bytes}"
    if problem is not None:
        tail = f"\nrst log tail:\n{log_tail(log)}" if log else ""
        raise BenchmarkError(f"GET {url}: {problem}{tail}")
    return run


# -- dcmtk references ------------------------------------------------------------------------
#
# Each reference runs twice over: plain runs (no -v anywhere, --ignore, the PDU rst uses) give
# its throughput, and separate verbose runs give its time to the first C-STORE (read from the
# log as it is written), so that logging never slows the throughput figure (issue 10).


@dataclass
class DcmtkRun:
    """A plain run: the tool's wall time (process start to exit)."""

    wall_s: float
    bytes: int  # the study's bytes on disk (dcmtk reports no transfer size)

    @property
    def mbps(self) -> float:
        return self.bytes / self.wall_s / 1e6

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "mbps": self.mbps}


def retrieve_keys(study: Study, series_uid: str | None) -> tuple[dict[str, str], str]:
    keys = {"StudyInstanceUID": study.files.study_uid}
    if series_uid is None:
        return keys, "STUDY"
    return {**keys, "SeriesInstanceUID": series_uid}, "SERIES"


def check_tool(result: ToolResult, expected: int) -> None:
    try:
        result.check()
    except DcmtkError as exc:
        raise BenchmarkError(str(exc)) from None
    completed = result.suboperations.get("Completed")
    if completed is not None and completed != expected:
        raise BenchmarkError(f"{Path(result.args[0]).name}: {completed} of {expected} completed")


def _retrieve_argv(
    tool: str, ctx: Context, study: Study, series_uid: str | None, *, verbose: bool
) -> list[str]:
    """``movescu`` (to be completed with ``-aem``) or ``getscu --ignore``, Study Root, with
    rst's PDU; ``-v`` only if *verbose*."""
    keys, level = retrieve_keys(study, series_uid)
    argv = [dcmtk_tool(tool), *(["-v"] if verbose else []), "-S", "-aec", ORTHANC_AET]
    argv += ["-aet", tool.upper(), "-pdu", str(MAX_PDU)]
    if tool == "getscu":
        argv.append("--ignore")
    argv += ["-k", f"QueryRetrieveLevel={level}"]
    for key, value in keys.items():
        argv += ["-k", f"{key}={value}"]
    return argv


async def _plain(argv: list[str], ctx: Context, size: int) -> DcmtkRun:
    """Run a tool without -v: exit 0 and nothing logged at its default level (warnings and
    errors), or it failed. (movescu also exits 68/69 when its C-MOVE ends with a warning or
    a failure; the verbose runs check every sub-operation of the same retrieve.)"""
    argv = [*argv, "127.0.0.1", str(ctx.orthanc.dicom_port)]
    started = time.perf_counter()
    with trio.fail_after(RETRIEVE_TIMEOUT):
        proc = await trio.run_process(
            argv,
            stdin=subprocess.DEVNULL,
            capture_stdout=True,
            stderr=subprocess.STDOUT,
            check=False,
            env=dict(os.environ, TCP_NODELAY="1"),
        )
    wall = time.perf_counter() - started
    output = proc.stdout.decode(errors="replace").strip()
    if proc.returncode != 0 or output:
        raise BenchmarkError(f"{' '.join(argv)}: exit {proc.returncode}, output:\n{output[-3000:]}")
    return DcmtkRun(wall_s=wall, bytes=size)


async def dcmtk_move(ctx: Context, study: Study, series_uid: str | None, size: int) -> DcmtkRun:
    """A plain ``movescu`` (Study Root) into the quiet ``storescp --ignore`` (DCMTK_AET)."""
    argv = _retrieve_argv("movescu", ctx, study, series_uid, verbose=False)
    return await _plain([*argv, "-aem", DCMTK_AET], ctx, size)


async def dcmtk_get(ctx: Context, study: Study, series_uid: str | None, size: int) -> DcmtkRun:
    """A plain ``getscu --ignore`` (Study Root)."""
    argv = _retrieve_argv("getscu", ctx, study, series_uid, verbose=False)
    return await _plain(argv, ctx, size)


async def _first_mark(path: Path, offset: int, started: float, found: list[float]) -> None:
    """Poll ``path`` from ``offset`` until a C-STORE request is logged; record when."""
    with path.open("rb") as f:
        f.seek(offset)
        tail = b""
        while True:
            chunk = f.read()
            if chunk:
                tail = tail[-64:] + chunk
                if any(mark in tail for mark in STORE_MARKS):
                    found.append(time.perf_counter() - started)
                    return
            await trio.sleep(POLL)


async def dcmtk_move_first_store(
    ctx: Context, study: Study, series_uid: str | None, expected: int
) -> float:
    """Seconds from starting ``movescu -v`` to the first C-STORE request in the log of the
    verbose ``storescp --ignore`` (DCMTK_TIMED_AET); every sub-operation must complete."""
    argv = _retrieve_argv("movescu", ctx, study, series_uid, verbose=True)
    argv += ["-aem", DCMTK_TIMED_AET, "127.0.0.1", str(ctx.orthanc.dicom_port)]
    offset = ctx.timed_storescp_log.stat().st_size
    found: list[float] = []
    with trio.fail_after(RETRIEVE_TIMEOUT):
        async with trio.open_nursery() as nursery:
            started = time.perf_counter()
            nursery.start_soon(_first_mark, ctx.timed_storescp_log, offset, started, found)
            proc = await trio.run_process(
                argv,
                stdin=subprocess.DEVNULL,
                capture_stdout=True,
                stderr=subprocess.STDOUT,
                check=False,
                env=dict(os.environ, TCP_NODELAY="1"),
            )
            with trio.move_on_after(1.0):  # the log may lag the final response a little
                while not found:  # noqa: ASYNC110 - storescp's log offers nothing to wait on
                    await trio.sleep(POLL)
            nursery.cancel_scope.cancel()
    text = proc.stdout.decode(errors="replace")
    check_tool(ToolResult(argv, proc.returncode, text, ""), expected)
    if not found:
        raise BenchmarkError(
            f"no C-STORE request in storescp's log:\n{log_tail(ctx.timed_storescp_log)}"
        )
    return found[0]


async def dcmtk_get_first_store(
    ctx: Context, study: Study, series_uid: str | None, expected: int
) -> float:
    """Seconds from starting ``getscu -v --ignore`` to the first C-STORE request in its own
    output, read as it comes; every sub-operation must complete."""
    argv = _retrieve_argv("getscu", ctx, study, series_uid, verbose=True)
    argv += ["127.0.0.1", str(ctx.orthanc.dicom_port)]
    output = bytearray()
    first: float | None = None
    proc: trio.Process | None = None
    try:
        with trio.fail_after(RETRIEVE_TIMEOUT):
            started = time.perf_counter()
            proc = await trio.lowlevel.open_process(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=dict(os.environ, TCP_NODELAY="1"),
            )
            assert proc.stdout is not None
            async with proc.stdout:
                while chunk := await proc.stdout.receive_some(65536):
                    if first is None and any(mark in output[-64:] + chunk for mark in STORE_MARKS):
                        first = time.perf_counter() - started
                    output += chunk
            await proc.wait()
    finally:
        if proc is not None:
            await stop_process(proc, kill=True)
    text = output.decode(errors="replace")
    returncode = -1 if proc.returncode is None else proc.returncode
    check_tool(ToolResult(argv, returncode, text, ""), expected)
    if first is None:
        raise BenchmarkError(f"no C-STORE request in getscu's output:\n{text[-2000:]}")
    return first


@asynccontextmanager
async def open_forking_storescp(workdir: Path, aet: str) -> AsyncIterator[int]:
    """``storescp --ignore --fork`` (one child per association) on a free loopback port.

    Started in its own process group, which is signalled as a whole on exit (children that still
    hold an association go with it). Yields the port.
    """
    require_dcmtk()
    log_path = workdir / f"{aet.lower()}.storescp.log"
    env = preload_env(loopback_preload(default_build_dir()))
    proc: trio.Process | None = None
    try:
        ready: int | None = None
        for _attempt in range(3):
            port = free_port()
            argv = [
                dcmtk_tool("storescp"),
                "-aet",
                aet,
                "-dhl",
                "-pdu",
                str(MAX_PDU),
                "+xa",
                "--ignore",
                "--fork",
                str(port),
            ]
            with log_path.open("ab") as log:
                proc = await trio.lowlevel.open_process(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            deadline = trio.current_time() + 10.0
            while proc.poll() is None:
                if any(s.port == port for s in listening_sockets(proc.pid)):
                    ready = port
                    break
                if trio.current_time() > deadline:
                    raise BenchmarkError(f"storescp not listening:\n{log_tail(log_path)}")
                await trio.sleep(0.01)  # bounded readiness polling of a fresh process
            if ready is not None:
                break
            await stop_process(proc, kill=True)
        if ready is None:
            raise BenchmarkError(f"storescp --fork exited at start:\n{log_tail(log_path)}")
        yield ready
    finally:
        if proc is not None:
            with trio.CancelScope(shield=True):
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGTERM)  # the group we started, by its id
                await stop_process(proc, grace=5.0)


async def orthanc_study_id(orthanc: Orthanc, study_uid: str) -> str | None:
    async with http_client(orthanc, timeout=30.0) as client:
        response = await client.post("/tools/lookup", content=study_uid)
        response.raise_for_status()
        for hit in response.json():
            if hit.get("Type") == "Study":
                return str(hit["ID"])
    return None


async def delete_study(orthanc: Orthanc, study_uid: str) -> None:
    study_id = await orthanc_study_id(orthanc, study_uid)
    if study_id is None:
        return
    async with http_client(orthanc, timeout=60.0) as client:
        response = await client.delete(f"/studies/{study_id}")
        response.raise_for_status()


async def count_instances(orthanc: Orthanc, study_uid: str) -> int:
    study_id = await orthanc_study_id(orthanc, study_uid)
    if study_id is None:
        return 0
    async with http_client(orthanc, timeout=60.0) as client:
        response = await client.get(f"/studies/{study_id}/instances")
        response.raise_for_status()
        return len(response.json())
