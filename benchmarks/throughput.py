"""WADO-RS study retrieve throughput: rst (C-MOVE and C-GET) against dcmtk's own tools.

    python -m benchmarks.throughput [--images 200] [--runs 3] [--out benchmarks/results]

One invocation generates a synthetic CT study (``--images`` x 512x512, ~105 MB for 200), starts
Orthanc on loopback with the study, and for each retrieve mode (``move``, ``get``):

- starts rst as a subprocess (``python -m rst serve --config FILE``) in front of that Orthanc;
- does one warm-up retrieve through rst and one with dcmtk (not counted);
- ``--runs`` times: a WADO-RS study retrieve through rst with curl (MB/s, time to first byte),
  then the dcmtk reference (``movescu`` into ``storescp --ignore``, or ``getscu --ignore``:
  MB/s and time to the first C-STORE);
- reads rst's peak resident memory (``VmHWM``) and stops it.

Writes every raw measurement to ``<out>/throughput-<timestamp>.json`` (rst's log next to it),
prints a markdown table of the medians and rewrites the generated section of
``docs/benchmarks.md``. Everything listens on 127.0.0.1; every process started is stopped on the
way out (Ctrl-C included); temporary files live in one temporary folder removed at the end.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
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
    movescu,
    open_storescp,
    require_dcmtk,
)
from tests.support.loopback import free_port, log_tail, stop_process  # noqa: E402
from tests.support.orthanc import (  # noqa: E402
    Orthanc,
    add_modality,
    http_client,
    open_orthanc,
    require_orthanc,
    upload,
)
from tests.support.sample import StudyFiles, write_ct_study  # noqa: E402

MODES = ("move", "get")
MAX_PDU = 131072
ORTHANC_AET = "ORTHANC"
RST_AET = "RST"
DCMTK_AET = "DCMTK"
ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
READY_TIMEOUT = 30.0  # rst start-up
RETRIEVE_TIMEOUT = 300.0  # one retrieve, rst or dcmtk
STOP_GRACE = 15.0  # rst's graceful shutdown (http.graceful_timeout is 10 s)
POLL = 0.001  # storescp log polling, until the first C-STORE shows up
# What dcmtk logs with -v when a C-STORE request arrives (storescp, and getscu's sub-operations).
STORE_MARKS = (b"Received Store Request", b"Received C-STORE Request")
PACKAGES = ("rst", "pydicom", "pynetdicom", "trio", "quart-trio", "hypercorn")
DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- throughput:begin -->", "<!-- throughput:end -->"


class BenchmarkError(RuntimeError):
    """A measurement could not be made or is not trustworthy: the benchmark stops."""


# -- measurements ----------------------------------------------------------------------------


@dataclass
class RstRun:
    ttfb_s: float
    total_s: float
    bytes: int

    @property
    def mbps(self) -> float:
        return self.bytes / self.total_s / 1e6

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "mbps": self.mbps}


@dataclass
class DcmtkRun:
    wall_s: float
    first_store_s: float
    bytes: int  # the study's bytes on disk (dcmtk reports no transfer size)

    @property
    def mbps(self) -> float:
        return self.bytes / self.wall_s / 1e6

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "mbps": self.mbps}


@dataclass
class ModeResult:
    mode: str
    rst: list[RstRun] = field(default_factory=list)
    dcmtk: list[DcmtkRun] = field(default_factory=list)
    warmup_rst: RstRun | None = None
    warmup_dcmtk: DcmtkRun | None = None
    rst_peak_rss_kib: int | None = None
    rst_start_rss_kib: int | None = None  # VmHWM once ready, before any retrieve
    rst_log: str = ""

    def medians(self) -> dict[str, float]:
        def med(values: list[float]) -> float:
            return statistics.median(values)

        rst_mbps = med([r.mbps for r in self.rst])
        dcmtk_mbps = med([r.mbps for r in self.dcmtk])
        rst_ttfb = med([r.ttfb_s for r in self.rst])
        dcmtk_first = med([r.first_store_s for r in self.dcmtk])
        return {
            "rst_mbps": rst_mbps,
            "dcmtk_mbps": dcmtk_mbps,
            "mbps_ratio": rst_mbps / dcmtk_mbps,
            "rst_total_s": med([r.total_s for r in self.rst]),
            "dcmtk_wall_s": med([r.wall_s for r in self.dcmtk]),
            "rst_ttfb_s": rst_ttfb,
            "dcmtk_first_store_s": dcmtk_first,
            "ttfb_ratio": rst_ttfb / dcmtk_first,
            "rst_peak_rss_mib": (self.rst_peak_rss_kib or 0) / 1024,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "rst": [r.as_dict() for r in self.rst],
            "dcmtk": [r.as_dict() for r in self.dcmtk],
            "warmup_rst": self.warmup_rst.as_dict() if self.warmup_rst else None,
            "warmup_dcmtk": self.warmup_dcmtk.as_dict() if self.warmup_dcmtk else None,
            "rst_peak_rss_kib": self.rst_peak_rss_kib,
            "rst_start_rss_kib": self.rst_start_rss_kib,
            "rst_log": self.rst_log,
            "medians": self.medians() if self.rst and self.dcmtk else None,
        }


@dataclass(frozen=True)
class Setup:
    study: StudyFiles
    study_bytes: int
    orthanc: Orthanc
    storescp_log: Path
    workdir: Path
    out: Path
    stamp: str


# -- rst as a subprocess ---------------------------------------------------------------------


def _rst_config(setup: Setup, mode: str, http_port: int, dimse_port: int) -> str:
    spool = setup.workdir / f"spool-{mode}"
    spool.mkdir(exist_ok=True)
    return f"""log_level = "INFO"

[http]
host = "127.0.0.1"
port = {http_port}

[dimse]
aet = "{RST_AET}"
host = "127.0.0.1"
port = {dimse_port}
max_pdu = {MAX_PDU}
spool_dir = {json.dumps(str(spool))}

[[aets]]
aet = "{ORTHANC_AET}"
host = "127.0.0.1"
port = {setup.orthanc.dicom_port}
retrieve = "{mode}"
"""


def _rst_env() -> dict[str, str]:
    # RST_* variables would overlay the generated configuration: leave them out.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RST_")}
    env["TCP_NODELAY"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def _wait_ready(proc: trio.Process, url: str, log: Path) -> bool:
    """Poll GET /aets until it answers 200; False if rst exited (port taken?)."""
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


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise BenchmarkError(f"no VmHWM in /proc/{pid}/status")


# -- one retrieve each -----------------------------------------------------------------------


async def rst_retrieve(url: str, setup: Setup, log: Path) -> RstRun:
    argv = [
        "curl",
        "-s",
        "-S",
        "--noproxy",
        "*",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{time_starttransfer} %{time_total} %{size_download}",
        "-H",
        f"Accept: {ACCEPT}",
        url,
    ]
    with trio.fail_after(RETRIEVE_TIMEOUT):
        proc = await trio.run_process(
            argv, stdin=subprocess.DEVNULL, capture_stdout=True, capture_stderr=True, check=False
        )
    out = proc.stdout.decode().strip()
    problem = None
    try:
        code, ttfb, total, size = out.split()
        run = RstRun(ttfb_s=float(ttfb), total_s=float(total), bytes=int(size))
    except ValueError:
        problem = f"unreadable curl output {out!r}"
    else:
        if proc.returncode != 0:
            problem = f"curl exited {proc.returncode}: {proc.stderr.decode().strip()}"
        elif code != "200":
            problem = f"HTTP {code}"
        elif run.bytes <= setup.study_bytes:
            problem = f"{run.bytes} bytes, less than the study's {setup.study_bytes}"
    if problem is not None:
        raise BenchmarkError(f"rst retrieve {url}: {problem}\nrst log tail:\n{log_tail(log)}")
    return run


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


async def dcmtk_move(setup: Setup) -> DcmtkRun:
    """movescu (Study Root, study level) into ``storescp --ignore``."""
    offset = setup.storescp_log.stat().st_size
    found: list[float] = []
    with trio.fail_after(RETRIEVE_TIMEOUT):
        async with trio.open_nursery() as nursery:
            started = time.perf_counter()
            nursery.start_soon(_first_mark, setup.storescp_log, offset, started, found)
            result = await movescu(
                "127.0.0.1",
                setup.orthanc.dicom_port,
                ORTHANC_AET,
                DCMTK_AET,
                {"StudyInstanceUID": setup.study.study_uid},
                level="STUDY",
            )
            wall = time.perf_counter() - started
            with trio.move_on_after(1.0):  # the log may lag the final response a little
                while not found:  # noqa: ASYNC110 - storescp's log offers nothing to wait on
                    await trio.sleep(POLL)
            nursery.cancel_scope.cancel()
    _check(result, setup)
    if not found:
        raise BenchmarkError(
            f"no C-STORE request in storescp's log:\n{log_tail(setup.storescp_log)}"
        )
    return DcmtkRun(wall_s=wall, first_store_s=found[0], bytes=setup.study_bytes)


async def dcmtk_get(setup: Setup) -> DcmtkRun:
    """getscu --ignore (Study Root, study level); its -v output is read as it comes."""
    require_dcmtk()
    argv = [
        dcmtk_tool("getscu"),
        "-v",
        "-S",
        "-aet",
        "GETSCU",
        "-aec",
        ORTHANC_AET,
        "-pdu",
        str(MAX_PDU),
        "--ignore",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={setup.study.study_uid}",
        "127.0.0.1",
        str(setup.orthanc.dicom_port),
    ]
    env = dict(os.environ, TCP_NODELAY="1")
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
                env=env,
            )
            assert proc.stdout is not None
            async with proc.stdout:
                while chunk := await proc.stdout.receive_some(65536):
                    if first is None and any(mark in output[-64:] + chunk for mark in STORE_MARKS):
                        first = time.perf_counter() - started
                    output += chunk
            await proc.wait()
            wall = time.perf_counter() - started
    finally:
        if proc is not None:
            await stop_process(proc, kill=True)
    text = output.decode(errors="replace")
    returncode = -1 if proc.returncode is None else proc.returncode
    _check(ToolResult(argv, returncode, text, ""), setup)
    if first is None:
        raise BenchmarkError(f"no C-STORE request in getscu's output:\n{text[-2000:]}")
    return DcmtkRun(wall_s=wall, first_store_s=first, bytes=setup.study_bytes)


def _check(result: ToolResult, setup: Setup) -> None:
    try:
        result.check()
    except DcmtkError as exc:
        raise BenchmarkError(str(exc)) from None
    completed = result.suboperations.get("Completed")
    if completed is not None and completed != len(setup.study.paths):
        raise BenchmarkError(
            f"{Path(result.args[0]).name}: {completed} of {len(setup.study.paths)} completed"
        )


# -- one mode --------------------------------------------------------------------------------


async def bench_mode(setup: Setup, mode: str, runs: int) -> ModeResult:
    result = ModeResult(mode)
    log = setup.out / f"throughput-{setup.stamp}-rst-{mode}.log"
    result.rst_log = str(log.relative_to(ROOT) if log.is_relative_to(ROOT) else log)
    config_path = setup.workdir / f"rst-{mode}.toml"
    reference: Callable[[Setup], Any] = dcmtk_move if mode == "move" else dcmtk_get
    proc: trio.Process | None = None
    try:
        for _attempt in range(3):  # free_port() is racy: retry with fresh ports
            http_port, dimse_port = free_port(), free_port()
            while dimse_port == http_port:
                dimse_port = free_port()
            config_path.write_text(_rst_config(setup, mode, http_port, dimse_port))
            with log.open("ab") as log_file:
                proc = await trio.lowlevel.open_process(
                    [sys.executable, "-m", "rst", "serve", "--config", str(config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=_rst_env(),
                    cwd=str(setup.workdir),
                )
            http_url = f"http://127.0.0.1:{http_port}"
            if await _wait_ready(proc, http_url, log):
                break
            await stop_process(proc, kill=True)
        else:
            raise BenchmarkError(f"rst exited during start-up:\n{log_tail(log)}")
        result.rst_start_rss_kib = _peak_rss_kib(proc.pid)
        if mode == "move":
            await add_modality(setup.orthanc, "RST", RST_AET, "127.0.0.1", dimse_port)
        url = f"{http_url}/aets/{ORTHANC_AET}/studies/{setup.study.study_uid}"

        print(f"[{mode}] warm-up", flush=True)
        result.warmup_rst = await rst_retrieve(url, setup, log)
        result.warmup_dcmtk = await reference(setup)
        for i in range(runs):
            rst_run = await rst_retrieve(url, setup, log)
            dcmtk_run = await reference(setup)
            result.rst.append(rst_run)
            result.dcmtk.append(dcmtk_run)
            print(
                f"[{mode}] run {i + 1}/{runs}: rst {rst_run.mbps:7.1f} MB/s "
                f"(TTFB {rst_run.ttfb_s * 1000:6.1f} ms), dcmtk {dcmtk_run.mbps:7.1f} MB/s "
                f"(first C-STORE {dcmtk_run.first_store_s * 1000:6.1f} ms)",
                flush=True,
            )
        result.rst_peak_rss_kib = _peak_rss_kib(proc.pid)
    finally:
        if proc is not None:
            await stop_process(proc, grace=STOP_GRACE)
    if proc.returncode != 0:
        raise BenchmarkError(f"rst exited with {proc.returncode}:\n{log_tail(log)}")
    return result


# -- the machine -----------------------------------------------------------------------------


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    lines = [line.strip() for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    return lines[0] if lines else "unknown"


def _dcmtk_version() -> str:
    line = _first_line([dcmtk_tool("storescp"), "--version"])  # "$dcmtk: storescp v3.6.7 ... $"
    found = re.search(r"v(\d+(?:\.\d+)+)", line)
    return found.group(1) if found else line


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _mem_total_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024**2, 1)
    return 0.0


async def machine(orthanc: Orthanc) -> dict[str, Any]:
    async with http_client(orthanc, timeout=10.0) as client:
        orthanc_version = (await client.get("/system")).json().get("Version", "unknown")
        plugin = await client.get("/plugins/dicom-web")
        plugin_version = plugin.json().get("Version", "unknown") if plugin.is_success else "?"

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return {
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "mem_gib": _mem_total_gib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "orthanc": orthanc_version,
        "orthanc_dicomweb": plugin_version,
        "dcmtk": _dcmtk_version(),
        "curl": _first_line(["curl", "--version"]),
        "packages": {d: version(d) for d in PACKAGES},
    }


# -- reporting -------------------------------------------------------------------------------


def table(results: list[ModeResult]) -> str:
    lines = [
        "| retrieve | rst MB/s | dcmtk MB/s | rst / dcmtk | rst TTFB | dcmtk first C-STORE "
        "| TTFB ratio | rst peak RSS |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    names = {"move": "C-MOVE (movescu → storescp)", "get": "C-GET (getscu)"}
    for result in results:
        m = result.medians()
        lines.append(
            f"| {names[result.mode]} | {m['rst_mbps']:.0f} | {m['dcmtk_mbps']:.0f} "
            f"| {m['mbps_ratio']:.2f} | {m['rst_ttfb_s'] * 1000:.0f} ms "
            f"| {m['dcmtk_first_store_s'] * 1000:.0f} ms | {m['ttfb_ratio']:.1f} "
            f"| {m['rst_peak_rss_mib']:.0f} MiB |"
        )
    return "\n".join(lines)


def docs_section(report: dict[str, Any], results: list[ModeResult], json_name: str) -> str:
    m = report["machine"]
    study = report["study"]
    return "\n".join(
        [
            BEGIN,
            f"Last run: {report['started']} — {report['runs']} runs per mode (medians), "
            f"{study['images']} CT images of 512x512, {study['bytes'] / 1e6:.1f} MB; "
            f"the invocation took {report['duration_s']:.0f} s; load average (1 min) "
            f"{report['loadavg_start'][0]:.2f} before, {report['loadavg_end'][0]:.2f} after. "
            "Raw data: "
            f"`benchmarks/results/{json_name}` (not committed).",
            "",
            f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['mem_gib']} GiB, Linux {m['kernel']}, "
            f"Python {m['python']}, Orthanc {m['orthanc']} (DICOMweb plugin "
            f"{m['orthanc_dicomweb']}), dcmtk {m['dcmtk']}, curl {m['curl'].split()[1]}"
            f"; pynetdicom {m['packages']['pynetdicom']}, hypercorn {m['packages']['hypercorn']}.",
            "",
            table(results),
            END,
        ]
    )


def update_docs(section: str) -> bool:
    if not DOCS.exists():
        return False
    text = DOCS.read_text()
    begin, end = text.find(BEGIN), text.find(END)
    if begin < 0 or end < begin:
        return False
    DOCS.write_text(text[:begin] + section + text[end + len(END) :])
    return True


# -- main ------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> int:
    require_orthanc()
    require_dcmtk()
    out: Path = args.out
    stamp = time.strftime("%Y%m%d-%H%M%S")
    started_wall, started = time.strftime("%Y-%m-%d %H:%M:%S %z"), time.perf_counter()
    load_start = os.getloadavg()
    results: list[ModeResult] = []
    with tempfile.TemporaryDirectory(prefix="rst-bench-") as tmp:
        workdir = Path(tmp)
        print(f"writing the study ({args.images} images of 512x512)", flush=True)
        study = await trio.to_thread.run_sync(
            lambda: write_ct_study(workdir / "study", images=args.images, rows=512, columns=512)
        )
        study_bytes = study.total_bytes
        async with open_storescp(
            workdir / "storescp", DCMTK_AET, ignore=True, max_pdu=MAX_PDU
        ) as scp_port:
            modalities = {"DCMTK": (DCMTK_AET, "127.0.0.1", scp_port)}
            async with open_orthanc(
                workdir / "orthanc", aet=ORTHANC_AET, modalities=modalities, fast_stop=True
            ) as orthanc:
                print(f"uploading {study_bytes / 1e6:.1f} MB to Orthanc", flush=True)
                await upload(orthanc, study.paths)
                setup = Setup(
                    study=study,
                    study_bytes=study_bytes,
                    orthanc=orthanc,
                    storescp_log=workdir / "storescp.storescp.log",
                    workdir=workdir,
                    out=out,
                    stamp=stamp,
                )
                info = await machine(orthanc)
                for mode in MODES:
                    results.append(await bench_mode(setup, mode, args.runs))
    report = {
        "benchmark": "throughput",
        "started": started_wall,
        "duration_s": time.perf_counter() - started,
        "runs": args.runs,
        "study": {"images": args.images, "bytes": study_bytes, "study_uid": study.study_uid},
        "max_pdu": MAX_PDU,
        "machine": info,
        # Other work on the machine skews the numbers: the load average at start and end.
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        "modes": {r.mode: r.as_dict() for r in results},
    }
    json_path = out / f"throughput-{stamp}.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(table(results))
    print(f"\nraw measurements: {json_path}")
    if args.docs:
        if update_docs(docs_section(report, results, json_path.name)):
            print(f"updated {DOCS.relative_to(ROOT)}")
        else:
            print(f"{DOCS} has no {BEGIN} … {END} section: not updated", file=sys.stderr)
    print(f"took {report['duration_s']:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.throughput", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--images", type=int, default=200, help="CT images of 512x512 (200)")
    parser.add_argument("--runs", type=int, default=3, help="measured runs per mode (3)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--no-docs",
        dest="docs",
        action="store_false",
        help="do not rewrite the generated section of docs/benchmarks.md",
    )
    args = parser.parse_args(argv)
    if args.images < 1 or args.runs < 1:
        parser.error("--images and --runs must be at least 1")
    args.out = args.out if args.out.is_absolute() else ROOT / args.out
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        return trio.run(run, args)
    except (KeyboardInterrupt, BenchmarkError, BaseExceptionGroup) as exc:
        # Both may come wrapped in exception groups (raised inside a nursery).
        if isinstance(exc, KeyboardInterrupt) or (
            isinstance(exc, BaseExceptionGroup) and exc.subgroup(KeyboardInterrupt) is not None
        ):
            print("interrupted: everything started was stopped", file=sys.stderr)
            return 130
        failures = _failures(exc)
        if failures is None:
            raise
        for failure in failures:
            print(f"benchmark failed: {failure}", file=sys.stderr)
        return 1


def _failures(exc: BaseException) -> list[BenchmarkError] | None:
    """The BenchmarkErrors in ``exc`` (also raised inside a nursery); None if anything else."""
    if isinstance(exc, BenchmarkError):
        return [exc]
    if isinstance(exc, BaseExceptionGroup):
        found: list[BenchmarkError] = []
        for inner in exc.exceptions:
            sub = _failures(inner)
            if sub is None:
                return None
            found += sub
        return found
    return None


if __name__ == "__main__":
    sys.exit(main())
