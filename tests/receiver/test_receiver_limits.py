"""The receiver's limits: whatever one peer does, it costs bounded resources and ends its
own connection at most.

Each hostile peer is a raw trio socket speaking (or not) the Upper Layer protocol; after it, a
normal C-STORE from pynetdicom must still succeed. Waits are on what the receiver sends or on
the connection it closes, never on the clock.
"""

from __future__ import annotations

import array
import json
import os
import socket
import struct
import time
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
import trio.testing
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from rst.backends.dimse import wire
from rst.backends.dimse.admission import MAX_TURNING_AWAY
from rst.backends.dimse.handoff import WorkerRing
from rst.backends.dimse.incoming import MAX_UNROUTED
from rst.backends.dimse.mediator import Mediator, Subscription
from rst.backends.dimse.receiver import (
    HANDSHAKE_BUFFER,
    MAX_ASSOCIATE_RQ,
    StoreReceiver,
)
from rst.backends.dimse.sink import InstanceSink
from rst.backends.dimse.ul import (
    MAX_COMMAND_SET,
    Abort,
    AssociateAccept,
    OtherCommand,
    PData,
    Pdu,
    PduReader,
    PresentationContextRQ,
    encode_abort,
    encode_associate_rq,
    encode_c_echo_rq,
    encode_c_find_rq,
    encode_c_store_rq,
    encode_pdata,
    encode_release_rp,
    encode_release_rq,
    parse_command,
)
from rst.config import DimseConfig
from rst.dicom.statuses import OUT_OF_RESOURCES
from rst.dicom.uids import VERIFICATION
from tests.receiver.test_receiver import ORIGINATOR, send_with_pynetdicom
from tests.support.receiver_counts import refused, stores
from tests.support.sample import write_ct_study

BUSY = b"\x03\x00\x00\x00\x00\x04\x00\x02\x03\x02"
"""A-ASSOCIATE-RJ: rejected-transient (2), service-provider presentation related (3),
local-limit-exceeded (2) (PS3.8 Table 9-21)."""
PENDING_BUFFER_LIMIT = 128 * 1024  # what a connection not yet accepted may cost, at most
STUDY = "1.2.826.0.1.3680043.8.498.77"
SOP = "1.2.826.0.1.3680043.8.498.77.1.1"
CT_CONTEXT, ECHO_CONTEXT = 1, 3


def config(**overrides: float) -> DimseConfig:
    return DimseConfig.model_validate(
        {"host": "127.0.0.1", "port": 0, "stall_timeout": 5.0, **overrides}
    )


@dataclass
class Harness:
    """A receiver running in this process, and the test's connections to it (all closed at
    the end, whatever happens)."""

    receiver: StoreReceiver
    opened: list[trio.SocketStream] = field(default_factory=list)

    async def connect(self) -> trio.SocketStream:
        assert self.receiver.address is not None
        stream = await trio.open_tcp_stream(*self.receiver.address)
        self.opened.append(stream)
        return stream

    async def associate(self) -> Peer:
        peer = Peer(await self.connect(), PduReader(max_pdu_length=1 << 20, buffer_size=1 << 20))
        await peer.send(associate_rq())
        accept = await peer.next_pdu()
        assert isinstance(accept, AssociateAccept), accept
        peer.max_pdu = accept.max_pdu_length
        return peer


@asynccontextmanager
async def running(
    settings: DimseConfig, *, listener: socket.socket | None = None, ring: WorkerRing | None = None
) -> AsyncIterator[Harness]:
    harness = Harness(StoreReceiver(settings, Mediator(), listener=listener, ring=ring))
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(harness.receiver.run)
            yield harness
            nursery.cancel_scope.cancel()
    finally:
        for stream in harness.opened:
            await trio.aclose_forcefully(stream)


async def until_closed(stream: trio.SocketStream) -> bytes:
    """Everything the receiver sends until it closes the connection (or resets it)."""
    received = bytearray()
    with trio.fail_after(10):
        try:
            while chunk := await stream.receive_some(65536):
                received += chunk
        except trio.BrokenResourceError:
            pass
    return bytes(received)


def associate_rq(*, calling_aet: str = "HOSTILE") -> bytes:
    return encode_associate_rq(
        called_aet="RST",
        calling_aet=calling_aet,
        contexts=[
            PresentationContextRQ(CT_CONTEXT, CTImageStorage, (ExplicitVRLittleEndian,)),
            PresentationContextRQ(ECHO_CONTEXT, VERIFICATION, (ImplicitVRLittleEndian,)),
        ],
        max_pdu_length=1 << 20,
        implementation_class_uid="1.2.826.0.1.3680043.8.498.1",
    )


@dataclass
class Peer:
    """A raw association with the receiver, for sending what no real PACS would."""

    stream: trio.SocketStream
    reader: PduReader
    max_pdu: int = 0  # the receiver's, from its A-ASSOCIATE-AC

    async def next_pdu(self) -> Pdu | None:
        """The next PDU from the receiver; ``None`` once it has closed the connection."""
        while (pdu := self.reader.next_pdu()) is None:
            with trio.fail_after(10):
                data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.reader.feed(data)
        return pdu

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def status(self) -> int:
        """The status of the next DIMSE response."""
        pdu = await self.next_pdu()
        assert isinstance(pdu, PData), pdu
        response = parse_command(b"".join(bytes(pdv.data) for pdv in pdu.pdvs))
        assert isinstance(response, OtherCommand)
        assert response.status is not None
        return response.status

    async def echo(self, message_id: int) -> int:
        await self.send(
            encode_pdata(ECHO_CONTEXT, True, True, encode_c_echo_rq(message_id=message_id))
        )
        return await self.status()


def store_with_pynetdicom(port: int, folder: Path) -> tuple[list[int], list[str]]:
    study = write_ct_study(folder, images=1, rows=16, columns=16)
    return send_with_pynetdicom(port, study.paths), study.sop_uids


async def assert_still_serving(receiver: StoreReceiver, folder: Path) -> None:
    """A normal C-STORE, routed by Move Originator, arrives whole and is answered success."""
    assert receiver.address is not None
    port = receiver.address[1]
    sink = InstanceSink(capacity=4, stall_timeout=5.0)
    # the study UID is not known before the files are written: route by originator only
    target = Subscription(sink, "unused", originator=ORIGINATOR, uid_fallback=False)
    received = stores(receiver, "accepted")
    with receiver.mediator.subscribe(target):
        with trio.fail_after(30):
            statuses, sop_uids = await trio.to_thread.run_sync(
                store_with_pynetdicom, port, folder / f"check-{received}"
            )
        sink.finish()
        instance = await sink.receive()
    assert statuses == [0x0000]
    assert instance is not None
    assert instance.sop_instance_uid == sop_uids[0]
    assert stores(receiver, "accepted") == received + 1


# -- how many connections, and what each costs before it is accepted ---------------------------


async def test_connections_beyond_the_cap_are_turned_away_with_a_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(config(max_connections=3, handshake_timeout=30)) as harness:
        receiver = harness.receiver
        idle = [await harness.connect() for _ in range(3)]

        # the kernel queues connections in order and the receiver decides in that order
        extra = await harness.connect()
        await extra.send_all(associate_rq())
        assert await until_closed(extra) == BUSY
        assert receiver.turned_away == 1
        assert receiver.associations == 3
        pending = receiver.connections
        assert len(pending) == 3
        for connection in pending:  # idle: nothing but the small first buffer
            assert connection.reader.capacity == HANDSHAKE_BUFFER < PENDING_BUFFER_LIMIT

        def associate_when_full() -> tuple[bool, bool, bool]:
            ae = AE(ae_title="PACS")
            ae.add_requested_context(CTImageStorage)
            assoc = ae.associate("127.0.0.1", receiver.address[1], ae_title="RST")  # type: ignore[index]
            return assoc.is_rejected, assoc.is_established, assoc.is_aborted

        with trio.fail_after(30):
            outcome = await trio.to_thread.run_sync(associate_when_full)
        assert outcome == (True, False, False)  # rejected, not established, not aborted
        # what the PACS logs
        assert "Result: Rejected Transient, Source: Service Provider (Presentation)" in caplog.text
        assert "Reason: Local limit exceeded" in caplog.text
        assert receiver.turned_away == 2
        assert refused(receiver, "limit") == 2

        for stream in idle:  # the idle peers go: the receiver closes its side too
            await stream.send_eof()
            assert await until_closed(stream) == b""
            await stream.aclose()
        assert receiver.associations == 0
        await extra.aclose()
        await assert_still_serving(receiver, tmp_path)


async def test_a_flood_beyond_the_cap_is_closed_without_an_answer(tmp_path: Path) -> None:
    """At most MAX_TURNING_AWAY connections are answered an A-ASSOCIATE-RJ at a time (each
    waits for its peer to close); the others are closed at once."""
    async with running(config(max_connections=1, handshake_timeout=30)) as harness:
        receiver = harness.receiver
        idle = await harness.connect()
        flood = [await harness.connect() for _ in range(MAX_TURNING_AWAY + 4)]
        for stream in flood:
            await stream.send_all(associate_rq())
        answers = [await until_closed(stream) for stream in flood]
        assert answers[:MAX_TURNING_AWAY] == [BUSY] * MAX_TURNING_AWAY
        assert answers[MAX_TURNING_AWAY:] == [b""] * 4
        assert receiver.turned_away == MAX_TURNING_AWAY + 4
        for stream in (idle, *flood):
            await stream.aclose()
        await assert_still_serving(receiver, tmp_path)


async def test_a_connection_not_yet_accepted_holds_a_small_buffer(tmp_path: Path) -> None:
    async with running(config(handshake_timeout=30)) as harness:
        receiver = harness.receiver
        # an A-ASSOCIATE-RQ of the largest size taken, never finished: the buffer grows to it
        largest = await harness.connect()
        await largest.send_all(struct.pack(">BxL", 1, MAX_ASSOCIATE_RQ) + bytes(1000))
        # a P-DATA-TF of 1 MiB before any association: refused from its header, nothing grown
        early_data = await harness.connect()
        await early_data.send_all(struct.pack(">BxL", 4, 1 << 20))
        assert await until_closed(early_data) == encode_abort(2, 6)
        # an A-ASSOCIATE-RQ larger than that: the same
        too_large = await harness.connect()
        await too_large.send_all(struct.pack(">BxL", 1, MAX_ASSOCIATE_RQ + 1))
        assert await until_closed(too_large) == encode_abort(2, 6)
        # an accepted association: only now the buffer for P-DATA
        peer = await harness.associate()

        await trio.testing.wait_all_tasks_blocked(0.01)  # the receiver has read what was sent
        capacities = {bool(c.accepted): c.reader.capacity for c in receiver.connections}
        assert len(receiver.connections) == 2
        assert HANDSHAKE_BUFFER < capacities[False] <= MAX_ASSOCIATE_RQ + 6 < PENDING_BUFFER_LIMIT
        assert capacities[True] >= receiver.config.max_pdu + 6

        assert await peer.echo(1) == 0x0000
        for stream in (largest, early_data, too_large, peer.stream):
            await stream.aclose()
        await assert_still_serving(receiver, tmp_path)


async def test_a_connection_that_asks_for_nothing_is_closed_after_the_handshake_timeout(
    tmp_path: Path,
) -> None:
    async with running(config(handshake_timeout=1.0)) as harness:
        receiver = harness.receiver
        started = time.monotonic()
        silent = await harness.connect()
        partial = await harness.connect()
        await partial.send_all(associate_rq()[:40])
        # closed without an A-ABORT: there is no association to abort (PS3.8 §9.1.4 b)
        assert await until_closed(silent) == b""
        assert await until_closed(partial) == b""
        assert 1.0 <= time.monotonic() - started < 8.0
        assert receiver.associations == 0
        assert refused(receiver, "handshake_timeout") == 2
        for stream in (silent, partial):
            await stream.aclose()
        await assert_still_serving(receiver, tmp_path)


# -- what one association may make rst hold ------------------------------------------------------


async def test_a_command_set_that_never_ends_is_aborted(tmp_path: Path) -> None:
    async with running(config()) as harness:
        receiver = harness.receiver
        peer = await harness.associate()
        fragment = bytes(16000)
        for _ in range(MAX_COMMAND_SET // len(fragment) + 1):  # the last one passes the limit
            await peer.send(encode_pdata(ECHO_CONTEXT, True, False, fragment))
        assert await peer.next_pdu() == Abort(0, 0)  # a DIMSE error: service-user, PS3.8 §7.3
        assert await peer.next_pdu() is None
        assert receiver.associations == 0
        await peer.stream.aclose()
        await assert_still_serving(receiver, tmp_path)


def private_element_first(length: int) -> bytes:
    """The start of an Explicit VR Little Endian data set: a private OB element of *length*
    bytes before everything else, so the Study/Series UIDs come after it."""
    return struct.pack("<HH2sHL", 0x0009, 0x1010, b"OB", 0, length)


async def test_an_unsolicited_store_while_a_retrieve_is_open_is_refused_with_bounded_memory(
    tmp_path: Path,
) -> None:
    """No Move Originator, a retrieve open that takes instances by UID, and UIDs that never
    arrive: rst holds at most MAX_UNROUTED bytes of it, answers 0xA700, and the association
    goes on."""
    total = 8 * MAX_UNROUTED
    async with running(config()) as harness:
        receiver = harness.receiver
        sink = InstanceSink(capacity=4, stall_timeout=5.0)
        with receiver.mediator.subscribe(Subscription(sink, STUDY, uid_fallback=True)):
            peer = await harness.associate()
            assert await peer.echo(1) == 0x0000  # the receiver has its buffer for P-DATA now
            chunk = bytes(peer.max_pdu - 6)
            tracemalloc.start()
            try:
                await peer.send(
                    encode_pdata(
                        CT_CONTEXT,
                        True,
                        True,
                        encode_c_store_rq(
                            message_id=2, sop_class_uid=CTImageStorage, sop_instance_uid=SOP
                        ),
                    )
                )
                head = private_element_first(total)
                await peer.send(encode_pdata(CT_CONTEXT, False, False, head))
                sent = len(head)
                while sent < total:
                    size = min(len(chunk), total - sent)
                    sent += size
                    await peer.send(encode_pdata(CT_CONTEXT, False, sent == total, chunk[:size]))
                status = await peer.status()
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert status == OUT_OF_RESOURCES
            assert peak < 3 * MAX_UNROUTED < total  # the whole would be 8 times that
            assert sink.delivered == 0
            assert await peer.echo(3) == 0x0000  # the same association goes on
            await peer.send(encode_release_rq())
            assert await peer.next_pdu() is not None  # A-RELEASE-RP
            await peer.stream.aclose()
        await assert_still_serving(receiver, tmp_path)


# -- whatever a peer sends ends its own association only ----------------------------------------


HOSTILE = {
    "garbage": b"\xff" * 64,
    "an A-ASSOCIATE-RQ again": associate_rq(),
    "a truncated PDU": encode_pdata(ECHO_CONTEXT, True, True, bytes(100))[:50],
    "an A-ABORT": encode_abort(0, 0),
    "an unrequested A-RELEASE-RP": encode_release_rp(),
    "a release mid-command": encode_pdata(ECHO_CONTEXT, True, False, bytes(10))
    + encode_release_rq(),
    "a context not accepted": encode_pdata(5, True, True, encode_c_echo_rq(message_id=1)),
    "data without a command": encode_pdata(CT_CONTEXT, False, True, bytes(10)),
    "an invalid command set": encode_pdata(ECHO_CONTEXT, True, True, b"\x00" * 13),
    "a C-FIND": encode_pdata(
        ECHO_CONTEXT, True, True, encode_c_find_rq(message_id=1, sop_class_uid=VERIFICATION)
    ),
}


@pytest.mark.parametrize("sent", list(HOSTILE.values()), ids=list(HOSTILE))
async def test_whatever_a_peer_sends_ends_its_own_association_only(
    sent: bytes, tmp_path: Path
) -> None:
    async with running(config()) as harness:
        receiver = harness.receiver
        bystander = await harness.associate()
        peer = await harness.associate()
        await peer.send(sent)
        await peer.stream.send_eof()  # for the truncated PDU: the rest never comes
        while await peer.next_pdu() is not None:  # an A-ABORT or A-RELEASE-RP, then closed
            pass
        assert await bystander.echo(1) == 0x0000
        assert receiver.associations == 1
        await peer.stream.aclose()
        await bystander.stream.aclose()
        await assert_still_serving(receiver, tmp_path)


async def test_an_internal_error_ends_that_association_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug while handling a C-STORE, and another while aborting because of it: the receiver
    logs them and closes that connection; it serves the next one."""
    async with running(config()) as harness:
        receiver = harness.receiver
        peer = await harness.associate()

        def broken(*args: object) -> None:
            raise RuntimeError("a bug")

        with monkeypatch.context() as patch:
            patch.setattr(receiver.mediator, "by_originator", broken)
            patch.setattr(wire, "abort", broken)
            await peer.send(
                encode_pdata(
                    CT_CONTEXT,
                    True,
                    True,
                    encode_c_store_rq(
                        message_id=1,
                        sop_class_uid=CTImageStorage,
                        sop_instance_uid=SOP,
                        move_originator_aet="RST",
                        move_originator_message_id=7,
                    ),
                )
            )
            await peer.send(encode_pdata(CT_CONTEXT, False, True, private_element_first(0)))
            assert await peer.next_pdu() is None  # no answer: the abort itself failed
        assert receiver.associations == 0
        await peer.stream.aclose()
        await assert_still_serving(receiver, tmp_path)


# -- associations passed on by another worker ------------------------------------------------------


async def test_malformed_handovers_do_not_take_the_receiver_down(tmp_path: Path) -> None:
    """Worker 0's inbox gets messages no sibling should send; then a good one, which is served."""
    inbox, outbox = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener = socket.create_server(("127.0.0.1", 0))
    pacs, ours = socket.socketpair()  # the "PACS" connection the good handover carries
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    memfd = os.memfd_create("replay")
    good_state = {"calling_aet": "PACS", "accepted": {"3": VERIFICATION}, "peer": "x", "hops": 1}

    def handover(message: bytes, *fds: int) -> None:
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        outbox.sendmsg([message], ancillary)

    try:
        ring = WorkerRing(0, 2, inbox, {1: theirs})
        async with running(config(), listener=listener, ring=ring) as harness:
            receiver = harness.receiver
            handover(b"no descriptors")
            handover(b"not json", udp.fileno(), memfd)
            handover(json.dumps({**good_state, "accepted": []}).encode(), udp.fileno(), memfd)
            handover(json.dumps(good_state).encode(), memfd, memfd)  # not a socket
            handover(json.dumps(good_state).encode(), udp.fileno(), memfd)  # not a stream
            os.write(memfd, encode_pdata(3, True, True, encode_c_echo_rq(message_id=5)))
            handover(json.dumps(good_state).encode(), ours.fileno(), memfd)
            ours.close()

            stream = trio.SocketStream(trio.socket.from_stdlib_socket(pacs))
            peer = Peer(stream, PduReader(max_pdu_length=1 << 20, buffer_size=1 << 20))
            assert await peer.status() == 0x0000  # the C-ECHO replayed from the good handover
            await peer.stream.aclose()
            await assert_still_serving(receiver, tmp_path)
    finally:
        for sock in (inbox, outbox, mine, theirs, listener, pacs, ours, udp):
            sock.close()
        os.close(memfd)
