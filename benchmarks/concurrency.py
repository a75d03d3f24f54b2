"""N concurrent retrievals of the ~100 MB study: rst (N curls) against N concurrent movescu.

Aggregate MB/s = all bytes delivered / wall time of the whole batch (first start to last end).
rst runs with ``max_associations = 16`` for the PACS, once as one process and once with
``http.workers = 2``; the dcmtk side moves into one ``storescp --ignore --fork`` (one child
process per association). Errors are counted, not fatal.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from tests.support.dcmtk import movescu
from tests.support.orthanc import add_modality

from .common import (
    DCMTK_FORK_AET,
    ORTHANC_AET,
    RETRIEVE_TIMEOUT,
    RST_AET,
    BenchmarkError,
    Context,
    Rst,
    curl_get,
    median,
    open_rst,
)

NAME = "concurrency"
TITLE = "Concurrent retrievals"
WORKERS = 2  # http.workers for the second rst: one per core of the benchmark machine


def studies(quick: bool) -> list[str]:
    return ["ct"]


def levels(quick: bool) -> tuple[int, ...]:
    return (1, 4) if quick else (1, 4, 16)


async def _batch(n: int, one: Any) -> dict[str, Any]:
    sizes: list[int] = []
    errors: list[str] = []

    async def task() -> None:
        try:
            sizes.append(await one())
        except (BenchmarkError, trio.TooSlowError) as exc:
            errors.append(str(exc)[:500])

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(task)
    wall = time.perf_counter() - started
    return {
        "n": n,
        "wall_s": wall,
        "bytes": sum(sizes),
        "ok": len(sizes),
        "errors": errors,
        "mbps": sum(sizes) / wall / 1e6,
    }


async def run(ctx: Context) -> dict[str, Any]:
    study = ctx.studies["ct"]
    keys = {"StudyInstanceUID": study.files.study_uid}
    out: dict[str, Any] = {"rst": {}, "rst_workers": {}, "dcmtk": {}, "workers": WORKERS}

    async def dcmtk_one() -> int:
        with trio.fail_after(RETRIEVE_TIMEOUT):
            result = await movescu(
                "127.0.0.1", ctx.orthanc.dicom_port, ORTHANC_AET, DCMTK_FORK_AET, keys
            )
        if not result.ok:
            raise BenchmarkError(f"movescu: status {result.status}\n{result.output[-1000:]}")
        return study.bytes

    async with (
        open_rst(ctx, "concurrency", mode="move", max_associations=16) as rst,
        open_rst(
            ctx, "concurrency-workers", mode="move", max_associations=16, workers=WORKERS
        ) as rst_workers,
    ):
        # Both are registered in Orthanc under the same AE title: the one registered last
        # (rst_workers) receives the C-MOVEs; re-register before each batch.
        def one(server: Rst) -> Callable[[], Awaitable[int]]:
            url = server.ae_url(f"studies/{study.files.study_uid}")

            async def get() -> int:
                return (await curl_get(url, min_bytes=study.bytes, log=server.log)).bytes

            return get

        async def batch(n: int, server: Rst) -> dict[str, Any]:
            await add_modality(ctx.orthanc, "RST", RST_AET, "127.0.0.1", server.dimse_port)
            return await _batch(n, one(server))

        for server in (rst, rst_workers):  # warm-up
            await batch(1, server)
        await dcmtk_one()
        for n in levels(ctx.quick):
            for key in ("rst", "rst_workers", "dcmtk"):
                out[key][str(n)] = []
            for i in range(ctx.runs):
                r = await batch(n, rst)
                w = await batch(n, rst_workers)
                d = await _batch(n, dcmtk_one)
                out["rst"][str(n)].append(r)
                out["rst_workers"][str(n)].append(w)
                out["dcmtk"][str(n)].append(d)
                print(
                    f"[concurrency] {n:2d} x {i + 1}/{ctx.runs}: rst {r['mbps']:6.1f} MB/s "
                    f"({len(r['errors'])} errors), {WORKERS} workers {w['mbps']:6.1f} MB/s "
                    f"({len(w['errors'])} errors), dcmtk {d['mbps']:6.1f} MB/s "
                    f"({len(d['errors'])} errors)",
                    flush=True,
                )
        out["rst_peak_rss_kib"] = rst.peak_rss_kib()
        out["rst_workers_peak_rss_kib"] = rst_workers.peak_rss_kib()
    out["medians"] = {
        str(n): {
            "rst_mbps": median([b["mbps"] for b in out["rst"][str(n)]]),
            "rst_workers_mbps": median([b["mbps"] for b in out["rst_workers"][str(n)]]),
            "dcmtk_mbps": median([b["mbps"] for b in out["dcmtk"][str(n)]]),
            "rst_wall_s": median([b["wall_s"] for b in out["rst"][str(n)]]),
            "rst_workers_wall_s": median([b["wall_s"] for b in out["rst_workers"][str(n)]]),
            "dcmtk_wall_s": median([b["wall_s"] for b in out["dcmtk"][str(n)]]),
            "rst_errors": sum(len(b["errors"]) for b in out["rst"][str(n)]),
            "rst_workers_errors": sum(len(b["errors"]) for b in out["rst_workers"][str(n)]),
            "dcmtk_errors": sum(len(b["errors"]) for b in out["dcmtk"][str(n)]),
            "retrievals": n * len(out["rst"][str(n)]),
        }
        for n in levels(ctx.quick)
    }
    out["study_bytes"] = study.bytes
    return out


def table(result: dict[str, Any]) -> str:
    workers = result.get("workers", WORKERS)
    lines = [
        "| concurrent retrievals | rst MB/s | rst, "
        f"{workers} workers MB/s | dcmtk MB/s | rst / dcmtk | rst {workers} workers / dcmtk "
        "| batch time rst / workers / dcmtk | errors rst / workers / dcmtk |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, m in result["medians"].items():
        lines.append(
            f"| {n} | {m['rst_mbps']:.0f} | {m['rst_workers_mbps']:.0f} | {m['dcmtk_mbps']:.0f} "
            f"| {m['rst_mbps'] / m['dcmtk_mbps']:.2f} "
            f"| {m['rst_workers_mbps'] / m['dcmtk_mbps']:.2f} "
            f"| {m['rst_wall_s']:.2f} / {m['rst_workers_wall_s']:.2f} / {m['dcmtk_wall_s']:.2f} s "
            f"| {m['rst_errors']} / {m['rst_workers_errors']} / {m['dcmtk_errors']} "
            f"of {m['retrievals']} |"
        )
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    from .report import lines_plot

    ns = [int(n) for n in result["medians"]]
    medians = list(result["medians"].values())
    lines_plot(
        path,
        ns,
        {
            "rst (N x curl)": [m["rst_mbps"] for m in medians],
            f"rst, {result.get('workers', WORKERS)} workers": [
                m["rst_workers_mbps"] for m in medians
            ],
            "dcmtk (N x movescu)": [m["dcmtk_mbps"] for m in medians],
        },
        xlabel="concurrent retrievals of the same study",
        ylabel="aggregate MB/s (median)",
        title="Concurrent study retrievals",
    )
