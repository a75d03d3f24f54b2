"""The health monitor: background checks, readiness by age, never a check per probe."""

from __future__ import annotations

from dataclasses import dataclass

import trio

from rst.config import HealthConfig
from rst.errors import PacsUnreachable
from rst.health import HealthMonitor
from rst.metrics import Metrics
from tests.unit.test_metrics import sample

CONFIG = HealthConfig(interval=10, timeout=5, max_age=30)


@dataclass
class Archive:
    """A backend whose C-ECHO answers, fails or hangs, as the test says."""

    name: str
    state: str = "up"  # "up", "down", "silent"
    echoes: int = 0
    busy: bool = False

    async def echo(self) -> None:
        self.echoes += 1
        if self.state == "down":
            raise PacsUnreachable(f"cannot connect to the PACS {self.name}")
        if self.state == "silent":
            await trio.sleep_forever()

    def saturated(self) -> bool:
        return self.busy


def monitor(*archives: Archive, metrics: Metrics | None = None) -> HealthMonitor:
    health = HealthMonitor(
        {a.name: a for a in archives},  # type: ignore[misc]
        CONFIG,
        metrics=metrics,
    )
    health.receiver_listening("127.0.0.1", 11112)
    return health


async def test_ready_only_once_every_archive_answered_and_the_receiver_listens() -> None:
    up, down = Archive("UP"), Archive("DOWN", state="down")
    health = HealthMonitor({"UP": up, "DOWN": down}, CONFIG)  # type: ignore[dict-item]
    ready, body = health.readiness()
    assert not ready
    assert body["receiver"] == {"listening": False}
    assert body["aets"]["UP"]["reason"] == "not checked yet"

    health.receiver_listening("127.0.0.1", 11112)
    await health.check_all()
    ready, body = health.readiness()
    assert not ready
    assert body["failing"] == ["DOWN"]
    assert body["aets"]["UP"]["ready"] is True
    assert "cannot connect to the PACS DOWN" in body["aets"]["DOWN"]["reason"]

    down.state = "up"
    await health.check_all()
    ready, body = health.readiness()
    assert ready, body
    assert body["status"] == "ready"
    assert body["receiver"] == {"listening": True, "address": "127.0.0.1:11112"}


async def test_an_archive_turns_unready_when_its_last_answer_is_older_than_max_age(
    autojump_clock: trio.abc.Clock,
) -> None:
    pacs = Archive("PACS")
    metrics = Metrics()
    health = monitor(pacs, metrics=metrics)
    async with trio.open_nursery() as nursery:
        await nursery.start(health.run)
        await trio.sleep(1)
        assert health.readiness()[0]
        assert sample(metrics, "rst_archive_up", aet="PACS") == 1

        pacs.state = "silent"  # every check now times out
        await trio.sleep(25)  # answered 25 s ago: still within max_age
        ready, body = health.readiness()
        assert ready, body
        assert "no answer within 5 s" in body["aets"]["PACS"]["last_check"]
        assert sample(metrics, "rst_archive_up", aet="PACS") == 0

        await trio.sleep(10)
        ready, body = health.readiness()
        assert not ready
        assert body["aets"]["PACS"]["reason"].startswith("last answered 3")
        nursery.cancel_scope.cancel()


async def test_probes_never_check_the_archives(autojump_clock: trio.abc.Clock) -> None:
    pacs = Archive("PACS")
    health = monitor(pacs)
    async with trio.open_nursery() as nursery:
        await nursery.start(health.run)
        for _ in range(150):
            health.readiness()
            await trio.sleep(0.1)  # 150 probes in 15 s
        assert pacs.echoes == 2  # at 0 s and at 10 s
        nursery.cancel_scope.cancel()


async def test_a_pacs_whose_every_association_is_open_is_not_asked() -> None:
    pacs = Archive("PACS", state="silent", busy=True)
    health = monitor(pacs)
    await health.check_all()
    assert pacs.echoes == 0
    assert health.readiness()[0]


async def test_without_archive_checks_readiness_is_the_receiver_alone() -> None:
    pacs = Archive("PACS", state="down")
    health = HealthMonitor(
        {"PACS": pacs},  # type: ignore[dict-item]
        HealthConfig(check_archives=False),
    )
    await health.run()  # returns at once: nothing to check
    assert not health.readiness()[0]
    health.receiver_listening("127.0.0.1", 11112)
    ready, body = health.readiness()
    assert ready
    assert body["aets"]["PACS"]["last_check"].startswith("not checked")
    assert pacs.echoes == 0
