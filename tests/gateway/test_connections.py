"""Whatever a client does to its connection, the connection ends in bounded time, its socket
closed and its slot of ``http.max_connections`` free; a client that is still there gets whole
answers; and nothing the client did is logged as an error.

Served by the real listener in front of a :class:`ScriptedBackend`, with one connection slot:
a probe that is answered proves that the connection before it has ended — the slot is given
back only once the connection's task has closed its socket and every task of its requests has
ended. ``keep_alive_timeout`` is long unless a test is about it, so the keep-alive timer is
never what ends a connection here."""

from __future__ import annotations

import contextlib
import json
import logging
import struct
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import h11
import pytest
import trio

from rst.config import Config, HttpConfig
from rst.http import connection
from rst.http.app import create_app
from rst.http.listener import serve_http
from rst.services.protocols import Backend
from tests.support.scripted_backend import ScriptedBackend, part10

STUDY = "1.2.3"
BIG_RETRIEVE = f"GET /aets/X/studies/{STUDY} HTTP/1.1\r\nHost: x\r\n".encode()
"""A retrieve of 20 MiB: its sends fail once its client has gone."""
AETS = b"GET /aets HTTP/1.1\r\nHost: x\r\n"
SETTLE = 5.0
"""Seconds within which an ended connection must have given its slot back."""


def big_backend() -> ScriptedBackend:
    return ScriptedBackend(instances=[part10(f"{STUDY}.1.{n}", size=1 << 20) for n in range(20)])


@dataclass
class Server:
    host: str
    port: int

    async def connect(self) -> trio.SocketStream:
        return await trio.open_tcp_stream(self.host, self.port)

    async def probe(self) -> None:
        """GET /aets on a new connection answers 200 within :data:`SETTLE` seconds: the one
        slot is free, so the connection before has ended."""
        with trio.move_on_after(SETTLE):
            answer = await exchange(self, AETS + b"Connection: close\r\n\r\n")
            assert answer.status == 200, answer
            return
        pytest.fail(f"no answer within {SETTLE} s: the connection before still holds its slot")


@asynccontextmanager
async def serving(backends: Mapping[str, Backend], **http: object) -> AsyncIterator[Server]:
    settings: dict[str, object] = {"max_connections": 1, "keep_alive_timeout": 60.0, **http}
    config = Config(http=HttpConfig(host="127.0.0.1", port=0, **settings))  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve_http, create_app(config, backends), config.http)
        host, port = binds[0].removeprefix("http://").rsplit(":", 1)
        yield Server(host, int(port))
        nursery.cancel_scope.cancel()


@dataclass
class Answer:
    status: int | None = None
    headers: dict[bytes, bytes] | None = None
    body: bytes = b""
    complete: bool = False
    """The whole body arrived (as its framing says)."""
    error: str | None = None


async def read_answer(stream: trio.SocketStream, already: bytes = b"") -> Answer:
    """Read one answer to a GET (whatever was sent), as far as it goes; *already*: its first
    bytes, read before."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    if already:
        conn.receive_data(already)  # (b"" would tell h11 of the end of the stream)
    answer = Answer()
    body = bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as error:
            answer.error = str(error)
            break
        if event is h11.NEED_DATA:
            try:
                conn.receive_data(await stream.receive_some(1 << 16))
            except trio.BrokenResourceError as error:
                answer.error = repr(error)
                break
        elif isinstance(event, h11.Response):
            answer.status = event.status_code
            answer.headers = dict(event.headers)
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            answer.complete = True
            break
        elif isinstance(event, h11.ConnectionClosed):
            break
    answer.body = bytes(body)
    return answer


async def exchange(server: Server, raw: bytes, *, half_close: bool = False) -> Answer:
    """Send *raw* on a new connection while reading the answer."""
    stream = await server.connect()
    async with stream, trio.open_nursery() as nursery:

        async def send() -> None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(raw)
                if half_close:
                    await stream.send_eof()

        nursery.start_soon(send)
        answer = await read_answer(stream)
        nursery.cancel_scope.cancel()
    return answer


async def hang_up(stream: trio.SocketStream, *, reset: bool) -> None:
    if reset:  # RST instead of FIN
        stream.socket.setsockopt(
            trio.socket.SOL_SOCKET, trio.socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
    await stream.aclose()


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.startswith("rst")
    ]


# --- clients that hang up ----------------------------------------------------------------------


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "reset"])
@pytest.mark.parametrize("after", [100, 21 << 20], ids=["in-first-answer", "in-second-answer"])
async def test_a_pipelining_client_that_hangs_up_frees_its_connection(
    after: int, reset: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Three pipelined retrieves of 20 MiB; the client hangs up after *after* bytes (in the
    first answer, or in the second). hypercorn parks its reader on the buffered next request
    until the current answer completes, and an answer whose client is gone never did: the
    connection held its task, descriptor and slot for good."""
    backend = big_backend()
    async with serving({"X": backend}) as server:
        stream = await server.connect()
        async with stream:
            await stream.send_all((BIG_RETRIEVE + b"\r\n") * 3)
            received = 0
            with trio.fail_after(10):
                while received < after:
                    received += len(await stream.receive_some(1 << 16))
            await hang_up(stream, reset=reset)
        await server.probe()
    assert backend.opened == backend.closed, "a retrieve of the connection is still open"
    assert not errors(caplog)


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "reset"])
async def test_a_client_that_hangs_up_while_its_body_is_read_frees_its_connection(
    reset: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A STOW whose client hangs up in the middle of its body: the request ends (its body
    can never complete) and the connection with it."""
    head = (
        b"POST /aets/X/studies HTTP/1.1\r\nHost: x\r\n"
        b'Content-Type: multipart/related; type="application/dicom"; boundary=b\r\n'
        b"Content-Length: 100000000\r\n\r\n--b\r\nContent-Type: application/dicom\r\n\r\n"
    )
    async with serving({"X": ScriptedBackend()}) as server:
        stream = await server.connect()
        async with stream:
            await stream.send_all(head + b"x" * 200_000)
            await hang_up(stream, reset=reset)
        await server.probe()
    assert not errors(caplog)


STOW_HEAD = (
    b"POST /aets/X/studies HTTP/1.1\r\nHost: x\r\n"
    b'Content-Type: multipart/related; type="application/dicom"; boundary=b\r\n'
)
BEHAVIOURS = {
    "head-unfinished": AETS,
    "answered": AETS + b"\r\n",
    "pipelined": (AETS + b"\r\n") * 50,
    "pipelined-retrieves": (BIG_RETRIEVE + b"\r\n") * 3,
    "expect-100-continue": STOW_HEAD + b"Expect: 100-continue\r\nContent-Length: 1030\r\n\r\n",
    "chunked-body-cut": STOW_HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nabc",
    "websocket-upgrade": AETS + b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    "h2c-upgrade": AETS + b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
    b"Connection: Upgrade, HTTP2-Settings\r\n\r\n",
    "http2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
}


@pytest.mark.parametrize("then", ["hang-up", "hold"])
@pytest.mark.parametrize("sent", sorted(BEHAVIOURS))
async def test_whatever_a_client_does_its_connection_ends(
    sent: str, then: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The client sends *sent*, then hangs up or holds its end open without reading or
    sending: the connection ends within its bound — ``keep_alive_timeout`` (0.5 s) while idle
    or in a request head, ``body_timeout`` (0.3 s) for a body, ``send_timeout`` (0.5 s) for
    an answer not read, :data:`~rst.http.connection.LINGER` (0.5 s here) after the last
    answer. Under hypercorn's shell, three kinds held their connection for good: pipelined
    requests whose client hung up or stopped reading (the reader parked on ``can_read``), a
    connection idle after an answer (hypercorn restarted its keep-alive timer from the
    request's task just as that task was being cancelled), and HTTP/2 by prior knowledge
    (h11 called the connection busy before handing it to h2)."""
    monkeypatch.setattr(connection, "LINGER", 0.5)
    timeouts = {"keep_alive_timeout": 0.5, "body_timeout": 0.3, "send_timeout": 0.5}
    async with serving({"X": big_backend()}, **timeouts) as server:
        stream = await server.connect()
        async with stream:
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(BEHAVIOURS[sent])
            if then == "hang-up":
                await stream.aclose()
            await server.probe()
    assert not errors(caplog)


async def test_a_client_that_never_closes_its_end_is_dropped_after_lingering() -> None:
    """After its last answer and rst's end of file, a client that neither closes its end nor
    stops sending is read and ignored for :data:`~rst.http.connection.LINGER` seconds, then
    dropped."""
    async with serving({"X": ScriptedBackend()}) as server:
        stream = await server.connect()
        async with stream:
            await stream.send_all(AETS + b"Connection: close\r\n\r\n")
            with trio.fail_after(5):
                answer = await read_answer(stream)
                assert answer.complete
                assert await stream.receive_some(1 << 16) == b""  # rst's end of file
            bound = connection.LINGER + 5
            with trio.fail_after(bound), contextlib.suppress(trio.BrokenResourceError):
                while True:  # what rst reads and drops while lingering; then the reset
                    await stream.send_all(b"more\r\n")
                    await trio.sleep(0.05)  # a slow sender: pacing, not synchronisation
            await server.probe()


# --- whole answers for the client that is still there ------------------------------------------


RAW_CASES = {
    "random-bytes": bytes(range(256)) * 4,
    "bare-line": b"GET\r\n\r\n",
    "no-colon": AETS + b"Bad Header\r\n\r\n",
    "huge-header": AETS + b"X: " + b"a" * 70000 + b"\r\n\r\n",
    "length-short-close": (
        b"POST /aets/X/studies HTTP/1.1\r\nHost: x\r\n"
        b'Content-Type: multipart/related; type="application/dicom"; boundary=b\r\n'
        b"Content-Length: 10\r\nConnection: close\r\n\r\n"
        b"--b\r\nContent-Type: application/dicom\r\n\r\n" + b"x" * 1000 + b"\r\n--b--\r\n"
    ),
    "pipelined-garbage": AETS + b"\r\n" + AETS + b"\r\nGARBAGE\r\n\r\n",
}


@pytest.mark.parametrize("half_close", [False, True], ids=["open", "half-closed"])
@pytest.mark.parametrize("case", sorted(RAW_CASES))
async def test_bad_bytes_get_a_whole_json_400(
    case: str, half_close: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """The answer to what hypercorn cannot parse, sent while the request's task may be closing
    the connection: hypercorn sent its head and body in two writes and the close in between
    (``BusyResourceError``, a head without its body, an ERROR logged). 30 tries each."""
    found = []
    async with serving({"X": ScriptedBackend()}) as server:
        for attempt in range(30):
            with trio.fail_after(10):
                answer = await exchange(server, RAW_CASES[case], half_close=half_close)
            if answer.status is None and half_close:
                continue  # a half-closed client is taken for gone: no answer is fine
            if not answer.complete or answer.status is None or answer.status >= 500:
                found.append(f"try {attempt}: {answer}")
            elif answer.status >= 400:
                assert answer.headers is not None
                if answer.headers.get(b"content-type") != b"application/json":
                    found.append(f"try {attempt}: not JSON: {answer}")
                elif json.loads(answer.body)["status"] != answer.status:
                    found.append(f"try {attempt}: {answer}")
        await server.probe()
    assert not found, f"{len(found)} of 30 answers were wrong; the first: {found[0]}"
    assert not errors(caplog)


async def test_bytes_after_a_last_request_do_not_cut_its_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A retrieve with ``Connection: close``, then bytes after it while its answer is being
    sent: h11 calls them a protocol error, and hypercorn closed the connection in the middle
    of the answer. The client gets the whole answer, then the end of the connection."""
    backend = big_backend()
    async with serving({"X": backend}) as server:
        stream = await server.connect()
        async with stream:
            await stream.send_all(BIG_RETRIEVE + b"Connection: close\r\n\r\n")
            with trio.fail_after(10):
                first = await stream.receive_some(1 << 16)  # the answer has started
                await stream.send_all(b"GARBAGE\r\n\r\n")
                answer = await read_answer(stream, first)
        assert answer.status == 200, answer.error
        assert answer.complete, f"{len(answer.body)} bytes, then {answer.error}"
        assert answer.body.count(b"Content-Type: application/dicom") == 20
        await server.probe()
    assert not errors(caplog)


# --- shutdown -----------------------------------------------------------------------------------


@pytest.mark.parametrize("sent", ["answered", "http2-preface"])
async def test_shutdown_drops_idle_connections_at_once(sent: str) -> None:
    """On shutdown, a connection that is idle — after an answer, or HTTP/2 without a stream —
    is dropped at once, not cancelled at the end of ``graceful_timeout``."""
    config = Config(
        http=HttpConfig(host="127.0.0.1", port=0, keep_alive_timeout=60, graceful_timeout=60)
    )
    app = create_app(config, {"X": ScriptedBackend()})
    stop = trio.Event()
    stopped = trio.Event()

    async def serve(task_status: trio.TaskStatus[list[str]]) -> None:
        await serve_http(app, config.http, shutdown_trigger=stop.wait, task_status=task_status)
        stopped.set()

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve)
        host, port = binds[0].removeprefix("http://").rsplit(":", 1)
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            with trio.fail_after(5):
                if sent == "answered":
                    await stream.send_all(AETS + b"\r\n")
                    assert (await read_answer(stream)).complete
                else:
                    await stream.send_all(BEHAVIOURS[sent])
                    assert await stream.receive_some(1 << 16)  # rst's HTTP/2 settings
            stop.set()
            with trio.fail_after(5):
                await stopped.wait()


# --- how answers are written -----------------------------------------------------------------


@asynccontextmanager
async def server_sends(
    monkeypatch: pytest.MonkeyPatch, backends: Mapping[str, Backend]
) -> AsyncIterator[tuple[Server, list[bytes]]]:
    """A server, and the bytes of each socket send it makes (its client's sends left out)."""
    sent: list[bytes] = []
    send_all = trio.SocketStream.send_all
    port = 0

    async def counted(stream: trio.SocketStream, data: bytes | bytearray | memoryview) -> None:
        if stream.socket.getsockname()[1] == port:
            sent.append(bytes(data))
        await send_all(stream, data)

    monkeypatch.setattr(trio.SocketStream, "send_all", counted)
    async with serving(backends) as server:
        port = server.port
        yield server, sent


async def test_an_answer_of_known_length_is_one_send(monkeypatch: pytest.MonkeyPatch) -> None:
    """Head and body of an answer that is ready whole (a frame, a JSON answer) go out in one
    socket send, on a connection kept alive, and the client reads the whole answer."""
    async with server_sends(monkeypatch, {"X": ScriptedBackend()}) as (server, sent):
        answer = await exchange(server, AETS + b"\r\n")
    assert answer.complete, answer
    assert answer.status == 200, answer
    assert answer.headers is not None
    assert int(answer.headers[b"content-length"]) > 0
    assert len(sent) == 1, sent
    assert sent[0].startswith(b"HTTP/1.1 200")
    assert sent[0].endswith(b"\r\n\r\n" + answer.body)


async def test_the_head_of_an_answer_to_head_goes_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """HEAD: a head that says a length, no body follows — it is still sent, once."""
    async with server_sends(monkeypatch, {"X": ScriptedBackend()}) as (server, sent):
        stream = await server.connect()
        async with stream:
            await stream.send_all(b"HEAD /aets HTTP/1.1\r\nHost: x\r\n\r\n")
            head = b""
            with trio.fail_after(SETTLE):
                while not head.endswith(b"\r\n\r\n"):
                    head += await stream.receive_some(1 << 16)
    assert head.startswith(b"HTTP/1.1 200")
    assert b"content-length" in head.lower()
    assert sent == [head]


async def test_a_streamed_answer_sends_its_head_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """A body of unknown length (a streamed retrieve) is not waited for: its head goes out
    on its own."""
    async with server_sends(monkeypatch, {"X": big_backend()}) as (server, sent):
        answer = await exchange(server, BIG_RETRIEVE + b"Connection: close\r\n\r\n")
    assert answer.complete, answer
    assert answer.status == 200, answer
    assert sent[0].startswith(b"HTTP/1.1 200")
    assert sent[0].endswith(b"\r\n\r\n"), sent[0][:300]  # the head alone
    assert b"transfer-encoding: chunked" in sent[0].lower()
