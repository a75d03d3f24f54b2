"""rst's trio C-STORE receiver against independent peers: pynetdicom and dcmtk's storescu.

Each test opens a subscription the way a retrieve does, sends instances, and checks what the
subscription's sink got, byte for byte, and what the peer was answered.
"""

from __future__ import annotations

import functools
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
import trio
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage  # type: ignore[attr-defined]

from rst.backends.dimse.client import Connection, open_association
from rst.backends.dimse.incoming import STREAM_AFTER
from rst.backends.dimse.mediator import Mediator, Subscription
from rst.backends.dimse.receiver import StoreReceiver
from rst.backends.dimse.sink import InstanceSink
from rst.backends.dimse.ul import (
    OtherCommand,
    PresentationContextRQ,
    encode_c_echo_rq,
    encode_c_store_rq,
    encode_pdata,
)
from rst.config import AeConfig, DimseConfig
from rst.dicom.part10 import dataset_offset
from rst.dicom.uids import VERIFICATION
from rst.errors import IncompleteRetrieve
from rst.services.protocols import Instance
from tests.support.dcmtk import echoscu, run_tool
from tests.support.receiver_counts import stores
from tests.support.sample import (
    ENHANCED_CT_IMAGE_STORAGE,
    StudyFiles,
    write_ct_study,
    write_multiframe,
)

ORIGINATOR = ("RST", 7)


@pytest.fixture
def study(tmp_path: Path) -> StudyFiles:
    return write_ct_study(tmp_path / "study", images=4, rows=64, columns=64, series=2)


@pytest.fixture
async def receiver() -> AsyncIterator[StoreReceiver]:
    config = DimseConfig(host="127.0.0.1", port=0, stall_timeout=5.0)
    server = StoreReceiver(config, Mediator())
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        yield server
        nursery.cancel_scope.cancel()


def sink() -> InstanceSink:
    return InstanceSink(capacity=64, stall_timeout=5.0)


def send_with_pynetdicom(
    port: int,
    paths: list[Path],
    *,
    originator: tuple[str, int] | None = ORIGINATOR,
    transfer_syntaxes: list[str] | None = None,
) -> list[int]:
    """C-STORE each file as a C-MOVE sub-operation would; return the statuses.

    One presentation context per SOP class of the files, proposing *transfer_syntaxes*
    (pynetdicom's default list when ``None``)."""
    ae = AE(ae_title="PACS")
    sop_classes = {pydicom.dcmread(p, stop_before_pixels=True).SOPClassUID for p in paths}
    for sop_class in sorted(sop_classes):
        if transfer_syntaxes is None:
            ae.add_requested_context(sop_class)
        else:
            ae.add_requested_context(sop_class, transfer_syntaxes)
    assoc = ae.associate("127.0.0.1", port, ae_title="RST")
    assert assoc.is_established
    statuses: list[int] = []
    aet, message_id = originator if originator is not None else (None, None)
    try:
        for path in paths:
            ds = pydicom.dcmread(path)
            status = assoc.send_c_store(
                ds, msg_id=len(statuses) + 1, originator_aet=aet, originator_id=message_id
            )
            statuses.append(int(status.Status))
    finally:
        assoc.release()
    return statuses


async def test_instances_routed_by_move_originator_arrive_byte_identical(
    receiver: StoreReceiver, study: StudyFiles
) -> None:
    assert receiver.address is not None
    target = Subscription(sink(), study.study_uid, originator=ORIGINATOR, uid_fallback=False)
    with receiver.mediator.subscribe(target):
        statuses = await trio.to_thread.run_sync(
            send_with_pynetdicom, receiver.address[1], study.paths
        )
        assert statuses == [0] * len(study.paths)
        target.sink.finish()
        received = []
        while (instance := await target.sink.receive()) is not None:
            received.append(instance)
    assert [i.sop_instance_uid for i in received] == study.sop_uids
    for instance, path in zip(received, study.paths, strict=True):
        original = pydicom.dcmread(path)
        got = pydicom.dcmread(io.BytesIO(instance.data))
        assert got.file_meta.TransferSyntaxUID == instance.transfer_syntax
        assert got.PixelData == original.PixelData
        assert got.SOPInstanceUID == original.SOPInstanceUID
    assert stores(receiver, "accepted") == len(study.paths)


async def test_unsolicited_instances_are_refused(
    receiver: StoreReceiver, study: StudyFiles
) -> None:
    assert receiver.address is not None
    statuses = await trio.to_thread.run_sync(send_with_pynetdicom, receiver.address[1], study.paths)
    assert statuses == [0x0124] * len(study.paths)
    assert stores(receiver, "unsolicited") == len(study.paths)


async def test_uid_fallback_with_dcmtk_storescu(receiver: StoreReceiver, study: StudyFiles) -> None:
    """dcmtk's storescu sets no Move Originator fields: the UIDs route the instances."""
    assert receiver.address is not None
    series = study.series_uids[0]
    target = Subscription(sink(), study.study_uid, series)
    with receiver.mediator.subscribe(target):
        await trio.run_process(
            [
                "/usr/bin/storescu",
                "--no-halt",
                "-aec",
                "RST",
                "-aet",
                "PACS",
                "127.0.0.1",
                str(receiver.address[1]),
                *map(str, study.paths),
            ],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env={"TCP_NODELAY": "1"},
        )
        target.sink.finish()
        got = []
        while (instance := await target.sink.receive()) is not None:
            got.append(instance.sop_instance_uid)
    # only the instances of the subscribed series are taken; storescu reports the others refused
    assert sorted(got) == sorted(
        uid for uid, s in zip(study.sop_uids, study.instance_series, strict=True) if s == series
    )
    assert stores(receiver, "unsolicited") == len(study.paths) - len(got)


async def test_echo_with_dcmtk(receiver: StoreReceiver) -> None:
    assert receiver.address is not None
    result = await echoscu("127.0.0.1", receiver.address[1], "RST")
    assert result.returncode == 0, result.output


async def test_unsupported_abstract_syntax_is_rejected_per_context(
    receiver: StoreReceiver,
) -> None:
    assert receiver.address is not None

    def associate() -> list[tuple[str, int | None]]:
        ae = AE(ae_title="PACS")
        ae.add_requested_context(MRImageStorage)
        ae.add_requested_context("1.2.3.4.5.6")  # not a storage class
        assoc = ae.associate("127.0.0.1", receiver.address[1], ae_title="RST")  # type: ignore[index]
        try:
            return [(str(cx.abstract_syntax), cx.result) for cx in assoc.accepted_contexts] + [
                (str(cx.abstract_syntax), cx.result) for cx in assoc.rejected_contexts
            ]
        finally:
            assoc.release()

    results = dict(await trio.to_thread.run_sync(associate))
    assert results[str(MRImageStorage)] == 0
    assert results["1.2.3.4.5.6"] == 3


@pytest.mark.parametrize(
    "garbage",
    [b"\x07\x00\x00\x00\x00\x04\x00\x00\x00\x00", b"GET / HTTP/1.1\r\n\r\n", b"\x01" * 64],
)
async def test_garbage_gets_an_abort_and_the_receiver_keeps_serving(
    receiver: StoreReceiver, garbage: bytes
) -> None:
    assert receiver.address is not None
    stream = await trio.open_tcp_stream(*receiver.address)
    async with stream:
        await stream.send_all(garbage)
        with trio.fail_after(5):
            reply = await stream.receive_some(64)
    assert reply[:1] in (b"\x07", b"\x03", b"")  # A-ABORT (or A-ASSOCIATE-RJ), then closed
    result = await echoscu("127.0.0.1", receiver.address[1], "RST")
    assert result.returncode == 0, result.output


async def test_fuzzed_streams_never_take_the_receiver_down(receiver: StoreReceiver) -> None:
    """Random bytes after a valid association request, and mutated requests: every connection
    ends (abort or close) within its timeout, and the receiver keeps serving."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from rst.backends.dimse.ul import PresentationContextRQ, encode_associate_rq

    assert receiver.address is not None
    address = receiver.address
    valid = encode_associate_rq(
        called_aet="RST",
        calling_aet="FUZZ",
        contexts=[PresentationContextRQ(1, "1.2.840.10008.5.1.4.1.1.2", ("1.2.840.10008.1.2",))],
        max_pdu_length=16384,
        implementation_class_uid="1.2.3.4",
    )
    cases: list[bytes] = []

    @settings(max_examples=60, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(
        st.one_of(
            st.binary(max_size=300).map(lambda tail: valid + tail),
            st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 255)).map(
                lambda m: valid[: m[0]] + bytes([m[1]]) + valid[m[0] + 1 :]
            ),
            st.binary(max_size=300),
        )
    )
    def collect(data: bytes) -> None:
        cases.append(data)

    collect()
    for data in cases:
        stream = await trio.open_tcp_stream(*address)
        async with stream:
            with trio.fail_after(5):
                await stream.send_all(data)
                await stream.send_eof()
                while await stream.receive_some(65536):  # until the receiver closes
                    pass
    # still serving
    result = await echoscu("127.0.0.1", address[1], "RST")
    assert result.returncode == 0, result.output
    assert receiver.associations == 0


# -- large instances: handed over while still arriving ---------------------------------------------


@pytest.fixture
def large(tmp_path: Path) -> StudyFiles:
    """One Enhanced CT instance of 32 frames of 256x256 16-bit pixels: 4 MiB, well past
    ``STREAM_AFTER``."""
    study = write_multiframe(tmp_path / "large", frames=32, rows=256, columns=256)
    assert study.total_bytes > 3 * STREAM_AFTER
    return study


async def take_whole(sink: InstanceSink) -> tuple[Instance, bytes]:
    """The next instance of *sink* and all its bytes (its ``rest`` read to the end)."""
    instance = await sink.receive()
    assert instance is not None
    chunks = [instance.data]
    if instance.rest is not None:
        async for chunk in instance.rest:
            chunks.append(chunk)
    return instance, b"".join(chunks)


async def drain(chunks: AsyncIterator[bytes], into: list[bytes]) -> None:
    """Read *chunks* to the end (or the error) into *into*."""
    async for chunk in chunks:
        into.append(chunk)


def assert_same_instance(received: bytes, path: Path, transfer_syntax: str) -> None:
    """*received* is a Part 10 file in *transfer_syntax* holding the data set of *path*."""
    original = pydicom.dcmread(path)
    got = pydicom.dcmread(io.BytesIO(received))
    assert got.file_meta.TransferSyntaxUID == transfer_syntax
    assert got.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
    assert got.file_meta.MediaStorageSOPClassUID == original.SOPClassUID
    assert bytes(got.PixelData) == bytes(original.PixelData)
    assert got.NumberOfFrames == original.NumberOfFrames
    # every other attribute too (values; the VR of implicit-VR data comes from the dictionary)
    keywords = {e.keyword for e in original if e.keyword != "PixelData"}
    assert keywords == {e.keyword for e in got if e.keyword != "PixelData"}
    for keyword in sorted(keywords):
        assert got[keyword].value == original[keyword].value, keyword


async def test_large_instance_from_pynetdicom_is_handed_over_while_arriving(
    receiver: StoreReceiver, large: StudyFiles
) -> None:
    """pynetdicom sends 4 MiB in 128 KiB PDUs over an Implicit VR context: the sink gets the
    instance with a ``rest`` still to come, and the whole is the file sent, as Implicit VR."""
    assert receiver.address is not None
    port = receiver.address[1]
    target = Subscription(sink(), large.study_uid, originator=ORIGINATOR, uid_fallback=False)
    statuses: list[int] = []

    async def send() -> None:
        statuses.extend(
            await trio.to_thread.run_sync(
                functools.partial(
                    send_with_pynetdicom,
                    port,
                    large.paths,
                    transfer_syntaxes=[ImplicitVRLittleEndian],
                )
            )
        )

    with receiver.mediator.subscribe(target):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            with trio.fail_after(30):
                instance, received = await take_whole(target.sink)
    assert statuses == [0x0000]
    assert instance.rest is not None  # handed over before its last fragment
    assert STREAM_AFTER <= len(instance.data) < len(received)
    assert instance.sop_instance_uid == large.sop_uids[0]
    assert instance.transfer_syntax == ImplicitVRLittleEndian  # the accepted context's
    assert_same_instance(received, large.paths[0], ImplicitVRLittleEndian)
    assert stores(receiver, "accepted") == 1


@pytest.mark.parametrize(
    ("propose", "syntax"),
    [((), ExplicitVRLittleEndian), (("-xi",), ImplicitVRLittleEndian)],
    ids=["as-stored", "implicit-only"],
)
async def test_large_instance_from_dcmtk_storescu_is_handed_over_while_arriving(
    receiver: StoreReceiver, large: StudyFiles, propose: tuple[str, ...], syntax: str
) -> None:
    """dcmtk's storescu (no Move Originator: routed by the UIDs read from the first MiB)."""
    assert receiver.address is not None
    port = receiver.address[1]
    target = Subscription(sink(), large.study_uid)
    results = []

    async def send() -> None:
        args = ["-v", *propose, "-aet", "PACS", "-aec", "RST", "127.0.0.1", str(port)]
        results.append(await run_tool("storescu", *args, str(large.paths[0])))

    with receiver.mediator.subscribe(target):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            with trio.fail_after(30):
                instance, received = await take_whole(target.sink)
    assert results[0].store_statuses == ["Success"], results[0].output
    assert instance.rest is not None
    assert STREAM_AFTER <= len(instance.data) < len(received)
    assert instance.transfer_syntax == syntax
    assert_same_instance(received, large.paths[0], syntax)


@dataclass
class RawStore:
    """A C-STORE sent by hand on rst's own trio association client, fragment by fragment, so
    that a test decides when each part of the data set goes out."""

    connection: Connection
    dataset: bytes
    """The data set as it goes on the wire (the file without its meta)."""
    sop_instance_uid: str
    sent: int = 0

    async def command(self, message_id: int) -> None:
        self.sent = 0
        command = encode_c_store_rq(
            message_id=message_id,
            sop_class_uid=ENHANCED_CT_IMAGE_STORAGE,
            sop_instance_uid=self.sop_instance_uid,
            move_originator_aet=ORIGINATOR[0],
            move_originator_message_id=ORIGINATOR[1],
        )
        await self.connection.stream.send_all(encode_pdata(1, True, True, command))

    async def send_until(self, end: int) -> None:
        """Send the data set up to byte *end* in PDUs the receiver takes (the last one of the
        data set marked so)."""
        chunk = self.connection.accept.max_pdu_length - 6
        view = memoryview(self.dataset)
        while self.sent < end:
            stop = min(self.sent + chunk, end)
            last = stop == len(view)
            await self.connection.stream.send_all(
                encode_pdata(1, False, last, view[self.sent : stop])
            )
            self.sent = stop

    async def response(self, message_id: int) -> int:
        """The status of the response to message *message_id*."""
        with trio.fail_after(10):
            _, response = await self.connection.receive_command()
        assert isinstance(response, OtherCommand)
        assert response.message_id_being_responded_to == message_id
        assert response.status is not None
        return response.status


@asynccontextmanager
async def raw_store(receiver: StoreReceiver, large: StudyFiles) -> AsyncIterator[RawStore]:
    assert receiver.address is not None
    host, port = receiver.address
    config = AeConfig(aet="RST", host=host, port=port, connect_timeout=5.0, cancel_timeout=5.0)
    contexts = [
        PresentationContextRQ(1, ENHANCED_CT_IMAGE_STORAGE, (ExplicitVRLittleEndian,)),
        PresentationContextRQ(3, VERIFICATION, (ImplicitVRLittleEndian,)),
    ]
    data = large.paths[0].read_bytes()
    async with open_association(
        config, calling_aet="PACS", contexts=contexts, max_pdu=65536
    ) as connection:
        assert connection.transfer_syntax(1) == ExplicitVRLittleEndian
        assert connection.accept.max_pdu_length > 6
        yield RawStore(connection, data[dataset_offset(data) :], large.sop_uids[0])


async def test_large_instance_flows_before_its_second_half_is_sent(
    receiver: StoreReceiver, large: StudyFiles
) -> None:
    """The sender holds back the second half of the data set until the consumer has the
    instance and a fragment of its rest; then the rest follows, the PACS hears success and the
    consumer has the data set byte for byte."""
    target = Subscription(sink(), large.study_uid, originator=ORIGINATOR, uid_fallback=False)
    second_half = trio.Event()
    statuses: list[int] = []
    async with raw_store(receiver, large) as store:
        half = len(store.dataset) // 2
        assert half > STREAM_AFTER + 4 * store.connection.accept.max_pdu_length

        async def sender() -> None:
            await store.command(1)
            await store.send_until(half)
            await second_half.wait()
            await store.send_until(len(store.dataset))
            statuses.append(await store.response(1))

        with receiver.mediator.subscribe(target):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender)
                with trio.fail_after(10):  # without streaming nothing arrives: this fails
                    instance = await target.sink.receive()
                    assert instance is not None
                    assert instance.rest is not None
                    rest = aiter(instance.rest)
                    first = await anext(rest)
                sent_while_flowing = store.sent
                second_half.set()
                chunks = [instance.data, first]
                with trio.fail_after(30):
                    async for chunk in rest:
                        chunks.append(chunk)
    assert sent_while_flowing <= half  # the consumer had bytes before the second half left
    assert len(instance.data) + len(first) <= half + dataset_offset(instance.data)
    assert statuses == [0x0000]
    received = b"".join(chunks)
    assert received[dataset_offset(received) :] == store.dataset
    assert_same_instance(received, large.paths[0], ExplicitVRLittleEndian)
    assert stores(receiver, "accepted") == 1


@pytest.mark.parametrize("how", ["a-abort", "close"])
async def test_sender_breaking_off_mid_instance_fails_its_rest(
    receiver: StoreReceiver, large: StudyFiles, how: str
) -> None:
    """The association ends (A-ABORT, or the socket closed) after half the data set: reading
    the rest raises IncompleteRetrieve, the consumer never takes a short instance for whole."""
    target = Subscription(sink(), large.study_uid, originator=ORIGINATOR, uid_fallback=False)
    async with raw_store(receiver, large) as store:
        half = len(store.dataset) // 2

        async def first_half() -> None:
            await store.command(1)
            await store.send_until(half)

        with receiver.mediator.subscribe(target):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(first_half)
                with trio.fail_after(10):
                    instance = await target.sink.receive()
                    assert instance is not None
                    assert instance.rest is not None
                    rest = aiter(instance.rest)
                    got = len(instance.data) + len(await anext(rest))
            # the first half is out (the nursery waited for the sender); the PACS goes away
            if how == "a-abort":
                await store.connection.abort()
            else:
                await store.connection.stream.aclose()
            store.connection.broken = True  # no A-RELEASE on the way out
            tail: list[bytes] = []
            with trio.fail_after(10), pytest.raises(IncompleteRetrieve, match="cut short"):
                await drain(rest, tail)
    assert got + sum(map(len, tail)) <= half + dataset_offset(instance.data)
    assert stores(receiver, "accepted") == 0


async def test_request_gone_mid_instance_refuses_it_and_the_association_goes_on(
    receiver: StoreReceiver, large: StudyFiles
) -> None:
    """The request that wanted the instance ends (its sink closed) after half the data set: the
    PACS hears 0x0124 once it has sent the rest, the association carries on — the next C-STORE
    is refused too (nobody wants it) and a C-ECHO is answered; nothing is aborted."""
    target = Subscription(sink(), large.study_uid, originator=ORIGINATOR, uid_fallback=False)
    second_half = trio.Event()
    statuses: list[int] = []
    async with raw_store(receiver, large) as store:
        half = len(store.dataset) // 2

        async def sender() -> None:
            await store.command(1)
            await store.send_until(half)
            await second_half.wait()
            await store.send_until(len(store.dataset))
            statuses.append(await store.response(1))

        async with trio.open_nursery() as nursery:
            with receiver.mediator.subscribe(target):
                nursery.start_soon(sender)
                with trio.fail_after(10):
                    instance = await target.sink.receive()
                    assert instance is not None
                    assert instance.rest is not None
                    rest = aiter(instance.rest)
                    await anext(rest)
                target.sink.close()  # the HTTP request has gone
            with pytest.raises(IncompleteRetrieve):
                await anext(rest)
            second_half.set()
        assert statuses == [0x0124]

        # the same association: another (large) C-STORE nobody wants, then a C-ECHO
        await store.command(2)
        await store.send_until(len(store.dataset))
        assert await store.response(2) == 0x0124
        await store.connection.stream.send_all(
            encode_pdata(3, True, True, encode_c_echo_rq(message_id=3))
        )
        assert await store.response(3) == 0x0000
    assert stores(receiver, "accepted") == 0
    assert stores(receiver, "unsolicited") == 1  # the second: unsolicited


async def test_uid_routing_of_a_large_instance_whose_uids_lie_past_the_first_mib(
    receiver: StoreReceiver, study: StudyFiles, tmp_path: Path
) -> None:
    """A 1.5 MiB private element in group 0009 puts the Study/Series UIDs past the point where
    the instance is handed over; storescu sends no Move Originator, so only the UIDs route it.
    Reassembled whole (as before streaming) it would be routed; it must still be."""
    ds = pydicom.dcmread(study.paths[0])
    block = ds.private_block(0x0009, "RST TEST", create=True)
    block.add_new(0x00, "OB", bytes(range(256)) * (6 * 1024))  # 1.5 MiB
    path = tmp_path / "private.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert receiver.address is not None
    target = Subscription(sink(), study.study_uid)
    args = ["-v", "-aet", "PACS", "-aec", "RST", "127.0.0.1", str(receiver.address[1])]
    with receiver.mediator.subscribe(target):
        result = await run_tool("storescu", *args, str(path))
        target.sink.finish()
        with trio.fail_after(10):
            received = [instance async for instance in _drain_instances(target.sink)]
    assert result.store_statuses == ["Success"], result.output
    assert [i.sop_instance_uid for i in received] == [study.sop_uids[0]]


async def _drain_instances(sink: InstanceSink) -> AsyncIterator[Instance]:
    while (instance := await sink.receive()) is not None:
        if instance.rest is not None:
            async for _ in instance.rest:
                pass
        yield instance
