"""What rst proposes on a C-GET association (sans-IO): the presentation contexts the PACS may
send its C-STORE sub-operations on, within the 128 an association request can carry.

On a C-GET the PACS sends each instance on a context rst proposed for its SOP class, in the
one transfer syntax it accepted for that context (PS3.4 C.4.3, PS3.7 D.3.3.4). A PACS that
does not transcode can send an instance stored as RLE only on a context whose accepted syntax
is RLE; one context per class with a list of syntaxes lets it accept just one syntax per class.
So rst proposes in one of two shapes:

- **per class** (:func:`per_class_contexts`), when it knows the SOP classes of the study — the
  PACS answered a study-level C-FIND with SOP Classes in Study (0008,0062), as Orthanc's own
  C-GET SCU asks before it retrieves: for each class one context per compressed syntax, each
  holding that syntax alone, then Explicit VR Little Endian alone, then one with every
  uncompressed syntax. Whatever the instance's
  stored syntax, there is a context for it, and an uncompressed one for a PACS that would
  rather decompress. The PACS picks the context: pynetdicom the one whose syntax matches,
  Orthanc the stored syntax first, dcmtk's ``dcmqrscp`` the first accepted one for the class.
- **broad** (:func:`broad_contexts`), when it does not (``dcmqrscp`` has no SOP Classes in
  Study): the first :data:`~rst.dicom.uids.GET_STORAGE_CLASSES` storage classes, one context
  each with the whole list, compressed syntaxes included even when the client wants
  uncompressed data — a PACS that chooses by its own preference (``dcmqrscp +xr``) can then
  send as stored and rst decompresses afterwards, as it does for C-MOVE arrivals.

Either way every class proposed has an uncompressed option, the order is deterministic and the
total never exceeds :data:`~rst.backends.dimse.ul.pdu.MAX_CONTEXTS`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rst.backends.dimse.ul import PresentationContextRQ
from rst.backends.dimse.ul.pdu import MAX_CONTEXTS
from rst.dicom import uids
from rst.dicom.uid import is_valid_uid

__all__ = [
    "GET_STORAGE_CLASSES",
    "SCP_ROLE",
    "broad_contexts",
    "get_syntaxes",
    "per_class_contexts",
    "roles_for",
]

GET_STORAGE_CLASSES = uids.STORAGE_CLASSES[: uids.GET_STORAGE_CLASSES]
"""The storage classes of the broad proposal."""
SCP_ROLE = (False, True)
"""The roles rst asks for on each storage context of a C-GET (SCU, SCP): only SCP."""


def get_syntaxes(configured: Sequence[str], prefer: str | None) -> list[str]:
    """The transfer syntaxes to propose for C-GET sub-operations, most preferred first.

    As stored (*prefer* ``None``): the compressed ones of *configured* first, then the
    uncompressed ones. Otherwise *prefer* (an uncompressed syntax), the other uncompressed
    syntaxes rst proposes, then the compressed ones: a PACS that cannot decompress still has
    a way to send, and rst decompresses what arrives (``services/wado.py``)."""
    compressed = [ts for ts in configured if ts not in uids.NATIVE_SYNTAXES]
    if prefer is None:
        return compressed + [ts for ts in configured if ts in uids.NATIVE_SYNTAXES]
    uncompressed = [prefer] + [ts for ts in uids.UNCOMPRESSED if ts != prefer and ts in configured]
    return uncompressed + compressed


def _context_id(n: int) -> int:
    return 1 + 2 * n  # odd ids 1, 3, …, 255 (PS3.8 §9.3.2.2)


def broad_contexts(model: str, syntaxes: Sequence[str]) -> list[PresentationContextRQ]:
    """The C-GET *model*'s context, then one context per class of :data:`GET_STORAGE_CLASSES`
    with all *syntaxes*."""
    proposed = _with_uncompressed(syntaxes)
    return [PresentationContextRQ(_context_id(0), model, uids.UNCOMPRESSED)] + [
        PresentationContextRQ(_context_id(1 + n), uid, proposed)
        for n, uid in enumerate(GET_STORAGE_CLASSES)
    ]


def per_class_contexts(
    model: str, classes: Iterable[str], syntaxes: Sequence[str]
) -> list[PresentationContextRQ]:
    """The C-GET *model*'s context, then for each of *classes* (deduplicated, sorted) one
    context per compressed syntax of *syntaxes* and one with its uncompressed syntaxes, in the
    order of *syntaxes* (the uncompressed context where the first uncompressed syntax is).
    Before that one, Explicit VR Little Endian alone: a PACS that picks one syntax from a list
    by its own preference (pynetdicom: Implicit VR) would otherwise send an instance stored in
    Explicit VR in another syntax, while one that matches the stored syntax uses this context.

    If that is more than an association holds, every class keeps its uncompressed context
    (classes beyond :data:`~rst.backends.dimse.ul.pdu.MAX_CONTEXTS` - 1 are left out, the
    highest UIDs first) and the other contexts left go to the classes in order.

    Contexts still free go to the other classes of :data:`GET_STORAGE_CLASSES`, one each with
    every syntax as in the broad proposal: a PACS whose SOP Classes in Study leaves out a class
    (some list only the classes of part of the study) can still send those instances."""
    wanted = sorted({uid for uid in classes if is_valid_uid(uid)})[: MAX_CONTEXTS - 1]
    proposed = _with_uncompressed(syntaxes)
    native = tuple(ts for ts in proposed if ts in uids.NATIVE_SYNTAXES)
    groups: list[tuple[str, ...]] = []
    for ts in proposed:
        if ts not in uids.NATIVE_SYNTAXES:
            groups.append((ts,))
        elif native not in groups:
            if len(native) > 1 and uids.EXPLICIT_VR_LITTLE_ENDIAN in native:
                groups.append((uids.EXPLICIT_VR_LITTLE_ENDIAN,))  # what DICOMweb prefers
            groups.append(native)
    spare = MAX_CONTEXTS - 1 - len(wanted)  # beyond one uncompressed context per class
    chosen: list[tuple[str, tuple[str, ...]]] = []
    for uid in wanted:
        for group in groups:
            if group is native:
                chosen.append((uid, group))
            elif spare > 0:
                chosen.append((uid, group))
                spare -= 1
    room = MAX_CONTEXTS - 1 - len(chosen)
    others = [uid for uid in GET_STORAGE_CLASSES if uid not in wanted][: max(room, 0)]
    chosen += [(uid, proposed) for uid in others]
    return [PresentationContextRQ(_context_id(0), model, uids.UNCOMPRESSED)] + [
        PresentationContextRQ(_context_id(1 + n), uid, group)
        for n, (uid, group) in enumerate(chosen)
    ]


def roles_for(
    contexts: Iterable[PresentationContextRQ], model: str
) -> dict[str, tuple[bool, bool]]:
    """SCP/SCU role selection for every storage class in *contexts* (all but *model*)."""
    return {cx.abstract_syntax: SCP_ROLE for cx in contexts if cx.abstract_syntax != model}


def _with_uncompressed(syntaxes: Sequence[str]) -> tuple[str, ...]:
    """*syntaxes*, deduplicated, with the uncompressed ones rst always proposes added if the
    configuration left them all out: every class must have an uncompressed option."""
    unique = tuple(dict.fromkeys(syntaxes))
    if any(ts in uids.NATIVE_SYNTAXES for ts in unique):
        return unique
    return unique + uids.UNCOMPRESSED
