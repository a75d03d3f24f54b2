"""STOW-RS tells the truth: one part rst cannot send, or the PACS will not take, fails alone
with its reason; the other parts are stored, the response lists each instance's fate, and the
gateway serves the next request.

Every upload here mixes one bad part among good ones (new instances, on a PACS of its own), and
every test checks the PACS itself: the good instances are there, a part rst must not send was
never sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from rst.backends.dimse.client import Connection
from rst.backends.dimse.ul import encode_pdata
from rst.config import AeConfig
from rst.devpacs import DevPacs, Faults, FolderArchive
from rst.server import Running
from tests.support.gateway import run_gateway, settled
from tests.support.sample import ENHANCED_CT_IMAGE_STORAGE, write_multiframe
from tests.support.stow import (
    Instance,
    ct_instances,
    encapsulated_pixel_data,
    fates,
    huge_pixel_data,
    moved_element,
    multipart,
    repeated_element,
    repeated_private_elements,
    truncated_pixel_data,
    with_sop_instance,
    with_transfer_syntax,
    without_sop_class,
    wrong_vr,
)

STORE_TIMEOUT = 5.0
"""Short, so that a stalled C-STORE would fail the test well before any default timeout."""
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


@pytest.fixture
def pacs(tmp_path: Path, faults: Faults) -> Iterator[DevPacs]:
    """A dev PACS with an empty archive of its own (stored instances stay in this test)."""
    server = DevPacs(FolderArchive(tmp_path / "archive"), aet="FAULTY", port=0, faults=faults)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def gateway(pacs: DevPacs) -> AsyncIterator[Running]:
    config = AeConfig(aet="FAULTY", host="127.0.0.1", port=pacs.port, store_timeout=STORE_TIMEOUT)
    async with run_gateway(config) as running:
        yield running


def client(running: Running) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"{running.http_url}/aets/FAULTY", timeout=30)


def on_pacs(pacs: DevPacs) -> set[str]:
    return {inst.sop_instance_uid for inst in pacs.archive.instances()}


async def next_request_is_served(running: Running, pacs: DevPacs, folder: Path) -> None:
    """A good upload after the bad one is stored, and rst holds no association afterwards."""
    (fresh,) = ct_instances(folder, 1, seed=999)
    headers, body = multipart(fresh.data)
    async with client(running) as http:
        response = await http.post("/studies", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert fresh.uid in on_pacs(pacs)
    await settled(running)


@dataclass(frozen=True)
class Case:
    spoil: Callable[[bytes], bytes]
    reason: int
    named: bool = True
    """Whether the failed item names the instance (its SOP Instance UID is readable and valid)."""
    sent: bool = False
    """Whether the part reaches the PACS (whose answer fails it)."""
    fault: Callable[[Faults, str], None] | None = None


def _status(faults: Faults, uid: str) -> None:
    faults.store_status_for = {uid: 0xA700}


def _abort(faults: Faults, uid: str) -> None:
    faults.abort_on_store = frozenset({uid})


CASES = {
    "uid-non-ascii": Case(with_sop_instance("1.2.3.\u00e9".encode()), 0xC000, named=False),
    "uid-backslash": Case(with_sop_instance(b"1.2.3\\4.5"), 0xC000, named=False),
    "uid-too-long": Case(with_sop_instance(b"1." + b"2" * 70), 0xC000, named=False),
    "uid-letters": Case(with_sop_instance(b"1.2.abc"), 0xC000, named=False),
    "truncated-pixel-data": Case(truncated_pixel_data, 0xC000),
    "huge-element": Case(huge_pixel_data, 0xC000),
    "no-sop-class": Case(without_sop_class, 0xC000),
    "wrong-vr": Case(wrong_vr, 0xC000),
    "not-dicom": Case(lambda data: b"this is not DICOM at all " * 40, 0xC000, named=False),
    # whole data sets that stall a PACS (issue 8): refused before any association
    "native-pixels-labelled-jpeg": Case(with_transfer_syntax(JPEG_BASELINE), 0xC000),
    "fragments-labelled-native": Case(encapsulated_pixel_data, 0xC000),
    "fragment-of-undefined-length": Case(
        lambda data: with_transfer_syntax(JPEG_BASELINE)(
            encapsulated_pixel_data(data, fragment_length=0xFFFFFFFF)
        ),
        0xC000,
    ),
    "tags-out-of-order": Case(moved_element((0x0008, 0x0060)), 0xC000),
    "tag-repeated": Case(repeated_element((0x0010, 0x0010)), 0xC000),
    "20000-repeated-elements": Case(repeated_private_elements, 0xC000),
    "pacs-refuses-it": Case(lambda data: data, 0xA700, sent=True, fault=_status),
    "pacs-aborts-on-it": Case(lambda data: data, 0x0110, sent=True, fault=_abort),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_one_bad_part_fails_alone(
    case: Case, pacs: DevPacs, faults: Faults, gateway: Running, tmp_path: Path
) -> None:
    good = ct_instances(tmp_path, 4, seed=1)
    bad = good.pop(1)
    if case.fault is not None:
        case.fault(faults, bad.uid)
    parts = [good[0].data, case.spoil(bad.data), good[1].data, good[2].data]
    headers, body = multipart(*parts)
    started = trio.current_time()
    async with client(gateway) as http:
        response = await http.post("/studies", content=body, headers=headers)
    assert trio.current_time() - started < STORE_TIMEOUT  # nothing waited for a timeout
    result = fates(response)
    assert result.status == 202, response.text
    assert result.referenced == [g.uid for g in good]
    assert result.failed == [(bad.uid if case.named else None, case.reason)]
    assert result.other == []
    assert on_pacs(pacs) == {g.uid for g in good}
    assert pacs.events.count("store") == len(good) + case.sent
    await next_request_is_served(gateway, pacs, tmp_path)


async def test_only_bad_parts_is_409(pacs: DevPacs, gateway: Running, tmp_path: Path) -> None:
    first, second = ct_instances(tmp_path, 2, seed=2)
    headers, body = multipart(
        with_sop_instance(b"1.2.\\3")(first.data), truncated_pixel_data(second.data)
    )
    async with client(gateway) as http:
        response = await http.post("/studies", content=body, headers=headers)
    result = fates(response)
    assert result.status == 409, response.text
    assert result.referenced == []
    assert result.failed == [(None, 0xC000), (second.uid, 0xC000)]
    assert on_pacs(pacs) == set()
    assert "store" not in pacs.events
    await next_request_is_served(gateway, pacs, tmp_path)


async def test_unsupported_sop_class_fails_alone_with_0122(
    pacs: DevPacs, faults: Faults, gateway: Running, tmp_path: Path
) -> None:
    faults.refuse_sop_classes = frozenset({ENHANCED_CT_IMAGE_STORAGE})
    multiframe = write_multiframe(tmp_path / "mf", seed=3)
    enhanced = Instance(multiframe.sop_uids[0], multiframe.paths[0].read_bytes())
    good = ct_instances(tmp_path, 2, seed=3)
    # The refused class first: the first association offers it alone (with Verification).
    headers, body = multipart(enhanced.data, good[0].data, good[1].data)
    alone_headers, alone = multipart(enhanced.data)
    async with client(gateway) as http:
        mixed = await http.post("/studies", content=body, headers=headers)
        only = await http.post("/studies", content=alone, headers=alone_headers)
    result = fates(mixed)
    assert result.status == 202, mixed.text
    assert result.referenced == [g.uid for g in good]
    assert result.failed == [(enhanced.uid, 0x0122)]
    refused = fates(only)
    assert refused.status == 409, only.text
    assert refused.failed == [(enhanced.uid, 0x0122)]
    assert on_pacs(pacs) == {g.uid for g in good}
    await next_request_is_served(gateway, pacs, tmp_path)


async def test_body_broken_after_stored_parts_still_lists_them(
    pacs: DevPacs, gateway: Running, tmp_path: Path
) -> None:
    good = ct_instances(tmp_path, 3, seed=4)
    headers, body = multipart(*(g.data for g in good))
    cut = body[: -len(good[2].data) // 2]  # in the third part: no closing boundary
    async with client(gateway) as http:
        response = await http.post("/studies", content=cut, headers=headers)
    result = fates(response)
    assert result.status == 202, response.text
    assert result.referenced == [good[0].uid, good[1].uid]
    assert result.failed == []
    assert result.other == [0xC000]
    assert on_pacs(pacs) == {good[0].uid, good[1].uid}
    await next_request_is_served(gateway, pacs, tmp_path)


async def test_size_limit_after_stored_parts_still_lists_them(
    pacs: DevPacs, tmp_path: Path
) -> None:
    good = ct_instances(tmp_path, 3, seed=5)
    headers, body = multipart(*(g.data for g in good))
    limit = len(body) - len(good[2].data) // 2  # reached in the third part

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: the limit holds streaming
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    config = AeConfig(aet="FAULTY", host="127.0.0.1", port=pacs.port, store_timeout=STORE_TIMEOUT)
    async with run_gateway(config, http={"max_stow_bytes": limit}) as running:
        async with client(running) as http:
            response = await http.post("/studies", content=chunked(), headers=headers)
        result = fates(response)
        assert result.status == 202, response.text
        assert result.referenced == [good[0].uid, good[1].uid]
        assert result.other == [0xA700]
        assert on_pacs(pacs) == {good[0].uid, good[1].uid}
        await next_request_is_served(running, pacs, tmp_path)


async def test_data_set_half_sent_aborts_the_association(
    monkeypatch: pytest.MonkeyPatch,
    pacs: DevPacs,
    gateway: Running,
    tmp_path: Path,
) -> None:
    """An error after part of a data set went out: the PACS is not left waiting for the rest
    (the association is aborted), that part fails, the next one associates anew."""
    first, victim, last = ct_instances(tmp_path, 3, seed=6)
    send = Connection.send

    async def half_send(
        self: Connection, context_id: int, command: bytes, dataset: Any = None
    ) -> None:
        if dataset is None or victim.uid.encode() not in command:
            return await send(self, context_id, command, dataset)
        await self.stream.send_all(encode_pdata(context_id, True, True, command))
        await self.stream.send_all(encode_pdata(context_id, False, False, dataset[:1000]))
        raise RuntimeError("a bug, half-way through a data set")

    monkeypatch.setattr(Connection, "send", half_send)
    headers, body = multipart(first.data, victim.data, last.data)
    started = trio.current_time()
    async with client(gateway) as http:
        response = await http.post("/studies", content=body, headers=headers)
    assert trio.current_time() - started < STORE_TIMEOUT
    result = fates(response)
    assert result.status == 202, response.text
    assert result.referenced == [first.uid, last.uid]
    assert result.failed == [(victim.uid, 0x0110)]
    assert await trio.to_thread.run_sync(pacs.wait_for, "abort", 5.0)
    assert on_pacs(pacs) == {first.uid, last.uid}
    await next_request_is_served(gateway, pacs, tmp_path)


async def test_pacs_that_stops_answering_after_stored_parts(
    pacs: DevPacs, faults: Faults, tmp_path: Path
) -> None:
    """No C-STORE response within store_timeout: the PACS is taken as stuck. Once something was
    stored, that instance and the later ones fail (0x0110) unsent, and the stored are listed;
    before that, the request is a 504."""
    first, stuck, later = ct_instances(tmp_path, 3, seed=7)
    faults.hang_on_store = frozenset({stuck.uid})
    config = AeConfig(aet="FAULTY", host="127.0.0.1", port=pacs.port, store_timeout=1.0)
    async with run_gateway(config) as running, client(running) as http:
        headers, body = multipart(first.data, stuck.data, later.data)
        started = trio.current_time()
        response = await http.post("/studies", content=body, headers=headers)
        assert trio.current_time() - started < 1.0 + 2.0
        result = fates(response)
        assert result.status == 202, response.text
        assert result.referenced == [first.uid]
        assert result.failed == [(stuck.uid, 0x0110), (later.uid, 0x0110)]
        assert on_pacs(pacs) == {first.uid}
        headers, body = multipart(stuck.data, later.data)
        timeout = await http.post("/studies", content=body, headers=headers)
        assert timeout.status_code == 504
        assert "did not answer a C-STORE within 1 s" in timeout.json()["error"]
        faults.hang_on_store = frozenset()
        await next_request_is_served(running, pacs, tmp_path)
