"""STOW-RS through rst into the PACS against dcmtk's storescu of the same files.

Body: a prebuilt ``multipart/related; type="application/dicom"`` body of the ~100 MB study (in
the run's temporary folder), POSTed with ``curl --data-binary @body``. rst stores each part with
C-STORE into the same Orthanc. Before each run (rst or storescu) the study is deleted from
Orthanc through its REST API; after each run Orthanc must hold every instance again.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import trio

from tests.support.dcmtk import storescu
from tests.support.loopback import log_tail

from .common import (
    CURL,
    MAX_PDU,
    ORTHANC_AET,
    RETRIEVE_TIMEOUT,
    BenchmarkError,
    Context,
    Study,
    count_instances,
    delete_study,
    median,
    open_rst,
)

NAME = "stow"
TITLE = "STOW-RS throughput"
BOUNDARY = "rst-bench-0a1b2c3d4e5f"


def studies(quick: bool) -> list[str]:
    return ["ct"]


def write_body(study: Study, path: Path) -> int:
    with path.open("wb") as body:
        for part in study.files.paths:
            body.write(f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode())
            body.write(part.read_bytes())
            body.write(b"\r\n")
        body.write(f"--{BOUNDARY}--\r\n".encode())
    return path.stat().st_size


async def _stored(ctx: Context, study: Study, who: str) -> None:
    held = await count_instances(ctx.orthanc, study.files.study_uid)
    if held != study.count:
        raise BenchmarkError(f"after {who}: Orthanc holds {held} of {study.count} instances")


async def rst_stow(ctx: Context, url: str, body: Path, study: Study, log: Path) -> dict[str, Any]:
    result = await curl_stow(url, body, study, log)
    await _stored(ctx, study, "rst STOW-RS")
    return result


async def curl_stow(url: str, body: Path, study: Study, log: Path) -> dict[str, Any]:
    """POST the prebuilt multipart *body* with curl; check that every instance was stored."""
    content_type = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
    argv = [
        *CURL,
        "-X",
        "POST",
        "-H",
        f"Content-Type: {content_type}",
        "-H",
        "Accept: application/dicom+json",
        "--data-binary",
        f"@{body}",
        "-w",
        "\n%{http_code} %{time_total}",
        url,
    ]
    with trio.fail_after(RETRIEVE_TIMEOUT):
        proc = await trio.run_process(
            argv, stdin=subprocess.DEVNULL, capture_stdout=True, capture_stderr=True, check=False
        )
    text = proc.stdout.decode(errors="replace")
    response, _, trailer = text.rpartition("\n")
    try:
        code, total = trailer.split()
        answer = json.loads(response)
    except ValueError:
        raise BenchmarkError(f"STOW {url}: unreadable answer {text[-500:]!r}") from None
    referenced = answer.get("00081199", {}).get("Value", [])
    failed = answer.get("00081198", {}).get("Value", [])
    if proc.returncode != 0 or code != "200" or len(referenced) != study.count or failed:
        raise BenchmarkError(
            f"STOW {url}: curl {proc.returncode}, HTTP {code}, {len(referenced)} stored, "
            f"{len(failed)} failed\nrst log tail:\n{log_tail(log)}"
        )
    return {"total_s": float(total), "mbps": study.bytes / float(total) / 1e6}


async def dcmtk_store(ctx: Context, study: Study) -> dict[str, Any]:
    started = time.perf_counter()
    with trio.fail_after(RETRIEVE_TIMEOUT):
        result = await storescu(
            "127.0.0.1", ctx.orthanc.dicom_port, ORTHANC_AET, study.files.paths, max_pdu=MAX_PDU
        )
    wall = time.perf_counter() - started
    if not result.ok or len(result.store_statuses) != study.count:
        raise BenchmarkError(f"storescu failed:\n{result.output[-2000:]}")
    await _stored(ctx, study, "storescu")
    return {"total_s": wall, "mbps": study.bytes / wall / 1e6}


async def run(ctx: Context) -> dict[str, Any]:
    study = ctx.studies["ct"]
    body = ctx.workdir / "stow-body.bin"
    body_bytes = await trio.to_thread.run_sync(write_body, study, body)
    out: dict[str, Any] = {"study": study.key, "bytes": study.bytes, "body_bytes": body_bytes}
    rst_runs: list[dict[str, Any]] = []
    dcmtk_runs: list[dict[str, Any]] = []
    try:
        async with open_rst(ctx, "stow", mode="move") as rst:
            url = rst.ae_url("studies")
            out["rst_start_rss_kib"] = rst.peak_rss_kib()
            for i in range(ctx.runs + 1):  # the first round is a warm-up
                await delete_study(ctx.orthanc, study.files.study_uid)
                r = await rst_stow(ctx, url, body, study, rst.log)
                await delete_study(ctx.orthanc, study.files.study_uid)
                d = await dcmtk_store(ctx, study)
                if i == 0:
                    out["warmup"] = {"rst": r, "dcmtk": d}
                    continue
                rst_runs.append(r)
                dcmtk_runs.append(d)
                print(
                    f"[stow] run {i}/{ctx.runs}: rst {r['mbps']:.0f} MB/s, "
                    f"storescu {d['mbps']:.0f} MB/s",
                    flush=True,
                )
            out["rst_peak_rss_kib"] = rst.peak_rss_kib()
    finally:
        body.unlink(missing_ok=True)
    out["rst"], out["dcmtk"] = rst_runs, dcmtk_runs
    rst_mbps = median([r["mbps"] for r in rst_runs])
    dcmtk_mbps = median([r["mbps"] for r in dcmtk_runs])
    out["medians"] = {
        "rst_mbps": rst_mbps,
        "dcmtk_mbps": dcmtk_mbps,
        "ratio": rst_mbps / dcmtk_mbps,
        "rst_total_s": median([r["total_s"] for r in rst_runs]),
        "dcmtk_total_s": median([r["total_s"] for r in dcmtk_runs]),
    }
    return out


def table(result: dict[str, Any]) -> str:
    m = result["medians"]
    return "\n".join(
        [
            "| data | rst STOW-RS MB/s | storescu MB/s | rst / storescu | rst time | storescu time "
            "| rst VmHWM at start → after |",
            "|---|---:|---:|---:|---:|---:|---:|",
            f"| {result['bytes'] / 1e6:.0f} MB study ({result['body_bytes'] / 1e6:.0f} MB body) "
            f"| {m['rst_mbps']:.0f} | {m['dcmtk_mbps']:.0f} | {m['ratio']:.2f} "
            f"| {m['rst_total_s']:.2f} s | {m['dcmtk_total_s']:.2f} s "
            f"| {result['rst_start_rss_kib'] / 1024:.0f} → "
            f"{result['rst_peak_rss_kib'] / 1024:.0f} MiB |",
        ]
    )


def plot(result: dict[str, Any], path: Path) -> None:
    from .report import grouped_bars

    m = result["medians"]
    grouped_bars(
        path,
        [f"{result['bytes'] / 1e6:.0f} MB study"],
        {"rst STOW-RS (curl)": [m["rst_mbps"]], "storescu": [m["dcmtk_mbps"]]},
        ylabel="MB/s (median)",
        title="Storing a study into the PACS",
    )
