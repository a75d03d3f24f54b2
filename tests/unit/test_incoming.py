"""IncomingInstance: small data sets handed over whole, large ones streamed as they arrive.

Streaming tests run with a small ``stream_after`` so the data sets stay small; what matters is
the order of events (handed over before the end), the bytes (head + rest = the whole file) and
the C-STORE status each outcome earns. Tests that spool go through a real worker thread and so
run on the real clock.
"""

from __future__ import annotations

import os
from pathlib import Path

import pydicom
import pytest
import trio
import trio.testing
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from rst.backends.dimse.incoming import IncomingInstance
from rst.backends.dimse.sink import InstanceSink
from rst.backends.dimse.ul import CStoreRequest
from rst.errors import BackendTimeout, IncompleteRetrieve
from rst.services.protocols import Instance
from rst.services.wado import whole

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
STUDY, SERIES, SOP = "1.2.3", "1.2.3.4", "1.2.3.4.5"


async def check_handed_whole(
    receiving: IncomingInstance, sink: InstanceSink, dataset: bytes
) -> None:
    """*receiving* finishes with success and *sink* gets the whole instance of *dataset*."""
    assert await receiving.finish() == 0x0000
    sink.finish()
    got = await sink.receive()
    assert got is not None
    assert got.rest is None
    check_file(got.data, dataset)


async def collect(instance: Instance, into: list[bytes]) -> None:
    """Read the rest of a streamed *instance* into *into*."""
    assert instance.rest is not None
    async for chunk in instance.rest:
        into.append(chunk)


def request() -> CStoreRequest:
    return CStoreRequest(
        message_id=1,
        sop_class_uid=CT,
        sop_instance_uid=SOP,
        priority=0,
        move_originator_aet="RST",
        move_originator_message_id=7,
    )


def dataset_bytes(pixel_bytes: int) -> bytes:
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = SOP
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = SERIES
    ds.PixelData = os.urandom(pixel_bytes)
    ds["PixelData"].VR = "OB"
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    return fp.getvalue()


def fragments(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def incoming(sink: InstanceSink | None, stream_after: int) -> IncomingInstance:
    return IncomingInstance(
        request(), EXPLICIT_LE, source_aet="PACS", locate=lambda _: sink, stream_after=stream_after
    )


def check_file(data: bytes, dataset: bytes) -> None:
    """*data* is a Part 10 file whose data set is exactly *dataset*."""
    parsed = pydicom.dcmread(DicomBytesIO(data))
    assert parsed.file_meta.TransferSyntaxUID == EXPLICIT_LE
    assert parsed.file_meta.MediaStorageSOPInstanceUID == SOP
    assert data.endswith(dataset)
    assert parsed.StudyInstanceUID == STUDY


async def test_a_small_instance_is_handed_over_whole(autojump_clock: trio.abc.Clock) -> None:
    sink = InstanceSink(capacity=4, stall_timeout=4.0)
    dataset = dataset_bytes(1000)
    receiving = incoming(sink, stream_after=len(dataset))
    for chunk in fragments(dataset, 300):
        await receiving.add(memoryview(chunk))
    assert sink.delivered == 0  # nothing before the end

    await check_handed_whole(receiving, sink, dataset)


async def test_a_large_instance_is_handed_over_before_it_has_arrived(
    autojump_clock: trio.abc.Clock,
) -> None:
    sink = InstanceSink(capacity=4, stall_timeout=4.0)
    dataset = dataset_bytes(20_000)
    parts = fragments(dataset, 1000)
    receiving = incoming(sink, stream_after=2500)
    for chunk in parts[:3]:
        await receiving.add(chunk)

    with trio.fail_after(1):  # handed over after 3 of 21 fragments, not at the end
        handed = await sink.receive()
    assert handed is not None
    assert handed.rest is not None
    assert len(handed.data) < len(dataset)
    received: list[bytes] = []

    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect, handed, received)
        for chunk in parts[3:]:
            await receiving.add(chunk)
        assert await receiving.finish() == 0x0000
    check_file(handed.data + b"".join(received), dataset)
    assert received == parts[3:]  # one chunk per fragment, no copy into a bigger buffer
    assert sink.delivered == 1


async def test_whole_joins_an_instance_still_arriving(autojump_clock: trio.abc.Clock) -> None:
    sink = InstanceSink(capacity=4, stall_timeout=4.0)
    dataset = dataset_bytes(8000)
    receiving = incoming(sink, stream_after=1000)
    for chunk in fragments(dataset, 1500):
        await receiving.add(chunk)
    assert await receiving.finish() == 0x0000
    handed = await sink.receive()
    assert handed is not None
    assert handed.rest is not None

    joined = await whole(handed)

    assert joined.rest is None
    check_file(joined.data, dataset)


async def test_a_transfer_cut_short_fails_the_consumer(autojump_clock: trio.abc.Clock) -> None:
    sink = InstanceSink(capacity=4, stall_timeout=4.0)
    dataset = dataset_bytes(8000)
    receiving = incoming(sink, stream_after=1000)
    for chunk in fragments(dataset, 1500)[:3]:
        await receiving.add(chunk)

    receiving.abandon("the PACS aborted the association")

    handed = await sink.receive()
    assert handed is not None
    assert handed.rest is not None
    with pytest.raises(IncompleteRetrieve, match="cut short: the PACS aborted"):
        async for _ in handed.rest:
            pass


async def test_a_request_gone_mid_instance_refuses_it_and_drops_the_rest(
    autojump_clock: trio.abc.Clock,
) -> None:
    sink = InstanceSink(capacity=4, stall_timeout=4.0)
    dataset = dataset_bytes(8000)
    parts = fragments(dataset, 1500)
    receiving = incoming(sink, stream_after=1000)
    for chunk in parts[:2]:
        await receiving.add(chunk)
    assert sink.delivered == 1

    sink.close()
    for chunk in parts[2:]:
        await receiving.add(chunk)

    assert await receiving.finish() == 0x0124


async def test_a_slow_consumer_holds_the_producer_back(autojump_clock: trio.abc.Clock) -> None:
    # Backpressure fragment by fragment: with the body full, add() waits for the consumer.
    sink = InstanceSink(capacity=4, stall_timeout=30.0)
    dataset = dataset_bytes(40_000)
    parts = fragments(dataset, 1000)
    receiving = incoming(sink, stream_after=1000)
    await receiving.add(parts[0])
    await receiving.add(parts[1])
    handed = await sink.receive()
    assert handed is not None
    assert handed.rest is not None
    body = handed.rest
    start = trio.current_time()
    read: list[bytes] = []

    async def slow_consumer() -> None:
        await trio.sleep(5.0)
        async for chunk in body:
            read.append(chunk)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow_consumer)
        for chunk in parts[2:]:
            await receiving.add(chunk)
        # 8 fragments fit in memory; the 9th waited for the consumer.
        assert trio.current_time() - start == pytest.approx(5.0)
        assert await receiving.finish() == 0x0000
    check_file(handed.data + b"".join(read), dataset)


async def test_a_stalled_consumer_gets_the_rest_through_the_spool(tmp_path: Path) -> None:
    sink = InstanceSink(capacity=4, stall_timeout=0.05, spool_dir=str(tmp_path))
    try:
        dataset = dataset_bytes(40_000)
        parts = fragments(dataset, 1000)
        receiving = incoming(sink, stream_after=1000)
        for chunk in parts:  # nobody reads: after 8 fragments and the stall, they spill
            await receiving.add(chunk)
        assert await receiving.finish() == 0x0000

        handed = await sink.receive()
        assert handed is not None
        assert handed.rest is not None
        check_file((await whole(handed)).data, dataset)
    finally:
        sink.close()


async def test_a_full_sink_keeps_the_instance_whole_and_spools_it(tmp_path: Path) -> None:
    # No room to hand it over early (the client is behind): reassembled, then spooled whole.
    sink = InstanceSink(capacity=1, stall_timeout=0.05, spool_dir=str(tmp_path))
    try:
        first = Instance(b"x" * 10, CT, "1.2.3.4.4", EXPLICIT_LE)
        assert await sink.offer(first)
        dataset = dataset_bytes(8000)
        receiving = incoming(sink, stream_after=1000)
        for chunk in fragments(dataset, 1500):
            await receiving.add(chunk)
        assert await receiving.finish() == 0x0000
        assert sink.spooled == 1

        assert await sink.receive() == first
        spooled = await sink.receive()
        assert spooled is not None
        assert spooled.rest is None
        check_file(spooled.data, dataset)
    finally:
        sink.close()


async def test_nobody_wants_it_refused_whether_small_or_large(
    autojump_clock: trio.abc.Clock,
) -> None:
    dataset = dataset_bytes(8000)
    for stream_after in (1000, 100_000):
        receiving = incoming(None, stream_after=stream_after)
        for chunk in fragments(dataset, 1500):
            await receiving.add(chunk)
        assert await receiving.finish() == 0x0124
        assert receiving.unsolicited


async def test_locate_reads_the_uids_from_the_part_that_has_arrived(
    autojump_clock: trio.abc.Clock,
) -> None:
    sink = InstanceSink(capacity=4, stall_timeout=4.0)
    seen: list[tuple[str, str]] = []

    def locate(receiving: IncomingInstance) -> InstanceSink:
        seen.append(receiving.study_series())
        return sink

    receiving = IncomingInstance(
        request(), EXPLICIT_LE, source_aet=None, locate=locate, stream_after=1000
    )
    dataset = dataset_bytes(8000)
    for chunk in fragments(dataset, 1500):
        await receiving.add(chunk)
    assert await receiving.finish() == 0x0000

    assert seen == [(STUDY, SERIES)]  # asked once, when streaming began


async def test_a_pacs_silent_mid_instance_times_the_consumer_out(
    autojump_clock: trio.abc.Clock,
) -> None:
    sink = InstanceSink(capacity=4, stall_timeout=4.0, idle_timeout=20.0)
    dataset = dataset_bytes(8000)
    receiving = incoming(sink, stream_after=1000)
    for chunk in fragments(dataset, 1500)[:2]:
        await receiving.add(chunk)
    handed = await sink.receive()
    assert handed is not None
    assert handed.rest is not None
    start = trio.current_time()

    with pytest.raises(BackendTimeout, match="nothing for 20 s in the middle of instance"):
        async for _ in handed.rest:
            pass
    assert trio.current_time() - start == pytest.approx(20.0)


async def test_uids_past_the_part_that_has_arrived_defer_locating_to_the_end(
    autojump_clock: trio.abc.Clock,
) -> None:
    # A large element before the UIDs: they cannot be read when streaming would begin, so the
    # instance is reassembled whole and located once complete (then the UIDs are there).
    ds = Dataset()
    ds.add_new(0x00091010, "OB", os.urandom(6000))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY, SERIES
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    dataset = fp.getvalue()
    sink = InstanceSink(capacity=4, stall_timeout=4.0)
    seen: list[tuple[str, str]] = []

    def locate(receiving: IncomingInstance) -> InstanceSink:
        seen.append(receiving.study_series())
        return sink

    receiving = IncomingInstance(
        request(), EXPLICIT_LE, source_aet=None, locate=locate, stream_after=1000
    )
    for chunk in fragments(dataset, 1500):
        await receiving.add(chunk, last=False)
    await receiving.add(b"", last=True)
    assert sink.delivered == 0

    assert await receiving.finish() == 0x0000
    assert seen == [(STUDY, SERIES)]
    got = await sink.receive()
    assert got is not None
    assert got.rest is None
    assert got.data.endswith(dataset)


async def test_a_body_closed_with_its_sink_never_ends_cleanly(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Even after its last fragment was queued: what was queued is lost, so reading must fail.
    sink = InstanceSink(capacity=4, stall_timeout=4.0)
    dataset = dataset_bytes(8000)
    receiving = incoming(sink, stream_after=1000)
    for chunk in fragments(dataset, 1500):
        await receiving.add(chunk)
    assert await receiving.finish() == 0x0000
    handed = await sink.receive()
    assert handed is not None
    assert handed.rest is not None

    sink.close()

    with pytest.raises(IncompleteRetrieve):
        async for _ in handed.rest:
            pass


async def test_hold_takes_fragments_until_streaming_would_begin(
    autojump_clock: trio.abc.Clock,
) -> None:
    """What the shells do: :meth:`hold` each fragment but the last, :meth:`add` what it
    declines; the result is the same as adding them all."""
    sink = InstanceSink(capacity=4, stall_timeout=4.0)
    dataset = dataset_bytes(20_000)
    parts = fragments(dataset, 1000)
    receiving = incoming(sink, stream_after=2500)
    header = receiving.held  # the Part 10 header
    assert receiving.hold(parts[0])
    assert receiving.hold(parts[1])
    assert receiving.held == header + 2000
    assert not receiving.hold(parts[2])  # past stream_after: add() hands it over
    await receiving.add(parts[2])
    handed = await sink.receive()
    assert handed is not None
    assert handed.rest is not None
    assert not receiving.hold(parts[3])  # streaming: each fragment goes to the body
    received: list[bytes] = []

    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect, handed, received)
        for index, chunk in enumerate(parts[3:], start=3):
            last = index == len(parts) - 1
            if last or not receiving.hold(chunk):
                await receiving.add(chunk, last=last)
        assert await receiving.finish() == 0x0000
    check_file(handed.data + b"".join(received), dataset)


async def test_hold_keeps_a_small_instance_whole(autojump_clock: trio.abc.Clock) -> None:
    sink = InstanceSink(capacity=4, stall_timeout=4.0)
    dataset = dataset_bytes(1000)
    parts = fragments(dataset, 300)
    receiving = incoming(sink, stream_after=len(dataset))
    for chunk in parts[:-1]:
        buffer = bytearray(chunk)
        assert receiving.hold(memoryview(buffer))
        buffer[:] = bytes(len(buffer))  # the caller reuses its buffer: what was held is a copy
    await receiving.add(parts[-1], last=True)
    assert sink.delivered == 0
    await check_handed_whole(receiving, sink, dataset)
