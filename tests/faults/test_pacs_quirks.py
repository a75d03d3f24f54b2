"""Association cases real PACS produce that no real PACS here can be made to do on demand,
played by the scripted PACS of :mod:`tests.support.hostile_pacs`:

- a release collision: the PACS sends its own A-RELEASE-RQ while rst releases (PS3.8 Table
  9-10: the requestor, rst, answers A-RELEASE-RP and then waits for the PACS's);
- pending C-FIND responses without an identifier (progress reports), which carry no match;
- an association request answered with garbage or with HTTP: a 502 that says the peer did not
  speak DICOM and asks whether the port is the PACS's DICOM port.

(Extreme PDU lengths, refused contexts and roles are tested against real peers in
``tests/interop/test_negotiation.py``.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import trio

from rst.config import AeConfig
from rst.server import Running
from tests.support.gateway import run_gateway, settled
from tests.support.hostile_archive import sample_instances
from tests.support.hostile_faults import Action, Phase, Script
from tests.support.hostile_pacs import HostilePacs

AET = "QUIRKY"
CASE_DEADLINE = 30.0


@asynccontextmanager
async def gateway_to(pacs: HostilePacs) -> AsyncIterator[Running]:
    with trio.fail_after(CASE_DEADLINE):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(pacs.serve)
            config = AeConfig(aet=AET, host="127.0.0.1", port=port, connect_timeout=5.0)
            async with run_gateway(config) as running:
                yield running
                await settled(running, AET, within=5.0)
                await pacs.wait_idle()
            nursery.cancel_scope.cancel()


async def test_a_release_collision_is_answered_not_aborted() -> None:
    pacs = HostilePacs(AET, collide_on_release=True)
    instance = sample_instances()[0]
    async with gateway_to(pacs) as running, httpx.AsyncClient(base_url=running.http_url) as http:
        health = await http.get(f"/aets/{AET}")
        found = await http.get(f"/aets/{AET}/studies/{instance.study_uid}/series")

    assert health.status_code == 200, health.text
    assert found.status_code == 200, found.text
    assert pacs.events.count("collision: A-RELEASE-RP") == 2, pacs.events
    assert not [event for event in pacs.events if "instead of A-RELEASE-RP" in event]


async def test_pending_find_responses_without_identifier_are_skipped() -> None:
    pacs = HostilePacs(AET, empty_pendings=3)
    instances = sample_instances()
    first = instances[0]
    path = f"/aets/{AET}/studies/{first.study_uid}/series/{first.series_uid}/instances"
    async with gateway_to(pacs) as running, httpx.AsyncClient(base_url=running.http_url) as http:
        found = await http.get(path)

    assert found.status_code == 200, found.text
    assert [row["00080018"]["Value"][0] for row in found.json()] == [
        instance.sop_instance_uid for instance in instances
    ]


@pytest.mark.parametrize("action", [Action.GARBAGE, Action.HTTP])
async def test_an_association_answered_with_garbage_is_502_saying_so(action: Action) -> None:
    pacs = HostilePacs(AET, script=Script(Phase.ASSOCIATION, action))
    async with gateway_to(pacs) as running, httpx.AsyncClient(base_url=running.http_url) as http:
        found = await http.get(f"/aets/{AET}/studies")

    assert found.status_code == 502, found.text
    assert found.headers["Content-Type"].startswith("application/json")
    error = found.json()["error"]
    assert f"the PACS {AET} did not answer the association request in DICOM" in error
    assert "is this its DICOM port?" in error
