"""multipart/related: the response writer, STOW Content-Type checks and the streaming reader."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rst.dicom.multipart import (
    MAX_PART_HEADER_BYTES,
    MultipartReader,
    MultipartWriter,
    Part,
    new_boundary,
    parse_content_type,
    stow_boundary,
)
from rst.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

BIG = 1 << 30


def build(parts: list[tuple[str, bytes]], boundary: str | None = None) -> tuple[str, bytes]:
    """Write a body with MultipartWriter; return (boundary, body)."""
    writer = MultipartWriter(boundary)
    body = b"".join(writer.part_head(ct) + data for ct, data in parts) + writer.close()
    return writer.boundary, body


def read_all(boundary: str, chunks: list[bytes], **limits: int) -> list[Part]:
    reader = MultipartReader(
        boundary,
        max_part_bytes=limits.get("max_part_bytes", BIG),
        max_total_bytes=limits.get("max_total_bytes", BIG),
    )
    parts: list[Part] = []
    for chunk in chunks:
        parts.extend(reader.feed(chunk))
    parts.extend(reader.finish())
    return parts


class TestWriter:
    def test_new_boundary_is_random_hex(self) -> None:
        a, b = new_boundary(), new_boundary()
        assert a != b
        assert re.fullmatch(r"[0-9a-f]{32}", a)

    def test_exact_framing(self) -> None:
        writer = MultipartWriter("B")
        assert writer.part_head("application/dicom") == (
            b"--B\r\nContent-Type: application/dicom\r\n\r\n"
        )
        assert writer.part_head("application/dicom", {"Content-Location": "/x"}) == (
            b"\r\n--B\r\nContent-Type: application/dicom\r\nContent-Location: /x\r\n\r\n"
        )
        assert writer.parts_written == 2
        assert writer.close() == b"\r\n--B--\r\n"

    def test_close_without_parts(self) -> None:
        assert MultipartWriter("B").close() == b"--B--\r\n"

    def test_part_head_after_close(self) -> None:
        writer = MultipartWriter("B")
        writer.close()
        with pytest.raises(RuntimeError):
            writer.part_head("application/dicom")
        with pytest.raises(RuntimeError):
            writer.close()

    def test_header_line_starts_with_content_type(self) -> None:
        writer = MultipartWriter()
        writer.part_head("application/dicom")
        head = writer.part_head("application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1")
        first_line = head.split(b"\r\n")[2]
        assert first_line.startswith(b"Content-Type:")

    def test_content_type(self) -> None:
        writer = MultipartWriter("abc")
        assert writer.content_type() == 'multipart/related; type="application/dicom"; boundary=abc'
        assert writer.content_type("application/octet-stream", "1.2.840.10008.1.2.1") == (
            'multipart/related; type="application/octet-stream"; '
            "transfer-syntax=1.2.840.10008.1.2.1; boundary=abc"
        )

    def test_boundary_needing_quotes_is_quoted(self) -> None:
        writer = MultipartWriter("a b:c")
        assert writer.content_type().endswith('boundary="a b:c"')
        assert parse_content_type(writer.content_type())[1]["boundary"] == "a b:c"

    @pytest.mark.parametrize("boundary", ["", "x" * 71, "ends with space ", "a\r\nb", "ä"])
    def test_invalid_boundary(self, boundary: str) -> None:
        with pytest.raises(ValueError, match="boundary"):
            MultipartWriter(boundary)

    @pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "a\nb", "a\0"])
    def test_header_injection_refused(self, value: str) -> None:
        writer = MultipartWriter()
        with pytest.raises(ValueError, match="invalid"):
            writer.part_head(value)
        with pytest.raises(ValueError, match="invalid"):
            writer.part_head("application/dicom", {"X-Thing": value})
        with pytest.raises(ValueError, match="invalid"):
            writer.part_head("application/dicom", {"Bad Name": "v"})


class TestStowBoundary:
    @pytest.mark.parametrize(
        "content_type",
        [
            'multipart/related; type="application/dicom"; boundary=XYZ',
            "multipart/related; type=application/dicom; boundary=XYZ",
            'Multipart/Related; Type="Application/DICOM"; Boundary="XYZ"',
            "multipart/related; boundary=XYZ",
            'multipart/related; boundary="XYZ"; type="application/dicom"; start="<x>"',
        ],
    )
    def test_accepted(self, content_type: str) -> None:
        assert stow_boundary(content_type) == "XYZ"

    @pytest.mark.parametrize(
        "content_type",
        [None, "", "application/dicom", "multipart/form-data; boundary=x", "application/json"],
    )
    def test_wrong_media_type(self, content_type: str | None) -> None:
        with pytest.raises(UnsupportedMediaType, match="multipart/related") as info:
            stow_boundary(content_type)
        assert info.value.status == 415

    @pytest.mark.parametrize("part_type", ["application/dicom+json", "application/dicom+xml"])
    def test_metadata_and_bulkdata_not_supported_yet(self, part_type: str) -> None:
        with pytest.raises(UnsupportedMediaType, match="not supported yet"):
            stow_boundary(f'multipart/related; type="{part_type}"; boundary=x')

    def test_other_part_type(self) -> None:
        with pytest.raises(UnsupportedMediaType, match="image/jpeg"):
            stow_boundary("multipart/related; type=image/jpeg; boundary=x")

    @pytest.mark.parametrize(
        "content_type",
        [
            'multipart/related; type="application/dicom"',
            'multipart/related; type="application/dicom"; boundary=',
            'multipart/related; type="application/dicom"; boundary=""',
            "multipart/related; boundary=" + "x" * 300,
        ],
    )
    def test_bad_boundary(self, content_type: str) -> None:
        with pytest.raises(BadRequest, match="boundary"):
            stow_boundary(content_type)

    def test_parse_content_type_none(self) -> None:
        assert parse_content_type(None) == ("", {})


class TestReader:
    def test_two_parts(self) -> None:
        boundary, body = build([("application/dicom", b"one"), ("application/dicom", b"two")])
        parts = read_all(boundary, [body])
        assert [p.data for p in parts] == [b"one", b"two"]
        assert parts[0].content_type == "application/dicom"
        assert parts[0].headers == [("Content-Type", "application/dicom")]

    def test_parts_are_returned_as_soon_as_complete(self) -> None:
        boundary, body = build([("application/dicom", b"one"), ("application/dicom", b"two")])
        reader = MultipartReader(boundary, max_part_bytes=BIG, max_total_bytes=BIG)
        cut = body.index(b"two")
        first = reader.feed(body[:cut])
        assert [p.data for p in first] == [b"one"]
        assert [p.data for p in reader.feed(body[cut:])] == [b"two"]
        assert reader.finish() == []
        assert reader.part_count == 2

    def test_part_without_content_type_and_preamble_epilogue(self) -> None:
        body = b"preamble text\r\n--b\r\nContent-Location: x\r\n\r\nDATA\r\n--b--\r\nepilogue"
        (part,) = read_all("b", [body])
        assert part.content_type is None
        assert part.headers == [("Content-Location", "x")]
        assert part.data == b"DATA"

    def test_content_type_keeps_parameters(self) -> None:
        body = (
            b"--b\r\ncontent-type: application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
            b"\r\n\r\nX\r\n--b--\r\n"
        )
        (part,) = read_all("b", [body])
        assert parse_content_type(part.content_type) == (
            "application/dicom",
            {"transfer-syntax": "1.2.840.10008.1.2.1"},
        )

    def test_empty_body_is_truncated(self) -> None:
        with pytest.raises(BadRequest, match="ended before"):
            read_all("b", [])

    def test_truncated_body(self) -> None:
        boundary, body = build([("application/dicom", b"x" * 100)])
        with pytest.raises(BadRequest, match="ended before"):
            read_all(boundary, [body[:-10]])

    def test_no_closing_boundary(self) -> None:
        with pytest.raises(BadRequest, match="ended before"):
            read_all("b", [b"--b\r\nContent-Type: application/dicom\r\n\r\nDATA\r\n"])

    @pytest.mark.parametrize(
        "body",
        [
            b"--b\r\nContent-Type application/dicom\r\n\r\nX\r\n--b--\r\n",  # no colon
            b"--b\nContent-Type: application/dicom\n\nX\n--b--\n",  # bare LF
            b"--bXYZ\r\n\r\nX\r\n--b--\r\n",  # junk after the first boundary
            b"--b\r\n\r\nX\r\n--bjunk",  # junk after a boundary
            b"--b\r\n" + b"X-Long: " + b"a" * 10000 + b"\r\n\r\nX\r\n--b--\r\n",
        ],
    )
    def test_malformed(self, body: bytes) -> None:
        with pytest.raises(BadRequest, match="malformed"):
            read_all("b", [body])

    def test_feed_after_finish(self) -> None:
        boundary, body = build([("application/dicom", b"x")])
        reader = MultipartReader(boundary, max_part_bytes=BIG, max_total_bytes=BIG)
        reader.feed(body)
        reader.finish()
        with pytest.raises(BadRequest):
            reader.feed(b"more")

    def test_empty_chunk_is_a_no_op(self) -> None:
        boundary, body = build([("application/dicom", b"x")])
        reader = MultipartReader(boundary, max_part_bytes=BIG, max_total_bytes=BIG)
        assert reader.feed(b"") == []
        assert [p.data for p in reader.feed(body)] == [b"x"]

    def test_part_limit(self) -> None:
        boundary, body = build([("application/dicom", b"x" * 10), ("application/dicom", b"y" * 11)])
        assert len(read_all(boundary, [body], max_part_bytes=11)) == 2
        with pytest.raises(PayloadTooLarge, match="part") as info:
            read_all(boundary, [body], max_part_bytes=10)
        assert info.value.status == 413

    def test_part_limit_counts_across_chunks(self) -> None:
        boundary, body = build([("application/dicom", b"x" * 1000)])
        with pytest.raises(PayloadTooLarge):
            read_all(
                boundary, [body[i : i + 7] for i in range(0, len(body), 7)], max_part_bytes=999
            )

    def test_total_limit(self) -> None:
        boundary, body = build([("application/dicom", b"x" * 10)] * 3)
        assert len(read_all(boundary, [body], max_total_bytes=len(body))) == 3
        chunks = [body[i : i + 5] for i in range(0, len(body), 5)]
        with pytest.raises(PayloadTooLarge, match="body"):
            read_all(boundary, chunks, max_total_bytes=len(body) - 1)

    def test_invalid_boundary(self) -> None:
        with pytest.raises(BadRequest):
            MultipartReader("a\nb", max_part_bytes=1, max_total_bytes=1)

    def test_part_count_limit(self) -> None:
        boundary, body = build([("application/dicom", b"x")] * 3)
        reader = MultipartReader(boundary, max_part_bytes=BIG, max_total_bytes=BIG, max_parts=3)
        assert len(reader.feed(body)) == 3
        reader = MultipartReader(boundary, max_part_bytes=BIG, max_total_bytes=BIG, max_parts=2)
        assert len(reader.feed(body)) == 2  # the parts before the limit...
        with pytest.raises(PayloadTooLarge, match="more than 2 parts"):
            reader.finish()  # ...then the error

    def test_part_header_size_limit(self) -> None:
        def body(lines: int) -> bytes:  # header lines of 3500 bytes (each within the line limit)
            head = "".join(f"X-Padding-{n}: {'x' * 3486}\r\n" for n in range(lines))
            return f"--B\r\nContent-Type: application/dicom\r\n{head}\r\nx\r\n--B--\r\n".encode()

        assert len(read_all("B", [body(4)])) == 1
        with pytest.raises(BadRequest, match=f"at most {MAX_PART_HEADER_BYTES}"):
            read_all("B", [body(5)])

    def test_header_line_limit(self) -> None:
        body = b"--B\r\nX-Long: " + b"y" * 5000 + b"\r\n\r\nx\r\n--B--\r\n"
        with pytest.raises(BadRequest, match="malformed"):
            read_all("B", [body])

    def test_error_after_complete_parts_comes_with_the_next_call(self) -> None:
        """Parts the chunk completed before a limit was met are handed out first."""
        boundary, body = build([("application/dicom", b"x" * 10)] * 3)
        limit = len(body) - 20  # reached in the third part
        reader = MultipartReader(boundary, max_part_bytes=BIG, max_total_bytes=limit)
        assert [p.data for p in reader.feed(body)] == [b"x" * 10] * 2
        with pytest.raises(PayloadTooLarge, match="body"):
            reader.feed(b"more")
        reader = MultipartReader(boundary, max_part_bytes=BIG, max_total_bytes=limit)
        reader.feed(body)
        with pytest.raises(PayloadTooLarge):
            reader.finish()


def _chunked(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(body) + 1) for c in cuts})
    edges = [0, *points, len(body)]
    return [body[a:b] for a, b in itertools.pairwise(edges)]


@st.composite
def _payloads(draw: st.DrawFn, boundary: str) -> list[bytes]:
    """Binary part data, salted with fragments of the delimiter to tempt the parser."""
    delimiter = b"\r\n--" + boundary.encode()
    fragments = st.sampled_from(
        [delimiter[:k] for k in range(1, len(delimiter))]
        + [b"\r\n", b"\r", b"--", b"--" + boundary.encode() + b"--", delimiter[1:]]
    )
    piece = st.one_of(st.binary(max_size=64), fragments)
    # A payload holding the whole delimiter would end the part: that is why boundaries are random.
    payload = st.lists(piece, max_size=8).map(b"".join).filter(lambda p: delimiter not in p)
    return draw(st.lists(payload, min_size=0, max_size=5))


BOUNDARY = "0123456789abcdef"


@settings(max_examples=300, deadline=None, database=None)
@given(
    payloads=_payloads(BOUNDARY),
    cuts=st.lists(st.integers(min_value=0), max_size=12),
)
def test_round_trip_with_arbitrary_chunks(payloads: list[bytes], cuts: list[int]) -> None:
    writer = MultipartWriter(BOUNDARY)
    body = b"".join(writer.part_head("application/dicom") + p for p in payloads)
    body += writer.close()
    parts = read_all(BOUNDARY, _chunked(body, cuts))
    assert [p.data for p in parts] == payloads
    assert all(p.content_type == "application/dicom" for p in parts)


@settings(max_examples=100, deadline=None, database=None)
@given(
    payloads=st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=4),
    cuts=st.lists(st.integers(min_value=0), max_size=8),
)
def test_round_trip_random_boundary(payloads: list[bytes], cuts: list[int]) -> None:
    writer = MultipartWriter()
    body = b"".join(writer.part_head("application/dicom") + p for p in payloads)
    body += writer.close()
    boundary = stow_boundary(writer.content_type())
    assert [p.data for p in read_all(boundary, _chunked(body, cuts))] == payloads


@settings(max_examples=100, deadline=None, database=None)
@given(payloads=_payloads(BOUNDARY), cut=st.integers(min_value=0))
def test_truncation_is_always_detected(payloads: list[bytes], cut: int) -> None:
    _, body = build([("application/dicom", p) for p in payloads], BOUNDARY)
    # The CRLF after the close delimiter is optional (RFC 2046): cut before it.
    truncated = body[: cut % (len(body) - 2)]
    with pytest.raises(BadRequest):
        read_all(BOUNDARY, [truncated])
