"""Run dcmtk's command line tools from trio (by absolute path: pynetdicom installs same-named
scripts in the venv that must not be picked up).

Every tool runs with ``TCP_NODELAY=1`` (without it each instance costs ~44 ms) and verbose logging,
so ``status`` can report the final DIMSE status. ``open_storescp`` runs a C-STORE SCP on a free
loopback port (storescp 3.6.7 has no bind option: the LD_PRELOAD shim keeps it on 127.0.0.1).

    async with open_storescp(tmp_path / "received", "DEST") as port:
        await add_modality(orthanc, "dest", "DEST", "127.0.0.1", port)
        result = await movescu("127.0.0.1", orthanc.dicom_port, orthanc.aet, "DEST",
                               {"StudyInstanceUID": study.study_uid})
        result.check()
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import pydicom
import trio
from pydicom.dataset import Dataset

from .loopback import (
    default_build_dir,
    free_port,
    listening_sockets,
    log_tail,
    loopback_preload,
    preload_env,
    stop_process,
)

__all__ = [
    "DCMTK_BIN",
    "DcmtkError",
    "FindResult",
    "Keys",
    "StoreDestination",
    "ToolResult",
    "dcmtk_tool",
    "echoscu",
    "findscu",
    "getscu",
    "movescu",
    "open_listening",
    "open_store_destination",
    "open_storescp",
    "open_wlmscpfs",
    "require_dcmtk",
    "run_tool",
    "storescu",
]

DCMTK_BIN = Path("/usr/bin")
TOOLS = ("echoscu", "findscu", "movescu", "getscu", "storescu", "storescp", "wlmscpfs")
READY_TIMEOUT = 10.0
# Safety net against a hung tool; wrap a call in trio.fail_after() for a tighter limit.
TOOL_TIME_LIMIT = 600.0
START_ATTEMPTS = 3
STOP_TIMEOUT = 5.0
"""How long the killed rest of a process group may take to go (:func:`open_listening`)."""

# Matching/return keys: {"PatientID": "RST*", "StudyDescription": ""} or ["PatientID=RST*", ...];
# keys are dcmtk dictionary names or "gggg,eeee".
Keys = Mapping[str, str] | Sequence[str]


class DcmtkError(RuntimeError):
    pass


def require_dcmtk() -> None:
    """Raise (never skip) when a dcmtk tool is missing."""
    missing = [t for t in TOOLS if not (DCMTK_BIN / t).exists()]
    if missing:
        raise DcmtkError(f"dcmtk tools missing ({', '.join(missing)}): run scripts/install-deps")


def dcmtk_tool(name: str) -> str:
    return str(DCMTK_BIN / name)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    return env


_FINAL_STATUS = (
    re.compile(r"Received Final (?:Find|Move) Response \(([^)]*)\)"),
    re.compile(r"Received C-GET Response \(([^)]*)\)"),
    re.compile(r"Received Echo Response \(([^)]*)\)"),
)
_STORE_STATUS = re.compile(r"Received Store Response[^(\n]*\(([^)]*)\)")
_SUBOPERATIONS = re.compile(
    r"Number of (Remaining|Completed|Failed|Warning) Suboperations\s*:\s*(\d+)"
)


@dataclass(frozen=True)
class ToolResult:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def status(self) -> str | None:
        """Final C-FIND/C-MOVE/C-GET/C-ECHO status as dcmtk logs it ("Success", "Warning",
        "Failed: UnableToProcess", ...); None when the tool logged none (storescu: see
        ``store_statuses``)."""
        for pattern in _FINAL_STATUS:
            found = pattern.findall(self.output)
            if found:
                return str(found[-1])
        return None

    @property
    def store_statuses(self) -> list[str]:
        """storescu: the status of each C-STORE response, in order."""
        return [str(s) for s in _STORE_STATUS.findall(self.output)]

    @property
    def suboperations(self) -> dict[str, int]:
        """getscu's final report: {"Remaining": 0, "Completed": 6, "Failed": 0, "Warning": 0}."""
        return {k: int(v) for k, v in _SUBOPERATIONS.findall(self.output)}

    @property
    def ok(self) -> bool:
        return (
            self.returncode == 0
            and self.status in (None, "Success")
            and all(s == "Success" for s in self.store_statuses)
        )

    def check(self) -> Self:
        """Raise DcmtkError with the tool's output unless it succeeded; returns self."""
        if not self.ok:
            raise DcmtkError(
                f"{Path(self.args[0]).name} failed (exit {self.returncode}, status {self.status}):"
                f"\n{' '.join(self.args)}\n{self.output[-4000:]}"
            )
        return self


@dataclass(frozen=True)
class FindResult(ToolResult):
    matches: list[Dataset] = field(default_factory=list)


async def run_tool(name: str, *args: str, cwd: Path | None = None) -> ToolResult:
    """Run ``/usr/bin/<name> args...`` with TCP_NODELAY=1; never raises on a non-zero exit
    (a tool still running after TOOL_TIME_LIMIT s is killed: trio.TooSlowError)."""
    require_dcmtk()
    argv = [dcmtk_tool(name), *args]
    with trio.fail_after(TOOL_TIME_LIMIT):
        proc = await trio.run_process(
            argv,
            stdin=subprocess.DEVNULL,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=_env(),
            cwd=str(cwd) if cwd else None,
        )
    return ToolResult(
        args=argv,
        returncode=proc.returncode,
        stdout=proc.stdout.decode(errors="replace"),
        stderr=proc.stderr.decode(errors="replace"),
    )


def _key_args(keys: Keys, level: str | None) -> list[str]:
    items = [f"{k}={v}" for k, v in keys.items()] if isinstance(keys, Mapping) else list(keys)
    args: list[str] = []
    if level is not None:
        args += ["-k", f"QueryRetrieveLevel={level}"]
    for item in items:
        args += ["-k", item]
    return args


def _pdu(max_pdu: int | None) -> list[str]:
    return ["-pdu", str(max_pdu)] if max_pdu else []


async def echoscu(host: str, port: int, aet: str, *, calling_aet: str = "ECHOSCU") -> ToolResult:
    return await run_tool("echoscu", "-v", "-aet", calling_aet, "-aec", aet, host, str(port))


def _read_responses(folder: Path) -> list[Dataset]:
    return [pydicom.dcmread(p) for p in sorted(folder.glob("rsp*.dcm"))]


async def findscu(
    host: str,
    port: int,
    aet: str,
    keys: Keys,
    *,
    level: str = "STUDY",
    calling_aet: str = "FINDSCU",
    model: str = "-S",
) -> FindResult:
    """C-FIND (study root by default); ``matches`` holds the response identifiers, in order."""
    with tempfile.TemporaryDirectory(prefix="rst-findscu-") as out:
        result = await run_tool(
            "findscu",
            "-v",
            model,
            "-aet",
            calling_aet,
            "-aec",
            aet,
            "-X",
            "-od",
            out,
            *_key_args(keys, level),
            host,
            str(port),
        )
        matches = await trio.to_thread.run_sync(_read_responses, Path(out))
    return FindResult(result.args, result.returncode, result.stdout, result.stderr, matches)


async def movescu(
    host: str,
    port: int,
    aet: str,
    destination: str,
    keys: Keys,
    *,
    level: str = "STUDY",
    calling_aet: str = "MOVESCU",
    model: str = "-S",
) -> ToolResult:
    """C-MOVE to ``destination`` (an AE the peer knows, e.g. via ``add_modality``)."""
    return await run_tool(
        "movescu",
        "-v",
        model,
        "-aet",
        calling_aet,
        "-aec",
        aet,
        "-aem",
        destination,
        *_key_args(keys, level),
        host,
        str(port),
    )


async def getscu(
    host: str,
    port: int,
    aet: str,
    keys: Keys,
    *,
    output_dir: Path | None = None,
    ignore: bool = False,
    level: str = "STUDY",
    calling_aet: str = "GETSCU",
    model: str = "-S",
    max_pdu: int | None = None,
) -> ToolResult:
    """C-GET; received files land in ``output_dir`` (created) unless ``ignore``."""
    args = ["-v", model, "-aet", calling_aet, "-aec", aet, *_pdu(max_pdu)]
    if ignore:
        args.append("--ignore")
    elif output_dir is not None:
        await trio.Path(output_dir).mkdir(parents=True, exist_ok=True)
        args += ["-od", str(output_dir)]
    else:
        raise ValueError("getscu needs output_dir unless ignore=True")
    args += [*_key_args(keys, level), host, str(port)]
    return await run_tool("getscu", *args)


async def storescu(
    host: str,
    port: int,
    aet: str,
    files: Iterable[Path | str],
    *,
    calling_aet: str = "STORESCU",
    max_pdu: int | None = None,
) -> ToolResult:
    """C-STORE ``files`` on one association (proposes the contexts found in the files)."""
    paths = [str(f) for f in files]
    if not paths:
        raise ValueError("storescu needs at least one file")
    args = ["-v", "-aet", calling_aet, "-aec", aet, *_pdu(max_pdu)]
    return await run_tool("storescu", *args, host, str(port), *paths)


def tls_options(
    key: Path | None, cert: Path | None, ca: Path | None, *, peer_cert: str = "require"
) -> list[str]:
    """dcmtk's DICOM TLS options (BCP 195 profile, the tools' default): with *key* and *cert*
    (PEM) as its own identity, else anonymous (``+tla``, clients only); trusting *ca*; the
    peer's certificate ``require``-d, ``verify``-ed if present or ``ignore``-d."""
    args = ["+tls", str(key), str(cert)] if key and cert else ["+tla"]
    if ca is not None:
        args += ["+cf", str(ca)]
    return [*args, {"require": "-rc", "verify": "-vc", "ignore": "-ic"}[peer_cert]]


@asynccontextmanager
async def open_storescp(
    workdir: Path,
    aet: str,
    *,
    ignore: bool = False,
    max_pdu: int | None = None,
    accept_all: bool = True,
    verbose: bool = True,
    ready_timeout: float = READY_TIMEOUT,
    extra: Sequence[str] = (),
) -> AsyncIterator[int]:
    """Run /usr/bin/storescp as AE ``aet`` on a free 127.0.0.1 port; yields the port.

    Received files land in ``workdir`` (created; only received files, named ``CT.<SOPInstanceUID>``
    etc.), unless ``ignore``. The log goes next to it: ``<workdir>.storescp.log``. ``accept_all``
    accepts every transfer syntax storescp knows (``+xa``). ``verbose`` (``-v``) logs every
    association and C-STORE; without it only warnings and errors. *extra* are more options (e.g.
    TLS: :func:`tls_options`). Stopped on exit (shielded cleanup).
    """
    require_dcmtk()
    await trio.Path(workdir).mkdir(parents=True, exist_ok=True)
    log_path = workdir.with_name(workdir.name + ".storescp.log")

    def argv(port: int) -> list[str]:
        args = [dcmtk_tool("storescp"), *(["-v"] if verbose else []), "-aet", aet, "-dhl"]
        args += _pdu(max_pdu)
        if accept_all:
            args.append("+xa")
        args += ["--ignore"] if ignore else ["-od", str(workdir)]
        return [*args, *extra, str(port)]

    async with open_listening("storescp", argv, log_path, ready_timeout) as (port, _pid):
        yield port


@asynccontextmanager
async def open_wlmscpfs(
    folder: Path, *, ready_timeout: float = READY_TIMEOUT
) -> AsyncIterator[int]:
    """Run /usr/bin/wlmscpfs (a Modality Worklist SCP) on a free 127.0.0.1 port; yields it.

    It answers as any AE title that is a subfolder of ``folder`` holding a ``lockfile`` and
    serves that subfolder's ``*.wl`` files (see :mod:`tests.support.worklist`); an unknown
    called AE title is rejected. Single process (``-s``); log in ``<folder>.wlmscpfs.log``."""
    require_dcmtk()
    log_path = folder.with_name(folder.name + ".wlmscpfs.log")

    def argv(port: int) -> list[str]:
        return [dcmtk_tool("wlmscpfs"), "-v", "-s", "-dhl", "-csk", "-dfp", str(folder), str(port)]

    async with open_listening("wlmscpfs", argv, log_path, ready_timeout) as (port, _pid):
        yield port


@asynccontextmanager
async def open_listening(
    name: str,
    command: Callable[[int], list[str]],
    log_path: Path,
    ready_timeout: float,
    *,
    cwd: Path | None = None,
    process_group: bool = False,
) -> AsyncIterator[tuple[int, int]]:
    """Start ``command(port)`` on a free port (retried if it was taken meanwhile) behind the
    loopback shim; yield the port and the process id once the tool listens; stop it on exit
    (shielded). *command* may write a configuration naming the port before it returns.

    With *process_group* the tool runs in a session of its own and, once it has stopped, what
    is left of its process group (children serving associations, as dcmqrscp forks) is killed."""
    env = preload_env(loopback_preload(default_build_dir()))
    proc: trio.Process | None = None
    try:
        ready: tuple[int, int] | None = None
        for _attempt in range(START_ATTEMPTS):
            port = free_port()
            with log_path.open("ab") as log:
                proc = await trio.lowlevel.open_process(
                    command(port),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=str(cwd) if cwd else None,
                    start_new_session=process_group,
                )
            deadline = trio.current_time() + ready_timeout
            while proc.poll() is None:
                if any(s.port == port for s in listening_sockets(proc.pid)):
                    ready = port, proc.pid
                    break
                if trio.current_time() > deadline:
                    raise DcmtkError(f"{name} not listening in time:\n{log_tail(log_path)}")
                await trio.sleep(0.01)  # bounded readiness polling of a freshly started process
            if ready is not None:
                break
            await stop_process(proc, kill=True)  # exited early (port taken?): retry
        if ready is None:
            raise DcmtkError(f"{name} exited during start-up:\n{log_tail(log_path)}")
        yield ready
    finally:
        if proc is not None:
            group = proc.pid
            await stop_process(proc, grace=5.0)
            if process_group:
                await _end_group(group)


async def _end_group(group: int) -> None:
    """Kill what is left of the process group (the children serving associations) and wait,
    boundedly, until the kernel has let it go (killed children are reaped by init)."""
    with trio.CancelScope(shield=True), trio.move_on_after(STOP_TIMEOUT):
        while True:
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                return
            await trio.sleep(0.01)  # bounded polling: a process group offers nothing to wait on


@dataclass(frozen=True)
class StoreDestination:
    """A running storescp: AE ``aet`` on ``host``:``port``, files received into ``folder``."""

    aet: str
    host: str
    port: int
    folder: Path

    def received(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.is_file())


@asynccontextmanager
async def open_store_destination(
    workdir: Path,
    aet: str,
    *,
    ignore: bool = False,
    max_pdu: int | None = None,
    accept_all: bool = True,
) -> AsyncIterator[StoreDestination]:
    """``open_storescp`` yielding a StoreDestination instead of the bare port."""
    async with open_storescp(
        workdir, aet, ignore=ignore, max_pdu=max_pdu, accept_all=accept_all
    ) as port:
        yield StoreDestination(aet=aet, host="127.0.0.1", port=port, folder=workdir)
