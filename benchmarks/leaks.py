"""Leaks: WADO-RS study retrieves abandoned mid-stream, one after another, must leave nothing.

Per retrieve mode (C-MOVE, C-GET) one fresh rst process (``http.workers`` 1). A warm-up (one
whole retrieve, checked, and ``WARMUP`` abandoned ones) brings the allocator to its plateau;
then, once rst is idle, the *before* counts; then ``--leak-retrieves`` retrieves, each sent on
a fresh connection that reads the status line and some bytes of the body (100 B, 4 KiB,
64 KiB, 1 MiB in turn) and hangs up (every other one with a reset instead of a FIN); then,
once rst says it is idle again (``GET /metrics``, bounded) and its threads and descriptors are
back (bounded), the *after* counts; then one whole retrieve must still succeed.

Counted from ``/proc`` and ``/metrics``: threads, open descriptors, DIMSE associations (rst's
sockets to the PACS's DICOM port or on its own receiver port, and the
``rst_dimse_associations_open`` gauge), spool files (directory entries and open descriptors
in the spool folder), resident memory. :func:`verdict` fails the run (exit 1) when any count
ends above its *before* value, or memory more than ``RSS_TOLERANCE_MIB`` above it.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import trio

from tests.support.hostile_http import http_request

from .common import ACCEPT, ORTHANC_AET, BenchmarkError, Context, Rst, curl_get, open_rst
from .idle import wait_idle
from .procfs import descriptors, snapshot

NAME = "leaks"
REPEATED = False  # one long measurement: --runs does not apply
TITLE = "Leaks: WADO-RS retrieves abandoned mid-stream"
MODES = ("move", "get")
MODE_NAMES = {"move": "C-MOVE", "get": "C-GET"}
WARMUP = 100
"""Abandoned retrieves before the *before* counts: resident memory climbs for the first few
dozen (the allocator's plateau) and then only wanders."""
READS = (100, 4096, 65536, 1 << 20)  # body bytes read before hanging up, in turn
REQUEST_DEADLINE = 30.0  # one abandoned retrieve, connect to hang-up
SETTLE_WITHIN = 30.0  # after idle, for threads (trio's idle worker threads linger 10 s)
SETTLE_POLL = 0.25
TIMELINE_POINTS = 10
RSS_TOLERANCE_MIB = 24.0
"""How far resident memory may end above the *before* value. The allocator keeps freed arenas
(pymalloc, glibc) and resident memory wanders by tens of MiB between retrieves (seen: 130-160
MiB during abandoned C-GETs of a small study), so a step of that size says nothing; a leak of
one retrieve's state grows with the count (one 512 KiB instance held per abandoned retrieve
would be ~500 MiB after 1,000). The timeline in the JSON shows the trend."""
COUNTS = ("threads", "fds", "sockets_to_pacs", "associations_open", "spool_files")
"""The counts that must come back to (or below) their *before* value."""


def studies(quick: bool) -> list[str]:
    return ["ct"]


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--leak-retrieves",
        type=int,
        default=1000,
        help="abandoned retrieves per retrieve mode (1000)",
    )
    group.add_argument(
        "--leak-warmup",
        type=int,
        default=WARMUP,
        help=f"abandoned retrieves before the counts are taken ({WARMUP})",
    )
    group.add_argument(
        "--leak-modes", default=",".join(MODES), help="retrieve modes, in turn (move,get)"
    )


async def abandon(rst: Rst, target: bytes, read: int, reset: bool) -> None:
    """One retrieve, given up after the status line and *read* body bytes (or at its end)."""
    try:
        await _abandon(rst, target, read, reset)
    except (OSError, trio.BrokenResourceError) as exc:
        raise BenchmarkError(f"abandoned retrieve {target!r}: {exc!r}") from exc


async def _abandon(rst: Rst, target: bytes, read: int, reset: bool) -> None:
    request = http_request("GET", target, [(b"Accept", ACCEPT.encode())])
    with trio.fail_after(REQUEST_DEADLINE):
        stream = await trio.open_tcp_stream("127.0.0.1", int(rst.url.rsplit(":", 1)[1]))
        async with stream:
            await stream.send_all(request)
            got = bytearray()
            head_end = -1
            while head_end < 0 or len(got) - head_end - 4 < read:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                got += chunk
                if head_end < 0:
                    head_end = got.find(b"\r\n\r\n")
            if not got.startswith(b"HTTP/1.1 200 "):
                raise BenchmarkError(f"abandoned retrieve answered {bytes(got[:300])!r}")
            if reset:  # RST instead of FIN
                stream.socket.setsockopt(
                    trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0"
                )


def counts(
    rst: Rst, names: dict[int, str], spool: Path, gauges: dict[str, float]
) -> dict[str, Any]:
    """What rst holds now (one process)."""
    held = descriptors(rst.pid, names)
    pacs_sockets = [
        d for d in held if ("orthanc-dimse" in d or "rst-dimse" in d) and "LISTEN" not in d
    ]
    return {
        **snapshot(rst.pid),
        "sockets_to_pacs": len(pacs_sockets),
        "associations_open": int(gauges["rst_dimse_associations_open"]),
        "spool_files": len(os.listdir(spool)) + sum(str(spool) in d for d in held),
        "descriptors": held,
    }


def _rss_back(now: dict[str, Any], before: dict[str, Any]) -> bool:
    return bool(now["rss_kib"] - before["rss_kib"] <= RSS_TOLERANCE_MIB * 1024)


async def settle(
    rst: Rst, names: dict[int, str], spool: Path, before: dict[str, Any] | None
) -> dict[str, Any]:
    """Wait until rst is idle (its /metrics), then (bounded) until every count is back to
    *before* and VmRSS within the tolerance of it — or, with no *before*, has not changed for
    2 s; the counts then. rst hands freed memory back every ``rst.malloc.TRIM_INTERVAL``
    seconds (less than :data:`SETTLE_WITHIN`): memory that a leak holds does not come back
    however long this waits."""
    idle_s, gauges = await wait_idle(rst.url)
    started = time.monotonic()
    last = counts(rst, names, spool, gauges)
    steady = 0
    while time.monotonic() - started < SETTLE_WITHIN:
        if (
            before is not None
            and all(last[k] <= before[k] for k in COUNTS)
            and _rss_back(last, before)
        ):
            break
        await trio.sleep(SETTLE_POLL)  # threads and descriptors offer nothing to wait on
        _, gauges = await wait_idle(rst.url)
        now = counts(rst, names, spool, gauges)
        steady = steady + 1 if all(now[k] == last[k] for k in COUNTS) else 0
        last = now
        if before is None and steady >= 2 / SETTLE_POLL:
            break
    return {**last, "idle_after_s": round(idle_s, 2), "settled_s": time.monotonic() - started}


async def run_mode(ctx: Context, mode: str, count: int) -> dict[str, Any]:
    study = ctx.studies["ct"]
    spool = ctx.workdir / f"spool-leaks-{mode}"  # what open_rst configures
    async with open_rst(ctx, f"leaks-{mode}", mode=mode) as rst:
        names = {
            int(rst.url.rsplit(":", 1)[1]): "rst-http",
            rst.dimse_port: "rst-dimse",
            ctx.orthanc.dicom_port: "orthanc-dimse",
        }
        url = rst.ae_url(f"studies/{study.files.study_uid}")
        target = url.split(rst.url, 1)[1].encode()
        await curl_get(url, min_bytes=study.bytes, log=rst.log)
        for i in range(int(ctx.options.leak_warmup)):
            await abandon(rst, target, READS[i % len(READS)], reset=i % 2 == 1)
        before = await settle(rst, names, spool, None)
        print(f"[leaks {mode}] before: {_line(before)}", flush=True)
        timeline: list[dict[str, Any]] = []
        every = max(1, count // TIMELINE_POINTS)
        started = time.monotonic()
        for i in range(count):
            await abandon(rst, target, READS[i % len(READS)], reset=i % 2 == 1)
            if (i + 1) % every == 0:
                timeline.append({"done": i + 1, **snapshot(rst.pid)})
                print(f"[leaks {mode}] {i + 1}/{count} abandoned", flush=True)
        took = time.monotonic() - started
        after = await settle(rst, names, spool, before)
        print(f"[leaks {mode}] after:  {_line(after)}", flush=True)
        whole = await curl_get(url, min_bytes=study.bytes, log=rst.log)
    return {
        "mode": mode,
        "retrieves": count,
        "took_s": took,
        "before": before,
        "after": after,
        "timeline": timeline,
        "whole_retrieve_after": whole.as_dict(),
    }


def _line(c: dict[str, Any]) -> str:
    return (
        f"VmRSS {c['rss_kib'] / 1024:.1f} MiB, threads {c['threads']}, fds {c['fds']}, "
        f"sockets to the PACS {c['sockets_to_pacs']}, associations {c['associations_open']}, "
        f"spool files {c['spool_files']}"
    )


async def run(ctx: Context) -> dict[str, Any]:
    count = int(ctx.options.leak_retrieves)
    if count < 1:
        raise BenchmarkError("--leak-retrieves must be at least 1")
    modes = [m.strip() for m in str(ctx.options.leak_modes).split(",") if m.strip()]
    if not modes or set(modes) - set(MODES):
        raise BenchmarkError(f"--leak-modes {ctx.options.leak_modes!r}: move and/or get")
    study = ctx.studies["ct"]
    return {
        "study": {"label": study.label, "bytes": study.bytes, "instances": study.count},
        "aet": ORTHANC_AET,
        "reads": list(READS),
        "rss_tolerance_mib": RSS_TOLERANCE_MIB,
        "modes": [await run_mode(ctx, mode, count) for mode in modes],
    }


def verdict(result: dict[str, Any]) -> list[str]:
    """Why the leak benchmark failed (empty: it passed)."""
    tolerance = result["rss_tolerance_mib"]
    problems = []
    for run in result["modes"]:
        before, after, mode = run["before"], run["after"], MODE_NAMES[run["mode"]]
        for key in COUNTS:
            if after[key] > before[key]:
                problems.append(f"{mode}: {key} {before[key]} -> {after[key]}")
        grown = (after["rss_kib"] - before["rss_kib"]) / 1024
        if grown > tolerance:
            problems.append(f"{mode}: VmRSS grew {grown:.1f} MiB (more than {tolerance} MiB)")
    return problems


def table(result: dict[str, Any]) -> str:
    labels = {
        "rss_kib": "VmRSS",
        "hwm_kib": "VmHWM",
        "threads": "threads",
        "fds": "open descriptors",
        "sockets_to_pacs": "DIMSE sockets (rst's, to the PACS and on its receiver)",
        "associations_open": "`rst_dimse_associations_open`",
        "spool_files": "spool files",
    }
    modes = result["modes"]
    head = "| | " + " | ".join(f"{MODE_NAMES[r['mode']]} before → after" for r in modes) + " |"
    lines = [head, "|---|" + "---:|" * len(modes)]
    for key, label in labels.items():
        cells = []
        for r in modes:
            b, a = r["before"][key], r["after"][key]
            cells.append(
                f"{b / 1024:.1f} → {a / 1024:.1f} MiB" if key.endswith("_kib") else f"{b} → {a}"
            )
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append(
        "| idle again after | "
        + " | ".join(f"{r['after']['idle_after_s'] + r['after']['settled_s']:.1f} s" for r in modes)
        + " |"
    )
    problems = verdict(result)
    study = result["study"]
    took = ", ".join(f"{r['took_s']:.0f} s" for r in modes)
    lines += [
        "",
        f"{modes[0]['retrieves']} abandoned retrieves of the {study['label']} per mode "
        f"({took}); memory tolerance "
        f"{result['rss_tolerance_mib']:.0f} MiB. Verdict: "
        + ("**passed**." if not problems else "**failed**: " + "; ".join(problems) + "."),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    from .cli import main

    sys.exit(main(["--only", NAME, *sys.argv[1:]]))
