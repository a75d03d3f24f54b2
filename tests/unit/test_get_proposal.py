"""The presentation contexts rst proposes on a C-GET association (rst.backends.dimse.proposal)."""

from __future__ import annotations

import random
from collections import defaultdict

from hypothesis import given
from hypothesis import strategies as st

from rst.backends.dimse.proposal import (
    GET_STORAGE_CLASSES,
    SCP_ROLE,
    broad_contexts,
    get_syntaxes,
    per_class_contexts,
    roles_for,
)
from rst.backends.dimse.ul import PresentationContextRQ
from rst.backends.dimse.ul.pdu import MAX_CONTEXTS
from rst.config import DEFAULT_TRANSFER_SYNTAXES
from rst.dicom import uids

MODEL = uids.STUDY_ROOT_GET
CT = "1.2.840.10008.5.1.4.1.1.2"
SR = "1.2.840.10008.5.1.4.1.1.88.22"
COMPRESSED = [ts for ts in DEFAULT_TRANSFER_SYNTAXES if ts not in uids.NATIVE_SYNTAXES]
SYNTAXES = st.lists(
    st.sampled_from((*DEFAULT_TRANSFER_SYNTAXES, uids.HTJ2K_LOSSLESS, uids.JPEG_XL_LOSSLESS)),
    max_size=20,
)
CLASS_UIDS = st.lists(st.integers(1, 10**6).map(lambda n: f"1.2.3.{n}"), max_size=300)


def by_class(contexts: list[PresentationContextRQ]) -> dict[str, list[tuple[str, ...]]]:
    found: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    for cx in contexts[1:]:
        found[cx.abstract_syntax].append(cx.transfer_syntaxes)
    return dict(found)


def check_valid(contexts: list[PresentationContextRQ]) -> None:
    """Within an association's limits, the C-GET model first, odd unique ids, and an
    uncompressed option for every storage class."""
    assert 1 <= len(contexts) <= MAX_CONTEXTS
    assert contexts[0].abstract_syntax == MODEL
    assert [cx.context_id for cx in contexts] == [1 + 2 * n for n in range(len(contexts))]
    for uid, groups in by_class(contexts).items():
        assert any(ts in uids.NATIVE_SYNTAXES for group in groups for ts in group), uid


def test_as_stored_puts_compressed_syntaxes_first() -> None:
    assert get_syntaxes(DEFAULT_TRANSFER_SYNTAXES, None) == [
        *COMPRESSED,
        uids.EXPLICIT_VR_LITTLE_ENDIAN,
        uids.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
        uids.IMPLICIT_VR_LITTLE_ENDIAN,
        uids.EXPLICIT_VR_BIG_ENDIAN,
    ]


def test_uncompressed_requests_still_offer_compressed_syntaxes_last() -> None:
    """A PACS that cannot decompress may still send as stored; rst decompresses."""
    assert get_syntaxes(DEFAULT_TRANSFER_SYNTAXES, uids.EXPLICIT_VR_LITTLE_ENDIAN) == [
        uids.EXPLICIT_VR_LITTLE_ENDIAN,
        uids.IMPLICIT_VR_LITTLE_ENDIAN,
        *COMPRESSED,
    ]


def test_per_class_gives_each_compressed_syntax_its_own_context() -> None:
    syntaxes = get_syntaxes(DEFAULT_TRANSFER_SYNTAXES, None)
    contexts = per_class_contexts(MODEL, [SR, CT], syntaxes)
    check_valid(contexts)
    uncompressed = tuple(ts for ts in syntaxes if ts in uids.NATIVE_SYNTAXES)
    expected = [(ts,) for ts in COMPRESSED] + [(uids.EXPLICIT_VR_LITTLE_ENDIAN,), uncompressed]
    assert {uid: by_class(contexts)[uid] for uid in (CT, SR)} == {CT: expected, SR: expected}
    assert [cx.abstract_syntax for cx in contexts[1:23]] == [CT] * 11 + [SR] * 11  # sorted


def test_per_class_fills_free_contexts_with_the_other_classes() -> None:
    """A class the PACS left out of SOP Classes in Study still has a context (every syntax)."""
    syntaxes = get_syntaxes(DEFAULT_TRANSFER_SYNTAXES, None)
    contexts = per_class_contexts(MODEL, [CT], syntaxes)
    check_valid(contexts)
    assert len(contexts) == MAX_CONTEXTS
    rest = contexts[1 + 11 :]
    assert CT not in {cx.abstract_syntax for cx in rest}
    assert [cx.abstract_syntax for cx in rest] == [uid for uid in GET_STORAGE_CLASSES if uid != CT][
        : len(rest)
    ]
    assert all(cx.transfer_syntaxes == tuple(syntaxes) for cx in rest)


def test_per_class_keeps_the_request_order_of_syntax_groups() -> None:
    syntaxes = get_syntaxes(DEFAULT_TRANSFER_SYNTAXES, uids.EXPLICIT_VR_LITTLE_ENDIAN)
    groups = by_class(per_class_contexts(MODEL, [CT], syntaxes))[CT]
    assert groups[0] == (uids.EXPLICIT_VR_LITTLE_ENDIAN,)
    assert groups[1] == (uids.EXPLICIT_VR_LITTLE_ENDIAN, uids.IMPLICIT_VR_LITTLE_ENDIAN)
    assert groups[2:] == [(ts,) for ts in COMPRESSED]


def test_per_class_fills_the_budget_class_by_class() -> None:
    """20 classes x 11 contexts do not fit: each keeps its uncompressed context, the 107
    contexts left go to the other syntaxes of the first classes, 10 each."""
    classes = [f"1.2.3.{n:02d}" for n in range(20)]
    contexts = per_class_contexts(MODEL, classes, get_syntaxes(DEFAULT_TRANSFER_SYNTAXES, None))
    check_valid(contexts)
    assert len(contexts) == MAX_CONTEXTS
    counts = [len(by_class(contexts)[uid]) for uid in classes]
    assert counts[:10] == [11] * 10
    assert counts[10] == 1 + (MAX_CONTEXTS - 1 - 20 - 10 * 10)
    assert counts[11:] == [1] * 9
    every_uncompressed = (
        uids.EXPLICIT_VR_LITTLE_ENDIAN,
        uids.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
        uids.IMPLICIT_VR_LITTLE_ENDIAN,
        uids.EXPLICIT_VR_BIG_ENDIAN,
    )
    assert all(every_uncompressed in by_class(contexts)[uid] for uid in classes)


def test_per_class_drops_invalid_uids_and_duplicates() -> None:
    contexts = per_class_contexts(MODEL, [CT, CT, "1.2.x", "", "1." * 40], [uids.RLE_LOSSLESS])
    classes = by_class(contexts)
    assert classes[CT] == [
        (uids.RLE_LOSSLESS,),
        (uids.EXPLICIT_VR_LITTLE_ENDIAN,),
        uids.UNCOMPRESSED,
    ]
    assert not {"1.2.x", "", "1." * 40} & set(classes)
    assert set(classes) - {CT} <= set(GET_STORAGE_CLASSES)  # the free contexts


def test_broad_proposes_every_common_class_once() -> None:
    contexts = broad_contexts(MODEL, get_syntaxes(DEFAULT_TRANSFER_SYNTAXES, None))
    check_valid(contexts)
    assert [cx.abstract_syntax for cx in contexts[1:]] == list(GET_STORAGE_CLASSES)
    assert contexts[1].transfer_syntaxes == tuple(get_syntaxes(DEFAULT_TRANSFER_SYNTAXES, None))


def test_roles_ask_the_scp_role_for_storage_classes_only() -> None:
    contexts = per_class_contexts(MODEL, [CT, SR], [uids.RLE_LOSSLESS])
    roles = roles_for(contexts, MODEL)
    assert roles[CT] == roles[SR] == SCP_ROLE
    assert MODEL not in roles
    assert set(roles.values()) == {SCP_ROLE}


@given(classes=CLASS_UIDS, configured=SYNTAXES, as_stored=st.booleans(), seed=st.randoms())
def test_any_proposal_is_valid_and_deterministic(
    classes: list[str], configured: list[str], as_stored: bool, seed: random.Random
) -> None:
    syntaxes = get_syntaxes(configured, None if as_stored else uids.EXPLICIT_VR_LITTLE_ENDIAN)
    contexts = per_class_contexts(MODEL, classes, syntaxes)
    check_valid(contexts)
    check_valid(broad_contexts(MODEL, syntaxes))
    shuffled = list(classes)
    seed.shuffle(shuffled)
    assert per_class_contexts(MODEL, shuffled, syntaxes) == contexts
    wanted = set(classes)
    proposed = set(by_class(contexts))
    assert proposed - wanted <= set(GET_STORAGE_CLASSES)  # free contexts: the broad classes
    assert len(proposed & wanted) == min(len(wanted), MAX_CONTEXTS - 1)  # none left out needlessly
