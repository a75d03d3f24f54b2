""":func:`rst.backends.dimse.wire.receive_event` with a :class:`~rst.backends.dimse.wire.ReadBudget`
over a socket pair: bytes already waiting are read at once, at most ``QUICK_READS`` times in a
row; cancellation is honoured; the regular read takes over when nothing is waiting."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from rst.backends.dimse import wire
from rst.backends.dimse.ul import PresentationContextRQ
from rst.backends.dimse.ul.association import (
    Association,
    AssociationRequested,
    ConnectionClosed,
    Role,
)

VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT = "1.2.840.10008.1.2"


def _associate_rq() -> bytes:
    return Association(Role.REQUESTOR, max_pdu_length=16384).send_associate_rq(
        called_aet="RST",
        calling_aet="PACS",
        contexts=[PresentationContextRQ(1, VERIFICATION, (IMPLICIT,))],
        implementation_class_uid="1.2.3",
    )


def _pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = trio.socket.socketpair()
    return trio.SocketStream(a), trio.SocketStream(b)


async def test_waiting_bytes_are_read_from_the_budget() -> None:
    peer, ours = _pair()
    async with peer, ours:
        await peer.send_all(_associate_rq())
        acceptor = Association(Role.ACCEPTOR, max_pdu_length=16384)
        budget = wire.ReadBudget()
        event = await wire.receive_event(ours, acceptor, budget=budget)
        assert isinstance(event, AssociationRequested)
        assert event.request.calling_aet == "PACS"
        assert budget.left == wire.QUICK_READS - 1


async def test_a_spent_budget_takes_the_regular_read_and_is_refilled() -> None:
    peer, ours = _pair()
    async with peer, ours:
        await peer.send_all(_associate_rq())
        acceptor = Association(Role.ACCEPTOR, max_pdu_length=16384)
        budget = wire.ReadBudget()
        budget.left = 0
        event = await wire.receive_event(ours, acceptor, budget=budget)
        assert isinstance(event, AssociationRequested)
        assert budget.left == wire.QUICK_READS


async def test_nothing_waiting_waits_on_the_regular_read() -> None:
    peer, ours = _pair()
    async with peer, ours:
        acceptor = Association(Role.ACCEPTOR, max_pdu_length=16384)
        budget = wire.ReadBudget()
        got: list[object] = []

        async def receive() -> None:
            got.append(await wire.receive_event(ours, acceptor, budget=budget))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            await trio.testing.wait_all_tasks_blocked()
            assert not got  # parked on the socket, not spinning on quick reads
            await peer.send_all(_associate_rq())
        assert isinstance(got[0], AssociationRequested)
        assert budget.left == wire.QUICK_READS  # the bytes came through the regular read


async def test_cancellation_is_honoured_even_with_bytes_waiting() -> None:
    peer, ours = _pair()
    async with peer, ours:
        await peer.send_all(_associate_rq())
        acceptor = Association(Role.ACCEPTOR, max_pdu_length=16384)
        budget = wire.ReadBudget()
        with trio.CancelScope() as scope:
            scope.cancel()
            await wire.receive_event(ours, acceptor, budget=budget)
        assert scope.cancelled_caught
        assert budget.left == wire.QUICK_READS  # nothing was read
        event = await wire.receive_event(ours, acceptor, budget=budget)
        assert isinstance(event, AssociationRequested)  # the bytes are still there


async def test_the_peer_closing_is_seen_through_the_budget() -> None:
    peer, ours = _pair()
    async with ours:
        await peer.aclose()
        acceptor = Association(Role.ACCEPTOR, max_pdu_length=16384)
        budget = wire.ReadBudget()
        event = await wire.receive_event(ours, acceptor, budget=budget)
        assert isinstance(event, ConnectionClosed)
        assert budget.left == wire.QUICK_READS - 1


async def test_a_read_timeout_still_raises_too_slow() -> None:
    peer, ours = _pair()
    async with peer, ours:
        acceptor = Association(Role.ACCEPTOR, max_pdu_length=16384)
        with pytest.raises(trio.TooSlowError):
            await wire.receive_event(ours, acceptor, read_timeout=0.01, budget=wire.ReadBudget())
