"""IncomingInstance, routed by UID: what it holds while the Study/Series UIDs have not arrived.

Sans-IO: fragments are fed by hand, with small ``stream_after`` and ``unrouted_max``.
"""

from __future__ import annotations

import os
import struct

import trio
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from rst.backends.dimse.incoming import IncomingInstance
from rst.backends.dimse.sink import InstanceSink
from tests.unit.test_incoming import EXPLICIT_LE, SERIES, STUDY, fragments, request

STREAM_AFTER = 1000
UNROUTED_MAX = 20_000
FRAGMENT = 1500


def with_private_head(private_bytes: int, pixel_bytes: int) -> bytes:
    """An Explicit VR LE data set whose UIDs follow a private element of *private_bytes*."""
    ds = Dataset()
    ds.add_new(0x00091010, "OB", os.urandom(private_bytes))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY, SERIES
    ds.add_new(0x7FE00010, "OB", os.urandom(pixel_bytes))
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    return fp.getvalue()


def by_uid(sink: InstanceSink, attempts: list[int]) -> IncomingInstance:
    def locate(receiving: IncomingInstance) -> InstanceSink | None:
        attempts.append(receiving.held)
        study, series = receiving.study_series()
        return sink if (study, series) == (STUDY, SERIES) else None

    return IncomingInstance(
        request(),
        EXPLICIT_LE,
        source_aet=None,
        locate=locate,
        stream_after=STREAM_AFTER,
        unrouted_max=UNROUTED_MAX,
    )


async def test_uids_that_never_arrive_cost_at_most_unrouted_max(
    autojump_clock: trio.abc.Clock,
) -> None:
    # a private element declared 100 MB long: the UIDs would come after it
    head = struct.pack("<HH2sHL", 0x0009, 0x1010, b"OB", 0, 100_000_000)
    data = head + bytes(200_000)
    sink = InstanceSink(capacity=4, stall_timeout=4.0)
    attempts: list[int] = []
    receiving = by_uid(sink, attempts)
    most = 0
    chunks = fragments(data, FRAGMENT)
    for chunk in chunks[:-1]:
        await receiving.add(chunk)
        most = max(most, receiving.held)
    await receiving.add(chunks[-1], last=True)

    assert await receiving.finish() == 0xA700  # out of resources
    assert most <= 400 + UNROUTED_MAX + FRAGMENT  # the Part 10 header, the cap, one fragment
    assert receiving.held == 0  # dropped
    assert len(attempts) <= 6  # looked again as it doubled, not at every fragment
    assert sink.delivered == 0


async def test_uids_found_once_more_has_arrived_stream_the_instance(
    autojump_clock: trio.abc.Clock,
) -> None:
    # the UIDs lie past stream_after, within unrouted_max: routed, and handed over before its end
    data = with_private_head(3 * STREAM_AFTER, 10 * UNROUTED_MAX)
    sink = InstanceSink(capacity=4, stall_timeout=4.0)
    attempts: list[int] = []
    receiving = by_uid(sink, attempts)
    statuses: list[int] = []

    async def feed() -> None:
        chunks = fragments(data, FRAGMENT)
        for chunk in chunks[:-1]:
            await receiving.add(chunk)
        await receiving.add(chunks[-1], last=True)
        statuses.append(await receiving.finish())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed)
        handed = await sink.receive()
        assert handed is not None
        assert handed.rest is not None  # streamed: not held whole
        rest = [chunk async for chunk in handed.rest]
    assert statuses == [0x0000]
    assert 1 < len(attempts) <= 4
    assert len(handed.data) == attempts[-1] < len(data) // 10  # what was held when located
    assert (handed.data + b"".join(rest)).endswith(data)
