"""``python -m benchmarks``: run the benchmark suite (or a part of it) in one invocation.

Starts Orthanc as the PACS on loopback, loads the generated studies (cached, see ``data.py``),
starts the dcmtk receivers, runs each selected benchmark against its reference in the same run,
writes ``<out>/bench-<timestamp>.json`` (every raw measurement; rst's logs next to it), prints a
markdown table per benchmark, draws PNG plots into ``docs/img/benchmarks/`` and rewrites the
generated sections of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

import trio

from tests.support.dcmtk import DcmtkError, open_storescp, require_dcmtk
from tests.support.orthanc import OrthancError, open_orthanc, require_orthanc

from . import (
    concurrency,
    data,
    leaks,
    load,
    memory,
    pull,
    qido,
    s3,
    soak,
    stow,
    throughput,
    viewer,
)
from .common import (
    DCMTK_AET,
    DCMTK_FORK_AET,
    DCMTK_TIMED_AET,
    MAX_PDU,
    ORTHANC_AET,
    ROOT,
    BenchmarkError,
    Context,
    open_forking_storescp,
    rel,
)
from .report import DOCS, machine, machine_line, render_section, update_docs

_SPEED = (throughput, pull, memory, concurrency, qido, stow, s3, viewer)
BENCHMARKS: dict[str, ModuleType] = {m.NAME: m for m in (*_SPEED, load, leaks, soak)}
# Run by default; the others (minutes long, or with a verdict of their own: load, leaks, soak)
# only when named in --only.
DEFAULT = tuple(m.NAME for m in _SPEED)
# The PACS: C-MOVE/C-GET/C-FIND/C-STORE SCP for every benchmark.
PACS_CONFIG = {
    # serve 32 concurrent associations (default 4): the load benchmark's 16 retrieves hold 16
    # for seconds, its C-FINDs need more beside them
    "DicomThreadsCount": 32,
    "MaximumPduLength": MAX_PDU,  # what it receives (STOW, storescu); default 16 KiB
}


async def run(args: argparse.Namespace) -> int:
    require_orthanc()
    require_dcmtk()
    selected = [BENCHMARKS[name] for name in args.only]
    out: Path = args.out
    stamp = time.strftime("%Y%m%d-%H%M%S")
    started_wall, started = time.strftime("%Y-%m-%d %H:%M:%S %z"), time.perf_counter()
    load_start = os.getloadavg()
    keys = sorted({k for m in selected for k in m.studies(args.quick)}, key="ct mf small big".find)
    studies = await data.prepare(keys, args.images)
    # studies the PACS must hold (a module with ``PACS = False`` brings its own storage)
    pacs_keys = {k for m in selected if getattr(m, "PACS", True) for k in m.studies(args.quick)}
    results: dict[str, Any] = {}
    failures: dict[str, str] = {}
    durations: dict[str, float] = {}
    logs: list[str] = []
    with tempfile.TemporaryDirectory(prefix="rst-bench-") as tmp:
        workdir = Path(tmp)
        async with (
            open_storescp(
                workdir / "storescp", DCMTK_AET, ignore=True, max_pdu=MAX_PDU, verbose=False
            ) as port,
            open_storescp(
                workdir / "timed", DCMTK_TIMED_AET, ignore=True, max_pdu=MAX_PDU
            ) as timed_port,
            open_forking_storescp(workdir, DCMTK_FORK_AET) as fork_port,
            open_orthanc(
                workdir / "orthanc",
                aet=ORTHANC_AET,
                modalities={
                    "DCMTK": (DCMTK_AET, "127.0.0.1", port),
                    "DCMTKV": (DCMTK_TIMED_AET, "127.0.0.1", timed_port),
                    "DCMTKFORK": (DCMTK_FORK_AET, "127.0.0.1", fork_port),
                },
                extra_config=PACS_CONFIG,
                fast_stop=True,
            ) as orthanc,
        ):
            for study in studies.values():
                if study.key not in pacs_keys:
                    continue
                print(
                    f"loading {study.label} ({study.bytes / 1e6:,.0f} MB) into Orthanc", flush=True
                )
                loaded = time.perf_counter()
                await data.load(orthanc, study)
                print(f"  took {time.perf_counter() - loaded:.1f} s", flush=True)
            info = await machine(orthanc)
            ctx = Context(
                orthanc=orthanc,
                studies=studies,
                workdir=workdir,
                out=out,
                stamp=stamp,
                runs=args.runs,
                quick=args.quick,
                storescp_port=port,
                timed_storescp_port=timed_port,
                timed_storescp_log=workdir / "timed.storescp.log",
                fork_storescp_port=fork_port,
                logs=logs,
                options=args,
            )
            for module in selected:
                print(f"== {module.NAME}: {module.TITLE}", flush=True)
                begun = time.perf_counter()
                try:
                    results[module.NAME] = await module.run(ctx)
                    # a benchmark with a verdict (leaks) fails the run when it is not met
                    verdict = getattr(module, "verdict", None)
                    problems = verdict(results[module.NAME]) if verdict is not None else []
                    if problems:
                        failures[module.NAME] = "; ".join(problems)
                        print(f"benchmark {module.NAME} failed: {failures[module.NAME]}")
                except (BenchmarkError, DcmtkError, OrthancError, trio.TooSlowError) as exc:
                    failures[module.NAME] = "".join(traceback.format_exception(exc))
                    print(f"benchmark {module.NAME} failed: {exc}", file=sys.stderr, flush=True)
                durations[module.NAME] = time.perf_counter() - begun
    report = {
        "started": started_wall,
        "duration_s": time.perf_counter() - started,
        "runs": args.runs,
        "quick": args.quick,
        "benchmarks": [m.NAME for m in selected],
        "studies": {
            k: {
                "label": s.label,
                "bytes": s.bytes,
                "instances": s.count,
                "study_uid": s.files.study_uid,
                "patient_id": s.patient_id,
                "files": str(s.files.paths[0].parent),
            }
            for k, s in studies.items()
        },
        "max_pdu": MAX_PDU,
        "pacs_config": PACS_CONFIG,
        "machine": info,
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        "durations_s": durations,
        "results": results,
        "failures": failures,
        "rst_logs": logs,
    }
    json_path = out / f"bench-{stamp}.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")

    sections: dict[str, str] = {}
    for module in selected:
        if module.NAME not in results:
            continue
        table, sections[module.NAME] = render_section(
            module,
            results[module.NAME],
            started=report["started"],
            runs=args.runs,
            quick=args.quick,
            took_s=durations[module.NAME],
            raw=rel(json_path),
            plots=args.plots,
        )
        print(f"\n## {module.TITLE}\n\n{table}")
    sections["machine"] = "\n".join(
        [
            f"Last run: {report['started']} ({', '.join(report['benchmarks'])}"
            f"{', --quick' if args.quick else ''}, {args.runs} run(s) each); the invocation "
            f"took {report['duration_s']:.0f} s; load average (1 min) "
            f"{report['loadavg_start'][0]:.2f} before, {report['loadavg_end'][0]:.2f} after.",
            "",
            f"Machine: {machine_line(info)}.",
            "",
            "Studies: "
            + "; ".join(
                f"`{k}` {s.label}, {s.count} instances, {s.bytes / 1e6:,.1f} MB"
                for k, s in studies.items()
            )
            + ".",
        ]
    )
    print(f"\nraw measurements: {json_path}")
    if args.docs:
        missing = update_docs(sections)
        print(f"updated {DOCS.relative_to(ROOT)}")
        for name in missing:
            print(f"{DOCS}: no generated section {name!r}: not updated", file=sys.stderr)
    print(f"took {report['duration_s']:.0f} s")
    for name, text in failures.items():
        print(f"\nFAILED {name}:\n{text}", file=sys.stderr)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument(
        "--only",
        default=",".join(DEFAULT),
        help=f"comma-separated benchmarks to run, in this order (default: {','.join(DEFAULT)}; "
        f"also: {','.join(n for n in BENCHMARKS if n not in DEFAULT)})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a ~2-minute subset: 1 run, no 1 GB / multi-frame-throughput / small-instance "
        "studies, concurrency 1 and 4, fewer QIDO requests",
    )
    parser.add_argument("--runs", type=int, help="measured runs per measurement (3; 1 --quick)")
    parser.add_argument("--images", type=int, default=200, help="images of the main CT study")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--no-docs",
        dest="docs",
        action="store_false",
        help="do not rewrite the generated sections of docs/benchmarks.md",
    )
    parser.add_argument("--no-plots", dest="plots", action="store_false", help="no PNG plots")
    for module in BENCHMARKS.values():
        if hasattr(module, "add_arguments"):
            module.add_arguments(parser.add_argument_group(f"{module.NAME} benchmark"))
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in args.only if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.images < 2 or args.runs < 1:
        parser.error("--images must be at least 2 and --runs at least 1")
    args.out = args.out if args.out.is_absolute() else ROOT / args.out
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        return trio.run(run, args)
    except (KeyboardInterrupt, BaseExceptionGroup) as exc:
        if isinstance(exc, KeyboardInterrupt) or exc.subgroup(KeyboardInterrupt) is not None:
            print("interrupted: everything started was stopped", file=sys.stderr)
            return 130
        raise
    except (BenchmarkError, DcmtkError, OrthancError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
