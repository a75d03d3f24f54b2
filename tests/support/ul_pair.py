"""An acceptor association past its handshake, made without sockets: one sans-IO requestor
talks it through A-ASSOCIATE-RQ/AC with one presentation context accepted. For unit tests and
micro-benchmarks of the P-DATA path (`rst.backends.dimse.ul`)."""

from __future__ import annotations

from rst.backends.dimse.ul import ContextResult, PresentationContextRQ
from rst.backends.dimse.ul.association import Association, Role
from rst.dicom.uids import IMPLEMENTATION_CLASS_UID

__all__ = ["accepted_acceptor"]


def accepted_acceptor(
    *,
    max_pdu: int,
    sop_class: str,
    syntax: str,
    buffer_size: int | None = None,
    version: str = "TEST",
) -> Association:
    """An acceptor in Sta6 with context 1 (*sop_class* in *syntax*) accepted; *buffer_size*:
    its read buffer (default: the association's own)."""
    requestor = Association(Role.REQUESTOR, max_pdu_length=max_pdu)
    acceptor = (
        Association(Role.ACCEPTOR, max_pdu_length=max_pdu)
        if buffer_size is None
        else Association(Role.ACCEPTOR, max_pdu_length=max_pdu, buffer_size=buffer_size)
    )
    acceptor.receive_data(
        requestor.send_associate_rq(
            called_aet="RST",
            calling_aet="PACS",
            contexts=[PresentationContextRQ(1, sop_class, (syntax,))],
            implementation_class_uid=IMPLEMENTATION_CLASS_UID,
        )
    )
    acceptor.next_event()
    acceptor.send_associate_ac(
        [ContextResult(1, 0, syntax)],
        implementation_class_uid=IMPLEMENTATION_CLASS_UID,
        implementation_version=version,
    )
    return acceptor
