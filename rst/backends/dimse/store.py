"""STOW-RS on trio associations: C-STORE of the uploaded bytes as they are.

The encoded dataset after the file meta goes out unchanged when the PACS accepts its transfer
syntax (nothing is decoded and encoded again); only an uncompressed instance whose syntax the
PACS did not accept is re-encoded (to the uncompressed syntax it did accept).
"""

from __future__ import annotations

import itertools
import logging
from contextlib import AsyncExitStack

import trio

from rst.backends.dimse.client import BROKEN, Connection, broken_association
from rst.backends.dimse.peer import Peer
from rst.backends.dimse.ul import OtherCommand, PresentationContextRQ, encode_c_store_rq
from rst.backends.dimse.ul.commands import C_STORE_RSP
from rst.bridge import run_sync
from rst.dicom import uids
from rst.dicom.part10 import Upload, dataset_offset, reencode
from rst.dicom.statuses import (
    CANNOT_UNDERSTAND,
    PROCESSING_FAILURE,
    SOP_CLASS_NOT_SUPPORTED,
    TRANSFER_SYNTAX_NOT_SUPPORTED,
)
from rst.errors import BackendTimeout, NotAcceptable
from rst.services.protocols import StoreResult

__all__ = ["DimseStoreSession"]

log = logging.getLogger(__name__)

MAX_CONTEXTS = 128


class DimseStoreSession:
    """Stores uploads one after another, re-associating when a new SOP class or transfer syntax
    needs presentation contexts the current association lacks.

    What one instance can do ends with its :class:`StoreResult`: a SOP class or transfer syntax
    the PACS does not take, a data set rst cannot re-encode, an association that breaks during
    its C-STORE (aborted here too; the next instance associates anew). Only a PACS that cannot
    be used at all raises: it cannot be reached or rejects rst (from the association request),
    or does not answer a C-STORE within *store_timeout*.

    It holds what it uses — the PACS's :class:`~rst.backends.dimse.peer.Peer` (its association
    slots), its name for messages, the timeout — not the backend that opens it.
    """

    def __init__(self, peer: Peer, *, pacs: str, store_timeout: float) -> None:
        self.peer = peer
        self.pacs = pacs
        self.store_timeout = store_timeout
        self._wanted: dict[tuple[str, str], None] = {}
        self._connection: Connection | None = None
        self._stack: AsyncExitStack | None = None
        self._ids = itertools.cycle(range(1, 65536))

    async def store(self, upload: Upload) -> StoreResult:
        sop_class = upload.sop_class_uid
        connection = await self._connection_for(sop_class, upload.transfer_syntax)
        chosen = self._context(connection, sop_class, upload.transfer_syntax)
        if isinstance(chosen, StoreResult):
            return chosen
        context_id, syntax = chosen
        payload: bytes | memoryview = upload.dataset
        if syntax != upload.transfer_syntax:
            try:
                encoded = await run_sync(lambda: reencode(upload.data, syntax))
            except NotAcceptable as exc:
                return StoreResult(TRANSFER_SYNTAX_NOT_SUPPORTED, exc.message)
            except Exception as exc:  # pydicom cannot decode or encode this one instance
                return StoreResult(CANNOT_UNDERSTAND, f"rst cannot re-encode it: {exc}")
            payload = memoryview(encoded)[dataset_offset(encoded) :]
        msg_id = next(self._ids)
        command = encode_c_store_rq(
            message_id=msg_id, sop_class_uid=sop_class, sop_instance_uid=upload.sop_instance_uid
        )
        try:
            await connection.send(context_id, command, payload)
            with trio.fail_after(self.store_timeout):
                _, response = await connection.receive_command()
                if isinstance(response, OtherCommand) and response.has_dataset:
                    await connection.receive_dataset(bytearray())
        except trio.TooSlowError:
            await self._drop(broken=True)
            raise BackendTimeout(
                f"the PACS {self.pacs} did not answer a C-STORE within {self.store_timeout:g} s"
            ) from None
        except BROKEN as exc:
            await self._drop(broken=True)
            error = broken_association(exc, self.pacs, "a C-STORE")
            log.info("%s; the next instance opens a new association", error.message)
            return StoreResult(PROCESSING_FAILURE, error.message)
        except BaseException:
            # Cancelled, or anything unforeseen: a message may be half sent, so the association
            # can only be aborted now (when it is closed, or before the next instance).
            connection.broken = True
            raise
        if (
            not isinstance(response, OtherCommand)
            or response.command_field != C_STORE_RSP
            or response.message_id_being_responded_to != msg_id
            or response.status is None
        ):
            await self._drop(broken=True)
            message = f"the PACS {self.pacs} answered a C-STORE with {response!r}"
            log.info("%s; the next instance opens a new association", message)
            return StoreResult(PROCESSING_FAILURE, message)
        return StoreResult(response.status, response.error_comment or "")

    @staticmethod
    def _context(
        connection: Connection, sop_class: str, syntax: str
    ) -> tuple[int, str] | StoreResult:
        """The accepted context to send on: the instance's own syntax if possible, else an
        uncompressed one (if the instance is uncompressed and can be re-encoded)."""
        offered = [
            (context_id, accepted)
            for context_id, (abstract, accepted) in connection.accepted.items()
            if abstract == sop_class
        ]
        if not offered:
            return StoreResult(SOP_CLASS_NOT_SUPPORTED, "the PACS does not accept this SOP class")
        for context_id, accepted in offered:
            if accepted == syntax:
                return context_id, accepted
        if syntax in uids.NATIVE_SYNTAXES:
            for context_id, accepted in offered:
                if accepted in uids.UNCOMPRESSED:
                    return context_id, accepted
        return StoreResult(
            TRANSFER_SYNTAX_NOT_SUPPORTED, f"the PACS does not accept transfer syntax {syntax}"
        )

    async def _connection_for(self, sop_class: str, syntax: str) -> Connection:
        key = (sop_class, syntax)
        connection = self._connection
        if connection is not None and key in self._wanted and not connection.broken:
            return connection
        await self._drop()
        self._wanted[key] = None
        stack = AsyncExitStack()
        try:
            self._connection = await stack.enter_async_context(
                self.peer.connect(_contexts(self._wanted))
            )
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self._connection

    async def _drop(self, *, broken: bool = False) -> None:
        stack, connection = self._stack, self._connection
        self._stack = self._connection = None
        if connection is not None and broken:
            connection.broken = True
        if stack is not None:
            try:
                await stack.aclose()
            except BROKEN as exc:  # e.g. the PACS closed an idle association: it is gone anyway
                log.info("the association with %s ended badly: %s", self.pacs, exc)

    async def aclose(self) -> None:
        await self._drop()


def _contexts(wanted: dict[tuple[str, str], None]) -> list[PresentationContextRQ]:
    """Per (SOP class, syntax): a context with that syntax alone, and per SOP class one with
    the uncompressed syntaxes, so the PACS can accept the original and a fallback separately.

    Verification comes too: every PACS takes it, so a PACS that takes none of the SOP classes
    still accepts the association, and the instance fails alone with 0x0122 instead of the
    association request failing for everything."""
    proposals: list[tuple[str, tuple[str, ...]]] = [(uids.VERIFICATION, uids.UNCOMPRESSED)]
    for sop_class, syntax in wanted:
        for syntaxes in ((syntax,), uids.UNCOMPRESSED):
            if (sop_class, syntaxes) not in proposals:
                proposals.append((sop_class, syntaxes))
    proposals = proposals[:1] + proposals[1:][-(MAX_CONTEXTS - 1) :]
    return [
        PresentationContextRQ(1 + 2 * n, sop_class, syntaxes)
        for n, (sop_class, syntaxes) in enumerate(proposals)
    ]
