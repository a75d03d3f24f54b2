"""``multipart/related`` (RFC 2387) for DICOMweb: a response writer and a streaming STOW-RS parser.

Sans-IO: the writer returns bytes to send, the reader is fed body chunks as they arrive and hands
back each part once it is complete, so only one part is held in memory at a time. Boundary
scanning is done by the ``multipart`` package's :class:`PushMultipartParser`.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

import multipart as _mp

from rst.dicom.accept import parse_media_type
from rst.errors import BadRequest, PayloadTooLarge, RstError, UnsupportedMediaType
from rst.groups import copy_of

__all__ = [
    "MAX_PART_HEADER_BYTES",
    "MultipartReader",
    "MultipartWriter",
    "Part",
    "new_boundary",
    "parse_content_type",
    "stow_boundary",
]

# RFC 2046 §5.1.1: 1-70 characters from bchars, not ending in a space.
_BOUNDARY_RE = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
_TOKEN_RE = re.compile(r"[0-9A-Za-z!#$%&'*+\-.^_`|~]+")
_MAX_READ_BOUNDARY = 256
"""Longest boundary the reader takes (longer than RFC 2046's 70: be lenient with clients)."""
MAX_PART_HEADER_BYTES = 16 * 1024
"""Most bytes the header lines of one part may take together (names, values, separators)."""
_MAX_HEADER_LINES = 32
_MAX_HEADER_LINE = 4224
"""Bounds of the ``multipart`` parser itself: header lines per part, bytes per line. It holds
a part's header lines until they are complete, so they bound what it buffers."""


def new_boundary() -> str:
    """A fresh random boundary (32 hex digits), so part data cannot collide with it by chance."""
    return secrets.token_hex(16)


def _check_header_value(value: str) -> None:
    """Refuse header values that would break the part header (CR, LF, NUL)."""
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"invalid character in multipart header value {value!r}")


class MultipartWriter:
    """Produces the framing bytes of a ``multipart/related`` body; the caller sends part data.

    Usage: ``head = w.part_head(ct)`` then the part bytes, repeated, then ``w.close()``.
    The writer tracks whether a part was written so that the CRLF ending a part's data is
    emitted in front of the next delimiter.
    """

    def __init__(self, boundary: str | None = None) -> None:
        """Use ``boundary`` (validated against RFC 2046) or a fresh random one."""
        if boundary is None:
            boundary = new_boundary()
        elif not _BOUNDARY_RE.fullmatch(boundary):
            raise ValueError(f"invalid multipart boundary {boundary!r}")
        self.boundary = boundary
        self._delimiter = b"--" + boundary.encode("ascii")
        self._parts = 0
        self._closed = False

    @property
    def parts_written(self) -> int:
        """How many part heads were produced so far."""
        return self._parts

    def content_type(
        self, part_type: str = "application/dicom", transfer_syntax: str | None = None
    ) -> str:
        """The ``Content-Type`` of the whole body, e.g.
        ``multipart/related; type="application/dicom"; boundary=...``."""
        _check_header_value(part_type)
        value = f'multipart/related; type="{part_type}"'
        if transfer_syntax is not None:
            _check_header_value(transfer_syntax)
            value += f"; transfer-syntax={transfer_syntax}"
        boundary = self.boundary
        if not _TOKEN_RE.fullmatch(boundary):
            boundary = f'"{boundary}"'
        return f"{value}; boundary={boundary}"

    def part_head(self, content_type: str, extra_headers: Mapping[str, str] | None = None) -> bytes:
        """The delimiter and headers that start the next part, ending with the blank line.

        The first header line is exactly ``Content-Type: <content_type>`` (OHIF's frame loader
        looks for that prefix). Parts after the first are preceded by the CRLF that ends the
        previous part's data.
        """
        if self._closed:
            raise RuntimeError("multipart body already closed")
        _check_header_value(content_type)
        lines = [f"Content-Type: {content_type}"]
        for name, value in (extra_headers or {}).items():
            if not _TOKEN_RE.fullmatch(name):
                raise ValueError(f"invalid multipart header name {name!r}")
            _check_header_value(value)
            lines.append(f"{name}: {value}")
        head = self._delimiter + b"\r\n" + "\r\n".join(lines).encode("utf-8") + b"\r\n\r\n"
        if self._parts:
            head = b"\r\n" + head
        self._parts += 1
        return head

    def close(self) -> bytes:
        """The close delimiter ending the body (after the last part's data)."""
        if self._closed:
            raise RuntimeError("multipart body already closed")
        self._closed = True
        tail = self._delimiter + b"--\r\n"
        return b"\r\n" + tail if self._parts else tail


def parse_content_type(header: str | None) -> tuple[str, dict[str, str]]:
    """Split a ``Content-Type`` into the lowercased media type and its parameters.

    Parameter names are lowercased and values unquoted (quoted or token form alike).
    A missing header gives ``("", {})``.
    """
    if header is None:
        return "", {}
    return parse_media_type(header)


_STOW_TYPES = 'multipart/related; type="application/dicom"'


def stow_boundary(content_type: str | None) -> str:
    """Validate a STOW-RS request ``Content-Type`` and return its boundary.

    Accepted: ``multipart/related`` with ``type="application/dicom"`` or without ``type``.

    :raises UnsupportedMediaType: another media type or part type (the metadata + bulk data form
        with ``application/dicom+json`` / ``+xml`` is not supported yet).
    :raises BadRequest: the boundary parameter is missing or invalid.
    """
    media_type, params = parse_content_type(content_type)
    if media_type != "multipart/related":
        shown = repr(content_type) if content_type else "none"
        raise UnsupportedMediaType(
            f"STOW-RS takes a {_STOW_TYPES} body; the request's Content-Type is {shown}"
        )
    part_type = params.get("type", "application/dicom").strip().lower()
    if part_type in ("application/dicom+json", "application/dicom+xml"):
        raise UnsupportedMediaType(
            f"STOW-RS with {part_type} metadata and separate bulk data is not supported yet; "
            f"send Part 10 instances as {_STOW_TYPES}"
        )
    if part_type != "application/dicom":
        raise UnsupportedMediaType(
            f"STOW-RS takes {_STOW_TYPES}; parts of type {part_type!r} are not supported"
        )
    boundary = params.get("boundary")
    if not boundary:
        raise BadRequest("the multipart/related Content-Type has no boundary parameter")
    if len(boundary) > _MAX_READ_BOUNDARY or any(c in boundary for c in "\r\n\0"):
        raise BadRequest("the multipart boundary parameter is invalid")
    return boundary


@dataclass
class Part:
    """One complete body part.

    ``headers`` are (name, value) pairs with Title-Case names, in order; ``content_type`` is the
    raw ``Content-Type`` header value (parameters included; see :func:`parse_content_type`) or
    ``None`` when the part has none.
    """

    headers: list[tuple[str, str]]
    content_type: str | None
    data: bytes


class _RelatedParser(_mp.PushMultipartParser):  # type: ignore[misc]
    """:class:`PushMultipartParser` without its ``multipart/form-data`` header requirements."""

    def _create_segment(self, headerlist: list[tuple[str, str]]) -> object:
        return _mp.MultipartSegment(headerlist)


class MultipartReader:
    """Incremental parser of a ``multipart/related`` body with size limits.

    Feed body chunks as they arrive; each call returns the parts that the chunk completed.
    Only the part being received is buffered.
    """

    def __init__(
        self,
        boundary: str,
        *,
        max_part_bytes: int,
        max_total_bytes: int,
        max_parts: int | None = None,
    ) -> None:
        """``max_part_bytes`` bounds one part's data, ``max_total_bytes`` the whole body,
        ``max_parts`` the number of parts; a part's headers take at most
        :data:`MAX_PART_HEADER_BYTES`."""
        try:
            self._parser = _RelatedParser(
                boundary, max_header_count=_MAX_HEADER_LINES, max_header_size=_MAX_HEADER_LINE
            )
        except _mp.MultipartError as err:
            raise BadRequest(f"invalid multipart boundary: {err}") from err
        self._max_part = max_part_bytes
        self._max_total = max_total_bytes
        self._total = 0
        self._headers: list[tuple[str, str]] | None = None
        self._chunks: list[bytes] = []
        self._part_size = 0
        self._count = 0
        self._started = 0
        self._max_parts = max_parts
        self._pending: RstError | None = None

    @property
    def part_count(self) -> int:
        """How many complete parts were returned so far."""
        return self._count

    def feed(self, chunk: bytes) -> list[Part]:
        """Parse the next body chunk; return the parts it completed.

        An error met in the chunk is raised once the parts it completed before the error have
        been handed out: at once if there are none, else by the next call (or :meth:`finish`).

        :raises BadRequest: the body is not valid multipart, or a part's headers are too large.
        :raises PayloadTooLarge: a part, the body or the number of parts exceed the limits.
        """
        self._raise_pending()
        if not chunk:
            return []
        room = self._max_total - self._total
        self._total += len(chunk)
        done: list[Part] = []
        try:
            self._parse(chunk[:room] if len(chunk) > room else chunk, done)
            if len(chunk) > room:
                raise PayloadTooLarge(f"the request body exceeds {self._max_total} bytes")
        except RstError as err:
            if not done:
                raise
            self._pending = err
        return done

    def _parse(self, chunk: bytes, done: list[Part]) -> None:
        try:
            for event in self._parser.parse(chunk):
                if event is None:
                    done.append(self._finish_part())
                elif isinstance(event, bytes | bytearray):
                    self._part_size += len(event)
                    if self._part_size > self._max_part:
                        raise PayloadTooLarge(
                            f"a part of the request body exceeds {self._max_part} bytes"
                        )
                    self._chunks.append(bytes(event))
                else:
                    self._start_part(list(event.headerlist))
        except _mp.MultipartError as err:
            raise BadRequest(f"malformed multipart body: {err}") from err

    def _raise_pending(self) -> None:
        if self._pending is not None:
            raise copy_of(self._pending)  # a copy: the raised one's frames hold self

    def _start_part(self, headers: list[tuple[str, str]]) -> None:
        self._started += 1
        if self._max_parts is not None and self._started > self._max_parts:
            raise PayloadTooLarge(
                f"the request body has more than {self._max_parts} parts (http.max_stow_parts)"
            )
        size = sum(
            len(f"{name}: {value}\r\n".encode("utf-8", "replace")) for name, value in headers
        )
        if size > MAX_PART_HEADER_BYTES:
            raise BadRequest(
                f"the headers of part {self._started} of the request body take {size} bytes; "
                f"at most {MAX_PART_HEADER_BYTES} are accepted"
            )
        self._headers = headers
        self._chunks = []
        self._part_size = 0

    def _finish_part(self) -> Part:
        headers = self._headers or []
        content_type = next((v for n, v in headers if n.lower() == "content-type"), None)
        data = b"".join(self._chunks)
        self._headers = None
        self._chunks = []
        self._part_size = 0
        self._count += 1
        return Part(headers=headers, content_type=content_type, data=data)

    def finish(self) -> list[Part]:
        """Signal the end of the body.

        :raises BadRequest: the body ended before the close delimiter.
        """
        self._raise_pending()
        try:
            self._parser.close()
        except _mp.MultipartError as err:
            raise BadRequest(
                "the multipart body ended before its closing boundary (truncated upload?)"
            ) from err
        return []
