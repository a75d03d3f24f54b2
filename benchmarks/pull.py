"""The workflow a user would pick instead of a gateway: a second Orthanc in front of the PACS.

The second Orthanc ("ORTHANC2", its own storage) pulls the study from the PACS by C-MOVE (REST
``POST /modalities/PACS/move``, synchronous, TargetAet = its own AE title) and then serves it with
its DICOMweb plugin (``GET /dicom-web/studies/{uid}``, curl to /dev/null). The client waits for
both: time to last byte = pull + serve. rst answers the same client request directly (C-MOVE,
streamed). The study is deleted from the second Orthanc before each run (a cold cache each time).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.orthanc import add_modality, http_client, open_orthanc

from .common import (
    ORTHANC_AET,
    RETRIEVE_TIMEOUT,
    BenchmarkError,
    Context,
    curl_get,
    delete_study,
    median,
    open_rst,
)

NAME = "pull"
TITLE = "rst against a second Orthanc that pulls, then serves"
SECOND_AET = "ORTHANC2"


def studies(quick: bool) -> list[str]:
    return ["ct"]


async def run(ctx: Context) -> dict[str, Any]:
    study = ctx.studies["ct"]
    uid = study.files.study_uid
    modalities = {"PACS": (ORTHANC_AET, "127.0.0.1", ctx.orthanc.dicom_port)}
    out: dict[str, Any] = {"bytes": study.bytes, "rst": [], "orthanc": []}
    async with open_orthanc(
        ctx.workdir / "orthanc2",
        aet=SECOND_AET,
        modalities=modalities,
        fast_stop=True,
        extra_config={"MaximumPduLength": 131072},
    ) as second:
        await add_modality(ctx.orthanc, SECOND_AET, SECOND_AET, "127.0.0.1", second.dicom_port)
        body = {
            "Level": "Study",
            "Resources": [{"StudyInstanceUID": uid}],
            "TargetAet": SECOND_AET,
            "Synchronous": True,
            "Timeout": 120,
        }

        async def orthanc_round() -> dict[str, Any]:
            await delete_study(second, uid)
            started = time.perf_counter()
            async with http_client(second, timeout=RETRIEVE_TIMEOUT) as client:
                try:
                    moved = await client.post("/modalities/PACS/move", json=body)
                except httpx.TransportError as exc:
                    raise BenchmarkError(f"second Orthanc's C-MOVE: {exc}") from None
            pull_s = time.perf_counter() - started
            if moved.status_code != 200:
                raise BenchmarkError(
                    f"POST /modalities/PACS/move: {moved.status_code} {moved.text}"
                )
            served = await curl_get(
                f"{second.dicomweb_url}/studies/{uid}",
                min_bytes=study.bytes,
                accept='multipart/related; type="application/dicom"',
            )
            total = time.perf_counter() - started
            return {
                "pull_s": pull_s,
                "serve_s": served.total_s,
                "total_s": total,
                "bytes": served.bytes,
                "mbps": study.bytes / total / 1e6,
            }

        async with open_rst(ctx, "pull", mode="move") as rst:
            url = rst.ae_url(f"studies/{uid}")
            await curl_get(url, min_bytes=study.bytes, log=rst.log)  # warm-up
            await orthanc_round()
            for i in range(ctx.runs):
                r = (await curl_get(url, min_bytes=study.bytes, log=rst.log)).as_dict()
                o = await orthanc_round()
                out["rst"].append(r)
                out["orthanc"].append(o)
                print(
                    f"[pull] run {i + 1}/{ctx.runs}: rst {r['total_s']:.2f} s, second Orthanc "
                    f"{o['total_s']:.2f} s (pull {o['pull_s']:.2f} + serve {o['serve_s']:.2f})",
                    flush=True,
                )
        await delete_study(second, uid)
    out["medians"] = {
        "rst_total_s": median([r["total_s"] for r in out["rst"]]),
        "rst_ttfb_s": median([r["ttfb_s"] for r in out["rst"]]),
        "orthanc_total_s": median([r["total_s"] for r in out["orthanc"]]),
        "orthanc_pull_s": median([r["pull_s"] for r in out["orthanc"]]),
        "orthanc_serve_s": median([r["serve_s"] for r in out["orthanc"]]),
    }
    return out


def table(result: dict[str, Any]) -> str:
    m = result["medians"]
    return "\n".join(
        [
            "| client waits for | time to last byte | of which | effective MB/s |",
            "|---|---:|---|---:|",
            f"| rst (WADO-RS, C-MOVE streamed) | {m['rst_total_s']:.2f} s "
            f"| first byte after {m['rst_ttfb_s'] * 1000:.0f} ms "
            f"| {result['bytes'] / m['rst_total_s'] / 1e6:.0f} |",
            f"| second Orthanc: C-MOVE pull, then its DICOMweb | {m['orthanc_total_s']:.2f} s "
            f"| pull {m['orthanc_pull_s']:.2f} s + serve {m['orthanc_serve_s']:.2f} s "
            f"| {result['bytes'] / m['orthanc_total_s'] / 1e6:.0f} |",
            f"| **rst / second Orthanc (time)** | {m['rst_total_s'] / m['orthanc_total_s']:.2f} "
            "| | |",
        ]
    )


def plot(result: dict[str, Any], path: Path) -> None:
    from .report import stacked_bars

    m = result["medians"]
    stacked_bars(
        path,
        ["rst", "second Orthanc"],
        {
            "retrieve + serve (streamed)": [m["rst_total_s"], 0.0],
            "C-MOVE pull": [0.0, m["orthanc_pull_s"]],
            "DICOMweb serve": [0.0, m["orthanc_serve_s"]],
        },
        ylabel="seconds to the last byte (median)",
        title=f"{result['bytes'] / 1e6:.0f} MB study, client's view",
    )
