"""``python -m benchmarks.chaos``: the chaos run — thousands of hostile requests and peers
against one ``rst serve``, bounded in time; the gateway must come out alive, unchanged and
having served every good request right.

Set-up, all on loopback: a real Orthanc holding a small CT study; two fake PACS
(:class:`~tests.support.hostile_pacs.HostilePacs`) whose scripted fault changes every half
second; an AE whose port refuses connections; ``rst serve`` as a real process
(:mod:`tests.support.rst_process`) with short timeouts, configured with Orthanc twice (C-MOVE and
C-GET), the two fakes and the dead AE. Then, for ``--seconds``, ``--clients`` concurrent
clients each pick one behaviour at a time:

- ``good``: a search or retrieve against Orthanc that must succeed; a retrieved instance must
  be the uploaded data set, element for element;
- ``generated``: a request from :mod:`tests.support.hostile_http` (hostile paths, queries,
  Accept headers, rendering parameters, STOW bodies, bytes that are not HTTP), judged by its
  invariant (a STOW's stored instances are looked up in Orthanc);
- ``hostile-pacs``: valid requests to the two fakes (502/503/504 are right answers there);
- ``slowloris``: a request head sent a byte a second; ``never-read``: a retrieve whose answer
  is never read; ``disconnect``: a retrieve dropped after its first bytes; ``stalled-stow``:
  a STOW whose body stops halfway (408 expected).

Meanwhile :class:`~tests.support.hostile_scu.HostileScu` associations misbehave at rst's
C-STORE receiver. rst's resident and peak memory (``VmRSS``/``VmHWM``), open descriptors and
threads are read from ``/proc`` at rest after a warm-up (the baseline) and at rest after the
run (after a settle). The run fails (exit 1) if rst died, a good request failed, any answer was
a 500, any invariant broke, the descriptors did not come back to the baseline, or resident
memory stayed more than ``--rss-tolerance`` MiB above it. A JSON result goes to
``benchmarks/results/chaos-<stamp>.json`` and a summary table is printed.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import random
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import trio

from benchmarks.common import ROOT, rel
from benchmarks.procfs import descriptors, snapshot
from tests.support.hostile_archive import sample_instances
from tests.support.hostile_dicom import small_instance
from tests.support.hostile_faults import Action, Phase, Script
from tests.support.hostile_http import (
    Answer,
    HostileRequest,
    Target,
    accept_request,
    answer_problems,
    exchange,
    http_request,
    path_request,
    query_request,
    raw_request,
    rendered_request,
    stow_problems,
    stow_request,
    stow_uids,
)
from tests.support.hostile_pacs import HostilePacs
from tests.support.hostile_scu import HostileScu
from tests.support.orthanc import Orthanc, add_modality, http_client, open_orthanc, upload
from tests.support.rst_process import read_until, rst_process
from tests.support.sample import StudyFiles, write_ct_study

ORTHANC = "ORTHANC"
ORTHANC_GET = "ORTHANCGET"
HOSTILE = ("HOSTILE1", "HOSTILE2")
DOWN = "DOWN"
PATIENT = "CHAOS"
REQUEST_DEADLINE = 30.0
"""Longest any one behaviour may take before it counts as a hang."""
SETTLE_WITHIN = 30.0
SAMPLE_EVERY = 5.0
HTTP_TIMEOUTS = {"body_timeout": 2.0, "send_timeout": 3.0, "keep_alive_timeout": 5.0}
SLOWLORIS_BOUND = 15.0
"""A head that never ends must be dropped within this (keep_alive_timeout plus slack)."""
PACS_TIMEOUTS = (
    "connect_timeout = 2.0\nfind_timeout = 5.0\nfirst_store_timeout = 5.0\n"
    "idle_timeout = 5.0\nstore_timeout = 5.0\ncancel_timeout = 1.0\n"
)
ORTHANC_SETTINGS = (
    "max_associations = 16\nqueue_timeout = 20.0\nconnect_timeout = 5.0\nfind_timeout = 10.0\n"
    "first_store_timeout = 10.0\nidle_timeout = 10.0\nstore_timeout = 10.0\n"
)
"""Orthanc is healthy: timeouts short, but long enough for a loaded 2-core machine."""
GENERATORS = (path_request, query_request, accept_request, rendered_request, stow_request)
WEIGHTS = {
    "good": 30,
    "generated": 40,
    "raw": 6,
    "hostile-pacs": 10,
    "slowloris": 2,
    "never-read": 4,
    "disconnect": 4,
    "stalled-stow": 4,
}
SCU_PHASES = (Phase.ASSOCIATION, Phase.STORE_COMMAND, Phase.STORE_DATA, Phase.RELEASE)
PACS_PHASES = tuple(Phase)


# --- the record ---------------------------------------------------------------------------------


@dataclass
class Tally:
    """Everything counted during the run."""

    by_kind: collections.Counter[str] = field(default_factory=collections.Counter)
    """``kind status-class`` -> count (``none`` when there was no answer)."""
    good_ok: int = 0
    good_failed: list[str] = field(default_factory=list)
    good_bytes: int = 0
    five_hundreds: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)
    scu_runs: int = 0
    started: int = 0

    def count(self, kind: str, status: int | None) -> None:
        self.by_kind[f"{kind} {'none' if status is None else f'{status // 100}xx'}"] += 1

    def note(self, where: list[str], text: str) -> None:
        if len(where) < 50:
            where.append(text[:1500])


# --- the set-up ---------------------------------------------------------------------------------


def rst_config(orthanc: Orthanc, pacs_ports: list[int], down_port: int, workdir: Path) -> str:
    """ORTHANC retrieves by C-MOVE through the retrieve cache, ORTHANCGET by C-GET without it;
    the fakes by C-MOVE and C-GET; DOWN refuses connections."""
    http = "".join(f"{key} = {value}\n" for key, value in HTTP_TIMEOUTS.items())
    aes = [
        (ORTHANC, orthanc.dicom_port, "move", ORTHANC_SETTINGS),
        (ORTHANC_GET, orthanc.dicom_port, "get", ORTHANC_SETTINGS + "cache = false\n"),
        *(
            (aet, port, mode, PACS_TIMEOUTS + "queue_timeout = 2.0\n")
            for aet, port, mode in zip(HOSTILE, pacs_ports, ("move", "get"), strict=True)
        ),
        (DOWN, down_port, "move", PACS_TIMEOUTS),
    ]
    entries = "".join(
        f'\n[[aets]]\naet = "{aet}"\nhost = "127.0.0.1"\nport = {port}\nretrieve = "{mode}"\n'
        + extra
        for aet, port, mode, extra in aes
    )
    return (
        f'[log]\nlevel = "INFO"\n\n[http]\nhost = "127.0.0.1"\n{http}\n'
        f'[dimse]\naet = "RST"\nhost = "127.0.0.1"\n'
        f"spool_dir = {json.dumps(str(workdir / 'spool'))}\n\n"
        f"[cache]\npath = {json.dumps(str(workdir / 'cache'))}\n" + entries
    )


@dataclass
class Scene:
    """What the clients need to know."""

    address: tuple[str, int]
    target: Target
    study: StudyFiles
    originals: dict[str, pydicom.Dataset]
    orthanc: Orthanc
    tally: Tally


# --- the behaviours -----------------------------------------------------------------------------


async def send(scene: Scene, request: HostileRequest) -> Answer | None:
    """One exchange, bounded; a hang is recorded and gives ``None``."""
    try:
        with trio.fail_after(REQUEST_DEADLINE):
            return await exchange(scene.address, request)
    except trio.TooSlowError:
        scene.tally.note(scene.tally.hangs, str(request))
    except OSError as exc:  # could not even connect: rst is gone or refuses
        scene.tally.note(scene.tally.problems, f"connect failed ({exc!r}): {request}")
    return None


def judge(scene: Scene, kind: str, request: HostileRequest, answer: Answer | None) -> None:
    tally = scene.tally
    if answer is None:
        tally.count(kind, None)
        return
    tally.count(kind, answer.status)
    text = f"{request} -> {answer.status} {answer.body[:300]!r}"
    if answer.status == 500:
        tally.note(tally.five_hundreds, text)
    for problem in answer_problems(request, answer):
        tally.note(tally.problems, f"{problem}: {text}")


def good_requests(scene: Scene) -> list[tuple[str, HostileRequest]]:
    """Valid requests to Orthanc through rst, each with what must come back."""
    study = scene.study
    series = study.series_uids[0]
    sop = study.sop_uids[-1]
    out = []
    for aet in (ORTHANC, ORTHANC_GET):
        base = f"/aets/{aet}"
        for url, route, accept in (
            (f"{base}/studies?PatientID={PATIENT}", "qido", ""),
            (f"{base}/studies/{study.study_uid}/series", "qido", "application/dicom+json"),
            (f"{base}/studies/{study.study_uid}/series/{series}/instances", "qido", ""),
            (f"{base}", "health", ""),
            (
                f"{base}/studies/{study.study_uid}/series/{study.instance_series[-1]}"
                f"/instances/{sop}",
                "wado",
                'multipart/related; type="application/dicom"; transfer-syntax=*',
            ),
            (f"{base}/studies/{study.study_uid}/series/{series}", "wado", ""),
        ):
            headers = [(b"Accept", accept.encode())] if accept else []
            request = HostileRequest(
                kind="good",
                label=url,
                method="GET",
                raw=http_request("GET", url.encode(), headers),
                route=route,  # type: ignore[arg-type]
                aet=aet,
                must_succeed=True,
            )
            out.append((url, request))
    return out


def parts_of(answer: Answer) -> list[bytes]:
    """The bodies of a multipart answer's parts."""
    boundary = answer.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
    delimiter = b"\r\n--" + boundary.encode()
    body = b"\r\n" + answer.body
    pieces = body.split(delimiter)[1:-1]
    return [piece.partition(b"\r\n\r\n")[2] for piece in pieces]


def wrong_content(scene: Scene, url: str, answer: Answer) -> str | None:
    """What is wrong with a good request's 200 (``None``: nothing)."""
    study = scene.study
    if "/instances/" in url or url.rstrip("/").endswith(study.series_uids[0]):
        expected = (
            [study.sop_uids[-1]]
            if "/instances/" in url
            else [
                u
                for u, s in zip(study.sop_uids, study.instance_series, strict=True)
                if s == study.series_uids[0]
            ]
        )
        got = []
        for part in parts_of(answer):
            ds = pydicom.dcmread(BytesIO(part))
            original = scene.originals[str(ds.SOPInstanceUID)]
            if ds != original:
                return f"instance {ds.SOPInstanceUID} differs from the uploaded one"
            got.append(str(ds.SOPInstanceUID))
        if sorted(got) != sorted(expected):
            return f"instances {sorted(got)}, expected {sorted(expected)}"
        return None
    body = answer.json
    if url.endswith(f"PatientID={PATIENT}"):
        uids = [row["0020000D"]["Value"][0] for row in body]
        return None if uids == [study.study_uid] else f"studies {uids}"
    if url.endswith("/series"):
        uids = sorted(row["0020000E"]["Value"][0] for row in body)
        return None if uids == sorted(study.series_uids) else f"series {uids}"
    if url.endswith("/instances"):
        count = study.instance_series.count(study.series_uids[0])
        return None if len(body) == count else f"{len(body)} instances, expected {count}"
    return None if body.get("status") == "ok" else f"health {body}"


async def good(scene: Scene, rng: random.Random) -> None:
    url, request = rng.choice(good_requests(scene))
    answer = await send(scene, request)
    judge(scene, "good", request, answer)
    tally = scene.tally
    if answer is None:
        tally.note(tally.good_failed, f"no answer: {url}")
        return
    wrong = None
    if answer.status != 200 or not answer.complete:
        wrong = f"{answer.status} ({answer.error}) {answer.body[:300]!r}"
    else:
        try:
            wrong = wrong_content(scene, url, answer)
        except Exception as exc:  # an unreadable answer is a wrong one
            wrong = f"unreadable: {exc!r}"
    if wrong is None:
        tally.good_ok += 1
        tally.good_bytes += len(answer.body)
    else:
        tally.note(tally.good_failed, f"{url}: {wrong}")


async def generated(scene: Scene, rng: random.Random) -> None:
    generator = rng.choice(GENERATORS)
    request = generator(rng, scene.target)
    answer = await send(scene, request)
    judge(scene, request.kind, request, answer)
    if request.kind == "stow" and answer is not None and answer.complete:
        on_archive = {uid for uid in stow_uids(request, answer) if await on_orthanc(scene, uid)}
        for problem in stow_problems(request, answer, on_archive):
            scene.tally.note(scene.tally.problems, f"{problem}: {request}")


async def on_orthanc(scene: Scene, sop_uid: str) -> bool:
    async with http_client(scene.orthanc, timeout=30.0) as client:
        response = await client.post("/tools/lookup", content=sop_uid)
        response.raise_for_status()
        return any(hit.get("Type") == "Instance" for hit in response.json())


async def raw(scene: Scene, rng: random.Random) -> None:
    request = raw_request(rng, scene.target)
    judge(scene, "raw", request, await send(scene, request))


async def hostile_pacs(scene: Scene, rng: random.Random) -> None:
    """A valid request to one of the fakes: whatever it does, rst answers honestly."""
    aet = rng.choice(HOSTILE)
    instance = rng.choice(sample_instances())  # what the fakes hold (unmatched C-MOVEs crash
    study, series = instance.study_uid, instance.series_uid  # HostilePacs itself)
    choice = rng.randrange(5)
    body = b""
    headers: list[tuple[bytes, bytes]] = []
    method = "GET"
    if choice == 0:
        url, route = f"/aets/{aet}", "health"
    elif choice == 1:
        url, route = f"/aets/{aet}/studies?limit=5", "qido"
    elif choice == 2:
        url, route = f"/aets/{aet}/studies/{study}/series/{series}/instances", "qido"
    elif choice == 3:
        url, route = f"/aets/{aet}/studies/{study}", "wado"
    else:
        url, route, method = f"/aets/{aet}/studies", "stow", "POST"
        data = small_instance(rng).part10()
        headers = [(b"Content-Type", b"multipart/related; type=application/dicom; boundary=b")]
        body = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n--b--\r\n"
    request = HostileRequest(
        kind="hostile-pacs",
        label=url,
        method=method,
        raw=http_request(method, url.encode(), headers, body),
        route=route,  # type: ignore[arg-type]
        aet=aet,
        upstream_may_fail=True,
    )
    judge(scene, "hostile-pacs", request, await send(scene, request))


async def _connect(scene: Scene, receive_buffer: int | None = None) -> trio.SocketStream:
    stream = await trio.open_tcp_stream(*scene.address)
    if receive_buffer is not None:
        stream.socket.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, receive_buffer)
    return stream


async def _read_all(stream: trio.SocketStream) -> bytes:
    data = b""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        while chunk := await stream.receive_some(65536):
            data += chunk
    return data


async def slowloris(scene: Scene, rng: random.Random) -> None:
    """A request head that never ends, a byte a second: rst must drop it."""
    started = trio.current_time()
    closed = False
    with trio.move_on_after(SLOWLORIS_BOUND + 10):
        async with await _connect(scene) as stream:
            try:
                await stream.send_all(b"GET /aets HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                while not closed:
                    with trio.move_on_after(1.0):
                        if not await stream.receive_some(65536):
                            closed = True  # rst hung up (or answered, then hung up)
                    if not closed:
                        await stream.send_all(b"a")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                closed = True
    held = trio.current_time() - started
    scene.tally.count("slowloris", None)
    if not closed or held > SLOWLORIS_BOUND:
        scene.tally.note(scene.tally.problems, f"slowloris head held for {held:.1f} s")


async def never_read(scene: Scene, rng: random.Random) -> None:
    """A study retrieve whose answer is never read: rst must give up on it (send_timeout)."""
    aet = rng.choice((ORTHANC, ORTHANC_GET))
    url = f"/aets/{aet}/studies/{scene.study.study_uid}"
    async with await _connect(scene, receive_buffer=4096) as stream:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_all(http_request("GET", url.encode()))
            await trio.sleep(HTTP_TIMEOUTS["send_timeout"] + rng.random() * 3)
    scene.tally.count("never-read", None)


async def disconnect(scene: Scene, rng: random.Random) -> None:
    """A retrieve dropped after its first bytes, sometimes with a reset."""
    aet = rng.choice((ORTHANC, ORTHANC_GET))
    url = f"/aets/{aet}/studies/{scene.study.study_uid}"
    async with await _connect(scene) as stream:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_all(http_request("GET", url.encode()))
            with trio.move_on_after(REQUEST_DEADLINE):
                await stream.receive_some(rng.choice([1, 100, 65536]))
            if rng.random() < 0.5:  # RST instead of FIN
                stream.socket.setsockopt(
                    trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0"
                )
    scene.tally.count("disconnect", None)


async def stalled_stow(scene: Scene, rng: random.Random) -> None:
    """A STOW whose body stops halfway: a 408 within body_timeout (plus slack)."""
    data = small_instance(rng).part10()
    part = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + data
    head = (
        f"POST /aets/{ORTHANC}/studies HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: multipart/related; type=application/dicom; boundary=b\r\n"
        f"Content-Length: {len(part) * 4}\r\n\r\n"
    ).encode()
    request = HostileRequest(
        kind="stalled-stow",
        label="body stops halfway",
        method="POST",
        raw=head + part[: rng.randrange(1, len(part))],
        route="stow",
    )
    answer = await send(scene, request)
    judge(scene, "stalled-stow", request, answer)
    if answer is not None and answer.status != 408:
        scene.tally.note(scene.tally.problems, f"stalled STOW answered {answer.status}")


BEHAVIOURS: dict[str, Callable[[Scene, random.Random], Awaitable[None]]] = {
    "good": good,
    "generated": generated,
    "raw": raw,
    "hostile-pacs": hostile_pacs,
    "slowloris": slowloris,
    "never-read": never_read,
    "disconnect": disconnect,
    "stalled-stow": stalled_stow,
}


# --- the run ------------------------------------------------------------------------------------


async def clients(
    scene: Scene, count: int, seconds: float, budget: int, seed: int, only: list[str]
) -> None:
    """*count* clients, each doing one behaviour after another (those in *only*) until the time
    or the request budget is spent."""
    deadline = trio.current_time() + seconds
    names = [name for name in WEIGHTS if name in only]
    weights = [WEIGHTS[name] for name in names]

    async def client(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        while trio.current_time() < deadline and scene.tally.started < budget:
            scene.tally.started += 1
            name = rng.choices(names, weights)[0]
            try:
                with trio.fail_after(REQUEST_DEADLINE + SLOWLORIS_BOUND + 15):
                    await BEHAVIOURS[name](scene, rng)
            except trio.TooSlowError:
                scene.tally.note(scene.tally.hangs, f"behaviour {name} did not end")
            except OSError as exc:
                scene.tally.note(scene.tally.problems, f"{name}: {exc!r}")

    async with trio.open_nursery() as nursery:
        for n in range(count):
            nursery.start_soon(client, n)


async def hostile_scus(scene: Scene, dimse: tuple[str, int], stop: trio.Event) -> None:
    """Associations that misbehave at rst's receiver, two at a time, until *stop*."""
    rng = random.Random(7)

    async def one() -> None:
        while not stop.is_set():
            script = Script(rng.choice(SCU_PHASES), rng.choice(tuple(Action)))
            with trio.move_on_after(10):
                # as a configured archive: the receiver turns any other title away at once
                await HostileScu(dimse, script, calling_aet=HOSTILE[0]).run()
            scene.tally.scu_runs += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one)
        nursery.start_soon(one)


async def rotate(fakes: tuple[HostilePacs, ...], stop: trio.Event) -> None:
    """A new scripted fault for each fake every half second, until *stop* (then they behave)."""
    rng = random.Random(11)
    while not stop.is_set():
        for fake in fakes:
            fake.script = Script(rng.choice(PACS_PHASES), rng.choice(tuple(Action)))
            fake.struck = None
        with trio.move_on_after(0.5):
            await stop.wait()
    for fake in fakes:
        fake.script = None


async def settle(pid: int, baseline: dict[str, int] | None) -> tuple[dict[str, int], float]:
    """Wait (bounded) until rst's descriptors are back to *baseline* (or stop changing)."""
    started = time.monotonic()
    last = snapshot(pid)
    steady = 0
    while time.monotonic() - started < SETTLE_WITHIN:
        await trio.sleep(0.25)  # rst's state offers nothing to wait on from outside
        now = snapshot(pid)
        if baseline is not None and now["fds"] == baseline["fds"]:
            return now, time.monotonic() - started
        steady = steady + 1 if now["fds"] == last["fds"] else 0
        if baseline is None and steady >= 8:  # 2 s without change
            return now, time.monotonic() - started
        last = now
    return snapshot(pid), time.monotonic() - started


async def alive(scene: Scene) -> bool:
    request = HostileRequest(
        kind="good",
        label="GET /aets",
        method="GET",
        raw=http_request("GET", b"/aets"),
        route="aets",
        must_succeed=True,
    )
    answer = await send(scene, request)
    return answer is not None and answer.status == 200


async def drain(process: trio.Process, log: Path) -> None:
    """Keep reading rst's output into *log* (a full pipe would block rst)."""
    assert process.stdout is not None
    with log.open("ab") as out:
        while chunk := await process.stdout.receive_some(65536):
            out.write(chunk)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out: Path = args.out
    log = out / f"chaos-{stamp}-rst.log"
    tally = Tally()
    result: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "args": {k: str(v) for k, v in vars(args).items()},
        "stamp": stamp,
        "rst_log": rel(log),
    }
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rst-chaos-")))
        study = write_ct_study(
            workdir / "study", images=12, rows=256, columns=256, series=2, patient_id=PATIENT
        )
        originals: dict[str, pydicom.Dataset] = {}
        for path in study.paths:
            ds = pydicom.dcmread(path)
            del ds.file_meta
            originals[str(ds.SOPInstanceUID)] = ds
        spool = workdir / "spool"
        spool.mkdir()
        down = stack.enter_context(socket.socket())  # bound, never listening: refused
        down.bind(("127.0.0.1", 0))
        fakes = tuple(HostilePacs(aet) for aet in HOSTILE)
        async with (
            open_orthanc(
                workdir / "orthanc",
                aet=ORTHANC,
                extra_config={"DicomThreadsCount": 16},
                fast_stop=True,
            ) as orthanc,
            trio.open_nursery() as peers,
        ):
            await upload(orthanc, study.paths)
            crashes: list[str] = []
            result["fake_pacs_crashes"] = crashes

            async def serve_fake(fake: HostilePacs, *, task_status: trio.TaskStatus[int]) -> None:
                try:
                    await fake.serve(task_status=task_status)
                except Exception as exc:  # a fake that breaks is a dead PACS from then on
                    crashes.append(f"{fake.aet}: {exc!r}")

            ports = [await peers.start(serve_fake, fake) for fake in fakes]
            config = workdir / "rst.toml"
            config.write_text(rst_config(orthanc, ports, down.getsockname()[1], workdir))
            async with rst_process("serve", "--config", str(config), cwd=workdir) as process:
                match = await read_until(
                    process,
                    r"serving DICOMweb on http://([\d.]+):(\d+), C-STORE receiver "
                    r"\S+ on [\d.]+:(\d+)",
                )
                peers.start_soon(drain, process, log)
                address = (match[1], int(match[2]))
                dimse = ("127.0.0.1", int(match[3]))
                await add_modality(orthanc, "RST", "RST", *dimse)
                for fake in fakes:
                    fake.destinations["RST"] = dimse
                target = Target(
                    host=address[0],
                    port=address[1],
                    aet=ORTHANC,
                    study=study.study_uid,
                    series=study.series_uids[0],
                    sop=study.sop_uids[0],
                    broken_aets=(DOWN,),  # the fakes get valid requests only (see above)
                )
                scene = Scene(address, target, study, originals, orthanc, tally)
                pid = process.pid
                result["initial"] = snapshot(pid)
                timeline: list[dict[str, Any]] = []
                result["timeline"] = timeline

                async def sample(stop: trio.Event) -> None:
                    begun = time.monotonic()
                    while not stop.is_set():
                        timeline.append({"t": round(time.monotonic() - begun, 1), **snapshot(pid)})
                        with trio.move_on_after(SAMPLE_EVERY):
                            await stop.wait()

                async def phase(seconds: float, budget: int) -> float:
                    stop = trio.Event()
                    begun = time.monotonic()
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(rotate, fakes, stop)
                        if "scu" in args.only:
                            nursery.start_soon(hostile_scus, scene, dimse, stop)
                        nursery.start_soon(sample, stop)
                        await clients(scene, args.clients, seconds, budget, args.seed, args.only)
                        stop.set()
                    return time.monotonic() - begun

                print(f"warm-up: {args.warmup:.0f} s, {args.clients} clients", flush=True)
                await phase(args.warmup, args.max_requests)
                result["warmup_counts"] = dict(tally.by_kind)
                names = {
                    address[1]: "rst-http",
                    dimse[1]: "rst-dimse",
                    orthanc.dicom_port: "orthanc-dimse",
                    **{port: fake.aet for port, fake in zip(ports, fakes, strict=True)},
                }
                baseline, waited = await settle(pid, None)
                result["baseline"] = {**baseline, "settled_after_s": round(waited, 1)}
                result["baseline_descriptors"] = descriptors(pid, names)
                scene.tally = tally = Tally()  # the measured run counts from zero
                print(f"chaos: {args.seconds:.0f} s, {args.clients} clients", flush=True)
                result["duration_s"] = await phase(args.seconds, args.max_requests)
                final, waited = await settle(pid, baseline)
                result["final"] = {**final, "settled_after_s": round(waited, 1)}
                result["final_descriptors"] = descriptors(pid, names)
                result["alive"] = process.poll() is None and await alive(scene)
                result["spool_left"] = sorted(p.name for p in spool.iterdir())
            result["exit_code"] = process.returncode
            peers.cancel_scope.cancel()
    result["tally"] = {
        "requests": tally.started,
        "by_kind": dict(sorted(tally.by_kind.items())),
        "good_ok": tally.good_ok,
        "good_failed": tally.good_failed,
        "good_mb": round(tally.good_bytes / 1e6, 1),
        "five_hundreds": tally.five_hundreds,
        "problems": tally.problems,
        "hangs": tally.hangs,
        "scu_associations": tally.scu_runs,
    }
    result["log_errors"] = log_errors(log)
    return result


def log_errors(log: Path) -> list[str]:
    """rst's ERROR lines: something it did not foresee, or a response it broke off after its
    first byte (a fake PACS's fault does that, as it should)."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line[:400] for line in lines if " ERROR " in line or line.startswith("ERROR")][:50]


def verdict(result: dict[str, Any], rss_tolerance_mib: float) -> list[str]:
    """Why the run failed (empty: it passed)."""
    tally = result["tally"]
    base, final = result["baseline"], result["final"]
    failures = []
    if not result["alive"]:
        failures.append("rst is not alive at the end")
    if tally["good_failed"]:
        failures.append(f"{len(tally['good_failed'])} good request(s) failed")
    if tally["five_hundreds"]:
        failures.append(f"{len(tally['five_hundreds'])} answer(s) were 500")
    if tally["problems"]:
        failures.append(f"{len(tally['problems'])} invariant violation(s)")
    if tally["hangs"]:
        failures.append(f"{len(tally['hangs'])} hang(s)")
    if final["fds"] != base["fds"]:
        failures.append(f"descriptors {base['fds']} -> {final['fds']} after the settle")
    grown = (final["rss_kib"] - base["rss_kib"]) / 1024
    if grown > rss_tolerance_mib:
        failures.append(f"resident memory grew {grown:.1f} MiB (> {rss_tolerance_mib} MiB)")
    if result["exit_code"] != 0:
        failures.append(f"rst exited with {result['exit_code']} on SIGTERM after the run")
    if result["spool_left"]:
        failures.append(f"spool files left: {result['spool_left']}")
    return failures


def table(result: dict[str, Any]) -> str:
    """The summary, in markdown."""
    tally = result["tally"]
    base, final = result["baseline"], result["final"]
    good_total = tally["good_ok"] + len(tally["good_failed"])
    kinds = sorted({key.rsplit(" ", 1)[0] for key in tally["by_kind"]})
    classes = ["2xx", "3xx", "4xx", "5xx", "none"]
    rows = [
        f"| {kind} | "
        + " | ".join(str(tally["by_kind"].get(f"{kind} {c}", 0)) for c in classes)
        + f" | {sum(v for k, v in tally['by_kind'].items() if k.rsplit(' ', 1)[0] == kind)} |"
        for kind in kinds
    ]
    mib = 1024
    return "\n".join(
        [
            "| kind | 2xx | 3xx | 4xx | 5xx | no answer | total |",
            "|---|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
            "| | after warm-up (baseline) | after the run and settle |",
            "|---|---:|---:|",
            f"| VmRSS | {base['rss_kib'] / mib:.1f} MiB | {final['rss_kib'] / mib:.1f} MiB |",
            f"| VmHWM | {base['hwm_kib'] / mib:.1f} MiB | {final['hwm_kib'] / mib:.1f} MiB |",
            f"| open descriptors | {base['fds']} | {final['fds']} "
            f"(settled in {final['settled_after_s']} s) |",
            f"| threads | {base['threads']} | {final['threads']} |",
            "",
            f"Requests/behaviours: {tally['requests']} in {result['duration_s']:.0f} s; good "
            f"requests {tally['good_ok']}/{good_total} right ({tally['good_mb']} MB checked); "
            f"500s: {len(tally['five_hundreds'])}; invariant violations: "
            f"{len(tally['problems'])}; hangs: {len(tally['hangs'])}; hostile associations "
            f"at the receiver: {tally['scu_associations']}; rst alive: {result['alive']}; "
            f"ERROR lines in rst's log: {len(result['log_errors'])}.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.chaos", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=120.0, help="measured run (120)")
    parser.add_argument(
        "--warmup",
        type=float,
        default=30.0,
        help="warm-up before the baseline (30: long enough for the allocator's plateau)",
    )
    parser.add_argument("--clients", type=int, default=24, help="concurrent clients (24)")
    parser.add_argument(
        "--max-requests", type=int, default=100_000, help="at most this many behaviours"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--only",
        default=",".join([*WEIGHTS, "scu"]),
        help="comma-separated behaviours to run (default all: "
        f"{','.join([*WEIGHTS, 'scu'])}; scu: the hostile associations at the receiver)",
    )
    parser.add_argument(
        "--rss-tolerance", type=float, default=30.0, help="MiB VmRSS may end above the baseline"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(args.only) - {*WEIGHTS, "scu"}
    if unknown or not set(args.only) & set(WEIGHTS):
        parser.error(f"--only: unknown {sorted(unknown)} or no client behaviour")
    args.out = args.out if args.out.is_absolute() else ROOT / args.out
    args.out.mkdir(parents=True, exist_ok=True)
    result = trio.run(run, args)
    failures = verdict(result, args.rss_tolerance)
    result["failures"] = failures
    path = args.out / f"chaos-{result['stamp']}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n## Chaos run\n\n{table(result)}\n\nresult: {rel(path)}; rst log: {result['rst_log']}")
    for name in ("good_failed", "five_hundreds", "problems", "hangs"):
        for line in result["tally"][name][:10]:
            print(f"{name}: {line}", file=sys.stderr)
    if result["final"]["fds"] != result["baseline"]["fds"]:
        extra = sorted(set(result["final_descriptors"]) - set(result["baseline_descriptors"]))
        for line in extra:
            print(f"descriptor left: {line}", file=sys.stderr)
    for line in result["log_errors"][:10]:
        print(f"rst log: {line}", file=sys.stderr)
    if failures:
        print("FAILED: " + "; ".join(failures), file=sys.stderr)
        return 1
    print("passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
