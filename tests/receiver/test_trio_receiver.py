"""rst's trio C-STORE receiver against independent peers: pynetdicom and dcmtk's storescu.

Each test opens a subscription the way a retrieve does, sends instances, and checks what the
subscription's sink got, byte for byte, and what the peer was answered.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pydicom
import pytest
import trio
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, MRImageStorage  # type: ignore[attr-defined]

from rst.backends.dimse.mediator import Mediator, Subscription
from rst.backends.dimse.sink import InstanceSink
from rst.backends.dimse.trio_receiver import TrioStoreReceiver
from rst.config import DimseConfig
from tests.support.sample import StudyFiles, write_ct_study

ORIGINATOR = ("RST", 7)


@pytest.fixture
def study(tmp_path: Path) -> StudyFiles:
    return write_ct_study(tmp_path / "study", images=4, rows=64, columns=64, series=2)


@pytest.fixture
async def receiver() -> AsyncIterator[TrioStoreReceiver]:
    config = DimseConfig(host="127.0.0.1", port=0, stall_timeout=5.0)
    server = TrioStoreReceiver(config, Mediator())
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        yield server
        nursery.cancel_scope.cancel()


def sink() -> InstanceSink:
    return InstanceSink(capacity=64, stall_timeout=5.0)


def send_with_pynetdicom(
    port: int, paths: list[Path], *, originator: tuple[str, int] | None = ORIGINATOR
) -> list[int]:
    """C-STORE each file as a C-MOVE sub-operation would; return the statuses."""
    ae = AE(ae_title="PACS")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="RST")
    assert assoc.is_established
    statuses = []
    try:
        for path in paths:
            ds = pydicom.dcmread(path)
            kwargs = {}
            if originator is not None:
                kwargs = {"originator_aet": originator[0], "originator_id": originator[1]}
            status = assoc.send_c_store(ds, msg_id=len(statuses) + 1, **kwargs)
            statuses.append(int(status.Status))
    finally:
        assoc.release()
    return statuses


async def test_instances_routed_by_move_originator_arrive_byte_identical(
    receiver: TrioStoreReceiver, study: StudyFiles
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
    assert receiver.received == len(study.paths)


async def test_unsolicited_instances_are_refused(
    receiver: TrioStoreReceiver, study: StudyFiles
) -> None:
    assert receiver.address is not None
    statuses = await trio.to_thread.run_sync(send_with_pynetdicom, receiver.address[1], study.paths)
    assert statuses == [0x0124] * len(study.paths)
    assert receiver.refused == len(study.paths)


async def test_uid_fallback_with_dcmtk_storescu(
    receiver: TrioStoreReceiver, study: StudyFiles
) -> None:
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
    assert receiver.refused == len(study.paths) - len(got)


async def test_echo_with_dcmtk(receiver: TrioStoreReceiver) -> None:
    assert receiver.address is not None
    result = await trio.run_process(
        ["/usr/bin/echoscu", "-aec", "RST", "127.0.0.1", str(receiver.address[1])],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


async def test_unsupported_abstract_syntax_is_rejected_per_context(
    receiver: TrioStoreReceiver,
) -> None:
    assert receiver.address is not None

    def associate() -> list[tuple[str, int]]:
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
    receiver: TrioStoreReceiver, garbage: bytes
) -> None:
    assert receiver.address is not None
    stream = await trio.open_tcp_stream(*receiver.address)
    async with stream:
        await stream.send_all(garbage)
        with trio.fail_after(5):
            reply = await stream.receive_some(64)
    assert reply[:1] in (b"\x07", b"\x03", b"")  # A-ABORT (or A-ASSOCIATE-RJ), then closed
    result = await trio.run_process(
        ["/usr/bin/echoscu", "-aec", "RST", "127.0.0.1", str(receiver.address[1])],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


async def test_fuzzed_streams_never_take_the_receiver_down(receiver: TrioStoreReceiver) -> None:
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
    result = await trio.run_process(
        ["/usr/bin/echoscu", "-aec", "RST", "127.0.0.1", str(address[1])],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert receiver.associations == 0
