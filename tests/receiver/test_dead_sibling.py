"""A worker's sibling dies: associations passed to it wait for its replacement, or fail alone.

As in ``test_handoff.py``, the receivers of two workers run in this process on the real ring;
here worker 1 is down (its receiver not running) while the supervisor — this test — holds both
ends of every ring socket, as ``rst.workers`` does.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
import trio
import trio.testing
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from rst.backends.dimse import handoff
from rst.backends.dimse.handoff import Handover, WorkerRing
from rst.backends.dimse.mediator import Mediator
from rst.backends.dimse.receiver import StoreReceiver
from rst.config import DimseConfig
from rst.dicom.statuses import NOT_AUTHORIZED
from tests.receiver.test_handoff import collect, ct, listening_socket, pixels, subscription
from tests.support.receiver_counts import stores


@dataclass
class Ring:
    """Worker 0 running, worker 1's slot empty until :meth:`replace` fills it."""

    receivers: list[StoreReceiver]
    port: int  # worker 0's, where the "PACS" connects
    inbox_1: socket.socket  # worker 1's inbox, held by the "supervisor"
    outbox_1: socket.socket  # the siblings' end to it
    replace: Callable[[], None]


@pytest.fixture
async def ring() -> AsyncIterator[Ring]:
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(2)]
    # each worker its own descriptors, as a process inherits them
    inboxes = [pairs[k][0].dup() for k in range(2)]
    outboxes = [pairs[1 - k][1].dup() for k in range(2)]
    config = DimseConfig(host="127.0.0.1", port=0, stall_timeout=5.0)
    listeners = [listening_socket() for _ in range(2)]
    receivers = [
        StoreReceiver(
            config,
            Mediator(),
            listener=listeners[k],
            ring=WorkerRing(k, 2, inboxes[k], {1 - k: outboxes[k]}),
        )
        for k in range(2)
    ]
    try:
        async with trio.open_nursery() as nursery:
            address = await nursery.start(receivers[0].run)
            yield Ring(
                receivers,
                address[1],
                pairs[1][0],
                pairs[1][1],
                lambda: nursery.start_soon(receivers[1].run),
            )
            nursery.cancel_scope.cancel()
    finally:
        for sock in (*listeners, *inboxes, *outboxes, *(end for pair in pairs for end in pair)):
            sock.close()


def send(port: int, items: list[tuple[Path, int]]) -> list[int | None]:
    """C-STORE each file with Move Originator RST/message id on one association; the statuses
    (``None``: no answer, the association was aborted)."""
    ae = AE(ae_title="PACS")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.dimse_timeout = 20
    assoc = ae.associate("127.0.0.1", port, ae_title="RST")
    assert assoc.is_established
    statuses: list[int | None] = []
    try:
        for n, (path, message_id) in enumerate(items, start=1):
            status = assoc.send_c_store(
                pydicom.dcmread(path), msg_id=n, originator_aet="RST", originator_id=message_id
            )
            statuses.append(int(status.Status) if "Status" in status else None)
    finally:
        if assoc.is_established:
            assoc.release()
    return statuses


async def test_an_association_for_a_dead_worker_waits_for_its_replacement(
    ring: Ring, tmp_path: Path
) -> None:
    # Message id 2 is worker 1's, 1 is worker 0's: one association, going to worker 1's inbox
    # while nobody reads it, then back to worker 0 once the replacement has answered.
    paths = [ct(tmp_path / f"{n}.dcm", 4_000) for n in range(2)]
    got: list[bytes] = []
    statuses: list[int | None] = []

    async def pacs() -> None:
        items = [(paths[0], 2), (paths[1], 1)]
        statuses.extend(await trio.to_thread.run_sync(send, ring.port, items))

    with trio.fail_after(20), ring.receivers[0].mediator.subscribe(subscription(1)) as at_0:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, at_0.sink, got)
            async with trio.open_nursery() as sending:
                sending.start_soon(pacs)
                await trio.lowlevel.wait_readable(ring.inbox_1)  # passed on: queued, not lost
                assert not statuses
                ring.replace()
            at_0.sink.finish()

    # the replacement has no retrieve with the dead worker's message id: refused, not hung
    assert statuses == [NOT_AUTHORIZED, 0]
    assert [pixels(d) for d in got] == [bytes(pydicom.dcmread(paths[1]).PixelData)]
    assert stores(ring.receivers[1], "unsolicited") == 1


async def test_an_inbox_that_stays_full_fails_that_association_alone(
    ring: Ring, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(handoff, "PASS_ON_TIMEOUT", 0.5)
    ring.outbox_1.setblocking(False)
    try:
        while True:  # worker 1 stuck: its inbox queue fills up
            ring.outbox_1.send(b"filler")
    except BlockingIOError:
        pass
    path = ct(tmp_path / "one.dcm", 4_000)

    with trio.fail_after(15):
        statuses = await trio.to_thread.run_sync(send, ring.port, [(path, 2)])
    assert statuses == [None]  # aborted by worker 0 after PASS_ON_TIMEOUT
    assert "cannot pass the association from" in caplog.text
    assert "worker 1 has taken no association for 0.5 s" in caplog.text

    # worker 0 goes on serving
    got: list[bytes] = []
    with ring.receivers[0].mediator.subscribe(subscription(1)) as at_0:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, at_0.sink, got)
            with trio.fail_after(15):
                statuses = await trio.to_thread.run_sync(send, ring.port, [(path, 1)])
            at_0.sink.finish()
    assert statuses == [0]
    assert len(got) == 1


async def test_a_send_to_a_closed_inbox_is_an_os_error() -> None:
    # What a worker's receiver turns into "this association fails" (it catches OSError).
    inbox, outbox = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    connection = socket.socket()
    try:
        ring = WorkerRing(0, 2, mine, {1: outbox})
        inbox.close()  # its worker died, and nobody held it
        fds_before = _open_fds()
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            await ring.pass_on(1, connection.fileno(), Handover("PACS", {1: "1.2"}, "x", 1), b"")
        assert _open_fds() == fds_before  # the memory file is closed too
    finally:
        for sock in (outbox, mine, theirs, connection):
            sock.close()


async def test_a_send_to_an_inbox_full_for_pass_on_timeout_is_a_timeout_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inbox, outbox = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    connection = socket.socket()
    try:
        ring = WorkerRing(0, 2, mine, {1: outbox})
        with contextlib.suppress(BlockingIOError):
            while True:  # nobody reads worker 1's inbox
                outbox.send(b"filler")
        fds_before = _open_fds()
        started = trio.current_time()
        with pytest.raises(TimeoutError, match="worker 1 has taken no association for 10 s"):
            await ring.pass_on(1, connection.fileno(), Handover("PACS", {1: "1.2"}, "x", 1), b"")
        assert trio.current_time() - started == pytest.approx(handoff.PASS_ON_TIMEOUT)
        assert _open_fds() == fds_before
        assert issubclass(TimeoutError, OSError)  # the receiver fails that association alone
    finally:
        for sock in (inbox, outbox, mine, theirs, connection):
            sock.close()


def _open_fds() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))
