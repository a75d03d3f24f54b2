"""Association negotiation for the acceptor side: what to answer an A-ASSOCIATE-RQ.

Pure functions over a decoded :class:`~rst.backends.dimse.ul.pdu.AssociateRequest`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from rst.backends.dimse.ul.pdu import (
    APPLICATION_CONTEXT,
    AcseRejectReason,
    AssociateRequest,
    ContextResult,
    Rejection,
    RejectResult,
    RejectSource,
    UserRejectReason,
)

__all__ = [
    "ABSTRACT_SYNTAX_NOT_SUPPORTED",
    "ACCEPTANCE",
    "TRANSFER_SYNTAXES_NOT_SUPPORTED",
    "USER_REJECTION",
    "ContextResult",
    "check_association",
    "negotiate",
]

# Presentation context Result/Reason (PS3.8 Table 9-18).
ACCEPTANCE = 0
USER_REJECTION = 1
ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
TRANSFER_SYNTAXES_NOT_SUPPORTED = 4


def negotiate(
    request: AssociateRequest,
    *,
    abstract_syntaxes: Collection[str],
    transfer_syntaxes: Sequence[str],
) -> list[ContextResult]:
    """One result per proposed context, in the request's order.

    A supported abstract syntax gets the first of *our* ``transfer_syntaxes`` (our order of
    preference) that the requestor proposed. Otherwise the result is 3 or 4 and the first
    proposed transfer syntax is echoed: PS3.8 Table 9-18 makes the sub-item mandatory but
    insignificant when the context is not accepted.
    """
    results = []
    for cx in request.contexts:
        if cx.abstract_syntax not in abstract_syntaxes:
            results.append(
                ContextResult(cx.context_id, ABSTRACT_SYNTAX_NOT_SUPPORTED, cx.transfer_syntaxes[0])
            )
            continue
        proposed = set(cx.transfer_syntaxes)
        chosen = next((ts for ts in transfer_syntaxes if ts in proposed), None)
        if chosen is None:
            results.append(
                ContextResult(
                    cx.context_id, TRANSFER_SYNTAXES_NOT_SUPPORTED, cx.transfer_syntaxes[0]
                )
            )
        else:
            results.append(ContextResult(cx.context_id, ACCEPTANCE, chosen))
    return results


def check_association(request: AssociateRequest, *, our_aet: str | None) -> Rejection | None:
    """``(result, source, reason)`` for an A-ASSOCIATE-RJ if ``request`` must be rejected,
    else None (PS3.8 Table 9-21; all rejections here are permanent).

    Checked in this order: protocol version bit 0 not set → (1, 2, 2); application context
    name not the DICOM one → (1, 1, 2); called AE title empty or (when ``our_aet`` is given)
    not ours → (1, 1, 7); calling AE title empty → (1, 1, 3). PS3.8 Table 9-11 forbids an AE
    title of 16 spaces; the codec decodes it as "" and leaves the answer to this function.
    """
    if not request.protocol_version & 1:
        return (
            RejectResult.PERMANENT,
            RejectSource.ACSE,
            AcseRejectReason.PROTOCOL_VERSION_NOT_SUPPORTED,
        )
    if request.application_context != APPLICATION_CONTEXT:
        return (
            RejectResult.PERMANENT,
            RejectSource.SERVICE_USER,
            UserRejectReason.APPLICATION_CONTEXT_NOT_SUPPORTED,
        )
    if not request.called_aet or (our_aet is not None and request.called_aet != our_aet.strip()):
        return (
            RejectResult.PERMANENT,
            RejectSource.SERVICE_USER,
            UserRejectReason.CALLED_AE_NOT_RECOGNIZED,
        )
    if not request.calling_aet:
        return (
            RejectResult.PERMANENT,
            RejectSource.SERVICE_USER,
            UserRejectReason.CALLING_AE_NOT_RECOGNIZED,
        )
    return None
