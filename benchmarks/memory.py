"""rst's peak resident memory (VmHWM) while it streams studies of growing size.

One fresh rst process (C-MOVE) per study: its VmHWM once ready, then after one WADO-RS retrieve
of the whole study with curl to /dev/null. Streaming means the peak does not grow with the study;
it does grow with the largest instance (an instance is held whole).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .common import Context, curl_get, open_rst

NAME = "memory"
TITLE = "Peak memory while streaming"


def studies(quick: bool) -> list[str]:
    return ["ct", "mf"] if quick else ["ct", "mf", "big"]


async def run(ctx: Context) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for key in studies(ctx.quick):
        study = ctx.studies[key]
        async with open_rst(ctx, f"memory-{key}", mode="move") as rst:
            start_kib = rst.peak_rss_kib()
            url = rst.ae_url(f"studies/{study.files.study_uid}")
            print(f"[memory] {study.label}: one retrieve", flush=True)
            got = await curl_get(url, min_bytes=study.bytes, log=rst.log)
            peak_kib = rst.peak_rss_kib()
        largest = max(p.stat().st_size for p in study.files.paths)
        print(
            f"[memory] {study.label}: {got.mbps:.0f} MB/s, VmHWM {start_kib / 1024:.0f} MiB "
            f"at start, {peak_kib / 1024:.0f} MiB after",
            flush=True,
        )
        rows.append(
            {
                "study": key,
                "label": study.label,
                "bytes": study.bytes,
                "instances": study.count,
                "largest_instance_bytes": largest,
                "start_kib": start_kib,
                "peak_kib": peak_kib,
                "retrieve": got.as_dict(),
            }
        )
    return {"rows": rows}


def table(result: dict[str, Any]) -> str:
    lines = [
        "| study | size | largest instance | rst VmHWM at start | rst VmHWM after the retrieve "
        "| growth | retrieve MB/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['label']} | {row['bytes'] / 1e6:,.0f} MB "
            f"| {row['largest_instance_bytes'] / 1e6:.1f} MB "
            f"| {row['start_kib'] / 1024:.0f} MiB | {row['peak_kib'] / 1024:.0f} MiB "
            f"| +{(row['peak_kib'] - row['start_kib']) / 1024:.0f} MiB "
            f"| {row['retrieve']['mbps']:.0f} |"
        )
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    from .report import grouped_bars

    rows = result["rows"]
    grouped_bars(
        path,
        [f"{r['label']}\n{r['bytes'] / 1e6:,.0f} MB" for r in rows],
        {
            "VmHWM at start": [r["start_kib"] / 1024 for r in rows],
            "VmHWM after the retrieve": [r["peak_kib"] / 1024 for r in rows],
            "study size": [r["bytes"] / 2**20 for r in rows],
        },
        ylabel="MiB",
        title="rst peak resident memory vs study size",
        log=True,
    )
