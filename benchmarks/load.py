"""Load: many QIDO-RS clients and concurrent WADO-RS study retrieves at once, for a while.

Per ``http.workers`` setting (1, then 2) one fresh rst process in front of the PACS
(``max_associations`` = ``ASSOCIATIONS``). Two curl processes run side by side for
``--load-seconds``: one keeps ``--load-qido-clients`` QIDO-RS requests in flight
(``/studies?PatientID=...``, keep-alive connections), the other ``--load-wado-clients`` WADO-RS
study retrieves; each has ``--load-max-requests`` requests to make and is stopped at the
deadline (requests still in flight then are not counted). curl writes one line per finished
request (status, bytes, time to first byte, total time) to its stderr, which is unbuffered, so
stopping it loses no finished request.

Every response is checked: 200, and exactly the bytes of the same request made before the load
(the QIDO answer, the whole multipart study; both are made twice first, to know they do not
vary, and the study's must exceed the study's bytes). Anything else is an error. Measured:
requests/s of each kind (checked answers over the load's wall time), p50/p95/p99 of the total
time, errors, rst's CPU seconds (``/proc/<pid>/stat`` utime+stime, supervisor and workers
summed), its VmRSS each second (summed) and its VmHWM at the end (summed).
"""

from __future__ import annotations

import argparse
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from tests.support.loopback import stop_process
from tests.support.orthanc import Orthanc

from .common import ACCEPT, CURL, BenchmarkError, Context, Rst, curl_get, open_rst
from .procfs import cpu_s, cpu_tree_s, snapshot_tree
from .stats import latencies, ms

NAME = "load"
REPEATED = False  # one long measurement: --runs does not apply
TITLE = "Load: QIDO-RS clients and WADO-RS study retrieves at once"
ASSOCIATIONS = 32
"""rst's ``max_associations`` for the PACS: room for every retrieve and as many C-FINDs."""
QIDO_ACCEPT = "application/dicom+json"
MARK = "@rst"  # starts curl's line per finished request
WRITE_OUT = (
    f"%{{stderr}}{MARK} %{{http_code}} %{{size_download}} %{{time_starttransfer}} "
    "%{time_total}\\n"
)
SAMPLE_EVERY = 1.0  # rst's memory, during the load
STOP_SLACK = 30.0  # after the deadline, for curl to be stopped and rst to answer the rest
KINDS = ("qido", "wado")


def studies(quick: bool) -> list[str]:
    return ["ct"]


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--load-seconds", type=float, default=60.0, help="load duration (60)")
    group.add_argument(
        "--load-qido-clients", type=int, default=200, help="QIDO-RS requests in flight (200)"
    )
    group.add_argument(
        "--load-wado-clients", type=int, default=16, help="WADO-RS study retrieves in flight (16)"
    )
    group.add_argument(
        "--load-max-requests",
        type=int,
        default=50_000,
        help="at most this many requests of each kind (50000)",
    )
    group.add_argument(
        "--load-workers", default="1,2", help="http.workers settings to measure, in turn (1,2)"
    )


@dataclass
class Finished:
    """What curl reported for the requests of one kind."""

    expected_bytes: int
    ok_s: list[float] = field(default_factory=list)  # total time of each checked answer
    ttfb_s: list[float] = field(default_factory=list)
    errors: int = 0
    first_errors: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)  # curl's own error lines

    def take(self, line: str) -> None:
        at = line.find(MARK)
        if at < 0:
            if len(self.messages) < 10:
                self.messages.append(line[:300])
            return
        _, code, size, ttfb, total = line[at:].split()
        if code == "200" and int(size) == self.expected_bytes:
            self.ok_s.append(float(total))
            self.ttfb_s.append(float(ttfb))
            return
        self.errors += 1
        if len(self.first_errors) < 10:
            self.first_errors.append(f"HTTP {code}, {size} bytes (expected {self.expected_bytes})")


async def curl_load(
    config: Path,
    url: str,
    accept: str,
    count: int,
    parallel: int,
    finished: Finished,
    stop: trio.Event,
) -> None:
    """One curl making *count* requests of *url*, *parallel* at a time, until it is done or
    *stop* is set; then it is killed and what it wrote before is read to the end."""
    await trio.Path(config).write_text(f'url = "{url}"\noutput = "/dev/null"\n' * count)
    argv = [
        *CURL,
        "--no-progress-meter",  # in parallel mode curl draws one on stderr even with -s
        "--parallel",
        "--parallel-immediate",
        "--parallel-max",
        str(parallel),
        "-H",
        f"Accept: {accept}",
        "-w",
        WRITE_OUT,
        "-K",
        str(config),
    ]
    proc = await trio.lowlevel.open_process(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )

    async def kill_on_stop() -> None:
        await stop.wait()
        proc.kill()  # the lines it wrote stay in the pipe, read below until its end

    try:
        assert proc.stderr is not None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(kill_on_stop)
            pending = b""
            async with proc.stderr:
                while chunk := await proc.stderr.receive_some(65536):
                    *lines, pending = (pending + chunk).split(b"\n")
                    for line in lines:
                        finished.take(line.decode(errors="replace"))
            nursery.cancel_scope.cancel()  # curl ended by itself: every request made
    finally:
        with trio.CancelScope(shield=True):
            await stop_process(proc, kill=True)


async def expected_size(url: str, accept: str, min_bytes: int, log: Path) -> int:
    """The size of the answer, the same twice."""
    sizes = {(await curl_get(url, min_bytes=min_bytes, accept=accept, log=log)).bytes for _ in "12"}
    if len(sizes) != 1:
        raise BenchmarkError(f"GET {url}: answers of {sorted(sizes)} bytes: sizes vary")
    return sizes.pop()


async def measure(ctx: Context, rst: Rst, orthanc: Orthanc, workers: int) -> dict[str, Any]:
    options = ctx.options
    study = ctx.studies["ct"]
    urls = {
        "qido": rst.ae_url(f"studies?PatientID={study.patient_id}"),
        "wado": rst.ae_url(f"studies/{study.files.study_uid}"),
    }
    accepts = {"qido": QIDO_ACCEPT, "wado": ACCEPT}
    parallel = {"qido": options.load_qido_clients, "wado": options.load_wado_clients}
    finished = {
        "qido": Finished(await expected_size(urls["qido"], QIDO_ACCEPT, 2, rst.log)),
        "wado": Finished(await expected_size(urls["wado"], ACCEPT, study.bytes, rst.log)),
    }
    rss: list[dict[str, float]] = []
    cpu_before, orthanc_before = cpu_tree_s(rst.pid), cpu_s(orthanc.pid)
    seconds = float(options.load_seconds)
    started = time.monotonic()
    stop = trio.Event()
    with trio.fail_after(seconds + STOP_SLACK):
        async with trio.open_nursery() as nursery:
            for kind in KINDS:
                nursery.start_soon(
                    curl_load,
                    ctx.workdir / f"load-{kind}.cfg",
                    urls[kind],
                    accepts[kind],
                    options.load_max_requests,
                    parallel[kind],
                    finished[kind],
                    stop,
                )
            while time.monotonic() - started < seconds:
                rss.append(
                    {"t": time.monotonic() - started, "kib": snapshot_tree(rst.pid)["rss_kib"]}
                )
                done = [len(f.ok_s) + f.errors for f in finished.values()]
                if min(done) >= options.load_max_requests:
                    break
                left = seconds - (time.monotonic() - started)
                await trio.sleep(max(0.0, min(SAMPLE_EVERY, left)))  # the sampling period
            wall = time.monotonic() - started
            stop.set()
    out: dict[str, Any] = {
        "workers": workers,
        "wall_s": wall,
        "rst_cpu_s": cpu_tree_s(rst.pid) - cpu_before,
        "orthanc_cpu_s": cpu_s(orthanc.pid) - orthanc_before,
        "rst_rss_kib": rss,
        "rst_peak_rss_kib": max((s["kib"] for s in rss), default=0),
        "rst_hwm_kib": rst.peak_rss_kib(),
    }
    for kind in KINDS:
        f = finished[kind]
        out[kind] = {
            "clients": parallel[kind],
            "ok": len(f.ok_s),
            "errors": f.errors,
            "rps": len(f.ok_s) / wall,
            "bytes_each": f.expected_bytes,
            "latency_s": latencies(f.ok_s),
            "ttfb_s": latencies(f.ttfb_s),
            "first_errors": f.first_errors,
            "curl_messages": f.messages,
        }
        print(
            f"[load workers={workers}] {kind}: {out[kind]['rps']:.1f} req/s, "
            f"p50 {out[kind]['latency_s']['p50'] * 1000:.0f} ms, "
            f"p99 {out[kind]['latency_s']['p99'] * 1000:.0f} ms, {f.errors} errors",
            flush=True,
        )
    return out


async def run(ctx: Context) -> dict[str, Any]:
    try:
        workers = [int(w) for w in str(ctx.options.load_workers).split(",") if w.strip()]
    except ValueError:
        raise BenchmarkError(f"--load-workers {ctx.options.load_workers!r}: not numbers") from None
    runs = []
    for n in workers:
        async with open_rst(ctx, f"load-{n}", workers=n, max_associations=ASSOCIATIONS) as rst:
            print(
                f"[load workers={n}] {ctx.options.load_seconds:.0f} s: "
                f"{ctx.options.load_qido_clients} QIDO-RS + {ctx.options.load_wado_clients} "
                "WADO-RS in flight",
                flush=True,
            )
            runs.append(await measure(ctx, rst, ctx.orthanc, n))
    study = ctx.studies["ct"]
    return {
        "study": {"label": study.label, "bytes": study.bytes, "instances": study.count},
        "seconds": ctx.options.load_seconds,
        "max_requests": ctx.options.load_max_requests,
        "max_associations": ASSOCIATIONS,
        "runs": runs,
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        "| rst | kind | in flight | req/s | p50 | p95 | p99 | errors | rst CPU s (per s) "
        "| rst VmRSS max / VmHWM |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    errors = 0
    for r in result["runs"]:
        for kind in KINDS:
            k = r[kind]
            lat = k["latency_s"]
            errors += k["errors"]
            lines.append(
                f"| {r['workers']} worker{'s' if r['workers'] > 1 else ''} | "
                f"{'QIDO-RS' if kind == 'qido' else 'WADO-RS study'} | {k['clients']} "
                f"| {k['rps']:.1f} | {ms(lat['p50'])} | {ms(lat['p95'])} "
                f"| {ms(lat['p99'])} | {k['errors']} of {k['ok'] + k['errors']} "
                f"| {r['rst_cpu_s']:.0f} ({r['rst_cpu_s'] / r['wall_s']:.2f}) "
                f"| {r['rst_peak_rss_kib'] / 1024:.0f} / {r['rst_hwm_kib'] / 1024:.0f} MiB |"
            )
    study = result["study"]
    lines += [
        "",
        f"{result['seconds']:.0f} s per setting; the WADO-RS retrieves fetch the "
        f"{study['label']} ({study['bytes'] / 1e6:.0f} MB); latencies are curl's total time of "
        "the checked answers (requests still in flight at the end are not counted); rst CPU is "
        "user + system seconds of all its processes. Goal 0 errors: "
        + ("met." if errors == 0 else f"**not met** ({errors})."),
    ]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    from .report import grouped_bars

    labels = [
        f"{kind.upper()}\n{r['workers']} worker{'s' if r['workers'] > 1 else ''}"
        for r in result["runs"]
        for kind in KINDS
    ]
    series: dict[str, Sequence[float]] = {
        q: [r[kind]["latency_s"][q] * 1000 for r in result["runs"] for kind in KINDS]
        for q in ("p50", "p95", "p99")
    }
    grouped_bars(path, labels, series, ylabel="ms", title="Latency under load", log=True)


if __name__ == "__main__":
    import sys

    from .cli import main

    sys.exit(main(["--only", NAME, *sys.argv[1:]]))
