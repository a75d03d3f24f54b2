"""WADO-RS and STOW-RS through rst's S3 backend against aiobotocore talking to the same bucket.

moto in server mode (``tests/support/moto.py``) is the S3 endpoint on loopback, with the bucket
``dicom``; the ``ct`` study goes in at DICOM-RST's keys ``{study}/{series}/{instance}.dcm``
(``s3_direct.py put``, 16 at a time). rst runs as a subprocess with one S3 AE (``max_concurrency``
16, credentials from environment variables, its SQLite index in the run's temporary folder).
Then, one warm-up and ``runs`` rounds each, alternating rst and the reference:

- **WADO-RS**: ``curl .../aets/S3/studies/{uid}`` to /dev/null, against ``s3_direct.py get``
  (list the study's prefix, fetch all objects 16 at a time into /dev/null): MB/s, time to first
  byte against time to the first whole object, and CPU seconds of rst, moto and the client.
- **STOW-RS**: the study as one multipart body (``curl --data-binary``) into the same keys,
  against ``s3_direct.py put`` of the same files, one at a time (what rst does: it stores the
  parts of a request one after the other) and 16 at a time.

rst's VmHWM at start, after the retrieves and after the stores. Orthanc is not used (``PACS``).

    python -m benchmarks.s3 [--runs 3] ...   # = python -m benchmarks --only s3 ...
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import trio

from tests.support.moto import create_bucket, open_moto

from .common import (
    RETRIEVE_TIMEOUT,
    RST_AET,
    BenchmarkError,
    Context,
    CurlRun,
    Study,
    curl_get,
    median,
    open_rst,
)
from .procfs import cpu_s
from .stow import curl_stow, write_body

NAME = "s3"
TITLE = "S3: WADO-RS and STOW-RS through rst against aiobotocore"
PACS = False  # the study need not be loaded into Orthanc
BUCKET = "dicom"
AET = "S3"
CONCURRENCY = 16  # rst's max_concurrency (its default) and the reference's
KEY_ENV, SECRET_ENV = "BENCH_S3_KEY", "BENCH_S3_SECRET"  # not RST_*: those overlay the config
CREDENTIALS = {KEY_ENV: "bench", SECRET_ENV: "bench"}  # moto accepts any
DIRECT = Path(__file__).with_name("s3_direct.py")


def studies(quick: bool) -> list[str]:
    return ["ct"]


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("aiobotocore", "botocore", "moto", "trio-asyncio"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _keys(study: Study) -> list[tuple[str, Path]]:
    files = study.files
    return [
        (f"{files.study_uid}/{series}/{sop}.dcm", path)
        for series, sop, path in zip(
            files.instance_series, files.sop_uids, files.paths, strict=True
        )
    ]


def _moto_pid(endpoint: str) -> int | None:
    """The moto_server we started (by its port), to read its CPU time; None if not found."""
    port = str(urlsplit(endpoint).port)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"moto_server") for a in argv) and port.encode() in argv:
            return int(entry.name)
    return None


def _rst_config(ctx: Context, endpoint: str) -> Any:
    spool = ctx.workdir / "spool-s3"
    spool.mkdir(exist_ok=True)
    index = ctx.workdir / "s3" / f"{AET}.sqlite3"

    def config(http_port: int, dimse_port: int) -> str:
        return f"""[log]
level = "INFO"

[http]
host = "127.0.0.1"
port = {http_port}

[dimse]
aet = "{RST_AET}"
host = "127.0.0.1"
port = {dimse_port}
spool_dir = {json.dumps(str(spool))}

[[aets]]
aet = "{AET}"
backend = "s3"
endpoint = "{endpoint}"
bucket = "{BUCKET}"
addressing = "path"
access_key_env = "{KEY_ENV}"
secret_key_env = "{SECRET_ENV}"
max_concurrency = {CONCURRENCY}
index = {json.dumps(str(index))}
"""

    return config


async def direct(
    endpoint: str, action: str, study: Study, *, concurrency: int, manifest: Path | None = None
) -> dict[str, Any]:
    """One ``s3_direct.py`` process; its JSON, checked against the study."""
    argv = [
        sys.executable,
        str(DIRECT),
        action,
        "--endpoint",
        endpoint,
        "--bucket",
        BUCKET,
        "--concurrency",
        str(concurrency),
    ]
    argv += ["--prefix", f"{study.files.study_uid}/"] if action == "get" else []
    argv += ["--manifest", str(manifest)] if manifest is not None else []
    with trio.fail_after(RETRIEVE_TIMEOUT):
        proc = await trio.run_process(
            argv,
            stdin=subprocess.DEVNULL,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env={**os.environ, **CREDENTIALS},
        )
    if proc.returncode != 0:
        raise BenchmarkError(
            f"s3_direct.py {action} exited {proc.returncode}:\n{proc.stderr.decode()[-3000:]}"
        )
    result: dict[str, Any] = json.loads(proc.stdout)
    if result["objects"] != study.count or result["bytes"] != study.bytes:
        raise BenchmarkError(
            f"s3_direct.py {action}: {result['objects']} objects, {result['bytes']} bytes; "
            f"expected {study.count}, {study.bytes}"
        )
    result["mbps"] = study.bytes / result["total_s"] / 1e6
    return result


def _verify(endpoint: str, study: Study) -> None:
    """Every key holds an object of its file's size; the first and last are byte-identical."""
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )
    sizes: dict[str, int] = {}
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=BUCKET, Prefix=f"{study.files.study_uid}/"):
        sizes.update({item["Key"]: item["Size"] for item in page.get("Contents", ())})
    keys = _keys(study)
    wrong = [key for key, path in keys if sizes.get(key) != path.stat().st_size]
    if wrong or len(sizes) != len(keys):
        raise BenchmarkError(f"bucket: {len(sizes)} objects, {len(wrong)} missing or wrong size")
    for key, path in (keys[0], keys[-1]):
        if client.get_object(Bucket=BUCKET, Key=key)["Body"].read() != path.read_bytes():
            raise BenchmarkError(f"bucket: {key} differs from {path}")


def _cpu(pids: dict[str, int | None]) -> dict[str, float]:
    return {name: cpu_s(pid) for name, pid in pids.items() if pid is not None}


def _spent(before: dict[str, float], pids: dict[str, int | None]) -> dict[str, float]:
    after = _cpu(pids)
    return {name: after[name] - before[name] for name in before}


async def run(ctx: Context) -> dict[str, Any]:
    study = ctx.studies["ct"]
    folder = ctx.workdir / "s3"
    folder.mkdir(exist_ok=True)
    manifest = folder / "manifest.tsv"
    manifest.write_text("".join(f"{key}\t{path}\n" for key, path in _keys(study)))
    body = folder / "stow-body.bin"
    body_bytes = await trio.to_thread.run_sync(write_body, study, body)
    out: dict[str, Any] = {
        "study": study.key,
        "bytes": study.bytes,
        "instances": study.count,
        "body_bytes": body_bytes,
        "concurrency": CONCURRENCY,
        "versions": _versions(),
    }
    wado_rst: list[CurlRun] = []
    wado_direct: list[dict[str, Any]] = []
    stow_rst: list[dict[str, Any]] = []
    put_one: list[dict[str, Any]] = []
    put_many: list[dict[str, Any]] = []
    try:
        async with open_moto(folder / "moto") as endpoint:
            await create_bucket(endpoint, BUCKET)
            moto_pid = _moto_pid(endpoint)
            print(f"[s3] moto_server at {endpoint} (pid {moto_pid}); uploading the study")
            out["setup_put"] = await direct(
                endpoint, "put", study, concurrency=CONCURRENCY, manifest=manifest
            )
            print(f"[s3] uploaded in {out['setup_put']['total_s']:.1f} s", flush=True)
            config = _rst_config(ctx, endpoint)
            async with open_rst(ctx, "s3", config=config, env=CREDENTIALS) as rst:
                pids = {"rst": rst.pid, "moto": moto_pid}
                out["rst_start_rss_kib"] = rst.peak_rss_kib()
                url = f"{rst.url}/aets/{AET}/studies/{study.files.study_uid}"
                for i in range(ctx.runs + 1):  # the first round is a warm-up
                    before = _cpu(pids)
                    r = await curl_get(url, min_bytes=study.bytes, log=rst.log)
                    r_cpu = _spent(before, pids)
                    before = _cpu(pids)
                    d = await direct(endpoint, "get", study, concurrency=CONCURRENCY)
                    d["cpu_s_moto"] = _spent(before, pids).get("moto")
                    rows = {**r.as_dict(), **{f"cpu_s_{k}": v for k, v in r_cpu.items()}}
                    if i == 0:
                        out["warmup_wado"] = {"rst": rows, "direct": d}
                        continue
                    wado_rst.append(r)
                    out.setdefault("wado_rst", []).append(rows)
                    wado_direct.append(d)
                    print(
                        f"[s3 wado] run {i}/{ctx.runs}: rst {r.mbps:.1f} MB/s "
                        f"(TTFB {r.ttfb_s * 1000:.0f} ms; CPU rst {r_cpu['rst']:.2f} s, moto "
                        f"{r_cpu.get('moto', float('nan')):.2f} s), aiobotocore {d['mbps']:.1f} "
                        f"MB/s (first object {d['first_object_s'] * 1000:.0f} ms; CPU client "
                        f"{d['cpu_s']:.2f} s, moto {d['cpu_s_moto'] or float('nan'):.2f} s)",
                        flush=True,
                    )
                out["rst_wado_rss_kib"] = rst.peak_rss_kib()
                stow_url = f"{rst.url}/aets/{AET}/studies"
                for i in range(ctx.runs + 1):
                    before = _cpu(pids)
                    s = await curl_stow(stow_url, body, study, rst.log)
                    s.update({f"cpu_s_{k}": v for k, v in _spent(before, pids).items()})
                    p1 = await direct(endpoint, "put", study, concurrency=1, manifest=manifest)
                    p16 = await direct(
                        endpoint, "put", study, concurrency=CONCURRENCY, manifest=manifest
                    )
                    if i == 0:
                        out["warmup_stow"] = {"rst": s, "put_1": p1, "put_16": p16}
                        continue
                    stow_rst.append(s)
                    put_one.append(p1)
                    put_many.append(p16)
                    print(
                        f"[s3 stow] run {i}/{ctx.runs}: rst {s['mbps']:.1f} MB/s, put_object "
                        f"1 at a time {p1['mbps']:.1f} MB/s, {CONCURRENCY} at a time "
                        f"{p16['mbps']:.1f} MB/s",
                        flush=True,
                    )
                out["rst_peak_rss_kib"] = rst.peak_rss_kib()
            await trio.to_thread.run_sync(_verify, endpoint, study)
    finally:
        body.unlink(missing_ok=True)
    out["wado_direct"], out["stow_rst"] = wado_direct, stow_rst
    out["put_1"], out["put_16"] = put_one, put_many
    rst_mbps = median([r.mbps for r in wado_rst])
    direct_mbps = median([d["mbps"] for d in wado_direct])
    rst_ttfb = median([r.ttfb_s for r in wado_rst])
    direct_first = median([d["first_object_s"] for d in wado_direct])
    stow_mbps = median([s["mbps"] for s in stow_rst])
    one_mbps = median([p["mbps"] for p in put_one])
    many_mbps = median([p["mbps"] for p in put_many])
    rows = out["wado_rst"]
    out["medians"] = {
        "wado_rst_mbps": rst_mbps,
        "wado_direct_mbps": direct_mbps,
        "wado_ratio": rst_mbps / direct_mbps,
        "wado_rst_total_s": median([r.total_s for r in wado_rst]),
        "wado_direct_total_s": median([d["total_s"] for d in wado_direct]),
        "wado_direct_list_s": median([d["list_s"] for d in wado_direct]),
        "rst_ttfb_s": rst_ttfb,
        "direct_first_object_s": direct_first,
        "ttfb_ratio": rst_ttfb / direct_first,
        "wado_cpu_rst_s": median([r["cpu_s_rst"] for r in rows]),
        "wado_cpu_moto_rst_s": median([r.get("cpu_s_moto", float("nan")) for r in rows]),
        "wado_cpu_client_s": median([d["cpu_s"] for d in wado_direct]),
        "wado_cpu_moto_direct_s": median([d["cpu_s_moto"] or float("nan") for d in wado_direct]),
        "stow_rst_mbps": stow_mbps,
        "put_1_mbps": one_mbps,
        "put_16_mbps": many_mbps,
        "stow_ratio_1": stow_mbps / one_mbps,
        "stow_ratio_16": stow_mbps / many_mbps,
        "stow_rst_total_s": median([s["total_s"] for s in stow_rst]),
        "put_1_total_s": median([p["total_s"] for p in put_one]),
        "put_16_total_s": median([p["total_s"] for p in put_many]),
        "stow_cpu_rst_s": median([s["cpu_s_rst"] for s in stow_rst]),
        "stow_cpu_moto_s": median([s.get("cpu_s_moto", float("nan")) for s in stow_rst]),
    }
    return out


def table(result: dict[str, Any]) -> str:
    m = result["medians"]
    n = result["concurrency"]
    size = f"{result['bytes'] / 1e6:.0f} MB, {result['instances']} objects"
    v = result["versions"]
    return "\n".join(
        [
            f"| {size} | rst | aiobotocore direct | rst / direct |",
            "|---|---:|---:|---:|",
            f"| WADO-RS study retrieve, MB/s ({n} objects at a time both) "
            f"| {m['wado_rst_mbps']:.1f} | {m['wado_direct_mbps']:.1f} | {m['wado_ratio']:.2f} |",
            f"| WADO-RS time: rst to last byte, direct list + get all "
            f"| {m['wado_rst_total_s']:.2f} s | {m['wado_direct_total_s']:.2f} s "
            f"(list {m['wado_direct_list_s'] * 1000:.0f} ms) | |",
            f"| rst TTFB / direct first whole object | {m['rst_ttfb_s'] * 1000:.0f} ms "
            f"| {m['direct_first_object_s'] * 1000:.0f} ms | {m['ttfb_ratio']:.1f} |",
            f"| CPU s per retrieve: rst / client process "
            f"| {m['wado_cpu_rst_s']:.2f} s | {m['wado_cpu_client_s']:.2f} s | |",
            f"| CPU s per retrieve: moto serving it "
            f"| {m['wado_cpu_moto_rst_s']:.2f} s | {m['wado_cpu_moto_direct_s']:.2f} s | |",
            f"| STOW-RS MB/s vs put_object 1 at a time "
            f"| {m['stow_rst_mbps']:.1f} | {m['put_1_mbps']:.1f} | {m['stow_ratio_1']:.2f} |",
            f"| STOW-RS MB/s vs put_object {n} at a time "
            f"| {m['stow_rst_mbps']:.1f} | {m['put_16_mbps']:.1f} | {m['stow_ratio_16']:.2f} |",
            f"| STOW-RS time (rst) / put time (1, {n} at a time) "
            f"| {m['stow_rst_total_s']:.2f} s | {m['put_1_total_s']:.2f} s, "
            f"{m['put_16_total_s']:.2f} s | |",
            f"| CPU s per STOW-RS: rst, moto | {m['stow_cpu_rst_s']:.2f} s, "
            f"{m['stow_cpu_moto_s']:.2f} s | | |",
            "",
            f"rst VmHWM: {result['rst_start_rss_kib'] / 1024:.0f} MiB at start, "
            f"{result['rst_wado_rss_kib'] / 1024:.0f} MiB after the retrieves, "
            f"{result['rst_peak_rss_kib'] / 1024:.0f} MiB after the STOW-RS runs "
            f"({result['body_bytes'] / 1e6:.0f} MB body). moto {v['moto']}, aiobotocore "
            f"{v['aiobotocore']} (botocore {v['botocore']}), trio-asyncio {v['trio-asyncio']}.",
        ]
    )


def plot(result: dict[str, Any], path: Path) -> None:
    from .report import grouped_bars

    m = result["medians"]
    n = result["concurrency"]
    grouped_bars(
        path,
        [
            f"WADO-RS study\n(direct: {n} GETs at a time)",
            "STOW-RS study\n(direct: 1 PUT at a time)",
            f"STOW-RS study\n(direct: {n} PUTs at a time)",
        ],
        {
            "rst (curl)": [m["wado_rst_mbps"], m["stow_rst_mbps"], m["stow_rst_mbps"]],
            "aiobotocore direct": [m["wado_direct_mbps"], m["put_1_mbps"], m["put_16_mbps"]],
        },
        ylabel="MB/s (median)",
        title=f"S3 (moto on loopback), {result['bytes'] / 1e6:.0f} MB study",
    )


if __name__ == "__main__":
    from .cli import main

    sys.exit(main(["--only", NAME, *sys.argv[1:]]))
