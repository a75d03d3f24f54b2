"""rst against a hostile peer: a PACS that breaks the protocol at one point of one exchange.

For each route (health, QIDO at every level, WADO at every level by C-MOVE and by C-GET, STOW)
and each phase of its exchange with the PACS (association answer, first response, pending
responses, a C-STORE sub-operation's command and data, final response, release) the fake PACS of
:mod:`tests.support.hostile_pacs` does one hostile thing instead: garbage, HTTP, a PDU out of
turn, an unknown PDU type, an impossible or truncated length, an undecodable command set,
A-ABORT or silence. Every case asserts:

- the answer: before the first byte, the status that says what happened — 502 for a peer that
  broke the protocol or went away, 504 for silence (health: 503), with a JSON ``error``; after
  the first byte, a visibly broken body — never a complete-looking response. A fault at release
  (after the operation succeeded) must not cost the client its answer. STOW fails only the part
  whose association broke (0x0110) and stores the other: 202.
- the gateway serves the next request: ``GET /aets``, the same route against a well-behaved PACS
  and against the same PACS (which behaves once its fault is spent: nothing was left stuck).
- nothing is left: no association, subscription, connection, trio task, thread, file descriptor
  or spool file beyond what the gateway had before the request (a spool is an anonymous file:
  left behind, it is a descriptor; the spool folder must stay empty too).

The same against rst's C-STORE receiver port: an association to it that misbehaves at each
phase, after which the receiver still takes the sub-operations of a normal C-MOVE.

The whole action x phase matrix runs for the association answer and the first response (with the
QIDO and WADO levels taking turns, so that every route is covered); the later phases run every
action that means something there on the routes that have that phase.
"""

from __future__ import annotations

import collections
import json
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
import trio

from rst.config import AeConfig
from rst.dicom.multipart import MultipartWriter
from rst.dicom.statuses import PROCESSING_FAILURE
from rst.groups import collapse
from rst.server import Running
from tests.support.gateway import run_gateway, settled
from tests.support.hostile_archive import sample_instances
from tests.support.hostile_faults import Action, Phase, Script
from tests.support.hostile_pacs import HostilePacs
from tests.support.hostile_scu import HostileScu

CASE_DEADLINE = 30.0
"""No case may take longer (a hang is a failure, not a stuck suite)."""
SETTLE_WITHIN = 5.0
"""How long rst may take, after the response, to close what the request held."""

HOSTILE_TIMEOUTS: dict[str, Any] = {
    "connect_timeout": 1.0,
    "find_timeout": 0.5,
    "first_store_timeout": 0.5,
    "idle_timeout": 0.5,
    "store_timeout": 0.5,
    "cancel_timeout": 0.5,
}
"""Short, so that silence costs half a second, not the defaults' 30 to 120."""
PATIENT_TIMEOUTS: dict[str, Any] = {"connect_timeout": 10.0, "find_timeout": 10.0}


# --- routes -----------------------------------------------------------------------------------

Kind = Literal["health", "qido", "wado", "stow"]


@dataclass(frozen=True)
class Route:
    name: str
    kind: Kind
    path: str = ""
    """Below ``/aets/{aet}``, with ``{study}``, ``{series}``, ``{sop}`` to fill in."""
    retrieve: Literal["move", "get"] = "move"
    results: int = 2
    """Rows, instances or stored instances of a complete answer."""

    @property
    def phases(self) -> frozenset[Phase]:
        if self.kind in ("health", "stow"):
            first_and_last = {Phase.ASSOCIATION, Phase.FIRST_RESPONSE, Phase.RELEASE}
            return frozenset(first_and_last | ({Phase.FINAL} if self.kind == "stow" else set()))
        phases = {Phase.ASSOCIATION, Phase.FIRST_RESPONSE, Phase.FINAL, Phase.RELEASE}
        if self.results > 1:
            phases.add(Phase.PENDING)
        if self.kind == "wado":
            phases |= {Phase.STORE_COMMAND, Phase.STORE_DATA}
        return frozenset(phases)

    def data_before(self, script: Script) -> bool:
        """Whether rst has something to send the client before the fault (so the response may
        have started)."""
        if self.kind == "qido":
            return script.phase in (Phase.PENDING, Phase.FINAL)
        if self.kind == "wado":
            if script.phase in (Phase.STORE_COMMAND, Phase.STORE_DATA):
                return script.suboperation > 0
            return script.phase in (Phase.PENDING, Phase.FINAL)
        return False


STUDY_PATH = "/studies/{study}"
SERIES_PATH = STUDY_PATH + "/series/{series}"
INSTANCE_PATH = SERIES_PATH + "/instances/{sop}"

ROUTES: dict[str, list[Route]] = {
    "health": [Route("health", "health")],
    "qido": [
        Route("qido-study", "qido", "/studies"),
        Route("qido-series", "qido", STUDY_PATH + "/series"),
        Route("qido-instance", "qido", SERIES_PATH + "/instances"),
    ],
    "move": [
        Route("move-study", "wado", STUDY_PATH),
        Route("move-series", "wado", SERIES_PATH),
        Route("move-instance", "wado", INSTANCE_PATH, results=1),
    ],
    "get": [
        Route("get-study", "wado", STUDY_PATH, retrieve="get"),
        Route("get-series", "wado", SERIES_PATH, retrieve="get"),
        Route("get-instance", "wado", INSTANCE_PATH, retrieve="get", results=1),
    ],
    "stow": [Route("stow", "stow", "/studies")],
}
MOVE_STUDY = ROUTES["move"][0]

PDU_ACTIONS = (
    Action.GARBAGE,
    Action.HTTP,
    Action.WRONG_PDU,
    Action.UNKNOWN_PDU,
    Action.OVERSIZED,
    Action.TRUNCATED,
    Action.ABORT,
    Action.SILENCE,
)
"""What can replace any PDU."""
ALL_ACTIONS = tuple(Action)
"""Where a DIMSE message is due, a bad command set too."""
DATA_ACTIONS = tuple(a for a in Action if a is not Action.INCOMPLETE_COMMAND)
"""Where a data set is due: a command PDV at all is the bad command."""

PLAN: tuple[tuple[Phase, tuple[str, ...], tuple[Action, ...]], ...] = (
    (Phase.ASSOCIATION, ("health", "qido", "move", "get", "stow"), PDU_ACTIONS),
    (Phase.FIRST_RESPONSE, ("health", "qido", "move", "get", "stow"), ALL_ACTIONS),
    (Phase.PENDING, ("qido", "move", "get"), ALL_ACTIONS),
    (Phase.STORE_COMMAND, ("move", "get"), ALL_ACTIONS),
    (Phase.STORE_DATA, ("move", "get"), DATA_ACTIONS),
    (Phase.FINAL, ("qido", "move", "get", "stow"), ALL_ACTIONS),
    (Phase.RELEASE, ("health", "qido", "move", "get", "stow"), PDU_ACTIONS),
)


def _cases() -> Iterator[Any]:
    for phase, kinds, actions in PLAN:
        for turn, action in enumerate(actions):
            for kind in kinds:
                routes = [route for route in ROUTES[kind] if phase in route.phases]
                route = routes[turn % len(routes)]  # the levels take turns
                # a sub-operation after one was streamed, where there are two
                suboperation = 1 if route.results > 1 else 0
                script = Script(phase, action, suboperation)
                yield pytest.param(route, script, id=f"{route.name}-{script.id}")


CASES = list(_cases())


# --- what a client sees -----------------------------------------------------------------------


@dataclass
class Outcome:
    status: int
    content_type: str
    body: bytes
    broken: str | None
    """Why the body is visibly incomplete (None if it is complete)."""

    def json(self) -> Any:
        return json.loads(self.body)

    def __str__(self) -> str:
        body = self.body[:300].decode("utf-8", "replace")
        state = f"broken off: {self.broken}" if self.broken else "complete"
        return f"HTTP {self.status} ({self.content_type}), body {state}: {body!r}"


def _stow_body() -> tuple[bytes, str]:
    writer = MultipartWriter()
    body = b"".join(
        writer.part_head("application/dicom") + instance.part10 for instance in sample_instances()
    )
    return body + writer.close(), writer.content_type("application/dicom")


def _incomplete(route: Route, content_type: str, body: bytes) -> str | None:
    """Why a 200 body that ended cleanly is not a whole answer, if it is not."""
    if route.kind == "wado":
        found = re.search(r'boundary="?([^";]+)"?', content_type)
        if found is None:
            return "no multipart boundary"
        if not body.rstrip(b"\r\n").endswith(b"--" + found.group(1).encode() + b"--"):
            return "the multipart body has no closing boundary"
        return None
    try:
        json.loads(body)
    except ValueError:
        return "the JSON body does not parse"
    return None


async def fetch(http: httpx.AsyncClient, route: Route, aet: str) -> Outcome:
    instance = sample_instances()[0]
    path = route.path.format(
        study=instance.study_uid, series=instance.series_uid, sop=instance.sop_instance_uid
    )
    url = f"/aets/{aet}{path}"
    kwargs: dict[str, Any] = {}
    method = "GET"
    if route.kind == "stow":
        method = "POST"
        body, content_type = _stow_body()
        kwargs = {"content": body, "headers": {"Content-Type": content_type}}
    async with http.stream(method, url, **kwargs) as response:
        content_type = response.headers.get("content-type", "")
        broken: str | None = None
        chunks = []
        try:
            async for chunk in response.aiter_bytes():
                chunks.append(chunk)
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            broken = f"{type(exc).__name__} after {sum(map(len, chunks))} bytes: {exc}"
        body = b"".join(chunks)
    if broken is None and response.status_code == 200:
        broken = _incomplete(route, content_type, body)
    return Outcome(response.status_code, content_type, body, broken)


def assert_complete(route: Route, outcome: Outcome, what: str) -> None:
    assert outcome.status == 200, f"{what}: {outcome}"
    assert outcome.broken is None, f"{what}: {outcome}"
    if route.kind == "health":
        assert outcome.json()["status"] == "ok", f"{what}: {outcome}"
    elif route.kind == "qido":
        assert len(outcome.json()) == route.results, f"{what}: {outcome}"
    elif route.kind == "wado":
        parts = outcome.body.count(b"Content-Type: application/dicom")
        assert parts == route.results, f"{what}: {parts} parts; {outcome}"
    else:
        assert len(outcome.json()["00081199"]["Value"]) == route.results, f"{what}: {outcome}"


def assert_answer(route: Route, script: Script, outcome: Outcome) -> None:
    """The status a client must see for *script* on *route*."""
    if script.phase is Phase.RELEASE:  # the operation succeeded: the client gets its answer
        assert_complete(route, outcome, "a fault at release cost the client its answer")
        return
    if route.kind == "stow" and (
        script.phase is Phase.FINAL
        or (script.phase is Phase.FIRST_RESPONSE and script.action is not Action.SILENCE)
    ):
        # The part whose association broke fails (0x0110), the other is stored (the first
        # before the fault, or the second on a new association after it); a PACS that stops
        # answering before anything was stored is a 504 like any other.
        assert outcome.status == 202, f"expected 202, got {outcome}"
        assert outcome.broken is None, f"expected 202, got {outcome}"
        answer = outcome.json()
        assert len(answer["00081199"]["Value"]) == 1, str(outcome)
        failed = answer["00081198"]["Value"]
        assert [item["00081197"]["Value"] for item in failed] == [[PROCESSING_FAILURE]], str(
            outcome
        )
        return
    status = 504 if script.action is Action.SILENCE else 502
    if route.kind == "health":
        status = 503  # the health check reports any failure as "unavailable"
    if outcome.broken is not None:
        assert route.data_before(script), (
            f"the response broke off, but rst had nothing to send before the fault: "
            f"expected {status} with a JSON error; got {outcome}"
        )
        assert outcome.status == 200, str(outcome)
        return
    assert outcome.status == status, f"expected {status}, got {outcome}"
    try:
        error = outcome.json()["error"]
    except (ValueError, KeyError, TypeError):
        raise AssertionError(f"expected a JSON body with an error; got {outcome}") from None
    assert error, str(outcome)


# --- what the gateway holds -------------------------------------------------------------------


def _task_names() -> collections.Counter[str]:
    names: collections.Counter[str] = collections.Counter()

    def walk(task: trio.lowlevel.Task) -> None:
        names[task.name] += 1
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child)

    root = trio.lowlevel.current_root_task()
    assert root is not None
    walk(root)
    return names


@dataclass(frozen=True)
class Snapshot:
    """What the process holds: trio tasks (by name), file descriptors, threads other than
    trio's idle worker threads (which trio keeps for a while on purpose)."""

    tasks: collections.Counter[str]
    fds: int
    threads: collections.Counter[str]
    receiver_associations: int

    @classmethod
    def take(cls, running: Running) -> Snapshot:
        threads = collections.Counter(
            t.name for t in threading.enumerate() if not t.name.startswith("Trio thread")
        )
        return cls(
            _task_names(),
            len(os.listdir("/proc/self/fd")),
            threads,
            int(getattr(running.receiver, "associations", 0)),
        )

    def difference(self, later: Snapshot) -> str:
        parts = []
        tasks = (later.tasks - self.tasks) + collections.Counter(
            {f"(gone) {k}": v for k, v in (self.tasks - later.tasks).items()}
        )
        if tasks:
            parts.append(f"tasks {dict(tasks)}")
        if later.fds > self.fds:  # fewer: a previous case's garbage was collected
            parts.append(f"file descriptors {self.fds} -> {later.fds}")
        threads = later.threads - self.threads
        if threads:
            parts.append(f"threads {dict(threads)}")
        if later.receiver_associations != self.receiver_associations:
            parts.append(
                f"receiver associations {self.receiver_associations} -> "
                f"{later.receiver_associations}"
            )
        return "; ".join(parts)


@dataclass
class Gateway:
    running: Running
    hostile: HostilePacs
    good: HostilePacs
    spool: Path
    http: httpx.AsyncClient
    """A client of the gateway (opened after the baseline, closed before the final count)."""
    baseline: Snapshot = field(init=False)

    async def serves_next(self, route: Route) -> None:
        """The gateway answers the next requests: the list of AEs, *route* against the
        well-behaved PACS and against the hostile one (its fault is spent)."""
        listing = await self.http.get("/aets")
        assert listing.status_code == 200, listing.text
        for pacs in (self.good, self.hostile):
            outcome = await fetch(self.http, route, pacs.aet)
            assert_complete(route, outcome, f"the next {route.name} to {pacs.aet}")

    async def nothing_left(self) -> None:
        """rst holds nothing more than before the request (waiting a little for it to close
        what it closes after the response)."""
        await self.http.aclose()
        for pacs in (self.hostile, self.good):
            await settled(self.running, pacs.aet, within=SETTLE_WITHIN)
            with trio.move_on_after(SETTLE_WITHIN):
                await pacs.wait_idle()
            assert pacs.open_connections == 0, (
                f"rst kept {pacs.open_connections} association(s) with {pacs.aet} open; "
                f"{pacs.events}"
            )
        deadline = time.monotonic() + SETTLE_WITHIN
        while left := self.baseline.difference(Snapshot.take(self.running)):
            if time.monotonic() > deadline:
                raise AssertionError(f"left behind: {left}")
            await trio.sleep(0.02)  # tasks and descriptors offer nothing to wait on
        assert not list(self.spool.iterdir()), f"spool files left: {list(self.spool.iterdir())}"


class Failures:
    """Assertion failures collected across several checks, reported together."""

    def __init__(self) -> None:
        self.found: list[str] = []

    @contextmanager
    def of(self, what: str) -> Iterator[None]:
        try:
            yield
        except AssertionError as exc:
            self.found.append(f"{what}: {exc}")

    def check(self) -> None:
        assert not self.found, "\n".join(self.found)


@asynccontextmanager
async def gateway(
    tmp_path: Path, script: Script | None, retrieve: Literal["move", "get"] = "move"
) -> AsyncIterator[Gateway]:
    """rst with two fake PACS: HOSTILE (running *script*) and GOOD."""
    spool = tmp_path / "spool"
    spool.mkdir()
    hostile, good = HostilePacs("HOSTILE", script), HostilePacs("GOOD")
    with collapse():
        async with trio.open_nursery() as fakes:
            hostile_port = await fakes.start(hostile.serve)
            good_port = await fakes.start(good.serve)
            aes = (
                AeConfig(aet="HOSTILE", port=hostile_port, retrieve=retrieve, **HOSTILE_TIMEOUTS),
                AeConfig(aet="GOOD", port=good_port, retrieve=retrieve, **PATIENT_TIMEOUTS),
            )
            dimse = {"spool_dir": str(spool)}
            async with run_gateway(*aes, dimse=dimse) as running:
                for pacs in (hostile, good):
                    pacs.destinations["RST"] = running.dimse_address
                # no certificate store to load for plain HTTP (it costs 50 ms a client)
                http = httpx.AsyncClient(
                    base_url=running.http_url, timeout=CASE_DEADLINE, verify=False
                )
                env = Gateway(running, hostile, good, spool, http)
                env.baseline = Snapshot.take(running)
                try:
                    yield env
                finally:
                    with trio.CancelScope(shield=True):
                        await http.aclose()
            fakes.cancel_scope.cancel()


# --- the cases --------------------------------------------------------------------------------


@pytest.mark.parametrize(("route", "script"), CASES)
async def test_hostile_pacs(route: Route, script: Script, tmp_path: Path) -> None:
    with trio.fail_after(CASE_DEADLINE):
        async with gateway(tmp_path, script, route.retrieve) as env:
            outcome = await fetch(env.http, route, "HOSTILE")
            assert env.hostile.struck is script.phase, (
                f"the fault never happened ({env.hostile.events}); {outcome}"
            )
            # All three invariants are checked whatever the first gives: which of them broke
            # is what tells a wrong status from a gateway that no longer serves or leaks.
            failures = Failures()
            with failures.of("the answer"):
                assert_answer(route, script, outcome)
            with failures.of("the next requests"):
                await env.serves_next(route)
            with failures.of("what is left"):
                await env.nothing_left()
            failures.check()


@pytest.mark.parametrize("retrieve", ["move", "get"])
async def test_a_retrieve_that_matches_nothing_is_404(
    retrieve: Literal["move", "get"], tmp_path: Path
) -> None:
    """No sub-operations at all: the PACS answers the final status at once (the fake PACS's
    C-MOVE used to open an association to the destination with no presentation context, and
    crashed), rst answers 404, and both serve the next request."""
    route = ROUTES[retrieve][0]
    with trio.fail_after(CASE_DEADLINE):
        async with gateway(tmp_path, None, retrieve) as env:
            response = await env.http.get("/aets/HOSTILE/studies/1.2.826.0.1.3680043.10.999")
            assert response.status_code == 404, response.text
            assert "no instances matching" in response.json()["error"]
            assert env.hostile.events == [], env.hostile.events
            await env.serves_next(route)
            await env.nothing_left()


RECEIVER_PLAN: tuple[tuple[Phase, tuple[Action, ...]], ...] = (
    (Phase.ASSOCIATION, PDU_ACTIONS),
    (Phase.STORE_COMMAND, ALL_ACTIONS),
    (Phase.STORE_DATA, DATA_ACTIONS),
    (Phase.RELEASE, PDU_ACTIONS),
)
RECEIVER_CASES = [
    pytest.param(Script(phase, action), id=f"receiver-{phase}-{action}")
    for phase, actions in RECEIVER_PLAN
    for action in actions
]


@pytest.mark.parametrize("script", RECEIVER_CASES)
async def test_hostile_peer_at_the_receiver(script: Script, tmp_path: Path) -> None:
    with trio.fail_after(CASE_DEADLINE):
        async with gateway(tmp_path, None) as env:
            scu = HostileScu(env.running.dimse_address, script)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(scu.run)
                await scu.faulted.wait()
                if script.action is not Action.SILENCE:
                    with trio.move_on_after(SETTLE_WITHIN):
                        await scu.ended.wait()
                    assert scu.ended.is_set(), (
                        f"rst's receiver kept the connection open after {script.id}"
                    )
                # A normal C-MOVE's sub-operations still get through (also while a silent
                # peer holds its connection).
                listing = await env.http.get("/aets")
                assert listing.status_code == 200, listing.text
                outcome = await fetch(env.http, MOVE_STUDY, "GOOD")
                assert_complete(MOVE_STUDY, outcome, f"a C-MOVE after {script.id}")
                nursery.cancel_scope.cancel()  # a silent peer hangs up now
            await env.nothing_left()
