"""rst's CPU per MB delivered at N concurrent WADO-RS retrieves (the concurrency benchmark's
path: C-MOVE from Orthanc into rst's receiver, streamed out as multipart/related to N curls).

    python -m benchmarks.retrieve_cpu [--concurrent 16] [--batches 3] [--attach COMMAND]

Wall-clock throughput on a shared machine says little; the CPU seconds the rst process spent
(user + system, from ``/proc/PID/stat``) per MB delivered do not depend on what else runs.
Starts Orthanc with the ``ct`` study (cached, see ``data.py``) and one rst process, warms up
with one retrieve, then times *batches* batches of *concurrent* curls; prints ms of rst CPU
per MB for each batch (user and system apart) and the median. ``--attach`` runs a command
during the last batch, ``{pid}`` replaced by rst's process id, and stops it with SIGINT after
the batch, e.g. ``"py-spy record --native -r 200 -f raw -o spy.txt -p {pid}"``, ``"perf record
-g -p {pid} -o perf.data"`` or ``"perf stat -e syscalls:sys_enter_recvfrom -p {pid}"``.
``--rst-from DIR`` runs rst from another checkout (a before/after comparison on the same
machine, minutes apart: the only fair one on a busy machine).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from tests.support.orthanc import add_modality, open_orthanc, require_orthanc

from . import data
from .cli import PACS_CONFIG
from .common import (
    ORTHANC_AET,
    RST_AET,
    Context,
    curl_get,
    open_forking_storescp,
)
from .common import open_rst as _open_rst
from .procfs import CLK_TCK


def _times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of *pid* so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


async def _batch(n: int, url: str, size: int) -> int:
    sizes: list[int] = []

    async def one() -> None:
        sizes.append((await curl_get(url, min_bytes=size)).bytes)

    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(one)
    return sum(sizes)


async def run(args: argparse.Namespace) -> None:
    require_orthanc()
    studies = await data.prepare(["ct"], 200)
    study = studies["ct"]
    with tempfile.TemporaryDirectory(prefix="rst-cpu-") as tmp:
        workdir = Path(tmp)
        async with (
            open_forking_storescp(workdir, "UNUSED") as fork_port,
            open_orthanc(
                workdir / "orthanc",
                aet=ORTHANC_AET,
                modalities={"UNUSED": ("UNUSED", "127.0.0.1", fork_port)},
                extra_config=PACS_CONFIG,
                fast_stop=True,
            ) as orthanc,
        ):
            await data.load(orthanc, study)
            out = workdir / "out"
            out.mkdir()
            ctx = Context(
                orthanc=orthanc,
                studies=studies,
                workdir=workdir,
                out=out,
                stamp=time.strftime("%Y%m%d-%H%M%S"),
                runs=args.batches,
                quick=False,
                storescp_port=0,
                timed_storescp_port=0,
                timed_storescp_log=workdir / "none.log",
                fork_storescp_port=fork_port,
            )
            env = {"PYTHONPATH": args.rst_from} if args.rst_from else None
            async with _open_rst(ctx, "cpu", mode="move", max_associations=16, env=env) as rst:
                await add_modality(orthanc, "RST", RST_AET, "127.0.0.1", rst.dimse_port)
                url = rst.ae_url(f"studies/{study.files.study_uid}")
                await _batch(1, url, study.bytes)  # warm-up
                per_mb: list[float] = []
                for i in range(args.batches):
                    spy: subprocess.Popen[bytes] | None = None
                    if args.attach and i == args.batches - 1:
                        spy = _attach(args.attach, rst.pid)
                    user0, sys0 = _times(rst.pid)
                    started = time.perf_counter()
                    delivered = await _batch(args.concurrent, url, study.bytes)
                    wall = time.perf_counter() - started
                    user1, sys1 = _times(rst.pid)
                    if spy is not None:
                        spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
                        spy.wait(timeout=60)
                    mb = delivered / 1e6
                    cpu = (user1 - user0) + (sys1 - sys0)
                    per_mb.append(cpu / mb * 1e3)
                    print(
                        f"batch {i + 1}: {mb:.0f} MB in {wall:.2f} s; rst CPU {cpu:.2f} s "
                        f"(user {user1 - user0:.2f}, sys {sys1 - sys0:.2f}) = "
                        f"{per_mb[-1]:.2f} ms/MB (user {(user1 - user0) / mb * 1e3:.2f}, "
                        f"sys {(sys1 - sys0) / mb * 1e3:.2f})",
                        flush=True,
                    )
                print(f"median {statistics.median(per_mb):.2f} ms of rst CPU per MB delivered")


def _attach(command: str, pid: int) -> subprocess.Popen[bytes]:
    """Start *command* (``{pid}``: rst's process id) to watch the last batch; it gets SIGINT
    when the batch has ended (py-spy and perf then write their output)."""
    argv = shlex.split(command.replace("{pid}", str(pid)))
    if argv[0] == "py-spy":
        argv[0] = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    time.sleep(1.0)  # the tool attaches before the batch starts (a tool, not a test)
    return spy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrent", type=int, default=16)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument(
        "--rst-from", default="", help="run rst from this checkout (PYTHONPATH), e.g. main's"
    )
    parser.add_argument(
        "--attach", default="", help="a command watching the last batch ({pid}: rst's pid)"
    )
    args = parser.parse_args()
    os.environ.setdefault("TCP_NODELAY", "1")
    trio.run(run, args)


if __name__ == "__main__":
    main()
