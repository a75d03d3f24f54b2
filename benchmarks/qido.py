"""QIDO-RS requests per second through rst against findscu on the same query.

The query: ``/studies?PatientID=BENCH-CT`` (one matching study) — for rst
``GET /aets/ORTHANC/studies?PatientID=...``, for dcmtk a study-level C-FIND with the same key.
HTTP load: one curl process per batch (``-K`` with one URL per request; keep-alive), either
sequential or ``--parallel --parallel-max P``; curl is not the bottleneck (Orthanc's own QIDO
through the same curl runs several times faster). dcmtk: ``findscu`` K times, one process and
one association per query, sequentially or P at a time.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.support.dcmtk import run_tool

from .common import (
    CURL,
    ORTHANC_AET,
    BenchmarkError,
    Context,
    median,
    open_rst,
)

NAME = "qido"
TITLE = "QIDO-RS requests per second"
PARALLEL = 8


def studies(quick: bool) -> list[str]:
    return ["ct"]


async def curl_batch(ctx: Context, url: str, count: int, parallel: int) -> dict[str, Any]:
    config = ctx.workdir / "qido-curl.cfg"
    config.write_text(f'url = "{url}"\noutput = "/dev/null"\n' * count)
    argv = [*CURL, "-w", "%{http_code}\\n", "-H", "Accept: application/dicom+json", "-K"]
    argv.append(str(config))
    if parallel > 1:
        argv[1:1] = ["--parallel", "--parallel-max", str(parallel)]
    started = time.perf_counter()
    with trio.fail_after(300):
        proc = await trio.run_process(
            argv, stdin=subprocess.DEVNULL, capture_stdout=True, capture_stderr=True, check=False
        )
    wall = time.perf_counter() - started
    codes = proc.stdout.decode().split()
    errors = count - codes.count("200")
    if proc.returncode != 0 and errors == 0:
        errors = 1
    return {
        "requests": count,
        "parallel": parallel,
        "wall_s": wall,
        "errors": errors,
        "rps": count / wall,
        "stderr": proc.stderr.decode()[-500:],
    }


async def findscu_batch(ctx: Context, patient_id: str, count: int, parallel: int) -> dict[str, Any]:
    errors: list[str] = []
    limiter = trio.CapacityLimiter(parallel)

    async def one() -> None:
        async with limiter:
            result = await run_tool(
                "findscu",
                "-v",
                "-S",
                "-aet",
                "FINDSCU",
                "-aec",
                ORTHANC_AET,
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                f"PatientID={patient_id}",
                "-k",
                "StudyInstanceUID",
                "127.0.0.1",
                str(ctx.orthanc.dicom_port),
            )
        if not result.ok or "(Pending)" not in result.output:
            errors.append(result.output[-300:])

    started = time.perf_counter()
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(one)
    wall = time.perf_counter() - started
    return {
        "requests": count,
        "parallel": parallel,
        "wall_s": wall,
        "errors": len(errors),
        "rps": count / wall,
        "first_error": errors[0] if errors else None,
    }


async def run(ctx: Context) -> dict[str, Any]:
    study = ctx.studies["ct"]
    http_count, find_count = (50, 25) if ctx.quick else (200, 100)
    query = f"studies?PatientID={study.patient_id}"
    orthanc_url = f"{ctx.orthanc.dicomweb_url}/{query}"
    out: dict[str, Any] = {
        "query": query,
        "http_requests": http_count,
        "findscu_requests": find_count,
        "parallel": PARALLEL,
        "batches": {},
    }
    async with open_rst(ctx, "qido", mode="move") as rst:
        url = rst.ae_url(query)
        async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
            answer = (await client.get(url)).json()
        if [row.get("0020000D", {}).get("Value") for row in answer] != [[study.files.study_uid]]:
            raise BenchmarkError(f"rst QIDO {url} answered {answer!r}")
        clients: dict[str, Any] = {
            "rst": lambda p: curl_batch(ctx, url, http_count, p),
            "dcmtk": lambda p: findscu_batch(ctx, study.patient_id, find_count, p),
            "orthanc": lambda p: curl_batch(ctx, orthanc_url, http_count, p),
        }
        for batch in clients.values():
            await batch(1)  # warm-up
        for i in range(ctx.runs):
            for name, batch in clients.items():
                for parallel in (1, PARALLEL):
                    got = await batch(parallel)
                    out["batches"].setdefault(f"{name}-{parallel}", []).append(got)
                    print(
                        f"[qido] {i + 1}/{ctx.runs} {name} x{parallel}: {got['rps']:.0f} req/s, "
                        f"{got['errors']} errors",
                        flush=True,
                    )
        out["rst_peak_rss_kib"] = rst.peak_rss_kib()
    out["medians"] = {
        key: {
            "rps": median([b["rps"] for b in batches]),
            "errors": sum(b["errors"] for b in batches),
            "requests": sum(b["requests"] for b in batches),
        }
        for key, batches in out["batches"].items()
    }
    return out


def table(result: dict[str, Any]) -> str:
    m = result["medians"]
    names = {
        "rst": "rst QIDO-RS (curl)",
        "dcmtk": "findscu (one process per query)",
        "orthanc": "Orthanc's own QIDO-RS (curl, context)",
    }
    lines = [
        f"| client | sequential req/s | {PARALLEL} in parallel req/s | errors |",
        "|---|---:|---:|---:|",
    ]
    for key, label in names.items():
        seq, par = m[f"{key}-1"], m[f"{key}-{PARALLEL}"]
        lines.append(
            f"| {label} | {seq['rps']:.0f} | {par['rps']:.0f} "
            f"| {seq['errors'] + par['errors']} of {seq['requests'] + par['requests']} |"
        )
    seq_ratio = m["rst-1"]["rps"] / m["dcmtk-1"]["rps"]
    par_ratio = m[f"rst-{PARALLEL}"]["rps"] / m[f"dcmtk-{PARALLEL}"]["rps"]
    lines.append(f"| **rst / findscu** | {seq_ratio:.2f} | {par_ratio:.2f} | |")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    from .report import grouped_bars

    m = result["medians"]
    grouped_bars(
        path,
        ["rst QIDO-RS", "findscu", "Orthanc QIDO-RS"],
        {
            "sequential": [m[f"{k}-1"]["rps"] for k in ("rst", "dcmtk", "orthanc")],
            f"{PARALLEL} in parallel": [
                m[f"{k}-{PARALLEL}"]["rps"] for k in ("rst", "dcmtk", "orthanc")
            ],
        },
        ylabel="requests/s (median)",
        title=f"Study query {result['query']}",
    )
