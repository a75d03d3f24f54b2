"""C-FIND on a trio association: QIDO-RS.

Matches are decoded as they arrive, once, into the DICOM JSON form a QIDO-RS response sends
(:func:`rst.dicom.query.decode_match`), and handed on one at a time. Leaving the block before the
final response (the ``limit`` was reached, the client went away) sends C-CANCEL and drains the
remaining responses under a shielded scope, for at most ``cancel_timeout``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from io import BytesIO

import trio
from pydicom import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import UID

from rst.backends.dimse.client import (
    BROKEN,
    Connection,
    broken_association,
    encode_identifier,
)
from rst.backends.dimse.outcome import check_find_status, status_of
from rst.backends.dimse.retrieve import cancel_operation
from rst.backends.dimse.ul import OtherCommand, encode_c_find_rq
from rst.dicom.query import decode_match
from rst.dicom.statuses import is_pending
from rst.errors import BackendTimeout, PeerProtocolError

__all__ = ["find"]


@asynccontextmanager
async def find(
    connection: Connection,
    identifier: Dataset,
    *,
    model: str,
    msg_id: int,
    find_timeout: float,
    cancel_timeout: float,
    calling_aet: str,
    pacs: str,
) -> AsyncIterator[AsyncIterator[Dataset]]:
    """Send the C-FIND and yield its matches; cancel it if the block is left early."""
    context_id, syntax = connection.context_for(model)
    request = encode_c_find_rq(message_id=msg_id, sop_class_uid=model)
    await connection.send(context_id, request, encode_identifier(identifier, syntax))
    finished = False

    async def matches() -> AsyncGenerator[Dataset]:
        nonlocal finished
        uid = UID(syntax)
        while True:
            try:
                with trio.fail_after(find_timeout):
                    _, response = await connection.receive_command()
                    data = bytearray()
                    if isinstance(response, OtherCommand) and response.has_dataset:
                        await connection.receive_dataset(data)
            except trio.TooSlowError:
                connection.broken = True
                raise BackendTimeout(
                    f"the PACS {pacs} sent no C-FIND response for {find_timeout:g} s"
                ) from None
            except BROKEN as exc:
                connection.broken = True
                raise broken_association(exc, pacs, "a C-FIND") from None
            if (
                not isinstance(response, OtherCommand)
                or response.message_id_being_responded_to != msg_id
            ):
                connection.broken = True
                raise PeerProtocolError(f"the PACS {pacs} answered the C-FIND with {response!r}")
            status = status_of(response)
            if status is None:
                connection.broken = True
                raise PeerProtocolError(
                    f"the PACS {pacs} broke the DICOM protocol during a C-FIND: "
                    "a response without a Status"
                )
            if is_pending(status.code):
                if data:
                    yield _match(data, uid, pacs)
                continue
            finished = True
            check_find_status(status, pacs)
            return

    try:
        async with aclosing(matches()) as found:
            yield found
    finally:
        if not finished and not connection.broken:
            with trio.CancelScope(shield=True):
                await cancel_operation(connection, context_id, msg_id, cancel_timeout, calling_aet)


def _match(data: bytearray, syntax: UID, pacs: str) -> Dataset:
    """A C-FIND match, decoded now: a data set pydicom cannot read is the PACS's fault (502),
    found here rather than later while the response streams."""
    try:
        match = read_dataset(BytesIO(data), syntax.is_implicit_VR, syntax.is_little_endian)
        decode_match(match)
    except Exception as exc:
        raise PeerProtocolError(
            f"the PACS {pacs} sent a C-FIND match that is not a valid data set: {exc}"
        ) from None
    return match
