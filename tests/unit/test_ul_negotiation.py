"""Acceptor-side negotiation: context results and association checks."""

from __future__ import annotations

import pytest
from pynetdicom.pdu import A_ASSOCIATE_AC

from rst.backends.dimse.ul import (
    APPLICATION_CONTEXT,
    AssociateRequest,
    ContextResult,
    PduReader,
    PresentationContextRQ,
    check_association,
    encode_associate_ac,
    encode_associate_rq,
    negotiate,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
JPEG2000 = "1.2.840.10008.1.2.4.90"


def request(**overrides: object) -> AssociateRequest:
    fields: dict[str, object] = {
        "called_aet": "RST",
        "calling_aet": "ORTHANC",
        "application_context": APPLICATION_CONTEXT,
        "contexts": (PresentationContextRQ(1, CT, (IMPLICIT, EXPLICIT)),),
        "max_pdu_length": 16384,
        "implementation_class_uid": "1.2.3",
        "implementation_version": None,
        "roles": {},
        "protocol_version": 1,
    }
    fields.update(overrides)
    return AssociateRequest(**fields)  # type: ignore[arg-type]


def test_negotiate_prefers_our_order() -> None:
    rq = request(
        contexts=(
            PresentationContextRQ(1, CT, (IMPLICIT, EXPLICIT)),
            PresentationContextRQ(3, CT, (IMPLICIT,)),
            PresentationContextRQ(5, MR, (EXPLICIT,)),
            PresentationContextRQ(7, CT, (JPEG2000,)),
        )
    )
    results = negotiate(rq, abstract_syntaxes={CT}, transfer_syntaxes=[EXPLICIT, IMPLICIT])
    assert results == [
        ContextResult(1, 0, EXPLICIT),
        ContextResult(3, 0, IMPLICIT),
        ContextResult(5, 3, EXPLICIT),
        ContextResult(7, 4, JPEG2000),
    ]


def test_negotiated_ac_decodes_in_pynetdicom() -> None:
    raw = encode_associate_rq(
        called_aet="RST",
        calling_aet="ORTHANC",
        contexts=[
            PresentationContextRQ(1, CT, (JPEG2000, EXPLICIT)),
            PresentationContextRQ(3, MR, (IMPLICIT,)),
        ],
        max_pdu_length=16384,
        implementation_class_uid="1.2.3",
    )
    reader = PduReader(max_pdu_length=131072)
    reader.feed(raw)
    rq = reader.next_pdu()
    assert isinstance(rq, AssociateRequest)
    assert check_association(rq, our_aet="RST") is None
    results = negotiate(rq, abstract_syntaxes=[CT], transfer_syntaxes=[EXPLICIT, JPEG2000])
    ac = A_ASSOCIATE_AC()
    ac.decode(
        encode_associate_ac(
            rq, results, max_pdu_length=131072, implementation_class_uid="1.2.4",
            implementation_version="RST",
        )
    )  # fmt: skip
    got = [
        (c.context_id, c.result, c.transfer_syntax[0])
        for c in ac.to_primitive().presentation_context_definition_results_list
    ]
    assert got == [(1, 0, EXPLICIT), (3, 3, IMPLICIT)]


@pytest.mark.parametrize(
    ("overrides", "our_aet", "expected"),
    [
        ({}, "RST", None),
        ({}, None, None),
        ({}, "RST ", None),
        ({"protocol_version": 3}, "RST", None),
        ({"protocol_version": 2}, "RST", (1, 2, 2)),
        ({"protocol_version": 0}, None, (1, 2, 2)),
        ({"application_context": "1.2.3"}, "RST", (1, 1, 2)),
        ({"called_aet": "OTHER"}, "RST", (1, 1, 7)),
        ({"called_aet": "OTHER"}, None, None),
        ({"called_aet": ""}, None, (1, 1, 7)),
        ({"calling_aet": ""}, "RST", (1, 1, 3)),
    ],
)
def test_check_association(
    overrides: dict[str, object], our_aet: str | None, expected: tuple[int, int, int] | None
) -> None:
    assert check_association(request(**overrides), our_aet=our_aet) == expected
