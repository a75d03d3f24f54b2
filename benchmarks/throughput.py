"""WADO-RS study and series retrieve through rst (C-MOVE, C-GET) against dcmtk on the same data.

Per retrieve mode one rst process; per case (a study, or one series of it): one warm-up each,
then ``runs`` rounds of "rst with curl" and "dcmtk's tool" (``movescu`` into
``storescp --ignore``, or ``getscu --ignore``). Also gives rst's time to first byte against
dcmtk's time to the first C-STORE.

    python -m benchmarks.throughput [--runs 3] [--quick] ...
    # the same as: python -m benchmarks --only throughput ...
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .common import (
    Context,
    CurlRun,
    DcmtkRun,
    Study,
    curl_get,
    dcmtk_get,
    dcmtk_move,
    median,
    open_rst,
)

NAME = "throughput"
TITLE = "WADO-RS retrieve throughput and time to first byte"
MODES = ("move", "get")
MODE_NAMES = {"move": "C-MOVE", "get": "C-GET"}
REFERENCE = {"move": "movescu → storescp", "get": "getscu"}


def studies(quick: bool) -> list[str]:
    return ["ct"] if quick else ["ct", "mf", "small"]


def _cases(ctx: Context) -> list[tuple[Study, str | None]]:
    ct = ctx.studies["ct"]
    cases: list[tuple[Study, str | None]] = [(ct, None), (ct, ct.files.series_uids[0])]
    if not ctx.quick:
        cases += [(ctx.studies["mf"], None), (ctx.studies["small"], None)]
    return cases


def case_label(study: Study, series_uid: str | None) -> str:
    if series_uid is None:
        return f"study: {study.label}"
    n = len(study.files.series_paths(series_uid))
    return f"series: {n} of the {study.label}"


def _medians(rst: list[CurlRun], dcmtk: list[DcmtkRun]) -> dict[str, float]:
    rst_mbps = median([r.mbps for r in rst])
    dcmtk_mbps = median([r.mbps for r in dcmtk])
    rst_ttfb = median([r.ttfb_s for r in rst])
    dcmtk_first = median([r.first_store_s for r in dcmtk])
    return {
        "rst_mbps": rst_mbps,
        "dcmtk_mbps": dcmtk_mbps,
        "mbps_ratio": rst_mbps / dcmtk_mbps,
        "rst_total_s": median([r.total_s for r in rst]),
        "dcmtk_wall_s": median([r.wall_s for r in dcmtk]),
        "rst_ttfb_s": rst_ttfb,
        "dcmtk_first_store_s": dcmtk_first,
        "ttfb_ratio": rst_ttfb / dcmtk_first,
    }


async def run(ctx: Context) -> dict[str, Any]:
    cases_out: list[dict[str, Any]] = []
    peaks: dict[str, int] = {}
    for mode in MODES:
        reference = dcmtk_move if mode == "move" else dcmtk_get
        async with open_rst(ctx, f"throughput-{mode}", mode=mode) as rst:
            for study, series_uid in _cases(ctx):
                paths = (
                    study.files.paths
                    if series_uid is None
                    else study.files.series_paths(series_uid)
                )
                size = sum(p.stat().st_size for p in paths)
                path = f"studies/{study.files.study_uid}"
                if series_uid is not None:
                    path += f"/series/{series_uid}"
                url = rst.ae_url(path)
                label = case_label(study, series_uid)
                print(f"[throughput {mode}] {label}: warm-up", flush=True)
                warm_rst = await curl_get(url, min_bytes=size, log=rst.log)
                warm_dcmtk = await reference(ctx, study, series_uid, len(paths), size)
                rst_runs: list[CurlRun] = []
                dcmtk_runs: list[DcmtkRun] = []
                for i in range(ctx.runs):
                    r = await curl_get(url, min_bytes=size, log=rst.log)
                    d = await reference(ctx, study, series_uid, len(paths), size)
                    rst_runs.append(r)
                    dcmtk_runs.append(d)
                    print(
                        f"[throughput {mode}] run {i + 1}/{ctx.runs}: rst {r.mbps:7.1f} MB/s "
                        f"(TTFB {r.ttfb_s * 1000:6.1f} ms), dcmtk {d.mbps:7.1f} MB/s "
                        f"(first C-STORE {d.first_store_s * 1000:6.1f} ms)",
                        flush=True,
                    )
                cases_out.append(
                    {
                        "mode": mode,
                        "study": study.key,
                        "label": label,
                        "level": "study" if series_uid is None else "series",
                        "instances": len(paths),
                        "bytes": size,
                        "rst": [r.as_dict() for r in rst_runs],
                        "dcmtk": [d.as_dict() for d in dcmtk_runs],
                        "warmup_rst": warm_rst.as_dict(),
                        "warmup_dcmtk": warm_dcmtk.as_dict(),
                        "medians": _medians(rst_runs, dcmtk_runs),
                    }
                )
            peaks[mode] = rst.peak_rss_kib()
    return {"cases": cases_out, "rst_peak_rss_kib": peaks}


def table(result: dict[str, Any]) -> str:
    lines = [
        "| retrieve | data | rst MB/s | dcmtk MB/s | rst / dcmtk | rst TTFB "
        "| dcmtk first C-STORE | TTFB ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for case in result["cases"]:
        m = case["medians"]
        mode = case["mode"]
        lines.append(
            f"| {MODE_NAMES[mode]} ({REFERENCE[mode]}) "
            f"| {case['label']} ({case['bytes'] / 1e6:.0f} MB) "
            f"| {m['rst_mbps']:.0f} | {m['dcmtk_mbps']:.0f} | {m['mbps_ratio']:.2f} "
            f"| {m['rst_ttfb_s'] * 1000:.0f} ms | {m['dcmtk_first_store_s'] * 1000:.0f} ms "
            f"| {m['ttfb_ratio']:.1f} |"
        )
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    from .report import grouped_bars

    labels = [
        f"{MODE_NAMES[c['mode']]}\n{c['level']} {c['study']}\n{c['bytes'] / 1e6:.0f} MB"
        for c in result["cases"]
    ]
    grouped_bars(
        path,
        labels,
        {
            "rst (curl)": [c["medians"]["rst_mbps"] for c in result["cases"]],
            "dcmtk": [c["medians"]["dcmtk_mbps"] for c in result["cases"]],
        },
        ylabel="MB/s (median)",
        title="WADO-RS retrieve: rst vs dcmtk on the same PACS",
    )


if __name__ == "__main__":
    from .cli import main

    sys.exit(main(["--only", NAME, *sys.argv[1:]]))
