"""Worker processes pass associations to each other: two receivers linked by a ring.

Both receivers run in this process (each with its own listening socket and mediator, as two
worker processes would have); a pynetdicom peer plays the PACS and always connects to worker 0.
The ring's Unix sockets and the descriptor passing are the real ones.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
import trio
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from rst.backends.dimse.handoff import WorkerRing
from rst.backends.dimse.mediator import Mediator, MessageIds, Subscription
from rst.backends.dimse.receiver import StoreReceiver
from rst.backends.dimse.sink import InstanceSink
from rst.config import DimseConfig
from rst.services.wado import whole
from tests.support.receiver_counts import stores

STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES = "1.2.826.0.1.3680043.8.498.1.1"


@dataclass
class Workers:
    receivers: list[StoreReceiver]
    port: int  # worker 0's: where the "PACS" connects
    outboxes: list[socket.socket]  # outboxes[k] sends to worker k


def listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


@pytest.fixture
async def workers() -> AsyncIterator[Workers]:
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(2)]
    config = DimseConfig(host="127.0.0.1", port=0, stall_timeout=5.0)
    listeners = [listening_socket() for _ in range(2)]
    receivers = [
        StoreReceiver(
            config,
            Mediator(),
            listener=listeners[k],
            ring=WorkerRing(k, 2, pairs[k][0], {1 - k: pairs[1 - k][1]}),
        )
        for k in range(2)
    ]
    try:
        async with trio.open_nursery() as nursery:
            address = await nursery.start(receivers[0].run)
            await nursery.start(receivers[1].run)
            yield Workers(receivers, address[1], [pair[1] for pair in pairs])
            nursery.cancel_scope.cancel()
    finally:
        for sock in (*listeners, *(end for pair in pairs for end in pair)):
            sock.close()


def ct(path: Path, pixel_bytes: int, sop_uid: str | None = None) -> Path:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = SERIES
    ds.Modality = "CT"
    ds.Rows, ds.Columns = pixel_bytes // 2000, 1000  # pixel_bytes: a multiple of 2000
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = os.urandom(pixel_bytes)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return path


def send(port: int, items: list[tuple[Path, int | None]]) -> list[int]:
    """C-STORE each file (with Move Originator RST/message id, or none) on one association."""
    ae = AE(ae_title="PACS")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.maximum_pdu_size = 65536
    assoc = ae.associate("127.0.0.1", port, ae_title="RST")
    assert assoc.is_established
    statuses = []
    try:
        for n, (path, message_id) in enumerate(items, start=1):
            status = assoc.send_c_store(
                pydicom.dcmread(path),
                msg_id=n,
                originator_aet=None if message_id is None else "RST",
                originator_id=message_id,
            )
            statuses.append(int(status.Status))
    finally:
        assoc.release()
    return statuses


def subscription(message_id: int | None) -> Subscription:
    return Subscription(
        InstanceSink(capacity=16, stall_timeout=5.0),
        STUDY,
        originator=None if message_id is None else ("RST", message_id),
        uid_fallback=message_id is None,
    )


async def collect(sink: InstanceSink, into: list[bytes]) -> None:
    """Read the sink as a response would, concurrently with the sender, until it finishes."""
    while (instance := await sink.receive()) is not None:
        into.append((await whole(instance)).data)


async def send_and_collect(
    port: int, items: list[tuple[Path, int | None]], sinks: list[InstanceSink]
) -> tuple[list[int], list[list[bytes]]]:
    got: list[list[bytes]] = [[] for _ in sinks]
    async with trio.open_nursery() as nursery:
        for sink, into in zip(sinks, got, strict=True):
            nursery.start_soon(collect, sink, into)
        statuses = await trio.to_thread.run_sync(send, port, items)
        for sink in sinks:
            sink.finish()
    return statuses, got


def pixels(data: bytes) -> bytes:
    return bytes(pydicom.dcmread(pydicom.filebase.DicomBytesIO(data)).PixelData)


def test_message_ids_are_partitioned_among_workers() -> None:
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(3)]
    try:
        ring = WorkerRing(1, 3, pairs[1][0], {0: pairs[0][1], 2: pairs[2][1]})
        ids = [MessageIds(k, 3) for k in range(3)]
        issued = [[ids[k].next("RST") for _ in range(5)] for k in range(3)]

        for k in range(3):
            assert {ring.owner(m) for m in issued[k]} == {k}
        for k in range(3):  # each worker counts up through its own share
            assert all(b - a == 3 for a, b in zip(issued[k], issued[k][1:], strict=False) if b > a)
    finally:
        for a, b in pairs:
            a.close()
            b.close()


@pytest.mark.parametrize("pixel_bytes", [4_000, 3_000_000], ids=["small", "streamed"])
async def test_an_instance_for_another_worker_is_passed_to_it(
    workers: Workers, tmp_path: Path, pixel_bytes: int
) -> None:
    path = ct(tmp_path / "one.dcm", pixel_bytes)
    with workers.receivers[1].mediator.subscribe(subscription(2)) as wanted:  # id 2: worker 1
        statuses, [received] = await send_and_collect(workers.port, [(path, 2)], [wanted.sink])

    assert statuses == [0]
    assert len(received) == 1
    assert pixels(received[0]) == bytes(pydicom.dcmread(path).PixelData)
    assert stores(workers.receivers[1], "accepted") == 1
    assert stores(workers.receivers[0], "accepted") == 0


async def test_an_association_goes_back_and_forth_between_workers(
    workers: Workers, tmp_path: Path
) -> None:
    # C-STOREs of two C-MOVEs on one association (a PACS may reuse it): each reaches its worker.
    paths = [ct(tmp_path / f"{n}.dcm", 2_000 * (n + 1)) for n in range(4)]
    owners = [1, 0, 0, 1]
    ids = [2, 1, 1, 2]
    with (
        workers.receivers[0].mediator.subscribe(subscription(1)) as at_0,
        workers.receivers[1].mediator.subscribe(subscription(2)) as at_1,
    ):
        statuses, got = await send_and_collect(
            workers.port, list(zip(paths, ids, strict=True)), [at_0.sink, at_1.sink]
        )

    assert statuses == [0, 0, 0, 0]
    for k in (0, 1):
        expected = [pixels_of(p) for p, owner in zip(paths, owners, strict=True) if owner == k]
        assert [pixels(d) for d in got[k]] == expected


def pixels_of(path: Path) -> bytes:
    return bytes(pydicom.dcmread(path).PixelData)


@pytest.mark.parametrize("pixel_bytes", [4_000, 3_000_000], ids=["small", "streamed"])
async def test_without_move_originator_the_instance_goes_round_the_ring(
    workers: Workers, tmp_path: Path, pixel_bytes: int
) -> None:
    # Passed on at the point where rst looks at the UIDs: after the data set (small) or after
    # its first MiB (large), so the bytes read so far are replayed to the other worker.
    path = ct(tmp_path / "one.dcm", pixel_bytes)
    with workers.receivers[1].mediator.subscribe(subscription(None)) as wanted:
        statuses, [received] = await send_and_collect(workers.port, [(path, None)], [wanted.sink])

    assert statuses == [0]
    assert [pixels(d) for d in received] == [pixels_of(path)]


async def test_an_instance_no_worker_wants_is_refused_after_one_round(
    workers: Workers, tmp_path: Path
) -> None:
    paths = [ct(tmp_path / f"{n}.dcm", 4_000) for n in range(2)]
    statuses = await trio.to_thread.run_sync(send, workers.port, [(paths[0], None), (paths[1], 2)])

    assert statuses == [0x0124, 0x0124]
    assert sum(stores(r, "unsolicited") for r in workers.receivers) == 2


async def test_a_malformed_handover_is_dropped_and_the_worker_goes_on(
    workers: Workers, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    workers.outboxes[1].send(b"not a handover")  # no descriptors: a sibling's bug
    path = ct(tmp_path / "one.dcm", 4_000)
    with workers.receivers[1].mediator.subscribe(subscription(2)) as wanted:
        statuses, [received] = await send_and_collect(workers.port, [(path, 2)], [wanted.sink])

    assert statuses == [0]
    assert [pixels(d) for d in received] == [pixels_of(path)]
    assert "dropped an association passed on by another worker" in caplog.text
