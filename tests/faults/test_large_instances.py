"""Large multi-frame instances through rst, over HTTP, from the development PACS.

The receiver and the C-GET client hand an instance over once its first MiB has arrived and
stream the rest into the HTTP response as it arrives. The client gets every instance byte for
byte — and a PACS that dies in the middle of
one gives a response that breaks off, never a complete-looking multipart.
"""

from __future__ import annotations

import io
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import h11
import pydicom
import pytest
import trio
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from rst.backends.dimse.incoming import STREAM_AFTER
from rst.config import AeConfig
from rst.devpacs import DevPacs, Faults, FolderArchive
from rst.dicom.multipart import MultipartReader, parse_content_type
from rst.errors import BadRequest
from rst.logs import RequestIdFilter
from rst.server import Running
from tests.support.download import AS_STORED, DEFAULT, Download
from tests.support.gateway import run_gateway, settled, wait_until
from tests.support.relay import Relay, open_relay
from tests.support.sample import write_multiframe

Mode = Literal["move", "get"]
FRAMES = 24  # 24 x 256 x 256 x 16 bit: 3 MiB of pixel data per instance
HOLD_AFTER = 2 * 1024**2  # the relay stops the transfer here, in the middle of the first instance


@dataclass(frozen=True)
class LargeStudy:
    folder: Path
    study_uid: str
    paths: dict[str, Path]  # SOP Instance UID -> file
    syntaxes: dict[str, str]  # SOP Instance UID -> transfer syntax as stored


@pytest.fixture(scope="session")
def large_study(tmp_path_factory: pytest.TempPathFactory) -> LargeStudy:
    """One study of two 3 MiB multi-frame instances, stored Explicit and Implicit VR LE."""
    folder = tmp_path_factory.mktemp("devpacs-large")
    explicit = write_multiframe(folder, frames=FRAMES, rows=256, columns=256, seed=1)
    implicit = write_multiframe(
        folder,
        frames=FRAMES,
        rows=256,
        columns=256,
        seed=2,
        study_uid=explicit.study_uid,
        transfer_syntax=ImplicitVRLittleEndian,
    )
    paths = {s.sop_uids[0]: s.paths[0] for s in (explicit, implicit)}
    for path in paths.values():
        assert path.stat().st_size > 2 * STREAM_AFTER
    return LargeStudy(
        folder,
        explicit.study_uid,
        paths,
        {
            explicit.sop_uids[0]: ExplicitVRLittleEndian,
            implicit.sop_uids[0]: ImplicitVRLittleEndian,
        },
    )


@pytest.fixture
def pacs(large_study: LargeStudy, faults: Faults) -> Iterator[DevPacs]:
    server = DevPacs(FolderArchive(large_study.folder), aet="FAULTY", port=0, faults=faults)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def expected_syntaxes(study: LargeStudy, accept: str) -> dict[str, str]:
    """The transfer syntax each instance must arrive in.

    Explicit VR LE by default. As stored (``transfer-syntax=*``): C-MOVE sub-operations come
    as stored (the dev PACS proposes each instance's own syntax), and C-GET ones too (the dev
    PACS names the study's SOP class, rst proposes a context per syntax for it — Explicit VR
    alone among them — and the dev PACS picks the one of the stored syntax, Implicit VR from
    the context of every uncompressed syntax)."""
    if accept == DEFAULT:
        return dict.fromkeys(study.paths, ExplicitVRLittleEndian)
    return study.syntaxes


def check_instances(download: Download, study: LargeStudy, expected_syntax: dict[str, str]) -> None:
    """The download is complete: every instance of *study*, in the expected syntax, with the
    pixel data and attributes of the file the PACS holds."""
    assert download.error is None
    assert download.status == 200
    parts = download.parts()
    got: dict[str, str] = {}
    for syntax, data in parts:
        ds = pydicom.dcmread(io.BytesIO(data))
        uid = str(ds.SOPInstanceUID)
        original = pydicom.dcmread(study.paths[uid])
        assert ds.file_meta.TransferSyntaxUID == syntax
        assert bytes(ds.PixelData) == bytes(original.PixelData)
        assert ds.NumberOfFrames == FRAMES
        assert ds.PerFrameFunctionalGroupsSequence == original.PerFrameFunctionalGroupsSequence
        got[uid] = syntax
    assert got == expected_syntax


def study_url(running: Running, study: LargeStudy) -> str:
    return f"{running.http_url}/aets/FAULTY/studies/{study.study_uid}"


@asynccontextmanager
async def gateway_through_relay(pacs: DevPacs, mode: Mode) -> AsyncIterator[tuple[Running, Relay]]:
    """rst in front of *pacs*, the instances passing a :class:`Relay` that holds the transfer
    after ``HOLD_AFTER`` bytes: between rst and the PACS for C-GET, between the PACS and rst's
    receiver for C-MOVE."""
    if mode == "get":
        async with open_relay((pacs.host, pacs.port), hold_after=HOLD_AFTER) as relay:
            host, port = relay.address
            config = AeConfig(aet="FAULTY", host=host, port=port, retrieve="get")
            async with run_gateway(config) as running:
                yield running, relay
    else:
        config = AeConfig(aet="FAULTY", host=pacs.host, port=pacs.port, retrieve="move")
        async with (
            run_gateway(config) as running,
            open_relay(running.dimse_address, hold_after=HOLD_AFTER) as relay,
        ):
            pacs.add_destination("RST", *relay.address)
            yield running, relay


@pytest.mark.parametrize("mode", ["move", "get"])
@pytest.mark.parametrize("accept", [DEFAULT, AS_STORED], ids=["explicit-vr", "as-stored"])
async def test_large_instances_arrive_byte_identical(
    pacs: DevPacs, large_study: LargeStudy, mode: Mode, accept: str
) -> None:
    """Both 3 MiB instances of the study, in one response: by default in Explicit VR LE (the
    Implicit VR one re-encoded: with the trio receiver only after it has fully arrived), as
    stored with ``transfer-syntax=*``."""
    config = AeConfig(aet="FAULTY", host=pacs.host, port=pacs.port, retrieve=mode)
    async with run_gateway(config) as running:
        pacs.add_destination("RST", *running.dimse_address)
        download = Download(study_url(running, large_study), accept)
        with trio.fail_after(60):
            await download.run()
        await settled(running)
    check_instances(download, large_study, expected_syntaxes(large_study, accept))


@pytest.mark.parametrize("mode", ["move", "get"])
async def test_large_instance_reaches_the_client_while_the_pacs_still_sends(
    pacs: DevPacs, large_study: LargeStudy, mode: Mode
) -> None:
    """The relay holds the PACS's data after 2 MiB of the first instance: by then the client
    has more than a MiB of the response; once the relay lets go, the response completes.

    As stored: an instance to re-encode (the dev PACS sends Implicit VR for C-GET) is sent
    only once it has fully arrived."""
    async with gateway_through_relay(pacs, mode) as (running, relay):
        download = Download(study_url(running, large_study), AS_STORED)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(download.run)
            with trio.fail_after(20):
                await relay.held.wait()
                await download.flowing.wait()  # without streaming: nothing while held
            assert not download.done.is_set()
            assert download.status == 200
            relay.resume()
            with trio.fail_after(60):
                await download.done.wait()
        await settled(running)
    check_instances(download, large_study, expected_syntaxes(large_study, AS_STORED))


@pytest.mark.parametrize("mode", ["move", "get"])
async def test_pacs_dying_mid_instance_breaks_the_response(
    pacs: DevPacs, large_study: LargeStudy, mode: Mode
) -> None:
    """The PACS's connection is cut 2 MiB into the first instance. The response has begun
    (that instance is streaming): it breaks off, never a complete multipart."""
    async with gateway_through_relay(pacs, mode) as (running, relay):
        download = Download(study_url(running, large_study), AS_STORED)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(download.run)
            with trio.fail_after(20):
                await relay.held.wait()
                await download.flowing.wait()  # the response is under way
            relay.cut()
            with trio.fail_after(60):
                await download.done.wait()
        await settled(running, within=10)
    assert download.status == 200
    assert download.error is not None  # httpx: incomplete chunked read
    assert not download.closed
    with pytest.raises(BadRequest, match="ended before its closing boundary"):
        download.parts()


# -- a client that stops reading: the fragments of a streaming instance go to the spool ----------


@pytest.fixture(scope="session")
def bigger_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three 6 MiB instances (48 frames of 256x256): more than the sockets between rst and a
    stalled client can buffer."""
    folder = tmp_path_factory.mktemp("devpacs-bigger")
    first = write_multiframe(folder, frames=48, rows=256, columns=256, seed=3)
    for seed in (4, 5):
        write_multiframe(
            folder, frames=48, rows=256, columns=256, seed=seed, study_uid=first.study_uid
        )
    return folder


@dataclass
class StalledClient:
    """An HTTP client with a 4 KiB receive buffer that reads the response head, then nothing
    until :meth:`read_rest` (h11 on a raw socket: httpx buffers too much to stall rst)."""

    stream: trio.SocketStream
    connection: h11.Connection
    head: h11.Response

    @classmethod
    async def get(cls, running: Running, path: str, request_id: str = "-") -> StalledClient:
        host, port = running.http_url.removeprefix("http://").split(":")
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect((host, int(port)))
        stream = trio.SocketStream(sock)
        connection = h11.Connection(h11.CLIENT)
        request = h11.Request(
            method="GET",
            target=path,
            headers=[("Host", host), ("Accept", AS_STORED), ("X-Request-ID", request_id)],
        )
        await stream.send_all(connection.send(request) + connection.send(h11.EndOfMessage()))
        client = cls(stream, connection, h11.Response(status_code=599, headers=[]))
        head = await client._event()
        assert isinstance(head, h11.Response)
        client.head = head
        return client

    async def _event(self) -> Any:
        while (event := self.connection.next_event()) is h11.NEED_DATA:
            self.connection.receive_data(await self.stream.receive_some(65536))
        return event

    async def read_rest(self) -> tuple[bytes, bool]:
        """The body; whether it ended properly (``False``: the connection closed mid-body)."""
        body = bytearray()
        try:
            while not isinstance(event := await self._event(), h11.EndOfMessage):
                body += event.data
        except h11.RemoteProtocolError:
            return bytes(body), False
        finally:
            await self.stream.aclose()
        return bytes(body), True

    @property
    def boundary(self) -> str:
        content_type = dict(self.head.headers)[b"content-type"].decode()
        return parse_content_type(content_type)[1]["boundary"]


def bodies(running: Running) -> list[Any]:
    """The bodies of the instances streaming into the one open retrieve (rst internals)."""
    [subscription] = running.mediator.subscriptions()
    return list(subscription.sink._bodies)


async def test_stalled_client_gets_large_instances_through_the_spool(bigger_folder: Path) -> None:
    """The client stops reading; the streaming instance's fragments wait ``stall_timeout`` for
    it, then spill to the spool (the PACS is not held up); once the client reads again it gets
    every instance whole, in order of arrival."""
    pacs = DevPacs(FolderArchive(bigger_folder), aet="FAULTY", port=0)
    pacs.start()
    try:
        [study_uid] = {str(i.study_uid) for i in pacs.archive.instances()}
        config = AeConfig(aet="FAULTY", host=pacs.host, port=pacs.port)
        async with run_gateway(config, dimse={"stall_timeout": 0.2, "channel_size": 1}) as running:
            pacs.add_destination("RST", *running.dimse_address)
            client = await StalledClient.get(running, f"/aets/FAULTY/studies/{study_uid}")
            assert client.head.status_code == 200
            await wait_until(
                lambda: any(body.spooled for body in bodies(running)),
                within=30,
                what="fragments of a streaming instance to be spooled",
            )
            with trio.fail_after(60):
                body, complete = await client.read_rest()
            await settled(running)
    finally:
        pacs.stop()
    assert complete
    reader = MultipartReader(client.boundary, max_part_bytes=1 << 30, max_total_bytes=1 << 31)
    parts = reader.feed(body) + reader.finish()
    originals = {i.sop_instance_uid: pydicom.dcmread(i.path) for i in pacs.archive.instances()}
    assert len(parts) == len(originals) == 3
    for part in parts:
        got = pydicom.dcmread(io.BytesIO(part.data))
        original = originals.pop(str(got.SOPInstanceUID))
        assert bytes(got.PixelData) == bytes(original.PixelData)
    assert not originals


async def test_spool_full_mid_instance_breaks_the_response(
    bigger_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The spool limit is reached while fragments of a streaming instance spill: the PACS hears
    "out of resources", the client that reads again gets a body that breaks off. The
    receiver's line about it carries the request's id."""
    caplog.handler.addFilter(RequestIdFilter())
    pacs = DevPacs(FolderArchive(bigger_folder), aet="FAULTY", port=0)
    pacs.start()
    try:
        [study_uid] = {str(i.study_uid) for i in pacs.archive.instances()}
        config = AeConfig(aet="FAULTY", host=pacs.host, port=pacs.port)
        dimse = {"stall_timeout": 0.2, "channel_size": 1, "spool_max_bytes": 1 << 20}
        async with run_gateway(config, dimse=dimse) as running:
            pacs.add_destination("RST", *running.dimse_address)
            client = await StalledClient.get(
                running, f"/aets/FAULTY/studies/{study_uid}", request_id="spool-1"
            )
            assert client.head.status_code == 200
            await wait_until(
                lambda: any(body._error is not None for body in bodies(running)),
                within=30,
                what="the spool to fill up in the middle of an instance",
            )
            with trio.fail_after(60):
                body, complete = await client.read_rest()
            await settled(running)
    finally:
        pacs.stop()
    assert not complete
    assert f"--{client.boundary}--".encode() not in body
    [spool_full] = [
        r for r in caplog.records if "spool" in r.getMessage() and "refusing" in r.getMessage()
    ]
    assert getattr(spool_full, "request_id", None) == "spool-1"
    assert getattr(spool_full, "aet", None) == "FAULTY"
