"""The I/O shell over in-memory trio streams (no sockets): what the client's ``Connection``
does through :mod:`rst.backends.dimse.wire` on a stream that is not a socket (as a TLS stream
will be)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from rst.backends.dimse import wire
from rst.backends.dimse.client import BROKEN, Connection, broken_association
from rst.backends.dimse.ul import (
    CEchoRequest,
    ContextResult,
    OtherCommand,
    PresentationContextRQ,
    encode_c_echo_rq,
    encode_c_echo_rsp,
)
from rst.backends.dimse.ul.association import (
    Association,
    AssociationAccepted,
    AssociationRequested,
    CommandReceived,
    ProtocolViolation,
    ReleaseConfirmed,
    ReleaseRequested,
    Role,
)
from rst.backends.dimse.ul.states import State
from rst.errors import PeerProtocolError

VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT = "1.2.840.10008.1.2"
UID = "1.2.3"


async def connected(
    client: trio.abc.Stream, server: trio.abc.Stream
) -> tuple[Connection, Association]:
    requestor = Association(Role.REQUESTOR, max_pdu_length=16384)
    acceptor = Association(Role.ACCEPTOR, max_pdu_length=16384)
    await client.send_all(
        requestor.send_associate_rq(
            called_aet="PACS",
            calling_aet="RST",
            contexts=[PresentationContextRQ(1, VERIFICATION, (IMPLICIT,))],
            implementation_class_uid=UID,
        )
    )
    assert isinstance(await wire.receive_event(server, acceptor), AssociationRequested)
    await server.send_all(
        acceptor.send_associate_ac(
            [ContextResult(1, 0, IMPLICIT)],
            implementation_class_uid=UID,
            implementation_version="T",
        )
    )
    assert isinstance(await wire.receive_event(client, requestor), AssociationAccepted)
    return Connection(client, requestor), acceptor


async def test_echo_then_a_release_collision_through_the_shell() -> None:
    client, server = trio.testing.memory_stream_pair()
    connection, acceptor = await connected(client, server)

    async def pacs() -> None:
        event = await wire.receive_event(server, acceptor)
        assert isinstance(event, CommandReceived)
        assert isinstance(event.command, CEchoRequest)
        await server.send_all(acceptor.send_command(1, encode_c_echo_rsp(event.command, 0)))
        await server.send_all(acceptor.send_release_rq())  # the PACS releases too: collision
        assert await wire.receive_event(server, acceptor) == ReleaseRequested(collision=True)
        assert await wire.receive_event(server, acceptor) == ReleaseConfirmed()
        await server.send_all(acceptor.send_release_rp())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pacs)
        await connection.send(1, encode_c_echo_rq(message_id=1))
        _, response = await connection.receive_command()
        assert isinstance(response, OtherCommand)
        assert response.status == 0
        with trio.fail_after(5):
            assert await connection.release()
    assert connection.association.state is State.IDLE
    assert acceptor.state is State.AWAITING_CLOSE


async def test_a_violation_is_answered_with_an_a_abort_and_reads_as_502() -> None:
    client, server = trio.testing.memory_stream_pair()
    connection, acceptor = await connected(client, server)
    await server.send_all(b"\x09\x00\x00\x00\x00\x00")  # no such PDU type
    with pytest.raises(ProtocolViolation) as raised:
        await connection.receive_command()
    assert isinstance(raised.value, BROKEN)
    error = broken_association(raised.value, "PACS", "a C-ECHO")
    assert isinstance(error, PeerProtocolError)
    assert "unrecognized PDU type 0x09" in error.message
    # the A-ABORT went out (provider, unrecognized PDU), and nothing more will
    assert await server.receive_some() == b"\x07\x00\x00\x00\x00\x04\x00\x00\x02\x01"
    await connection.abort()
    assert connection.association.state is State.AWAITING_CLOSE
    await client.aclose()
    assert await server.receive_some() == b""  # the end of the stream: no second A-ABORT
    assert acceptor.state is State.ESTABLISHED


async def test_a_read_that_waits_past_read_timeout_raises_too_slow(
    autojump_clock: trio.abc.Clock,
) -> None:
    client, server = trio.testing.memory_stream_pair()
    acceptor = Association(Role.ACCEPTOR, max_pdu_length=16384)
    start = trio.current_time()
    with pytest.raises(trio.TooSlowError):
        await wire.receive_event(server, acceptor, read_timeout=30.0)
    assert trio.current_time() - start == pytest.approx(30.0)
    await client.aclose()
