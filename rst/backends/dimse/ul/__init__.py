"""Sans-IO DICOM Upper Layer and DIMSE command codec for rst's trio receiver and client.

No sockets, no trio: the I/O shells (:mod:`rst.backends.dimse.wire`) read bytes into an
:class:`~.association.Association`, act on the events it returns, and send the bytes its
``send_*`` methods return.

- :mod:`.association` — one association, either role: state, contexts, message reassembly.
- :mod:`.states` — the PS3.8 §9.2 state machine as one table (Table 9-10).
- :mod:`.pdu` — PDU framing, decoding and encoding (PS3.8 §9.3, Annex D, E).
- :mod:`.negotiation` — the acceptor's answer to an A-ASSOCIATE-RQ.
- :mod:`.commands` — DIMSE command sets: C-STORE, C-ECHO, C-FIND, C-GET, C-MOVE, C-CANCEL
  (PS3.7 §9.3, Annex E).

In the codec, malformed input raises :class:`UpperLayerError` (carrying the A-ABORT source and
reason) or :class:`CommandError`; the association turns both into a ``ProtocolViolation`` that
carries the A-ABORT to send.
"""

from rst.backends.dimse.ul.commands import (
    MAX_COMMAND_SET,
    CEchoRequest,
    CommandError,
    CStoreRequest,
    OtherCommand,
    encode_c_cancel_rq,
    encode_c_echo_rq,
    encode_c_echo_rsp,
    encode_c_find_rq,
    encode_c_get_rq,
    encode_c_move_rq,
    encode_c_store_rq,
    encode_c_store_rsp,
    parse_command,
)
from rst.backends.dimse.ul.negotiation import check_association, negotiate
from rst.backends.dimse.ul.pdu import (
    APPLICATION_CONTEXT,
    Abort,
    AssociateAccept,
    AssociateReject,
    AssociateRequest,
    ContextResult,
    PData,
    Pdu,
    PduReader,
    Pdv,
    PresentationContextRQ,
    ReleaseRequest,
    ReleaseResponse,
    UpperLayerError,
    encode_abort,
    encode_associate_ac,
    encode_associate_rj,
    encode_associate_rq,
    encode_pdata,
    encode_release_rp,
    encode_release_rq,
)

__all__ = [
    "APPLICATION_CONTEXT",
    "MAX_COMMAND_SET",
    "Abort",
    "AssociateAccept",
    "AssociateReject",
    "AssociateRequest",
    "CEchoRequest",
    "CStoreRequest",
    "CommandError",
    "ContextResult",
    "OtherCommand",
    "PData",
    "Pdu",
    "PduReader",
    "Pdv",
    "PresentationContextRQ",
    "ReleaseRequest",
    "ReleaseResponse",
    "UpperLayerError",
    "check_association",
    "encode_abort",
    "encode_associate_ac",
    "encode_associate_rj",
    "encode_associate_rq",
    "encode_c_cancel_rq",
    "encode_c_echo_rq",
    "encode_c_echo_rsp",
    "encode_c_find_rq",
    "encode_c_get_rq",
    "encode_c_move_rq",
    "encode_c_store_rq",
    "encode_c_store_rsp",
    "encode_pdata",
    "encode_release_rp",
    "encode_release_rq",
    "negotiate",
    "parse_command",
]
