"""Waiting until rst is idle, by what it says about itself on ``GET /metrics``.

Idle: no HTTP request in progress but the scrape itself, and no DIMSE association open
(``rst_http_requests_in_progress``, ``rst_dimse_associations_open``, summed over workers).
"""

from __future__ import annotations

import time

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from .common import BenchmarkError

POLL = 0.1  # between two scrapes while waiting
IDLE_WITHIN = 60.0  # rst must be idle this long after its last client left


def gauges(text: str) -> dict[str, float]:
    """The two gauges that say whether rst is busy, summed over their labels."""
    wanted = {"rst_http_requests_in_progress": 0.0, "rst_dimse_associations_open": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                wanted[sample.name] += sample.value
    return wanted


def is_idle(values: dict[str, float]) -> bool:
    # the scrape that reads the gauge is a request in progress too
    return (
        values["rst_http_requests_in_progress"] <= 1 and values["rst_dimse_associations_open"] == 0
    )


async def scrape(client: httpx.AsyncClient, url: str) -> dict[str, float]:
    response = await client.get(f"{url}/metrics")
    if response.status_code != 200:
        raise BenchmarkError(f"GET {url}/metrics: HTTP {response.status_code}")
    return gauges(response.text)


async def wait_idle(url: str, within: float = IDLE_WITHIN) -> tuple[float, dict[str, float]]:
    """Poll rst's ``/metrics`` until it is idle; how long that took and the last gauges.
    Raises BenchmarkError if it is not idle *within* seconds."""
    started = time.monotonic()
    async with httpx.AsyncClient(trust_env=False, timeout=10.0) as client:
        while True:
            values = await scrape(client, url)
            waited = time.monotonic() - started
            if is_idle(values):
                return waited, values
            if waited > within:
                raise BenchmarkError(f"rst at {url} not idle after {within:.0f} s: {values}")
            await trio.sleep(POLL)  # bounded polling: the gauges offer nothing to wait on
