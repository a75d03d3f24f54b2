"""Property-based fuzzing of the UL codec: arbitrary and mutated input, arbitrary chunkings.

Invariants: the reader raises nothing but UpperLayerError, always makes progress (each
``next_pdu`` either consumes a PDU or returns None), keeps its buffer within
``max(buffer_size, 6 + largest PDU allowed)``, and decodes a stream the same whatever the
chunking. ``parse_command`` raises nothing but CommandError.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Sequence

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rst.backends.dimse.ul import (
    AssociateRequest,
    CommandError,
    ContextResult,
    CStoreRequest,
    PData,
    PduReader,
    PresentationContextRQ,
    UpperLayerError,
    encode_abort,
    encode_associate_ac,
    encode_associate_rj,
    encode_associate_rq,
    encode_c_echo_rq,
    encode_c_store_rq,
    encode_c_store_rsp,
    encode_pdata,
    encode_release_rp,
    encode_release_rq,
    parse_command,
)

FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,  # no .hypothesis directory in the work tree
    suppress_health_check=[HealthCheck.too_slow],
)
MAX_PDU = 4096
MAX_ASSOCIATE = 8192

uids = st.lists(st.integers(0, 99999), min_size=1, max_size=8).map(
    lambda parts: ".".join(map(str, parts))
)
aets = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="\\"),
    min_size=1,
    max_size=16,
)


@st.composite
def associate_rq(draw: st.DrawFn) -> bytes:
    ids = draw(st.lists(st.integers(0, 127), min_size=1, max_size=8, unique=True))
    contexts = [
        PresentationContextRQ(
            2 * i + 1, draw(uids), tuple(draw(st.lists(uids, min_size=1, max_size=3)))
        )
        for i in ids
    ]
    roles = draw(st.dictionaries(uids, st.tuples(st.booleans(), st.booleans()), max_size=2))
    return encode_associate_rq(
        called_aet=draw(aets),
        calling_aet=draw(aets),
        contexts=contexts,
        max_pdu_length=draw(st.integers(0, 2**32 - 1)),
        implementation_class_uid=draw(uids),
        implementation_version=draw(st.none() | aets),
        roles=roles,
    )


@st.composite
def associate_ac(draw: st.DrawFn) -> bytes:
    request = AssociateRequest(
        draw(aets), draw(aets), "1.2.840.10008.3.1.1.1", (), 0, "1.2", None, {}, 1
    )
    ids = draw(st.lists(st.integers(0, 127), max_size=6, unique=True))
    results = [ContextResult(2 * i + 1, draw(st.integers(0, 4)), draw(uids)) for i in ids]
    return encode_associate_ac(
        request,
        results,
        max_pdu_length=draw(st.integers(0, 2**32 - 1)),
        implementation_class_uid=draw(uids),
        implementation_version=draw(aets),
    )


pdata = st.builds(
    encode_pdata,
    st.integers(0, 127).map(lambda i: 2 * i + 1),
    st.booleans(),
    st.booleans(),
    st.binary(max_size=MAX_PDU - 6),
)
valid_pdu = st.one_of(
    associate_rq(),
    associate_ac(),
    pdata,
    st.builds(
        encode_associate_rj,
        st.sampled_from([1, 2]),
        st.sampled_from([1, 2, 3]),
        st.integers(0, 255),
    ),
    st.builds(encode_abort, st.sampled_from([0, 2]), st.integers(0, 6)),
    st.just(encode_release_rq()),
    st.just(encode_release_rp()),
)
buffer_sizes = st.sampled_from([6, 7, 64, 1000, 4 * 1024 * 1024])


def chunked(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def normalize(pdu: object) -> object:
    """PDV data views are valid only until the next read: copy them out."""
    if isinstance(pdu, PData):
        return tuple((p.context_id, p.is_command, p.is_last, bytes(p.data)) for p in pdu.pdvs)
    return pdu


def run(chunks: Sequence[bytes], buffer_size: int) -> tuple[list[object], UpperLayerError | None]:
    """Feed the chunks the way the service does (drain, writable, recv_into, advance)."""
    reader = PduReader(
        max_pdu_length=MAX_PDU, max_associate_length=MAX_ASSOCIATE, buffer_size=buffer_size
    )
    bound = max(buffer_size, 6 + MAX_ASSOCIATE)
    pdus: list[object] = []
    total = sum(len(c) for c in chunks)
    try:
        for chunk in chunks:
            offset = 0
            while offset < len(chunk):
                while (pdu := reader.next_pdu()) is not None:
                    pdus.append(normalize(pdu))
                    assert len(pdus) <= total  # each PDU consumes bytes: no endless loop
                target = reader.writable()
                assert len(target) > 0
                n = min(len(target), len(chunk) - offset)
                target[:n] = chunk[offset : offset + n]
                reader.advance(n)
                offset += n
                assert reader.capacity <= bound
        while (pdu := reader.next_pdu()) is not None:
            pdus.append(normalize(pdu))
    except UpperLayerError as error:
        failure: UpperLayerError | None = error
    else:
        failure = None
    if failure is not None:
        assert failure.source == 2
        assert failure.reason in (0, 1, 2, 4, 5, 6)
    return pdus, failure


@FUZZ
@given(data=st.binary(max_size=3000), cuts=st.lists(st.integers(0, 3000)), size=buffer_sizes)
def test_arbitrary_bytes(data: bytes, cuts: list[int], size: int) -> None:
    run(chunked(data, cuts), size)


@FUZZ
@given(
    pdus=st.lists(valid_pdu, min_size=1, max_size=5),
    cuts=st.lists(st.integers(0, 100000), max_size=20),
    size=buffer_sizes,
)
def test_valid_stream_independent_of_chunking(
    pdus: list[bytes], cuts: list[int], size: int
) -> None:
    stream = b"".join(pdus)
    whole, error = run([stream], 4 * 1024 * 1024)
    assert error is None
    assert len(whole) == len(pdus)
    pieces, error = run(chunked(stream, cuts), size)
    assert error is None
    assert pieces == whole


@FUZZ
@given(
    pdus=st.lists(valid_pdu, min_size=1, max_size=3),
    mutations=st.lists(
        st.tuples(
            st.sampled_from(["flip", "insert", "delete"]),
            st.integers(0, 2**16),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=6,
    ),
    cuts=st.lists(st.integers(0, 100000), max_size=10),
    size=buffer_sizes,
)
def test_mutated_stream(
    pdus: list[bytes], mutations: list[tuple[str, int, int]], cuts: list[int], size: int
) -> None:
    stream = bytearray(b"".join(pdus))
    for kind, position, value in mutations:
        i = position % (len(stream) + 1)
        if kind == "insert":
            stream[i:i] = bytes([value])
        elif i < len(stream):
            if kind == "flip":
                stream[i] ^= value or 1
            else:
                del stream[i]
    run(chunked(bytes(stream), cuts), size)


@FUZZ
@given(data=st.binary(max_size=400))
def test_parse_command_arbitrary_bytes(data: bytes) -> None:
    with contextlib.suppress(CommandError):
        parse_command(data)


commands = st.one_of(
    st.builds(
        lambda m, c, i, p, a, o: encode_c_store_rq(
            message_id=m,
            sop_class_uid=c,
            sop_instance_uid=i,
            priority=p,
            move_originator_aet=a,
            move_originator_message_id=o,
        ),
        st.integers(0, 0xFFFF),
        uids,
        uids,
        st.integers(0, 2),
        st.none() | aets,
        st.none() | st.integers(0, 0xFFFF),
    ),
    st.builds(lambda m: encode_c_echo_rq(message_id=m), st.integers(0, 0xFFFF)),
    st.builds(
        lambda m, c, i, s: encode_c_store_rsp(CStoreRequest(m, c, i, 0, None, None), s),
        st.integers(0, 0xFFFF),
        uids,
        uids,
        st.integers(0, 0xFFFF),
    ),
)


@FUZZ
@given(
    raw=commands,
    mutations=st.lists(st.tuples(st.integers(0, 2**16), st.integers(1, 255)), max_size=4),
    cut=st.none() | st.integers(0, 400),
)
def test_parse_command_mutated(
    raw: bytes, mutations: list[tuple[int, int]], cut: int | None
) -> None:
    data = bytearray(raw)
    for position, value in mutations:
        data[position % len(data)] ^= value
    if cut is not None:
        del data[cut:]
    with contextlib.suppress(CommandError):
        parse_command(bytes(data))


@FUZZ
@given(
    message_id=st.integers(0, 0xFFFF),
    sop_class=uids,
    instance=uids,
    priority=st.integers(0, 2),
    originator=st.none() | aets,
    originator_id=st.none() | st.integers(0, 0xFFFF),
)
def test_c_store_rq_round_trip(
    message_id: int,
    sop_class: str,
    instance: str,
    priority: int,
    originator: str | None,
    originator_id: int | None,
) -> None:
    raw = encode_c_store_rq(
        message_id=message_id,
        sop_class_uid=sop_class,
        sop_instance_uid=instance,
        priority=priority,
        move_originator_aet=originator,
        move_originator_message_id=originator_id,
    )
    expected = CStoreRequest(message_id, sop_class, instance, priority, originator, originator_id)
    assert parse_command(raw) == expected


@FUZZ
@given(raw=associate_rq())
def test_associate_rq_round_trip(raw: bytes) -> None:
    (pdu,), error = run([raw], 4 * 1024 * 1024)
    assert error is None
    assert isinstance(pdu, AssociateRequest)
    again = encode_associate_rq(
        called_aet=pdu.called_aet,
        calling_aet=pdu.calling_aet,
        contexts=pdu.contexts,
        max_pdu_length=pdu.max_pdu_length,
        implementation_class_uid=pdu.implementation_class_uid,
        implementation_version=pdu.implementation_version,
        roles=pdu.roles,
    )
    assert again == raw
