"""Every response carries its request id, and so does every log line written while serving it."""

from __future__ import annotations

import logging

import httpx
import pytest

from rst.logs import RequestIdFilter, new_request_id
from tests.gateway.test_containment import serving
from tests.support.scripted_backend import ScriptedBackend, part10


def test_sane_ids_are_kept_others_replaced() -> None:
    assert new_request_id("abc-123") == "abc-123"
    for offered in (None, "", "a" * 65, "x\r\nInjected: 1", "é"):
        fresh = new_request_id(offered)
        assert fresh != offered
        assert len(fresh) == 16


async def test_the_id_is_echoed_and_on_the_log_lines_of_a_broken_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.handler.addFilter(RequestIdFilter())
    caplog.set_level(logging.INFO)
    backend = ScriptedBackend(instances=[part10("1.2.3.1"), part10("1.2.3.2")])
    backend.fail_retrieve_after = 1
    async with serving({"X": backend}) as client:
        listed = await client.get("/aets")
        assert len(listed.headers["X-Request-ID"]) == 16
        mine = await client.get("/aets", headers={"X-Request-ID": "viewer-42"})
        assert mine.headers["X-Request-ID"] == "viewer-42"
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get("/aets/X/studies/1.2.3", headers={"X-Request-ID": "broken-7"})
    broken = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert broken, "the broken-off response was not logged"
    assert all(getattr(r, "request_id", None) == "broken-7" for r in broken)
