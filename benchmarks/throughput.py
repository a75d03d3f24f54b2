"""WADO-RS study and series retrieve through rst (C-MOVE, C-GET) against dcmtk on the same data.

Per retrieve mode one rst process; per case (a study, or one series of it): one warm-up each,
then ``runs`` rounds of "rst with curl" and "dcmtk's tool" in a plain run (``movescu`` into a
quiet ``storescp --ignore``, or ``getscu --ignore``; no ``-v``, the 128 KiB PDU rst uses), then
``runs`` separate verbose runs of the dcmtk tool for its time to the first C-STORE (logging
every C-STORE would slow the plain runs). rst's time to first byte comes from the same curl
runs as its throughput (curl measures it at no cost). Every figure is given as median (min-max).

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
    dcmtk_get_first_store,
    dcmtk_move,
    dcmtk_move_first_store,
    open_rst,
)
from .stats import spread

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


FIGURES = ("rst_mbps", "dcmtk_mbps", "rst_ttfb_s", "dcmtk_first_store_s")


def _spreads(rst: list[CurlRun], dcmtk: list[DcmtkRun], first: list[float]) -> dict[str, Any]:
    """min, median and max of each figure."""
    return {
        "rst_mbps": spread([r.mbps for r in rst]),
        "dcmtk_mbps": spread([d.mbps for d in dcmtk]),
        "rst_total_s": spread([r.total_s for r in rst]),
        "dcmtk_wall_s": spread([d.wall_s for d in dcmtk]),
        "rst_ttfb_s": spread([r.ttfb_s for r in rst]),
        "dcmtk_first_store_s": spread(first),
    }


def _medians(spreads: dict[str, Any]) -> dict[str, float]:
    m = {name: float(s["median"]) for name, s in spreads.items()}
    m["mbps_ratio"] = m["rst_mbps"] / m["dcmtk_mbps"]
    m["ttfb_ratio"] = m["rst_ttfb_s"] / m["dcmtk_first_store_s"]
    return m


async def run(ctx: Context) -> dict[str, Any]:
    cases_out: list[dict[str, Any]] = []
    peaks: dict[str, int] = {}
    for mode in MODES:
        plain = dcmtk_move if mode == "move" else dcmtk_get
        timed = dcmtk_move_first_store if mode == "move" else dcmtk_get_first_store
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
                warm_dcmtk = await plain(ctx, study, series_uid, size)
                await timed(ctx, study, series_uid, len(paths))
                rst_runs: list[CurlRun] = []
                dcmtk_runs: list[DcmtkRun] = []
                for i in range(ctx.runs):
                    r = await curl_get(url, min_bytes=size, log=rst.log)
                    d = await plain(ctx, study, series_uid, size)
                    rst_runs.append(r)
                    dcmtk_runs.append(d)
                    print(
                        f"[throughput {mode}] run {i + 1}/{ctx.runs}: rst {r.mbps:7.1f} MB/s "
                        f"(TTFB {r.ttfb_s * 1000:6.1f} ms), dcmtk {d.mbps:7.1f} MB/s",
                        flush=True,
                    )
                first = [await timed(ctx, study, series_uid, len(paths)) for _ in range(ctx.runs)]
                print(
                    f"[throughput {mode}] dcmtk first C-STORE (verbose runs): "
                    + ", ".join(f"{f * 1000:.1f} ms" for f in first),
                    flush=True,
                )
                spreads = _spreads(rst_runs, dcmtk_runs, first)
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
                        "dcmtk_first_store_s": first,
                        "warmup_rst": warm_rst.as_dict(),
                        "warmup_dcmtk": warm_dcmtk.as_dict(),
                        "spreads": spreads,
                        "medians": _medians(spreads),
                    }
                )
            peaks[mode] = rst.peak_rss_kib()
    return {"cases": cases_out, "rst_peak_rss_kib": peaks}


def _cell(s: dict[str, float], scale: float = 1.0, unit: str = "") -> str:
    """median (min-max)."""
    return f"{s['median'] * scale:.0f}{unit} ({s['min'] * scale:.0f}-{s['max'] * scale:.0f})"


def table(result: dict[str, Any]) -> str:
    lines = [
        "| retrieve | data | rst MB/s | dcmtk MB/s | rst / dcmtk | rst TTFB ms "
        "| dcmtk first C-STORE ms | TTFB ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for case in result["cases"]:
        m, s = case["medians"], case["spreads"]
        mode = case["mode"]
        lines.append(
            f"| {MODE_NAMES[mode]} ({REFERENCE[mode]}) "
            f"| {case['label']} ({case['bytes'] / 1e6:.0f} MB) "
            f"| {_cell(s['rst_mbps'])} | {_cell(s['dcmtk_mbps'])} | {m['mbps_ratio']:.2f} "
            f"| {_cell(s['rst_ttfb_s'], 1000)} | {_cell(s['dcmtk_first_store_s'], 1000)} "
            f"| {m['ttfb_ratio']:.1f} |"
        )
    lines += [
        "",
        "Each figure: median (min-max) over the runs; ratios of the medians. dcmtk's MB/s from "
        "plain runs (no -v); its first C-STORE from separate verbose runs.",
    ]
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
