"""Who may call the receiver: the configured archives' AE titles, from their addresses.

Raw associations on loopback: a refused one must get exactly the A-ASSOCIATE-RJ of PS3.8
Table 9-21 (rejected-permanent, DICOM UL service-user, calling-AE-title-not-recognized), an
allowed one an A-ASSOCIATE-AC. Addresses are told apart on the loopback network: the test
binds its end to 127.0.0.2 (Linux routes all of 127.0.0.0/8 to lo).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from rst.backends.dimse.callers import Callers
from rst.backends.dimse.mediator import Mediator
from rst.backends.dimse.receiver import StoreReceiver
from rst.backends.dimse.ul import (
    AssociateAccept,
    PduReader,
    PresentationContextRQ,
    encode_associate_rq,
)
from rst.config import AeConfig, DimseConfig
from rst.dicom.uids import VERIFICATION
from tests.support.receiver_counts import refused

REJECT_CALLER = b"\x03\x00\x00\x00\x00\x04\x00\x01\x01\x03"
"""A-ASSOCIATE-RJ PDU: type 3, length 4; reserved, result 1 rejected-permanent, source 1 DICOM
UL service-user, reason 3 calling-AE-title-not-recognized (PS3.8 §9.3.4, Table 9-21)."""


def pacs(**kw: object) -> AeConfig:
    return AeConfig.model_validate({"aet": "PACS", "port": 104, **kw})


@asynccontextmanager
async def running(*aes: AeConfig, accept_unknown: bool = False) -> AsyncIterator[StoreReceiver]:
    config = DimseConfig(host="127.0.0.1", port=0, handshake_timeout=5.0)
    callers = Callers.of(aes, accept_unknown=accept_unknown)
    receiver = StoreReceiver(config, Mediator(), callers=callers)
    async with trio.open_nursery() as nursery:
        await nursery.start(receiver.run)
        yield receiver
        nursery.cancel_scope.cancel()


async def associate(
    receiver: StoreReceiver, calling_aet: str, *, source: str = "127.0.0.1"
) -> object:
    """Send an A-ASSOCIATE-RQ from *source*; the PDU answered (or the raw bytes of an
    A-ASSOCIATE-RJ, to be compared byte for byte)."""
    assert receiver.address is not None
    stream = await trio.open_tcp_stream(*receiver.address, local_address=source)
    async with stream:
        await stream.send_all(
            encode_associate_rq(
                called_aet="RST",
                calling_aet=calling_aet,
                contexts=[PresentationContextRQ(1, VERIFICATION, ("1.2.840.10008.1.2",))],
                max_pdu_length=16384,
                implementation_class_uid="1.2.3.4",
            )
        )
        with trio.fail_after(5):
            first = await stream.receive_some(6)
            if first[:1] == b"\x03":
                rest = b""
                while len(first) + len(rest) < 10:
                    chunk = await stream.receive_some(10 - len(first) - len(rest))
                    assert chunk, "closed in the middle of the A-ASSOCIATE-RJ"
                    rest += chunk
                return first + rest
            reader = PduReader(max_pdu_length=1 << 20)
            reader.feed(first)
            while (pdu := reader.next_pdu()) is None:
                reader.feed(await stream.receive_some())
            return pdu


async def test_unknown_calling_ae_title_is_rejected(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "rst.backends.dimse.receiver")
    async with running(pacs()) as receiver:
        assert await associate(receiver, "INTRUDER") == REJECT_CALLER
        assert refused(receiver, "unknown_caller") == 1
        assert receiver.associations == 0 or await _ends(receiver)
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "'INTRUDER'" in record.getMessage()
    assert "127.0.0.1:" in record.getMessage()


async def test_known_ae_title_is_accepted() -> None:
    async with running(pacs(), pacs(aet="OTHER", store_calling_aets=["OTHER_SCU"])) as receiver:
        assert isinstance(await associate(receiver, "PACS"), AssociateAccept)
        assert isinstance(await associate(receiver, "OTHER_SCU"), AssociateAccept)
        # store_calling_aets replaces the default: the archive's own aet is not one of them
        assert await associate(receiver, "OTHER") == REJECT_CALLER
        assert refused(receiver, "unknown_caller") == 1


async def test_known_ae_title_from_an_address_not_allowed_is_rejected(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "rst.backends.dimse.receiver")
    async with running(pacs(store_from=["127.0.0.2"])) as receiver:
        assert await associate(receiver, "PACS", source="127.0.0.1") == REJECT_CALLER
        assert isinstance(await associate(receiver, "PACS", source="127.0.0.2"), AssociateAccept)
        assert refused(receiver, "unknown_caller") == 1
    assert "store_from" in caplog.text


async def test_networks_in_cidr_form() -> None:
    async with running(pacs(store_from=["10.0.0.5", "127.0.0.0/30"])) as receiver:
        assert isinstance(await associate(receiver, "PACS", source="127.0.0.2"), AssociateAccept)
        assert await associate(receiver, "PACS", source="127.0.0.4") == REJECT_CALLER


async def test_accept_unknown_callers_still_holds_known_titles_to_their_addresses() -> None:
    async with running(pacs(store_from=["127.0.0.2"]), accept_unknown=True) as receiver:
        assert isinstance(await associate(receiver, "ANYONE"), AssociateAccept)
        assert await associate(receiver, "PACS", source="127.0.0.1") == REJECT_CALLER


async def test_refusals_are_logged_a_bounded_number_of_times(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "rst.backends.dimse.receiver")
    async with running(pacs()) as receiver:
        for _ in range(15):
            assert await associate(receiver, "INTRUDER") == REJECT_CALLER
        assert refused(receiver, "unknown_caller") == 15
        assert isinstance(await associate(receiver, "PACS"), AssociateAccept)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 10


def test_callers_policy() -> None:
    callers = Callers.of(
        [pacs(store_from=["10.0.1.0/24"]), pacs(aet="B", store_from=["fd00::/8"])],
        accept_unknown=False,
    )
    assert callers.refusal("PACS", "10.0.1.77") is None
    assert callers.refusal("PACS", "::ffff:10.0.1.77") is None  # a dual-stack listener
    assert callers.refusal("PACS", "10.0.2.1") is not None
    assert callers.refusal("PACS", "") is not None  # the peer has gone: no address to allow
    assert callers.refusal("B", "fd00::1%lo") is None
    assert callers.refusal("NOBODY", "10.0.1.77") is not None
    # a title two archives share may call from where either may
    shared = Callers.of(
        [pacs(store_from=["10.0.0.1"]), pacs(aet="B", store_calling_aets=["PACS"])],
        accept_unknown=False,
    )
    assert shared.refusal("PACS", "192.168.1.1") is None


async def _ends(receiver: StoreReceiver) -> bool:
    with trio.fail_after(5):
        while receiver.associations:  # noqa: ASYNC110 - the counter has no event
            await trio.sleep(0.01)
    return True
