"""The receive hot path: one-PDV P-DATA without PData/Pdv objects, fragments kept in the read
buffer until the shell copies them out, the requestor's buffer allocated only if data comes."""

from __future__ import annotations

import pytest

from rst.backends.dimse.incoming import IncomingInstance
from rst.backends.dimse.sink import InstanceSink
from rst.backends.dimse.ul import (
    CStoreRequest,
    PData,
    PduReader,
    UpperLayerError,
    encode_c_store_rq,
    encode_pdata,
)
from rst.backends.dimse.ul.association import (
    NEED_DATA,
    Association,
    CommandReceived,
    DataFragment,
    ProtocolViolation,
    Role,
)
from tests.support.ul_pair import accepted_acceptor

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
SOP = "1.2.3.4.5"
MAX = 131072


# --- PduReader.next_data_pdv ----------------------------------------------------------------


@pytest.mark.parametrize(("is_command", "is_last"), [(False, False), (False, True), (True, True)])
def test_one_pdv_comes_out_as_next_pdu_would_give_it(is_command: bool, is_last: bool) -> None:
    pdu = encode_pdata(5, is_command, is_last, b"payload")
    fast, slow = PduReader(max_pdu_length=MAX), PduReader(max_pdu_length=MAX)
    fast.feed(pdu)
    slow.feed(pdu)
    single = fast.next_data_pdv()
    decoded = slow.next_pdu()
    assert single is not None
    assert isinstance(decoded, PData)
    pdv = decoded.pdvs[0]
    context_id, control, data = single
    assert (context_id, control & 1 != 0, control & 2 != 0) == (
        pdv.context_id,
        pdv.is_command,
        pdv.is_last,
    )
    assert bytes(data) == bytes(pdv.data) == b"payload"
    assert fast.next_pdu() is None  # taken
    assert fast.buffered == 0


def test_anything_but_one_valid_pdv_is_left_to_next_pdu() -> None:
    two = encode_pdata(1, False, False, b"a")[6:] + encode_pdata(1, False, True, b"b")[6:]
    several = bytes([0x04, 0]) + len(two).to_bytes(4, "big") + two
    reader = PduReader(max_pdu_length=MAX)
    reader.feed(several)
    assert reader.next_data_pdv() is None
    assert reader.buffered == len(several)  # nothing taken
    pdata = reader.next_pdu()
    assert isinstance(pdata, PData)
    assert [bytes(p.data) for p in pdata.pdvs] == [b"a", b"b"]

    incomplete = encode_pdata(1, False, True, b"abc")
    reader.feed(incomplete[:-1])
    assert reader.next_data_pdv() is None
    reader.feed(incomplete[-1:])
    assert reader.next_data_pdv() is not None


@pytest.mark.parametrize(
    ("name", "pdu"),
    [
        ("even context id", bytes([4, 0, 0, 0, 0, 7, 0, 0, 0, 3, 2, 2]) + b"x"),
        ("reserved control bits", bytes([4, 0, 0, 0, 0, 7, 0, 0, 0, 3, 1, 6]) + b"x"),
        ("pdv length < 2", bytes([4, 0, 0, 0, 0, 6, 0, 0, 0, 0, 1, 0])),
        ("too long for us", encode_pdata(1, False, True, bytes(200))),
    ],
)
def test_an_invalid_pdv_is_not_taken_and_next_pdu_refuses_it(name: str, pdu: bytes) -> None:
    reader = PduReader(max_pdu_length=100)
    reader.feed(pdu[:100])
    assert reader.next_data_pdv() is None
    with pytest.raises(UpperLayerError):
        reader.next_pdu()


# --- PduReader.keep ---------------------------------------------------------------------------


def _read(reader: PduReader, data: bytes) -> None:
    target = reader.writable()
    target[: len(data)] = data
    reader.advance(len(data))


def test_kept_views_survive_reads_until_keep_is_called() -> None:
    calls: list[bytes] = []
    reader = PduReader(max_pdu_length=MAX, buffer_size=300_000)
    first = encode_pdata(1, False, False, b"A" * 100_000)
    _read(reader, first)
    single = reader.next_data_pdv()
    assert single is not None
    view = single[2]
    reader.keep = lambda: calls.append(bytes(view))
    _read(reader, encode_pdata(1, False, False, b"B" * 100_000))  # behind it, not over it
    assert reader.next_data_pdv() is not None
    assert bytes(view) == b"A" * 100_000
    assert not calls
    # no room behind: the reader calls keep before moving the unread tail to the front
    _read(reader, encode_pdata(1, False, True, b"C" * 100_000)[:50_000])
    assert reader.next_data_pdv() is None
    reader.writable()
    assert calls == [b"A" * 100_000]
    reader.writable()
    assert len(calls) == 1  # nothing moved since
    assert reader.keep is not None  # still kept: later views are protected too


def test_without_keep_the_reader_goes_back_to_the_front() -> None:
    reader = PduReader(max_pdu_length=MAX, buffer_size=300_000)
    _read(reader, encode_pdata(1, False, False, b"A" * 1000))
    single = reader.next_data_pdv()
    assert single is not None
    _read(reader, encode_pdata(1, False, False, b"B" * 1000))
    assert bytes(single[2]) != b"A" * 1000  # overwritten: views die with the next read


def test_taking_the_buffered_bytes_calls_keep() -> None:
    calls: list[int] = []
    reader = PduReader(max_pdu_length=MAX)
    reader.feed(encode_pdata(1, False, False, b"x") + encode_pdata(1, False, True, b"y"))
    assert reader.next_data_pdv() is not None
    reader.keep = lambda: calls.append(1)
    assert reader.take_buffered() == encode_pdata(1, False, True, b"y")
    assert calls == [1]


def test_a_requestor_reads_into_a_small_buffer_until_data_comes() -> None:
    requestor = Association(Role.REQUESTOR, max_pdu_length=MAX, buffer_size=1 << 20)
    assert requestor.reader.capacity == 16 * 1024
    reader = PduReader(max_pdu_length=MAX, buffer_size=64, grow_to=1 << 20)
    pdu = encode_pdata(1, False, True, bytes(1000))
    offset = 0
    while offset < len(pdu):
        target = reader.writable()
        n = min(len(target), len(pdu) - offset)
        target[:n] = pdu[offset : offset + n]
        reader.advance(n)
        offset += n
    assert reader.capacity == 1 << 20  # grown once, to the data buffer
    assert reader.next_data_pdv() is not None


# --- through the association ------------------------------------------------------------------


def _acceptor(buffer_size: int | None = None) -> Association:
    return accepted_acceptor(max_pdu=MAX, sop_class=CT, syntax=EXPLICIT, buffer_size=buffer_size)


def _store_rq() -> bytes:
    command = encode_c_store_rq(message_id=1, sop_class_uid=CT, sop_instance_uid=SOP)
    return encode_pdata(1, True, True, command)


def test_fragments_of_a_data_set_are_events_and_the_rules_still_hold() -> None:
    acceptor = _acceptor()
    acceptor.receive_data(
        _store_rq() + encode_pdata(1, False, False, b"ab") + encode_pdata(1, False, True, b"cd")
    )
    events = [acceptor.next_event() for _ in range(4)]
    assert isinstance(events[0], CommandReceived)
    assert events[1:3] == [
        DataFragment(1, memoryview(b"ab"), False),
        DataFragment(1, memoryview(b"cd"), True),
    ]
    assert "2 bytes" in repr(events[1])
    assert events[3] is NEED_DATA
    acceptor.receive_data(encode_pdata(1, False, True, b"ef"))  # no command before it
    with pytest.raises(ProtocolViolation, match="without its command"):
        acceptor.next_event()


async def test_an_instance_borrowing_fragments_is_copied_once_and_whole() -> None:
    acceptor = _acceptor()
    sink = InstanceSink(capacity=4, stall_timeout=4.0)
    request = CStoreRequest(
        message_id=1,
        sop_class_uid=CT,
        sop_instance_uid=SOP,
        priority=0,
        move_originator_aet="RST",
        move_originator_message_id=7,
    )
    instance = IncomingInstance(
        request, EXPLICIT, source_aet=None, locate=lambda _: sink, borrow=True
    )
    acceptor.keep_fragments(instance.copy_out)
    acceptor.receive_data(_store_rq() + encode_pdata(1, False, False, b"one"))
    assert isinstance(acceptor.next_event(), CommandReceived)
    fragment = acceptor.next_event()
    assert isinstance(fragment, DataFragment)
    await instance.add(fragment.data, last=fragment.last)
    assert acceptor.next_event() is NEED_DATA
    # the buffer's bytes are handed on (the reader resets): the instance copies its part first
    acceptor.take_unprocessed()
    fragment.data[:] = b"XXX"  # what a later read would do to the buffer
    acceptor.receive_data(encode_pdata(1, False, True, b"two"))
    last = acceptor.next_event()
    assert isinstance(last, DataFragment)
    await instance.add(last.data, last=True)
    assert await instance.finish() == 0
    sink.finish()
    got = await sink.receive()
    assert got is not None
    assert got.data.endswith(b"onetwo")


async def test_borrowed_instances_come_out_whole_whatever_the_reads() -> None:
    """Instances smaller and larger than the read buffer, read in uneven pieces: the buffer is
    reused under borrowed fragments again and again, and every instance comes out exact."""
    acceptor = _acceptor(buffer_size=300_000)
    datasets = [bytes([n]) * (50_000 + 150_000 * (n % 3)) + bytes(range(256)) for n in range(1, 8)]
    stream = b"".join(
        _store_rq() + b"".join(encode_pdata(1, False, last, chunk) for chunk, last in pieces)
        for pieces in (
            [(d[i : i + 30_000], i + 30_000 >= len(d)) for i in range(0, len(d), 30_000)]
            for d in datasets
        )
    )
    sink = InstanceSink(capacity=len(datasets), stall_timeout=4.0)
    request = CStoreRequest(
        message_id=1, sop_class_uid=CT, sop_instance_uid=SOP, priority=0,
        move_originator_aet=None, move_originator_message_id=None,
    )  # fmt: skip
    instance: IncomingInstance | None = None
    offset, step = 0, 0
    while True:
        event = acceptor.next_event()
        if event is NEED_DATA:
            if offset == len(stream):
                break
            target = acceptor.writable()
            step = step % 5 + 1  # 13, 26, ... 65 KB: reads that end anywhere
            n = min(len(target), len(stream) - offset, step * 13_000)
            target[:n] = stream[offset : offset + n]
            acceptor.advance(n)
            offset += n
        elif isinstance(event, CommandReceived):
            instance = IncomingInstance(
                request, EXPLICIT, source_aet=None, locate=lambda _: sink, borrow=True
            )
            acceptor.keep_fragments(instance.copy_out)
        else:
            assert isinstance(event, DataFragment)
            assert instance is not None
            await instance.add(event.data, last=event.last)
            if event.last:
                assert await instance.finish() == 0
                acceptor.keep_fragments(None)
    sink.finish()
    for dataset in datasets:
        got = await sink.receive()
        assert got is not None
        assert got.data.endswith(dataset)
