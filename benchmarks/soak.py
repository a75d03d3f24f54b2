"""Soak: mixed DICOMweb traffic at a steady, moderate rate for minutes; rst's memory must stay flat.

One fresh rst process (C-MOVE, ``http.workers`` 1) in front of the PACS. For
``--soak-minutes`` a scheduler starts ``--soak-rate`` requests a second (open loop: the rate
does not drop when rst slows down; at most ``IN_FLIGHT`` at once, a request that finds no room
is counted as *skipped*), each drawn from ``MIX``: QIDO-RS (studies, series, instances), series
metadata, one frame, and WADO-RS of an instance, a series and the whole study, and STOW-RS of
a fresh small instance into the PACS. Every answer is checked: 200; the right number of
matches or metadata items; a frame of exactly the frame's bytes; a retrieve of exactly as many
bytes as the first of the same URL, and no fewer than its files; a STOW-RS answer that
references the instance and fails none. Anything else is an error.

rst's VmRSS (and VmHWM) is read every ``--soak-sample`` seconds (60); the table gives the
least-squares slope in MiB per minute and max - min, both over the samples after the first
(which is taken once one request of every kind has been made), and the plot the whole curve.
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pydicom
import trio

from tests.support.frames import OHIF_LOADER, parts
from tests.support.hostile_dicom import small_instance

from .common import ACCEPT, BenchmarkError, Context, Rst, Study, open_rst
from .procfs import snapshot_tree
from .stats import latencies, ms, slope

NAME = "soak"
REPEATED = False  # one long measurement: --runs does not apply
TITLE = "Soak: mixed traffic at a steady rate, memory over time"
DICOM_JSON = "application/dicom+json"
IN_FLIGHT = 32  # requests at once, at most
REQUEST_TIMEOUT = 120.0
MIX = {
    "qido-studies": 20,
    "qido-series": 10,
    "qido-instances": 10,
    "metadata": 15,
    "frame": 20,
    "wado-instance": 10,
    "wado-series": 6,
    "wado-study": 3,
    "stow": 6,
}
"""Relative weights of the request kinds. Whole-study retrieves are rare (as in a reading room,
where one study opened means many frames fetched); at 10 requests/s the ~100 MB study comes
0.3 times a second."""
SEED = 12


def studies(quick: bool) -> list[str]:
    return ["ct"]


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--soak-minutes", type=float, default=10.0, help="duration (10)")
    group.add_argument("--soak-rate", type=float, default=10.0, help="requests per second (10)")
    group.add_argument(
        "--soak-sample", type=float, default=60.0, help="seconds between memory samples (60)"
    )


@dataclass
class Tally:
    ok_s: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in MIX})
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MIX, 0))
    first_errors: list[str] = field(default_factory=list)
    skipped: int = 0

    def error(self, kind: str, text: str) -> None:
        self.errors[kind] += 1
        if len(self.first_errors) < 20:
            self.first_errors.append(f"{kind}: {text[:400]}")


class Traffic:
    """The requests of the mix, and what each must answer."""

    def __init__(self, rst: Rst, study: Study, client: httpx.AsyncClient) -> None:
        self.client = client
        self.root = rst.ae_url("").rstrip("/")
        self.study = study
        files = study.files
        self.sizes: dict[str, int] = {}  # URL -> bytes of its first answer
        header = pydicom.dcmread(files.paths[0], stop_before_pixels=True)
        self.frame_bytes = int(header.Rows) * int(header.Columns) * int(header.BitsAllocated) // 8
        self.rng = random.Random(SEED)

    async def _get(self, url: str, accept: str) -> httpx.Response:
        response = await self.client.get(url, headers={"Accept": accept})
        if response.status_code != 200:
            raise BenchmarkError(f"GET {url}: HTTP {response.status_code} {response.text[:300]}")
        return response

    async def _retrieve(self, url: str, least: int) -> None:
        size = 0
        async with self.client.stream("GET", url, headers={"Accept": ACCEPT}) as response:
            if response.status_code != 200:
                raise BenchmarkError(f"GET {url}: HTTP {response.status_code}")
            async for chunk in response.aiter_raw():
                size += len(chunk)
        expected = self.sizes.setdefault(url, size)
        if size != expected or size < least:
            raise BenchmarkError(f"GET {url}: {size} bytes, expected {expected} (>= {least})")

    async def one(self, kind: str) -> None:
        files, rng = self.study.files, self.rng
        index = rng.randrange(len(files.paths))
        series, sop, path = files.instance_series[index], files.sop_uids[index], files.paths[index]
        study_url = f"{self.root}/studies/{files.study_uid}"
        series_url = f"{study_url}/series/{series}"
        in_series = files.instance_series.count(series)
        if kind.startswith("qido"):
            url, want = {
                "qido-studies": (f"{self.root}/studies?PatientID={self.study.patient_id}", 1),
                "qido-series": (f"{study_url}/series", len(files.series_uids)),
                "qido-instances": (f"{series_url}/instances", in_series),
            }[kind]
            found = len((await self._get(url, DICOM_JSON)).json())
            if found != want:
                raise BenchmarkError(f"GET {url}: {found} matches, expected {want}")
        elif kind == "metadata":
            found = len((await self._get(f"{series_url}/metadata", DICOM_JSON)).json())
            if found != in_series:
                raise BenchmarkError(f"{series_url}/metadata: {found} items, not {in_series}")
        elif kind == "frame":
            url = f"{series_url}/instances/{sop}/frames/1"
            got = [len(body) for _, body in parts(await self._get(url, OHIF_LOADER))]
            if got != [self.frame_bytes]:
                raise BenchmarkError(f"GET {url}: parts of {got} bytes, not [{self.frame_bytes}]")
        elif kind == "wado-instance":
            await self._retrieve(f"{series_url}/instances/{sop}", path.stat().st_size)
        elif kind == "wado-series":
            least = sum(p.stat().st_size for p in files.series_paths(series))
            await self._retrieve(series_url, least)
        elif kind == "wado-study":
            await self._retrieve(study_url, self.study.bytes)
        else:
            await self._stow()

    async def _stow(self) -> None:
        data = small_instance(self.rng).part10()
        body = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n--b--\r\n"
        content_type = 'multipart/related; type="application/dicom"; boundary=b'
        response = await self.client.post(
            f"{self.root}/studies",
            content=body,
            headers={"Content-Type": content_type, "Accept": DICOM_JSON},
        )
        if response.status_code != 200:
            raise BenchmarkError(f"STOW-RS: HTTP {response.status_code} {response.text[:300]}")
        answer = response.json()
        stored = answer.get("00081199", {}).get("Value", [])
        if len(stored) != 1 or answer.get("00081198", {}).get("Value"):
            raise BenchmarkError(f"STOW-RS: answer {str(answer)[:300]}")


async def run(ctx: Context) -> dict[str, Any]:
    options = ctx.options
    seconds = float(options.soak_minutes) * 60
    rate, every = float(options.soak_rate), float(options.soak_sample)
    if seconds <= 0 or rate <= 0 or every <= 0:
        raise BenchmarkError("--soak-minutes, --soak-rate and --soak-sample must be positive")
    study = ctx.studies["ct"]
    tally = Tally()
    samples: list[dict[str, float]] = []
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    timeout = httpx.Timeout(REQUEST_TIMEOUT)
    async with (
        open_rst(ctx, "soak") as rst,
        httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as client,
    ):
        traffic = Traffic(rst, study, client)
        for kind in MIX:  # one of each, checked: fails the benchmark at once if rst cannot
            try:
                await traffic.one(kind)
            except (httpx.HTTPError, ValueError) as exc:
                raise BenchmarkError(f"soak: the first {kind} request: {exc!r}") from exc
        print(f"[soak] {seconds / 60:.1f} min at {rate:g} requests/s", flush=True)
        limiter = trio.CapacityLimiter(IN_FLIGHT)
        kinds, weights = list(MIX), list(MIX.values())
        started = time.monotonic()

        def sample() -> None:
            now = snapshot_tree(rst.pid)
            t = time.monotonic() - started
            samples.append({"t_s": t, "rss_kib": now["rss_kib"], "hwm_kib": now["hwm_kib"]})
            print(f"[soak] {t / 60:5.1f} min: VmRSS {now['rss_kib'] / 1024:.1f} MiB", flush=True)

        async with trio.open_nursery() as nursery:
            sample()
            sent = 0
            next_sample = every
            while (elapsed := time.monotonic() - started) < seconds:
                if elapsed >= next_sample:
                    sample()
                    next_sample += every
                due = started + sent / rate
                await trio.sleep(max(0.0, due - time.monotonic()))  # the schedule's next tick
                sent += 1
                kind = traffic.rng.choices(kinds, weights)[0]
                token = kind + str(id(tally)) + str(sent)
                try:
                    limiter.acquire_on_behalf_of_nowait(token)
                except trio.WouldBlock:
                    tally.skipped += 1
                    continue
                nursery.start_soon(_request, traffic, kind, tally, limiter, token)
        sample()
    rss = [s["rss_kib"] / 1024 for s in samples[1:]]
    minutes = [s["t_s"] / 60 for s in samples[1:]]
    kinds_out = {
        kind: {
            "ok": len(tally.ok_s[kind]),
            "errors": tally.errors[kind],
            **latencies(tally.ok_s[kind]),
        }
        for kind in MIX
    }
    return {
        "study": {"label": study.label, "bytes": study.bytes, "instances": study.count},
        "minutes": seconds / 60,
        "rate": rate,
        "sample_s": every,
        "in_flight_max": IN_FLIGHT,
        "mix": MIX,
        "sent": sent,
        "skipped": tally.skipped,
        "kinds": kinds_out,
        "first_errors": tally.first_errors,
        "samples": samples,
        "rss_slope_mib_per_min": slope(minutes, rss),
        "rss_range_mib": (max(rss) - min(rss)) if rss else float("nan"),
    }


async def _request(
    traffic: Traffic, kind: str, tally: Tally, limiter: trio.CapacityLimiter, token: str
) -> None:
    try:
        started = time.perf_counter()
        with trio.fail_after(REQUEST_TIMEOUT):
            await traffic.one(kind)
        tally.ok_s[kind].append(time.perf_counter() - started)
    except (BenchmarkError, httpx.HTTPError, ValueError, trio.TooSlowError) as exc:
        tally.error(kind, f"{type(exc).__name__}: {exc}")
    finally:
        limiter.release_on_behalf_of(token)


def table(result: dict[str, Any]) -> str:
    lines = [
        "| request | share | answered right | errors | p50 | p95 | p99 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    total_weight = sum(result["mix"].values())
    errors = 0
    for kind, k in result["kinds"].items():
        errors += k["errors"]
        lines.append(
            f"| {kind} | {result['mix'][kind] / total_weight:.0%} | {k['ok']} | {k['errors']} "
            f"| {ms(k['p50'])} | {ms(k['p95'])} | {ms(k['p99'])} |"
        )
    samples = result["samples"]
    lines += [
        "",
        f"{result['minutes']:g} min at {result['rate']:g} requests/s ({result['sent']} scheduled, "
        f"{result['skipped']} skipped for want of room: more than {result['in_flight_max']} in "
        f"flight); errors: {errors} (goal 0: {'met' if errors == 0 else '**not met**'}). "
        f"rst VmRSS {samples[0]['rss_kib'] / 1024:.0f} MiB after the first requests, "
        f"{samples[-1]['rss_kib'] / 1024:.0f} MiB at the end; after the first sample: slope "
        f"{result['rss_slope_mib_per_min']:+.2f} MiB/min, max - min "
        f"{result['rss_range_mib']:.1f} MiB (goal: flat); VmHWM "
        f"{samples[-1]['hwm_kib'] / 1024:.0f} MiB.",
    ]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    from .report import timeline_plot

    samples = result["samples"]
    timeline_plot(
        path,
        [s["t_s"] / 60 for s in samples],
        {
            "VmRSS": [s["rss_kib"] / 1024 for s in samples],
            "VmHWM": [s["hwm_kib"] / 1024 for s in samples],
        },
        xlabel="minutes",
        ylabel="MiB",
        title=f"rst's memory under {result['rate']:g} requests/s of mixed traffic",
    )


if __name__ == "__main__":
    import sys

    from .cli import main

    sys.exit(main(["--only", NAME, *sys.argv[1:]]))
