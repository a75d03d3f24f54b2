"""What a viewer waits for when it opens a study: rst (cold, warm, no cache) against Orthanc's
own DICOMweb plugin serving the same study.

One *viewing* does what OHIF v3 does when a study is opened: a QIDO-RS for the study's series,
the metadata of every series (``/series/{se}/metadata``), then every frame of every instance
(``/instances/{i}/frames/{n}`` with OHIF's image loader's ``Accept``), sorted by Instance
Number, as soon as its series' metadata is in. A browser opens at most 6 connections to one
host: every request of a viewing goes through 6 keep-alive connections. Measured: the time to
the series list, to the last metadata, to the first frame (TTFF) and to the last (TTLF). Each
frame's body is checked to carry the frame's bytes, each metadata array to list every instance.

rst runs in front of Orthanc by C-MOVE, three ways:

- **cold**: a fresh rst with an empty retrieve cache (the study is not on rst's disk; a series'
  metadata fetches the series from the PACS into the cache, its frames are then read from there);
- **warm**: the same rst viewing the study again (everything served from the cache);
- **no cache**: ``cache = false``, every request goes to the PACS (metadata and each frame by
  its own C-MOVE).

The reference is Orthanc's DICOMweb plugin (``DicomWeb`` defaults, ``SeriesMetadata`` = Full,
so metadata is read from the stored files as rst's is) on the same machine, same study, same
client; its own caches are warm after the first viewing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.support.frames import OHIF_LOADER, parts

from .common import (
    ORTHANC_AET,
    RETRIEVE_TIMEOUT,
    BenchmarkError,
    Context,
    median,
    open_rst,
)
from .procfs import cpu_tree_s

NAME = "viewer"
TITLE = "A viewer opening a study: rst cold, warm and without cache against Orthanc's DICOMweb"
CONNECTIONS = 6  # a browser's connections per host (HTTP/1.1)
DICOM_JSON = "application/dicom+json"
PIXEL_DATA = "7FE00010"
WORKERS = 2  # http.workers of the second rst: one per core of the benchmark machine
WAYS = ("orthanc", "rst_warm", "rst_cold", "rst2_warm", "rst2_cold", "rst_nocache")
LABELS = {
    "orthanc": "Orthanc's DICOMweb plugin",
    "rst_warm": "rst, warm cache",
    "rst_cold": "rst, cold cache",
    "rst2_warm": f"rst, {WORKERS} workers, warm cache",
    "rst2_cold": f"rst, {WORKERS} workers, cold cache",
    "rst_nocache": "rst, no cache (C-MOVE per request)",
}
TARGETS = {"rst2_warm": 1.0, "rst2_cold": 1.5}  # TTLF / Orthanc's, rst on every core
TTFF_TARGET = 2.0  # rst cold TTFF / Orthanc's


def studies(quick: bool) -> list[str]:
    return ["ct"]


def _value(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value")
    return values[0] if values else None


class _Viewing:
    """One viewing of one study through one DICOMweb root; timings relative to its start."""

    def __init__(self, client: httpx.AsyncClient, root: str, study_uid: str) -> None:
        self.client = client
        self.root = root
        self.study_uid = study_uid
        self.started = 0.0
        self.first_frame: float | None = None
        self.series_listed = 0.0
        self.metadata_done = 0.0
        self.frames = 0
        self.bytes = 0

    def _since(self) -> float:
        return time.perf_counter() - self.started

    async def _get(self, url: str, accept: str) -> httpx.Response:
        response = await self.client.get(url, headers={"Accept": accept})
        self.bytes += len(response.content)
        if response.status_code != 200:
            raise BenchmarkError(f"GET {url}: HTTP {response.status_code} {response.text[:300]}")
        return response

    async def run(self) -> dict[str, float | int]:
        self.started = time.perf_counter()
        study = f"{self.root}/studies/{self.study_uid}"
        listed = (await self._get(f"{study}/series", DICOM_JSON)).json()
        self.series_listed = self._since()
        series = [str(_value(s, "0020000E")) for s in listed]
        if not series:
            raise BenchmarkError(f"{study}/series: no series")
        async with trio.open_nursery() as nursery:
            for series_uid in series:
                nursery.start_soon(self._series, f"{study}/series/{series_uid}")
        return {
            "series_s": self.series_listed,
            "metadata_s": self.metadata_done,
            "ttff_s": self.first_frame if self.first_frame is not None else float("nan"),
            "ttlf_s": self._since(),
            "frames": self.frames,
            "bytes": self.bytes,
        }

    async def _series(self, url: str) -> None:
        instances = (await self._get(f"{url}/metadata", DICOM_JSON)).json()
        self.metadata_done = max(self.metadata_done, self._since())
        if not instances or any(PIXEL_DATA not in i for i in instances):
            raise BenchmarkError(f"{url}/metadata: no instances, or one without pixel data")
        instances.sort(key=lambda i: int(_value(i, "00200013") or 0))
        async with trio.open_nursery() as nursery:
            for instance in instances:
                frame_bytes = int(_value(instance, "00280010")) * int(_value(instance, "00280011"))
                frame_bytes *= int(_value(instance, "00280100")) // 8
                frame_bytes *= int(_value(instance, "00280002") or 1)
                for n in range(1, int(_value(instance, "00280008") or 1) + 1):
                    frame = f"{url}/instances/{_value(instance, '00080018')}/frames/{n}"
                    nursery.start_soon(self._frame, frame, frame_bytes)

    async def _frame(self, url: str, size: int) -> None:
        response = await self._get(url, OHIF_LOADER)
        found = parts(response)
        if len(found) != 1 or len(found[0][1]) != size:
            lengths = [len(body) for _, body in found]
            raise BenchmarkError(f"GET {url}: parts of {lengths} bytes, expected one of {size}")
        self.frames += 1
        if self.first_frame is None:
            self.first_frame = self._since()


async def view(root: str, study_uid: str, server_pid: int) -> dict[str, float | int]:
    """One viewing through ``CONNECTIONS`` keep-alive connections (a fresh client: no reuse).
    ``cpu_s``: the CPU seconds the server (*server_pid* and its children) spent on it — what
    a busy machine distorts least."""
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    timeout = httpx.Timeout(RETRIEVE_TIMEOUT, pool=RETRIEVE_TIMEOUT)
    async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as client:
        with trio.fail_after(RETRIEVE_TIMEOUT):
            cpu = cpu_tree_s(server_pid)
            result = await _Viewing(client, root, study_uid).run()
            result["cpu_s"] = cpu_tree_s(server_pid) - cpu
            return result


async def run(ctx: Context) -> dict[str, Any]:
    study = ctx.studies["ct"]
    uid = study.files.study_uid
    out: dict[str, Any] = {way: [] for way in WAYS}

    def show(way: str, r: dict[str, float | int]) -> None:
        print(
            f"[viewer] {LABELS[way]:<36} series {r['series_s'] * 1000:6.0f} ms, metadata "
            f"{r['metadata_s']:6.2f} s, first frame {r['ttff_s']:6.2f} s, last frame "
            f"{r['ttlf_s']:6.2f} s ({r['frames']} frames), server CPU {r['cpu_s']:5.2f} s",
            flush=True,
        )

    orthanc = ctx.orthanc.pid
    # warm-up: Orthanc's caches, the OS page cache
    await view(ctx.orthanc.dicomweb_url, uid, orthanc)
    async with open_rst(ctx, "viewer-nocache") as rst:
        root = f"{rst.url}/aets/{ORTHANC_AET}"
        await view(root, uid, rst.pid)  # warm-up
        for _ in range(ctx.runs):
            out["rst_nocache"].append(r := await view(root, uid, rst.pid))
            show("rst_nocache", r)
            out["orthanc"].append(r := await view(ctx.orthanc.dicomweb_url, uid, orthanc))
            show("orthanc", r)
    for i in range(ctx.runs):
        for workers, prefix in ((1, "rst"), (WORKERS, "rst2")):
            name = f"viewer-cache-{workers}-{i}"
            async with open_rst(ctx, name, workers=workers, cache=True) as rst:
                root = f"{rst.url}/aets/{ORTHANC_AET}"
                out[f"{prefix}_cold"].append(r := await view(root, uid, rst.pid))
                show(f"{prefix}_cold", r)
                out[f"{prefix}_warm"].append(r := await view(root, uid, rst.pid))
                show(f"{prefix}_warm", r)
    expected = {r["frames"] for way in WAYS for r in out[way]}
    if expected != {study.count}:
        raise BenchmarkError(f"frames per viewing {sorted(expected)}, expected {study.count}")
    out["medians"] = {
        way: {key: median([float(r[key]) for r in out[way]]) for key in out[way][0]} for way in WAYS
    }
    out["study"] = {"label": study.label, "instances": study.count, "bytes": study.bytes}
    out["connections"] = CONNECTIONS
    return out


def _spread(runs: list[dict[str, float]], key: str) -> str:
    values = [run[key] for run in runs]
    return f"{min(values):.2f}-{max(values):.2f}"


def table(result: dict[str, Any]) -> str:
    m = result["medians"]
    ref = m["orthanc"]
    lines = [
        "| server | series list ms | all metadata s | first frame s (min-max) "
        "| last frame s (min-max) | frames/s | last frame / Orthanc | first frame / Orthanc "
        "| server CPU s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for way in WAYS:
        r = m[way]
        runs = result[way]
        lines.append(
            f"| {LABELS[way]} | {r['series_s'] * 1000:.0f} | {r['metadata_s']:.2f} "
            f"| {r['ttff_s']:.2f} ({_spread(runs, 'ttff_s')}) "
            f"| {r['ttlf_s']:.2f} ({_spread(runs, 'ttlf_s')}) | {r['frames'] / r['ttlf_s']:.0f} "
            f"| {r['ttlf_s'] / ref['ttlf_s']:.2f} | {r['ttff_s'] / ref['ttff_s']:.2f} "
            f"| {r['cpu_s']:.2f} |"
        )
    verdicts = [
        f"{LABELS[way]} last frame ≤ {target:.1f} x Orthanc: "
        f"{'met' if m[way]['ttlf_s'] / ref['ttlf_s'] <= target else 'not met'}"
        for way, target in TARGETS.items()
    ]
    ttff = m["rst2_cold"]["ttff_s"] / ref["ttff_s"]
    verdicts.append(
        f"{LABELS['rst2_cold']} first frame ≤ {TTFF_TARGET:.1f} x Orthanc: "
        f"{'met' if ttff <= TTFF_TARGET else 'not met'}"
    )
    return "\n".join([*lines, "", "Targets: " + "; ".join(verdicts) + "."])


def plot(result: dict[str, Any], path: Path) -> None:
    from .report import grouped_bars

    m = result["medians"]
    grouped_bars(
        path,
        [LABELS[way] for way in WAYS],
        {
            "first frame (ms)": [m[way]["ttff_s"] * 1000 for way in WAYS],
            "last frame (ms)": [m[way]["ttlf_s"] * 1000 for way in WAYS],
        },
        ylabel="ms from opening the study (median)",
        title=f"Opening {result['study']['label']} with {result['connections']} connections",
    )
