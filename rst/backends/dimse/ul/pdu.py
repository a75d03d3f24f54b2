"""DICOM Upper Layer PDUs (PS3.8 §9.3): decoding from a byte stream and encoding.

Sans-IO: no sockets, no trio. :class:`PduReader` frames PDUs out of a stream the caller reads
into its buffer; the ``encode_*`` functions return the bytes to send.

Conventions (PS3.8 §9.3.1): PDU and item headers are big endian; reserved fields are sent as
zero and not tested when received; items of unrecognized types are skipped. Every length is
checked against its parent before it is used, and nothing is allocated from an unchecked length.

Two interpretations of PS3.8 made here, deliberately stricter than "not tested":

* The reserved bits 2-7 of a PDV's message control header (Annex E.2, "shall be set to 0") are
  tested: a nonzero value is an invalid PDU parameter value.
* Items are accepted in any order (PS3.8 asks senders for increasing item types, but older
  implementations do not always comply and the order carries no meaning).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "APPLICATION_CONTEXT",
    "Abort",
    "AbortReason",
    "AbortSource",
    "AcseRejectReason",
    "AssociateAccept",
    "AssociateReject",
    "AssociateRequest",
    "ContextResult",
    "PData",
    "Pdu",
    "PduReader",
    "Pdv",
    "PresentationContextRQ",
    "PresentationRejectReason",
    "RejectReason",
    "RejectResult",
    "RejectSource",
    "Rejection",
    "ReleaseRequest",
    "ReleaseResponse",
    "UpperLayerError",
    "UserRejectReason",
    "describe_abort",
    "describe_rejection",
    "encode_abort",
    "encode_associate_ac",
    "encode_associate_rj",
    "encode_associate_rq",
    "encode_pdata",
    "encode_release_rp",
    "encode_release_rq",
]

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
"""The DICOM application context name (PS3.7 Annex A.2.1), the only one defined."""


class AbortSource(enum.IntEnum):
    """A-ABORT source (PS3.8 Table 9-26)."""

    SERVICE_USER = 0
    SERVICE_PROVIDER = 2


class AbortReason(enum.IntEnum):
    """A-ABORT reason/diag (PS3.8 Table 9-26); significant only with the provider source."""

    NOT_SPECIFIED = 0
    UNRECOGNIZED_PDU = 1
    UNEXPECTED_PDU = 2
    UNRECOGNIZED_PARAMETER = 4
    UNEXPECTED_PARAMETER = 5
    INVALID_PARAMETER = 6


class RejectResult(enum.IntEnum):
    """A-ASSOCIATE-RJ result (PS3.8 Table 9-21)."""

    PERMANENT = 1
    TRANSIENT = 2


class RejectSource(enum.IntEnum):
    """A-ASSOCIATE-RJ source (PS3.8 Table 9-21): who decided."""

    SERVICE_USER = 1
    """DICOM UL service-user: the acceptor itself decided."""
    ACSE = 2
    """DICOM UL service-provider (ACSE related function)."""
    PRESENTATION = 3
    """DICOM UL service-provider (presentation related function)."""


# A-ASSOCIATE-RJ reasons mean something only together with their source: one enum per source.
class UserRejectReason(enum.IntEnum):
    NO_REASON = 1
    APPLICATION_CONTEXT_NOT_SUPPORTED = 2
    CALLING_AE_NOT_RECOGNIZED = 3
    CALLED_AE_NOT_RECOGNIZED = 7


class AcseRejectReason(enum.IntEnum):
    NO_REASON = 1
    PROTOCOL_VERSION_NOT_SUPPORTED = 2


class PresentationRejectReason(enum.IntEnum):
    TEMPORARY_CONGESTION = 1
    LOCAL_LIMIT_EXCEEDED = 2


RejectReason = UserRejectReason | AcseRejectReason | PresentationRejectReason
Rejection = tuple[RejectResult, RejectSource, RejectReason]
"""What an A-ASSOCIATE-RJ carries: (result, source, reason)."""
_REJECT_REASONS: dict[int, type[enum.IntEnum]] = {
    RejectSource.SERVICE_USER: UserRejectReason,
    RejectSource.ACSE: AcseRejectReason,
    RejectSource.PRESENTATION: PresentationRejectReason,
}


def describe_rejection(result: int, source: int, reason: int) -> str:
    """An A-ASSOCIATE-RJ in words, e.g. "permanently: called AE not recognized"."""
    kind = "permanently" if result == RejectResult.PERMANENT else "transiently"
    reasons = _REJECT_REASONS.get(source)
    try:
        words = reasons(reason).name.lower().replace("_", " ") if reasons else None
        words = words and words.replace("ae ", "AE title ")
    except ValueError:
        words = None
    return f"{kind}: {words or f'source {source}, reason {reason}'}"


def describe_abort(source: int, reason: int) -> str:
    """An A-ABORT in words."""
    if source == AbortSource.SERVICE_USER:
        return "the service-user aborted"
    try:
        words = AbortReason(reason).name.lower().replace("_", " ")
    except ValueError:
        words = f"reason {reason}"
    return f"the service-provider aborted ({words})"


MAX_CONTEXTS = 128  # odd presentation context ids 1..255 (PS3.8 §9.3.2.2)
MAX_UID_LENGTH = 64  # PS3.5 §9.1
AE_TITLE_LENGTH = 16
MAX_VERSION_NAME_LENGTH = 16  # PS3.7 D.3.3.2.3
HEADER_LENGTH = 6  # PDU-type, reserved, PDU-length (4)
PDV_HEADER_LENGTH = 6  # item-length (4), presentation context id, message control header
MAX_PDU_LENGTH_FIELD = 0xFFFFFFFF

_HEADER = struct.Struct(">BxL")
_ITEM = struct.Struct(">BxH")
_PDV = struct.Struct(">LBB")
_ASSOCIATE_FIXED = struct.Struct(">H2x16s16s32x")  # protocol version .. reserved (68 bytes)
_UID_CHARS = frozenset(b"0123456789.")

T_ASSOCIATE_RQ = 0x01
T_ASSOCIATE_AC = 0x02
T_ASSOCIATE_RJ = 0x03
T_PDATA = 0x04
T_RELEASE_RQ = 0x05
T_RELEASE_RP = 0x06
T_ABORT = 0x07


class UpperLayerError(Exception):
    """Malformed or unexpected input: answer with A-ABORT(source, reason) and close.

    After a :class:`PduReader` has raised it, the stream is out of step: the reader raises the
    same error (a copy of it) again on every later :meth:`PduReader.next_pdu`.
    """

    source: AbortSource
    reason: AbortReason

    def __init__(
        self,
        message: str,
        *,
        source: AbortSource = AbortSource.SERVICE_PROVIDER,
        reason: AbortReason = AbortReason.NOT_SPECIFIED,
    ) -> None:
        super().__init__(message)
        self.source = source
        self.reason = reason

    def copy(self) -> UpperLayerError:
        """The same error as a new object, not raised yet (see :meth:`PduReader.next_pdu`)."""
        return UpperLayerError(str(self), source=self.source, reason=self.reason)


def _invalid(message: str) -> UpperLayerError:
    return UpperLayerError(message, reason=AbortReason.INVALID_PARAMETER)


# --- PDU values -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PresentationContextRQ:
    """One proposed presentation context (item 0x20)."""

    context_id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ContextResult:
    """The acceptor's answer for one presentation context (item 0x21).

    ``result``: 0 acceptance, 1 user-rejection, 2 no-reason, 3 abstract syntax not supported,
    4 transfer syntaxes not supported. ``transfer_syntax`` is significant only on acceptance.
    """

    context_id: int
    result: int
    transfer_syntax: str


@dataclass(frozen=True, slots=True)
class AssociateRequest:
    """A-ASSOCIATE-RQ (PS3.8 §9.3.2). AE titles without their non-significant spaces."""

    called_aet: str
    calling_aet: str
    application_context: str
    contexts: tuple[PresentationContextRQ, ...]
    max_pdu_length: int  # the requestor's maximum (0 = unlimited)
    implementation_class_uid: str
    implementation_version: str | None
    roles: dict[str, tuple[bool, bool]]  # abstract syntax -> (scu_role, scp_role)
    protocol_version: int


@dataclass(frozen=True, slots=True)
class AssociateAccept:
    """A-ASSOCIATE-AC (PS3.8 §9.3.3), for the requesting side."""

    called_aet: str
    calling_aet: str
    application_context: str
    contexts: tuple[ContextResult, ...]
    max_pdu_length: int  # the acceptor's maximum (0 = unlimited)
    implementation_class_uid: str
    implementation_version: str | None
    roles: dict[str, tuple[bool, bool]]
    protocol_version: int


@dataclass(frozen=True, slots=True)
class AssociateReject:
    """A-ASSOCIATE-RJ (PS3.8 §9.3.4). result 1 permanent, 2 transient; source 1..3."""

    result: int
    source: int
    reason: int


@dataclass(frozen=True, slots=True)
class Pdv:
    """One presentation data value (PS3.8 §9.3.5.1, Annex E).

    ``data`` is a view into the :class:`PduReader`'s buffer, valid only until the next call to
    :meth:`PduReader.writable` or :meth:`PduReader.feed`: copy it out before reading more.
    """

    context_id: int
    is_command: bool
    is_last: bool
    data: memoryview = field(repr=False)


@dataclass(frozen=True, slots=True)
class PData:
    """P-DATA-TF (PS3.8 §9.3.5): one or more PDVs."""

    pdvs: tuple[Pdv, ...]


@dataclass(frozen=True, slots=True)
class ReleaseRequest:
    """A-RELEASE-RQ (PS3.8 §9.3.6)."""


@dataclass(frozen=True, slots=True)
class ReleaseResponse:
    """A-RELEASE-RP (PS3.8 §9.3.7)."""


@dataclass(frozen=True, slots=True)
class Abort:
    """A-ABORT (PS3.8 §9.3.8). Values as received, not range-checked: the peer is leaving."""

    source: int
    reason: int


Pdu = (
    AssociateRequest
    | AssociateAccept
    | AssociateReject
    | PData
    | ReleaseRequest
    | ReleaseResponse
    | Abort
)

_RELEASE_RQ = ReleaseRequest()
_RELEASE_RP = ReleaseResponse()


# --- decoding -------------------------------------------------------------------------------


def _decode_uid(raw: bytes | memoryview, what: str) -> str:
    """A UID from an item: digits and dots, 1..64 characters. Trailing NUL or space padding
    (which some implementations send although PS3.8 Annex F says not to pad) is tolerated."""
    value = bytes(raw).rstrip(b"\0 ")
    if not value or len(value) > MAX_UID_LENGTH or not _UID_CHARS.issuperset(value):
        raise _invalid(f"invalid {what} UID {bytes(raw)[:80]!r}")
    return value.decode("ascii")


def _decode_ae(raw: bytes, what: str) -> str:
    """An AE title: ISO 646 G0 (printable ASCII, no backslash); spaces are not significant."""
    if any(b < 0x20 or b > 0x7E or b == 0x5C for b in raw):
        raise _invalid(f"invalid {what} AE title {raw!r}")
    return raw.decode("ascii").strip(" ")


def _items(body: bytes, start: int, end: int, what: str) -> list[tuple[int, int, int]]:
    """Split ``body[start:end]`` into (item type, value start, value end), checking each item's
    length against its parent."""
    items = []
    offset = start
    while offset < end:
        if end - offset < _ITEM.size:
            raise _invalid(f"truncated item header in {what}")
        item_type, length = _ITEM.unpack_from(body, offset)
        offset += _ITEM.size
        if length > end - offset:
            raise _invalid(f"item 0x{item_type:02x} length {length} overflows {what}")
        items.append((item_type, offset, offset + length))
        offset += length
    return items


def _decode_role(body: bytes, start: int, end: int) -> tuple[str, tuple[bool, bool]]:
    """SCP/SCU Role Selection sub-item 0x54 (PS3.7 D.3.3.4)."""
    if end - start < 2:
        raise _invalid("truncated SCP/SCU role selection")
    (uid_length,) = struct.unpack_from(">H", body, start)
    if uid_length != end - start - 4:
        raise _invalid("SCP/SCU role selection UID length inconsistent with its item")
    uid = _decode_uid(body[start + 2 : start + 2 + uid_length], "role selection SOP class")
    scu, scp = body[end - 2], body[end - 1]
    if scu > 1 or scp > 1:
        raise _invalid(f"SCP/SCU role values must be 0 or 1, got {scu}, {scp}")
    return uid, (bool(scu), bool(scp))


@dataclass(slots=True)
class _UserInfo:
    max_pdu_length: int
    implementation_class_uid: str
    implementation_version: str | None
    roles: dict[str, tuple[bool, bool]]


def _decode_user_info(body: bytes, start: int, end: int) -> _UserInfo:
    """User Information item 0x50 (PS3.8 Annex D, PS3.7 Annex D.3.3): sub-items in any order;
    Maximum Length and Implementation Class UID are mandatory; unknown sub-items skipped."""
    max_length: int | None = None
    class_uid: str | None = None
    version: str | None = None
    roles: dict[str, tuple[bool, bool]] = {}
    for sub_type, vstart, vend in _items(body, start, end, "user information item"):
        if sub_type == 0x51:
            if vend - vstart != 4:
                raise _invalid("maximum length sub-item must hold 4 bytes")
            if max_length is not None:
                raise _invalid("duplicate maximum length sub-item")
            (max_length,) = struct.unpack_from(">L", body, vstart)
        elif sub_type == 0x52:
            if class_uid is not None:
                raise _invalid("duplicate implementation class UID sub-item")
            class_uid = _decode_uid(body[vstart:vend], "implementation class")
        elif sub_type == 0x55:
            raw = body[vstart:vend]
            if version is not None or not 1 <= len(raw) <= MAX_VERSION_NAME_LENGTH:
                raise _invalid("implementation version name must be 1..16 bytes, once")
            if any(b < 0x20 or b > 0x7E or b == 0x5C for b in raw):
                raise _invalid(f"invalid implementation version name {raw!r}")
            version = raw.decode("ascii").strip(" ")
        elif sub_type == 0x54:
            uid, role = _decode_role(body, vstart, vend)
            if roles.get(uid, role) != role:  # Orthanc repeats it per context: tolerated
                raise _invalid(f"conflicting SCP/SCU role selections for {uid}")
            roles[uid] = role
        # 0x53 asynchronous operations window, 0x56..0x59 extended negotiation and user
        # identity, and anything newer: ignored (PS3.8 D.2 note 2). Not answering 0x53 means
        # the default window of 1/1 applies, which is how this codec works.
    if max_length is None:
        raise _invalid("user information lacks the maximum length sub-item")
    if class_uid is None:
        raise _invalid("user information lacks the implementation class UID sub-item")
    return _UserInfo(max_length, class_uid, version, roles)


def _decode_transfer_syntax(body: bytes, item: tuple[int, int, int]) -> str:
    sub_type, vstart, vend = item
    if sub_type != 0x40:
        raise _invalid(f"unexpected sub-item 0x{sub_type:02x} in presentation context")
    return _decode_uid(body[vstart:vend], "transfer syntax")


def _decode_context_rq(body: bytes, start: int, end: int) -> PresentationContextRQ:
    """Presentation Context item 0x20 (PS3.8 §9.3.2.2)."""
    if end - start < 4:
        raise _invalid("truncated presentation context item")
    context_id = body[start]
    abstract: str | None = None
    syntaxes: list[str] = []
    for item in _items(body, start + 4, end, "presentation context item"):
        if item[0] == 0x30:
            if abstract is not None:
                raise _invalid(f"context {context_id} has more than one abstract syntax")
            abstract = _decode_uid(body[item[1] : item[2]], "abstract syntax")
        elif item[0] == 0x40:
            syntaxes.append(_decode_transfer_syntax(body, item))
        # other sub-item types: skipped (PS3.8 §9.3.1)
    if abstract is None or not syntaxes:
        raise _invalid(f"context {context_id} needs one abstract and 1+ transfer syntaxes")
    return PresentationContextRQ(context_id, abstract, tuple(syntaxes))


def _decode_context_ac(body: bytes, start: int, end: int) -> ContextResult:
    """Presentation Context item 0x21 (PS3.8 §9.3.3.2)."""
    if end - start < 4:
        raise _invalid("truncated presentation context item")
    context_id, result = body[start], body[start + 2]
    if result > 4:
        raise _invalid(f"context {context_id}: result/reason {result} out of range")
    items = _items(body, start + 4, end, "presentation context item")
    syntaxes = [i for i in items if i[0] == 0x40]
    if len(syntaxes) != 1:
        raise _invalid(f"context {context_id} must hold one transfer syntax sub-item")
    if result == 0:
        syntax = _decode_transfer_syntax(body, syntaxes[0])
    else:  # "shall not be significant and its value shall not be tested"
        _, vstart, vend = syntaxes[0]
        syntax = bytes(body[vstart:vend]).rstrip(b"\0").decode("ascii", "replace")
    return ContextResult(context_id, result, syntax)


def _check_context_id(context_id: int, seen: set[int]) -> None:
    if context_id % 2 == 0:  # also rejects 0; ids are one byte, so <= 255
        raise _invalid(f"presentation context id {context_id} is not odd")
    if context_id in seen:
        raise _invalid(f"duplicate presentation context id {context_id}")
    if len(seen) >= MAX_CONTEXTS:
        raise _invalid(f"more than {MAX_CONTEXTS} presentation contexts")
    seen.add(context_id)


def _decode_associate(pdu_type: int, body: bytes) -> AssociateRequest | AssociateAccept:
    """A-ASSOCIATE-RQ/AC body (after the 6-byte header): same fixed part, items differ."""
    if len(body) < _ASSOCIATE_FIXED.size:
        raise _invalid("A-ASSOCIATE PDU shorter than its fixed fields")
    version, called_raw, calling_raw = _ASSOCIATE_FIXED.unpack_from(body, 0)
    if pdu_type == T_ASSOCIATE_RQ:
        called = _decode_ae(called_raw, "called")
        calling = _decode_ae(calling_raw, "calling")
    else:  # reserved in the AC: "not tested" (PS3.8 Table 9-17)
        called = called_raw.decode("ascii", "replace").strip(" ")
        calling = calling_raw.decode("ascii", "replace").strip(" ")
    app_context: str | None = None
    user: _UserInfo | None = None
    seen: set[int] = set()
    rq_contexts: list[PresentationContextRQ] = []
    ac_contexts: list[ContextResult] = []
    context_type = 0x20 if pdu_type == T_ASSOCIATE_RQ else 0x21
    for item_type, vstart, vend in _items(body, _ASSOCIATE_FIXED.size, len(body), "A-ASSOCIATE"):
        if item_type == 0x10:
            if app_context is not None:
                raise _invalid("more than one application context item")
            app_context = _decode_uid(body[vstart:vend], "application context")
        elif item_type == context_type:
            if pdu_type == T_ASSOCIATE_RQ:
                rq = _decode_context_rq(body, vstart, vend)
                _check_context_id(rq.context_id, seen)
                rq_contexts.append(rq)
            else:
                ac = _decode_context_ac(body, vstart, vend)
                _check_context_id(ac.context_id, seen)
                ac_contexts.append(ac)
        elif item_type in (0x20, 0x21):
            raise UpperLayerError(
                f"presentation context item 0x{item_type:02x} in the wrong A-ASSOCIATE PDU",
                reason=AbortReason.UNEXPECTED_PARAMETER,
            )
        elif item_type == 0x50:
            if user is not None:
                raise _invalid("more than one user information item")
            user = _decode_user_info(body, vstart, vend)
        # other item types: skipped (PS3.8 §9.3.1)
    if app_context is None:
        raise _invalid("A-ASSOCIATE PDU lacks the application context item")
    if user is None:
        raise _invalid("A-ASSOCIATE PDU lacks the user information item")
    if pdu_type == T_ASSOCIATE_RQ:
        if not rq_contexts:
            raise _invalid("A-ASSOCIATE-RQ proposes no presentation context")
        return AssociateRequest(
            called, calling, app_context, tuple(rq_contexts), user.max_pdu_length,
            user.implementation_class_uid, user.implementation_version, user.roles, version,
        )  # fmt: skip
    return AssociateAccept(
        called, calling, app_context, tuple(ac_contexts), user.max_pdu_length,
        user.implementation_class_uid, user.implementation_version, user.roles, version,
    )  # fmt: skip


def _decode_pdata(buf: memoryview, start: int, end: int) -> PData:
    """P-DATA-TF body ``buf[start:end]``: PDV items (PS3.8 §9.3.5.1, Annex E.2)."""
    pdvs = []
    offset = start
    unpack = _PDV.unpack_from
    while offset < end:
        if end - offset < PDV_HEADER_LENGTH:
            raise _invalid("truncated PDV item header")
        length, context_id, control = unpack(buf, offset)
        if length < 2:
            raise _invalid(f"PDV item length {length} < 2")
        if length > end - offset - 4:
            raise _invalid(f"PDV item length {length} overflows its P-DATA-TF PDU")
        if not context_id & 1:
            raise _invalid(f"PDV presentation context id {context_id} is not odd")
        if control & 0xFC:
            raise _invalid(f"message control header 0x{control:02x} has reserved bits set")
        data_start = offset + PDV_HEADER_LENGTH
        offset += 4 + length
        pdvs.append(Pdv(context_id, bool(control & 1), bool(control & 2), buf[data_start:offset]))
    if not pdvs:
        raise _invalid("P-DATA-TF PDU without PDV items")
    return PData(tuple(pdvs))


class PduReader:
    """Incremental PDU framing over a byte stream. Owns one preallocated bytearray buffer.

    Use::

        while (pdu := reader.next_pdu()) is not None: ...   # drain first
        n = sock.recv_into(reader.writable()); reader.advance(n)

    ``max_pdu_length`` is the Maximum Length we offered in our Maximum Length sub-item: per
    PS3.8 D.1 it bounds "the PDU-length field of the P-DATA-TF PDUs" received, that is the
    variable field (all PDV items with their 6-byte headers), not counting the 6-byte PDU header.
    A P-DATA-TF whose PDU-length exceeds it by even one byte is a protocol error. The PDV data a
    peer can put in one PDU is thus at most ``max_pdu_length - 6``. 0 (unlimited) is refused: we
    always offer a number. ``max_associate_length`` caps the PDU-length of A-ASSOCIATE-RQ/AC
    (not limited by PS3.8; ours). RJ, release and abort PDUs must have a PDU-length of 4.

    The buffer starts at ``buffer_size`` bytes and grows only if a single validated PDU does
    not fit: to that PDU, or to ``grow_to`` bytes if larger (a requestor starts small and gets
    its data buffer only if data comes); it never exceeds ``max(buffer_size, grow_to, 6 +
    largest PDU allowed)``. Reading happens straight into it; a PDU is decoded in place, and
    the unread tail is moved to the front only when free space runs short (< 64 KiB, or the
    pending PDU would not fit), so with the default 4 MiB buffer and 128 KiB PDUs about one
    byte in thirty is copied once.

    Keeping views. A P-DATA's views are valid until the next :meth:`writable` — unless
    :attr:`keep` is set: then the reader leaves the bytes it has returned where they are (it
    reads on behind them instead of going back to the front) and calls ``keep()`` each time
    just before it moves or overwrites them (or hands them on, :meth:`take_buffered`). A shell
    that keeps a data set's fragments without copying them sets it to a function that copies
    out what it holds, and back to ``None`` once it holds nothing.
    """

    _MIN_READ = 65536

    def __init__(
        self,
        *,
        max_pdu_length: int,
        max_associate_length: int = 65536,
        buffer_size: int = 4 * 1024 * 1024,
        grow_to: int = 0,
    ) -> None:
        if not 1 <= max_pdu_length <= MAX_PDU_LENGTH_FIELD - HEADER_LENGTH:
            raise ValueError(f"max_pdu_length must be a positive 32-bit count: {max_pdu_length}")
        if not _ASSOCIATE_FIXED.size <= max_associate_length <= MAX_PDU_LENGTH_FIELD:
            raise ValueError(f"max_associate_length too small: {max_associate_length}")
        if buffer_size < HEADER_LENGTH:
            raise ValueError(f"buffer_size too small: {buffer_size}")
        self.max_pdu_length = max_pdu_length
        self.max_associate_length = max_associate_length
        self._buf = bytearray(buffer_size)
        self._view = memoryview(self._buf)
        self._start = 0  # first unread byte
        self._end = 0  # one past the last byte received
        self._error: UpperLayerError | None = None
        self._grow_to = grow_to
        self.keep: Callable[[], None] | None = None
        """Called before returned bytes are moved or overwritten; while set, the views of
        returned PDUs stay valid until it is called (see the class docstring)."""

    def _release(self) -> None:
        if self.keep is not None:
            self.keep()

    @property
    def capacity(self) -> int:
        """The buffer's current size in bytes."""
        return len(self._buf)

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as PDUs."""
        return self._end - self._start

    def _limit(self, pdu_type: int) -> int:
        if pdu_type == T_PDATA:
            return self.max_pdu_length
        if pdu_type in (T_ASSOCIATE_RQ, T_ASSOCIATE_AC):
            return self.max_associate_length
        return 4

    def _pending_size(self) -> int:
        """Total size of the PDU at the read position if its header is buffered and valid,
        else 6 (the header); an invalid header is left for :meth:`next_pdu` to report."""
        if self._end - self._start < HEADER_LENGTH:
            return HEADER_LENGTH
        pdu_type, length = _HEADER.unpack_from(self._buf, self._start)
        if T_ASSOCIATE_RQ <= pdu_type <= T_ABORT and length <= self._limit(pdu_type):
            return HEADER_LENGTH + int(length)
        return HEADER_LENGTH

    def writable(self) -> memoryview:
        """The free tail of the buffer, for ``recv_into``; call :meth:`advance` afterwards.

        Invalidates the ``data`` views of PDUs returned before (unread bytes may move). Drain
        :meth:`next_pdu` first: if complete PDUs fill the whole buffer there is no room, and
        this raises :class:`BufferError` rather than return an empty view (which ``recv_into``
        would answer with 0, indistinguishable from end of stream).
        """
        start, end = self._start, self._end
        pending = end - start
        if pending == 0 and self.keep is None:
            self._start = self._end = start = end = 0
        need = self._pending_size()
        capacity = len(self._buf)
        if start and (start + need > capacity or capacity - end < self._MIN_READ):
            self._release()
            self._buf[:pending] = self._view[start:end]
            self._start, self._end = 0, pending
        if need > capacity:  # validated against our limits: bounded growth
            # (the old buffer lives on as long as views of it do: nothing to release)
            grown = bytearray(max(need, self._grow_to))
            grown[:pending] = self._view[self._start : self._end]
            self._buf, self._view = grown, memoryview(grown)
            self._start, self._end = 0, pending
        if self._end == len(self._buf):
            raise BufferError("PDU buffer full: call next_pdu() until it returns None first")
        return self._view[self._end :]

    def advance(self, nbytes: int) -> None:
        """Record that ``recv_into(writable())`` wrote ``nbytes`` bytes."""
        if not 0 <= nbytes <= len(self._buf) - self._end:
            raise ValueError(f"advance({nbytes}) beyond the writable area")
        self._end += nbytes

    def take_buffered(self) -> bytes:
        """The bytes received but not yet returned as PDUs, removed from the buffer (to hand
        the connection to another reader)."""
        self._release()
        data = bytes(self._view[self._start : self._end])
        self._start = self._end = 0
        return data

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Copy ``data`` in (for tests and small inputs); it must fit in :meth:`writable`."""
        if not data:
            return
        target = self.writable()
        if len(data) > len(target):
            raise BufferError(f"{len(data)} bytes do not fit; drain next_pdu() and feed less")
        target[: len(data)] = data
        self.advance(len(data))

    def next_pdu(self) -> Pdu | None:
        """One complete PDU if buffered, else None. Raises :class:`UpperLayerError`.

        A :class:`PData`'s PDV views point into the buffer (see :meth:`writable`).
        """
        # The reader keeps a copy to raise next time, never an error it raised: that one's
        # traceback holds this frame, the frame the reader, and the reader its 4 MiB buffer,
        # a reference cycle only a full garbage collection would free.
        if (error := self._error) is not None:
            self._error = error.copy()
            try:
                raise error
            finally:
                del error
        try:
            return self._next_pdu()
        except UpperLayerError as failed:
            self._error = failed.copy()
            raise

    def next_data_pdv(self) -> tuple[int, int, memoryview] | None:
        """The hot path's shortcut: if the next PDU is complete, is a P-DATA-TF and holds exactly
        one valid PDV (what peers send for data), take it and return its presentation context
        id, message control header and a view of its data (as in :class:`Pdv`), without
        building :class:`PData` and :class:`Pdv` objects. Anything else — an incomplete PDU,
        another type, several PDVs, anything invalid — returns ``None`` having taken nothing:
        :meth:`next_pdu` then decodes it (and reports what is wrong with it)."""
        start = self._start
        if self._end - start < HEADER_LENGTH + PDV_HEADER_LENGTH or self._error is not None:
            return None
        pdu_type, length = _HEADER.unpack_from(self._buf, start)
        end = start + HEADER_LENGTH + length
        if pdu_type != T_PDATA or length > self.max_pdu_length or end > self._end:
            return None
        pdv_length, context_id, control = _PDV.unpack_from(self._buf, start + HEADER_LENGTH)
        if pdv_length != length - 4 or pdv_length < 2 or not context_id & 1 or control & 0xFC:
            return None  # more than one PDV, or one next_pdu() will refuse
        self._start = end
        return context_id, control, self._view[start + HEADER_LENGTH + PDV_HEADER_LENGTH : end]

    def _next_pdu(self) -> Pdu | None:
        start = self._start
        if self._end - start < HEADER_LENGTH:
            return None
        pdu_type, length = _HEADER.unpack_from(self._buf, start)
        if not T_ASSOCIATE_RQ <= pdu_type <= T_ABORT:
            raise UpperLayerError(
                f"unrecognized PDU type 0x{pdu_type:02x}", reason=AbortReason.UNRECOGNIZED_PDU
            )
        limit = self._limit(pdu_type)
        if length > limit or (limit == 4 and length != 4):
            raise _invalid(f"PDU type 0x{pdu_type:02x} with length {length} (limit {limit})")
        body_start = start + HEADER_LENGTH
        end = body_start + length
        if end > self._end:
            return None
        self._start = end
        if pdu_type == T_PDATA:
            return _decode_pdata(self._view, body_start, end)
        if pdu_type in (T_ASSOCIATE_RQ, T_ASSOCIATE_AC):
            return _decode_associate(pdu_type, bytes(self._view[body_start:end]))
        b = self._buf
        if pdu_type == T_ASSOCIATE_RJ:
            result, source, reason = b[body_start + 1], b[body_start + 2], b[body_start + 3]
            if result not in (1, 2) or source not in (1, 2, 3):
                raise _invalid(f"A-ASSOCIATE-RJ result {result} / source {source} out of range")
            return AssociateReject(result, source, reason)
        if pdu_type == T_RELEASE_RQ:
            return _RELEASE_RQ
        if pdu_type == T_RELEASE_RP:
            return _RELEASE_RP
        return Abort(b[body_start + 2], b[body_start + 3])


# --- encoding -------------------------------------------------------------------------------


def _pdu(pdu_type: int, body: bytes) -> bytes:
    return _HEADER.pack(pdu_type, len(body)) + body


def _item(item_type: int, value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError(f"item 0x{item_type:02x} too long: {len(value)} bytes")
    return _ITEM.pack(item_type, len(value)) + value


def _uid_bytes(uid: str) -> bytes:
    raw = uid.encode("ascii")
    if not raw or len(raw) > MAX_UID_LENGTH or not _UID_CHARS.issuperset(raw):
        raise ValueError(f"invalid UID {uid!r}")
    return raw


def _ae_bytes(aet: str, *, allow_empty: bool = False) -> bytes:
    raw = aet.strip(" ").encode("ascii")
    if (not raw and not allow_empty) or len(raw) > AE_TITLE_LENGTH:
        raise ValueError(f"invalid AE title {aet!r}")
    if any(b < 0x20 or b > 0x7E or b == 0x5C for b in raw):
        raise ValueError(f"invalid AE title {aet!r}")
    return raw.ljust(AE_TITLE_LENGTH, b" ")


def _user_info(
    max_pdu_length: int,
    implementation_class_uid: str,
    implementation_version: str | None,
    roles: Mapping[str, tuple[bool, bool]],
) -> bytes:
    if not 0 <= max_pdu_length <= MAX_PDU_LENGTH_FIELD:
        raise ValueError(f"max_pdu_length out of range: {max_pdu_length}")
    parts = [
        _item(0x51, struct.pack(">L", max_pdu_length)),
        _item(0x52, _uid_bytes(implementation_class_uid)),
    ]
    for uid, (scu, scp) in roles.items():
        raw = _uid_bytes(uid)
        parts.append(_item(0x54, struct.pack(">H", len(raw)) + raw + bytes((scu, scp))))
    if implementation_version is not None:
        version = implementation_version.encode("ascii")
        if not 1 <= len(version) <= MAX_VERSION_NAME_LENGTH:
            raise ValueError(f"implementation version name must be 1..16 bytes: {version!r}")
        parts.append(_item(0x55, version))
    return _item(0x50, b"".join(parts))


def _associate(
    pdu_type: int, called_aet: str, calling_aet: str, application_context: str, items: bytes
) -> bytes:
    echo = pdu_type == T_ASSOCIATE_AC  # the AC echoes whatever the request carried
    called = _ae_bytes(called_aet, allow_empty=echo)
    calling = _ae_bytes(calling_aet, allow_empty=echo)
    fixed = _ASSOCIATE_FIXED.pack(1, called, calling)
    return _pdu(pdu_type, fixed + _item(0x10, _uid_bytes(application_context)) + items)


def encode_associate_rq(
    *,
    called_aet: str,
    calling_aet: str,
    contexts: Sequence[PresentationContextRQ],
    max_pdu_length: int,
    implementation_class_uid: str,
    implementation_version: str | None = None,
    roles: Mapping[str, tuple[bool, bool]] = {},
    application_context: str = APPLICATION_CONTEXT,
) -> bytes:
    """An A-ASSOCIATE-RQ PDU (protocol version 1)."""
    if not 1 <= len(contexts) <= MAX_CONTEXTS:
        raise ValueError(f"1..{MAX_CONTEXTS} presentation contexts, got {len(contexts)}")
    parts = []
    for cx in contexts:
        if not 1 <= cx.context_id <= 255 or cx.context_id % 2 == 0 or not cx.transfer_syntaxes:
            raise ValueError(f"invalid presentation context {cx}")
        sub = [_item(0x30, _uid_bytes(cx.abstract_syntax))]
        sub += [_item(0x40, _uid_bytes(ts)) for ts in cx.transfer_syntaxes]
        parts.append(_item(0x20, bytes((cx.context_id, 0, 0, 0)) + b"".join(sub)))
    user = _user_info(max_pdu_length, implementation_class_uid, implementation_version, roles)
    return _associate(
        T_ASSOCIATE_RQ, called_aet, calling_aet, application_context, b"".join(parts) + user
    )


def encode_associate_ac(
    request: AssociateRequest,
    results: Sequence[ContextResult],
    *,
    max_pdu_length: int,
    implementation_class_uid: str,
    implementation_version: str,
    roles: Mapping[str, tuple[bool, bool]] = {},
) -> bytes:
    """An A-ASSOCIATE-AC answering ``request``: called/calling AE and application context are
    echoed from it (PS3.8 Table 9-17), one presentation context item per result."""
    parts = []
    for r in results:
        if not 1 <= r.context_id <= 255 or r.context_id % 2 == 0 or not 0 <= r.result <= 4:
            raise ValueError(f"invalid context result {r}")
        syntax = _item(0x40, _uid_bytes(r.transfer_syntax))
        parts.append(_item(0x21, bytes((r.context_id, 0, r.result, 0)) + syntax))
    user = _user_info(max_pdu_length, implementation_class_uid, implementation_version, roles)
    return _associate(
        T_ASSOCIATE_AC,
        request.called_aet,
        request.calling_aet,
        request.application_context,
        b"".join(parts) + user,
    )


def encode_associate_rj(result: int, source: int, reason: int) -> bytes:
    """An A-ASSOCIATE-RJ PDU (PS3.8 Table 9-21)."""
    if result not in (1, 2) or source not in (1, 2, 3) or not 0 <= reason <= 255:
        raise ValueError(f"invalid A-ASSOCIATE-RJ ({result}, {source}, {reason})")
    return _pdu(T_ASSOCIATE_RJ, bytes((0, result, source, reason)))


def encode_release_rq() -> bytes:
    """An A-RELEASE-RQ PDU."""
    return _pdu(T_RELEASE_RQ, bytes(4))


def encode_release_rp() -> bytes:
    """An A-RELEASE-RP PDU."""
    return _pdu(T_RELEASE_RP, bytes(4))


def encode_abort(source: int, reason: int) -> bytes:
    """An A-ABORT PDU (PS3.8 Table 9-26); reason is sent as 0 when the source is the user."""
    if source not in (0, 2) or not 0 <= reason <= 6:
        raise ValueError(f"invalid A-ABORT ({source}, {reason})")
    return _pdu(T_ABORT, bytes((0, 0, source, reason if source == 2 else 0)))


def encode_pdata(
    context_id: int, is_command: bool, is_last: bool, data: bytes | memoryview
) -> bytes:
    """A P-DATA-TF PDU holding one PDV. Keeping it within the peer's maximum length
    (``len(data) + 6 <= max``) is the caller's job."""
    if not 1 <= context_id <= 255 or context_id % 2 == 0:
        raise ValueError(f"invalid presentation context id {context_id}")
    if len(data) > MAX_PDU_LENGTH_FIELD - 12:
        raise ValueError("PDV too large")
    control = (1 if is_command else 0) | (2 if is_last else 0)
    header = _HEADER.pack(T_PDATA, len(data) + PDV_HEADER_LENGTH) + _PDV.pack(
        len(data) + 2, context_id, control
    )
    return header + bytes(data)
