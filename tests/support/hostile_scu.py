"""A hostile SCU: the idea of :mod:`tests.support.hostile_pacs` turned round, an association
*to* rst's C-STORE receiver that misbehaves at one scripted point.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from rst.backends.dimse.ul import (
    AssociateAccept,
    PresentationContextRQ,
    encode_associate_rq,
    encode_c_store_rq,
    encode_release_rq,
)

from .hostile_archive import SampleInstance, sample_instances
from .hostile_faults import Done, Phase, Script, misbehave
from .hostile_wire import (
    IMPLEMENTATION_UID,
    IMPLEMENTATION_VERSION,
    MAX_PDU,
    SYNTAXES,
    T_ASSOCIATE_RQ,
    Link,
    encode_dataset,
)

__all__ = ["HostileScu"]


@dataclass
class HostileScu:
    """An association to rst's C-STORE receiver that misbehaves at ``script.phase``:
    :attr:`Phase.ASSOCIATION` (the A-ASSOCIATE-RQ), :attr:`Phase.STORE_COMMAND`,
    :attr:`Phase.STORE_DATA` or :attr:`Phase.RELEASE` (after one C-STORE)."""

    address: tuple[str, int]
    script: Script
    calling_aet: str = "HOSTILE"
    instance: SampleInstance = field(default_factory=lambda: sample_instances()[0])

    def __post_init__(self) -> None:
        self.faulted = trio.Event()
        """Set once the fault is committed (for silence: once the fake has gone quiet)."""
        self.ended = trio.Event()
        """Set once the connection is closed (by rst, or by the action)."""

    async def run(self) -> None:
        try:
            async with await trio.open_tcp_stream(*self.address) as stream:
                await self._run(Link(stream))
        except (Done, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            self.ended.set()

    async def _fault(self, link: Link, **kw: int) -> None:
        self.faulted.set()
        await misbehave(link, self.script, requestor=True, **kw)
        raise Done

    async def _run(self, link: Link) -> None:
        phase = self.script.phase
        if phase is Phase.ASSOCIATION:
            await self._fault(link, expected_type=T_ASSOCIATE_RQ)
        instance = self.instance
        await link.send(
            encode_associate_rq(
                called_aet="RST",
                calling_aet=self.calling_aet,
                contexts=[PresentationContextRQ(1, instance.sop_class_uid, SYNTAXES)],
                max_pdu_length=MAX_PDU,
                implementation_class_uid=IMPLEMENTATION_UID,
                implementation_version=IMPLEMENTATION_VERSION,
            )
        )
        accept = await link.pdu()
        if not isinstance(accept, AssociateAccept) or not accept.contexts:
            raise Done
        syntax = accept.contexts[0].transfer_syntax
        link.peer_max = accept.max_pdu_length
        if phase is Phase.STORE_COMMAND:
            await self._fault(link)
        await link.send_command(
            1,
            encode_c_store_rq(
                message_id=1,
                sop_class_uid=instance.sop_class_uid,
                sop_instance_uid=instance.sop_instance_uid,
            ),
        )
        if phase is Phase.STORE_DATA:
            await self._fault(link)
        await link.send_dataset(1, encode_dataset(instance.dataset, syntax))
        await link.message()  # the C-STORE-RSP (rst refuses an instance nobody asked for)
        if phase is Phase.RELEASE:
            await self._fault(link)
        await link.send(encode_release_rq())
        await link.pdu()
