"""STOW-RS on trio associations: C-STORE of the uploaded bytes as they are.

The pynetdicom session (:mod:`.store`) decodes every uploaded instance with pydicom and has
pynetdicom encode it again. Here the encoded dataset after the file meta goes out unchanged when
the PACS accepts its transfer syntax; only an uncompressed instance whose syntax the PACS did
not accept is re-encoded (to the uncompressed syntax it did accept).
"""

from __future__ import annotations

import itertools
import logging
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import trio

from rst.backends.dimse.trio_client import Connection, PeerAborted
from rst.backends.dimse.ul import (
    CommandError,
    OtherCommand,
    PresentationContextRQ,
    UpperLayerError,
    encode_c_store_rq,
)
from rst.bridge import run_sync
from rst.dicom.part10 import UNCOMPRESSED_SYNTAXES, Upload, dataset_offset, reencode
from rst.errors import BackendTimeout, NotAcceptable
from rst.services.protocols import StoreResult

if TYPE_CHECKING:
    from rst.backends.dimse.backend import DimseBackend

__all__ = ["TrioStoreSession"]

log = logging.getLogger(__name__)

C_STORE_RSP = 0x8001
SOP_CLASS_NOT_SUPPORTED = 0x0122
TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122
FALLBACK = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
MAX_CONTEXTS = 128
BROKEN = (PeerAborted, UpperLayerError, CommandError, trio.BrokenResourceError, OSError)


class TrioStoreSession:
    """Stores uploads one after another, re-associating when a new SOP class or transfer syntax
    needs presentation contexts the current association lacks."""

    def __init__(self, backend: DimseBackend) -> None:
        self.backend = backend
        self._wanted: dict[tuple[str, str], None] = {}
        self._connection: Connection | None = None
        self._stack: AsyncExitStack | None = None
        self._ids = itertools.cycle(range(1, 65536))

    async def store(self, upload: Upload) -> StoreResult:
        sop_class = str(upload.header.SOPClassUID)
        sop_instance = str(upload.header.SOPInstanceUID)
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
            payload = memoryview(encoded)[dataset_offset(encoded) :]
        msg_id = next(self._ids)
        command = encode_c_store_rq(
            message_id=msg_id, sop_class_uid=sop_class, sop_instance_uid=sop_instance
        )
        try:
            await connection.send(context_id, command, payload)
            with trio.fail_after(self.backend.config.store_timeout):
                _, response = await connection.receive_command()
                if isinstance(response, OtherCommand) and response.has_dataset:
                    await connection.receive_dataset(bytearray())
        except trio.Cancelled:
            # A message may be half sent: the association can only be aborted now.
            connection.broken = True
            raise
        except trio.TooSlowError:
            await self._drop(broken=True)
            raise BackendTimeout(
                f"the PACS {self.backend.name} did not answer a C-STORE within "
                f"{self.backend.config.store_timeout:g} s"
            ) from None
        except (
            PeerAborted,
            UpperLayerError,
            CommandError,
            trio.BrokenResourceError,
            OSError,
        ) as exc:
            await self._drop(broken=True)
            raise BackendTimeout(
                f"the association with the PACS {self.backend.name} broke off during a C-STORE: "
                f"{exc}"
            ) from None
        if (
            not isinstance(response, OtherCommand)
            or response.command_field != C_STORE_RSP
            or response.message_id_being_responded_to != msg_id
            or response.status is None
        ):
            await self._drop(broken=True)
            raise BackendTimeout(
                f"the PACS {self.backend.name} answered a C-STORE with {response!r}"
            )
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
        if syntax in UNCOMPRESSED_SYNTAXES:
            for context_id, accepted in offered:
                if accepted in FALLBACK:
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
        backend = self.backend
        try:
            self._connection = await stack.enter_async_context(
                backend.peer.connect(_contexts(self._wanted))
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
            await stack.aclose()

    async def aclose(self) -> None:
        await self._drop()


def _contexts(wanted: dict[tuple[str, str], None]) -> list[PresentationContextRQ]:
    """Per (SOP class, syntax): a context with that syntax alone, and per SOP class one with
    the uncompressed syntaxes, so the PACS can accept the original and a fallback separately."""
    proposals: list[tuple[str, tuple[str, ...]]] = []
    for sop_class, syntax in wanted:
        for syntaxes in ((syntax,), FALLBACK):
            if (sop_class, syntaxes) not in proposals:
                proposals.append((sop_class, syntaxes))
    proposals = proposals[-MAX_CONTEXTS:]
    return [
        PresentationContextRQ(1 + 2 * n, sop_class, syntaxes)
        for n, (sop_class, syntaxes) in enumerate(proposals)
    ]
