"""How rst reads a PACS's DIMSE responses, without a socket: a scripted association feeds C-FIND
(:func:`~rst.backends.dimse.find.find`) and C-MOVE (:func:`~rst.backends.dimse.retrieve.follow`)
their responses, and each way an exchange can end maps to one error — 504 only for silence,
502 for a PACS that broke the protocol or went away."""

from __future__ import annotations

from collections import deque
from typing import cast

import pytest
import trio
from pydicom import Dataset

from rst.backends.dimse.client import Connection, PeerAborted
from rst.backends.dimse.find import find
from rst.backends.dimse.retrieve import follow
from rst.backends.dimse.ul import OtherCommand
from rst.dicom.statuses import CANCEL, PENDING, SUCCESS, Status
from rst.errors import (
    AssociationBroken,
    BackendTimeout,
    DimseFailure,
    PeerProtocolError,
    RstError,
)

PACS = "ORTHANC"
MSG_ID = 7
C_FIND_RSP = 0x8020
C_MOVE_RSP = 0x8021
MODEL = "1.2.840.10008.5.1.4.1.2.2.1"

SILENCE = object()
"""In a script: the PACS never sends anything again."""


class ScriptedConnection:
    """The part of :class:`~rst.backends.dimse.client.Connection` that C-FIND and C-MOVE use:
    each :meth:`receive_command` takes the next scripted response (or raises it)."""

    def __init__(self, *script: OtherCommand | BaseException | object) -> None:
        self.script = deque(script)
        self.sent: list[bytes] = []
        self.broken = False

    def context_for(self, abstract_syntax: str) -> tuple[int, str]:
        return 1, "1.2.840.10008.1.2"

    async def send(self, context_id: int, command: bytes, dataset: object = None) -> None:
        self.sent.append(command)

    async def receive_command(self) -> tuple[int, OtherCommand]:
        if not self.script:
            raise AssertionError("rst read past the end of the script")
        step = self.script.popleft()
        if step is SILENCE:
            await trio.sleep_forever()
        if isinstance(step, BaseException):
            raise step
        assert isinstance(step, OtherCommand)
        return 1, step

    async def receive_dataset(self, into: bytearray) -> None:
        raise AssertionError("no scripted response has a data set")


def response(field: int, status: int | None, **fields: int | str) -> OtherCommand:
    return OtherCommand(field, None, False, MSG_ID, status, **fields)  # type: ignore[arg-type]


async def run_find(connection: ScriptedConnection) -> list[Dataset]:
    async with find(
        cast(Connection, connection),
        Dataset(),
        model=MODEL,
        msg_id=MSG_ID,
        find_timeout=5,
        cancel_timeout=1,
        calling_aet="RST",
        pacs=PACS,
    ) as matches:
        return [match async for match in matches]


async def run_move(connection: ScriptedConnection) -> Status:
    return await follow(
        cast(Connection, connection),
        context_id=1,
        msg_id=MSG_ID,
        request=b"C-MOVE-RQ",
        identifier=b"",
        sink=None,
        cancel_timeout=1,
        calling_aet="RST",
        pacs=PACS,
    )


# -- C-FIND ------------------------------------------------------------------------------------


async def test_find_ends_at_its_final_success() -> None:
    connection = ScriptedConnection(response(C_FIND_RSP, SUCCESS))

    assert await run_find(connection) == []
    assert not connection.broken


async def test_find_response_without_status_is_a_protocol_error_not_a_timeout() -> None:
    connection = ScriptedConnection(response(C_FIND_RSP, None))

    with pytest.raises(PeerProtocolError, match="a response without a Status") as info:
        await run_find(connection)

    assert info.value.status == 502
    assert connection.broken  # leaving aborts the association


async def test_find_silence_is_a_timeout(autojump_clock: trio.abc.Clock) -> None:
    connection = ScriptedConnection(SILENCE)

    with pytest.raises(BackendTimeout, match="sent no C-FIND response for 5 s") as info:
        await run_find(connection)

    assert info.value.status == 504


async def test_find_on_an_aborted_association_is_a_bad_gateway() -> None:
    connection = ScriptedConnection(PeerAborted("the PACS aborted the association"))

    with pytest.raises(AssociationBroken, match="broke off during a C-FIND") as info:
        await run_find(connection)

    assert info.value.status == 502
    assert connection.broken


async def test_find_failure_status_is_a_dimse_failure() -> None:
    connection = ScriptedConnection(response(C_FIND_RSP, 0xA700))

    with pytest.raises(DimseFailure, match="status 0xA700") as info:
        await run_find(connection)

    assert info.value.dimse_status == 0xA700


# -- C-MOVE ------------------------------------------------------------------------------------


async def test_follow_returns_the_final_status_with_its_counts() -> None:
    connection = ScriptedConnection(
        response(C_MOVE_RSP, PENDING, remaining=1, completed=1),
        response(C_MOVE_RSP, 0xB000, completed=1, failed=1, error_comment="one failed"),
    )

    final = await run_move(connection)

    assert final == Status(0xB000, "one failed", completed=1, failed=1)


async def test_follow_takes_a_cancel_as_final() -> None:
    connection = ScriptedConnection(response(C_MOVE_RSP, CANCEL, completed=2, remaining=3))

    assert await run_move(connection) == Status(CANCEL, completed=2, remaining=3)


async def test_retrieve_response_without_status_is_a_protocol_error() -> None:
    connection = ScriptedConnection(response(C_MOVE_RSP, PENDING), response(C_MOVE_RSP, None))

    with pytest.raises(PeerProtocolError, match="without a Status") as info:
        await run_move(connection)

    assert info.value.status == 502
    assert connection.broken


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (PeerAborted("the PACS closed the connection"), AssociationBroken),
        (trio.BrokenResourceError("reset"), AssociationBroken),
    ],
)
async def test_retrieve_on_a_dropped_association_is_a_bad_gateway(
    failure: BaseException, expected: type[RstError]
) -> None:
    connection = ScriptedConnection(response(C_MOVE_RSP, PENDING), failure)

    with pytest.raises(expected, match="broke off during a retrieve") as info:
        await run_move(connection)

    assert info.value.status == 502
    assert connection.broken
