"""STOW-RS on the DIMSE side: C-STORE, one instance after another, on as few associations as
the instances' SOP classes and transfer syntaxes allow."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import trio
from pynetdicom import build_context
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext

from rst.backends.dimse import uids
from rst.bridge import run_sync
from rst.dicom.part10 import Upload, read_instance
from rst.dicom.statuses import (
    CANNOT_UNDERSTAND,
    PROCESSING_FAILURE,
    SOP_CLASS_NOT_SUPPORTED,
    TRANSFER_SYNTAX_NOT_SUPPORTED,
)
from rst.errors import BackendTimeout, BadRequest
from rst.services.protocols import StoreResult

if TYPE_CHECKING:
    from rst.backends.dimse.backend import DimseBackend

__all__ = ["DimseStoreSession"]

MAX_CONTEXTS = 128


class DimseStoreSession:
    """Stores instances one after another, (re)associating when a new SOP class or transfer
    syntax needs a presentation context the current association does not have."""

    def __init__(self, backend: DimseBackend) -> None:
        self.backend = backend
        self._contexts: dict[tuple[str, str], None] = {}
        self._assoc: Association | None = None
        self._stack: AsyncExitStack | None = None

    async def store(self, upload: Upload) -> StoreResult:
        transfer_syntax = upload.transfer_syntax
        try:
            dataset, _ = await run_sync(lambda: read_instance(upload.data))
        except BadRequest as exc:
            return StoreResult(CANNOT_UNDERSTAND, exc.message)
        sop_class = str(dataset.SOPClassUID)
        assoc = await self._association_for(sop_class, transfer_syntax)
        if not any(cx.abstract_syntax == sop_class for cx in assoc.accepted_contexts):
            return StoreResult(SOP_CLASS_NOT_SUPPORTED, "the PACS does not accept this SOP class")
        started = trio.current_time()
        try:
            status = await run_sync(lambda: assoc.send_c_store(dataset), self.backend.peer.threads)
        except ValueError as exc:  # pynetdicom: no accepted context for this transfer syntax
            return StoreResult(TRANSFER_SYNTAX_NOT_SUPPORTED, str(exc))
        code = status.get("Status")
        if code is None:
            # pynetdicom aborts the association itself after its DIMSE timeout: no status
            # before that means the PACS aborted, which fails this instance alone. (Not
            # ``assoc.is_aborted``: pynetdicom's thread may not have set it yet.)
            timeout = self.backend.config.store_timeout
            aborted = trio.current_time() - started < timeout
            error = BackendTimeout(
                f"the PACS {self.backend.name} did not answer a C-STORE within {timeout:g} s"
            )
            await self._drop(error)
            if aborted:  # the next instance associates anew
                message = f"the PACS {self.backend.name} aborted the association during a C-STORE"
                return StoreResult(PROCESSING_FAILURE, message)
            try:
                raise error
            finally:
                del error  # this frame, in the error's traceback, must not hold it
        return StoreResult(int(code), str(status.get("ErrorComment", "")))

    async def _association_for(self, sop_class: str, transfer_syntax: str) -> Association:
        key = (sop_class, transfer_syntax)
        if self._assoc is not None and key in self._contexts and self._assoc.is_established:
            return self._assoc
        await self._drop()
        self._contexts[key] = None
        stack = AsyncExitStack()
        self._assoc = await stack.enter_async_context(
            self.backend.peer.associate(
                _store_contexts(self._contexts), dimse_timeout=self.backend.config.store_timeout
            )
        )
        self._stack = stack
        return self._assoc

    async def _drop(self, error: BaseException | None = None) -> None:
        """Leave the current association: released normally, aborted after *error*."""
        stack, self._stack, self._assoc = self._stack, None, None
        if stack is not None:
            if error is None:
                await stack.aclose()
            else:
                await stack.__aexit__(type(error), error, error.__traceback__)

    async def aclose(self) -> None:
        await self._drop()


def _store_contexts(wanted: dict[tuple[str, str], None]) -> list[PresentationContext]:
    """One context per SOP class: the instance's own transfer syntax first, then the
    uncompressed ones pynetdicom can convert to, so that a PACS refusing the original syntax
    still takes the instance when it is uncompressed."""
    by_class: dict[str, list[str]] = {}
    for sop_class, syntax in wanted:
        syntaxes = by_class.setdefault(sop_class, [])
        if syntax not in syntaxes:
            syntaxes.append(syntax)
    # Verification too, so that a PACS taking none of the SOP classes still accepts the
    # association and each instance fails alone with 0x0122.
    contexts = [build_context(uids.VERIFICATION)]
    for sop_class, syntaxes in list(by_class.items())[-(MAX_CONTEXTS - 1) :]:
        for fallback in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2"):
            if fallback not in syntaxes:
                syntaxes.append(fallback)
        contexts.append(build_context(sop_class, syntaxes))
    return contexts
