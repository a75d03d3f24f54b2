"""When metadata is retrieved without bulk data, what is remembered of a PACS that refused it,
and the way round the cache (rst.backends.dimse.without_bulk_data); no network."""

from __future__ import annotations

import time
from typing import Any

import pydantic
import pytest

from rst.backends.dimse.without_bulk_data import (
    REMEMBER_FOR,
    AroundCache,
    Memory,
    around_cache,
    wanted,
)
from rst.config import AeConfig, Config
from rst.services.protocols import METADATA_ONLY, Backend, RetrieveKeys
from tests.support.scripted_backend import ScriptedBackend


@pytest.mark.parametrize(
    ("metadata", "cache", "expected"),
    [
        ("auto", False, True),
        ("auto", True, False),
        ("full", False, False),
        ("full", True, False),
        ("without-bulk-data", False, True),
        ("without-bulk-data", True, True),
    ],
)
def test_wanted_where_the_cache_is_off_or_when_chosen(
    metadata: str, cache: bool, expected: bool
) -> None:
    ae = AeConfig.model_validate({"aet": "PACS", "metadata": metadata, "cache": cache})
    assert wanted(ae) is expected


def test_the_key_defaults_to_auto_and_refuses_other_values() -> None:
    assert AeConfig(aet="PACS").metadata == "auto"
    with pytest.raises(pydantic.ValidationError):
        AeConfig.model_validate({"aet": "PACS", "metadata": "partial"})


def test_a_refusal_is_remembered_for_a_while(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    memory = Memory()
    assert not memory.remembered()
    memory.remember()
    now[0] += REMEMBER_FOR - 1
    assert memory.remembered()
    now[0] += 1
    assert not memory.remembered()


def config(**ae: Any) -> Config:
    return Config(aets=(AeConfig(aet="A", **ae), AeConfig(aet="B", cache=False)))


def test_only_metadata_of_an_ae_with_the_cache_on_and_without_bulk_data_goes_round() -> None:
    uncached: dict[str, Backend] = {"A": ScriptedBackend(name="A"), "B": ScriptedBackend(name="B")}
    cached: dict[str, Backend] = {"A": ScriptedBackend(name="A"), "B": uncached["B"]}
    assert around_cache(config(), uncached, cached) == cached  # auto, cache on: full
    served = around_cache(config(metadata="without-bulk-data"), uncached, cached)
    assert isinstance(served["A"], AroundCache)
    assert served["B"] is uncached["B"]


async def test_round_the_cache_for_metadata_only() -> None:
    cached, uncached = ScriptedBackend(name="A"), ScriptedBackend(name="A")
    around = AroundCache(cached, uncached)
    keys = RetrieveKeys("1.2.3")
    async with around.retrieve(keys, METADATA_ONLY) as instances:
        assert [i async for i in instances] == []
    async with around.retrieve(keys, None) as instances:
        assert [i async for i in instances] == []
    assert uncached.retrieves == [(keys, METADATA_ONLY)]
    assert cached.retrieves == [(keys, None)]
