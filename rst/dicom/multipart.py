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
from rst.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

__all__ = [
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

    def __init__(self, boundary: str, *, max_part_bytes: int, max_total_bytes: int) -> None:
        """``max_part_bytes`` bounds one part's data, ``max_total_bytes`` the whole body."""
        try:
            self._parser = _RelatedParser(boundary, max_header_count=32)
        except _mp.MultipartError as err:
            raise BadRequest(f"invalid multipart boundary: {err}") from err
        self._max_part = max_part_bytes
        self._max_total = max_total_bytes
        self._total = 0
        self._headers: list[tuple[str, str]] | None = None
        self._chunks: list[bytes] = []
        self._part_size = 0
        self._count = 0

    @property
    def part_count(self) -> int:
        """How many complete parts were returned so far."""
        return self._count

    def feed(self, chunk: bytes) -> list[Part]:
        """Parse the next body chunk; return the parts it completed.

        :raises BadRequest: the body is not valid multipart.
        :raises PayloadTooLarge: a part or the body exceed the limits.
        """
        if not chunk:
            return []
        self._total += len(chunk)
        if self._total > self._max_total:
            raise PayloadTooLarge(f"the request body exceeds {self._max_total} bytes")
        done: list[Part] = []
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
                    self._headers = list(event.headerlist)
                    self._chunks = []
                    self._part_size = 0
        except _mp.MultipartError as err:
            raise BadRequest(f"malformed multipart body: {err}") from err
        return done

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
        try:
            self._parser.close()
        except _mp.MultipartError as err:
            raise BadRequest(
                "the multipart body ended before its closing boundary (truncated upload?)"
            ) from err
        return []
