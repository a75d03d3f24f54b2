"""Content negotiation for DICOMweb responses (PS3.18 §8.3.3, §8.7; RFC 9110 §12.5.1).

Sans-IO: the HTTP layer passes in the ``Accept`` header and the ``accept`` query parameter and gets
back the representation to produce, or :class:`~rst.errors.NotAcceptable` when rst cannot satisfy
the client. The media-type parser here is shared with :mod:`rst.dicom.multipart`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rst.errors import NotAcceptable

__all__ = [
    "EXPLICIT_VR_LITTLE_ENDIAN",
    "MediaRange",
    "RetrieveFormat",
    "negotiate_instances",
    "negotiate_json",
    "parse_accept",
    "parse_media_type",
    "split_quoted",
]

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
"""The default transfer syntax of uncompressed data in web services (PS3.18 §8.7.3.3.2)."""

_SUPPORTED_SYNTAXES = frozenset({EXPLICIT_VR_LITTLE_ENDIAN})
"""Explicit transfer syntaxes rst can serve instances in (no transcoding yet)."""

_DICOM_JSON = "application/dicom+json"
_JSON = "application/json"


@dataclass(frozen=True)
class MediaRange:
    """One element of an ``Accept`` header: ``type/subtype`` with parameters and a q-value.

    ``type`` and ``subtype`` are lowercased; parameter names are lowercased and values unquoted
    (values keep their case). ``q`` and any accept-extension after it are not in ``params``.
    """

    type: str
    subtype: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    @property
    def media_type(self) -> str:
        """``type/subtype`` without parameters."""
        return f"{self.type}/{self.subtype}"


@dataclass(frozen=True)
class RetrieveFormat:
    """How to encode instances in a WADO-RS multipart response.

    ``transfer_syntax`` is the UID to send the instances in, or ``None`` for "as stored"
    (the client asked for ``transfer-syntax=*``).
    """

    transfer_syntax: str | None


def split_quoted(text: str, sep: str) -> list[str]:
    """Split ``text`` at ``sep`` characters that are not inside a quoted-string.

    Backslash escapes inside quoted-strings are honoured, so ``"a\\"b,c"`` stays one piece.
    Pieces are returned unstripped.
    """
    pieces: list[str] = []
    start = 0
    in_quotes = False
    escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif in_quotes and char == "\\":
            escaped = True
        elif char == '"':
            in_quotes = not in_quotes
        elif char == sep and not in_quotes:
            pieces.append(text[start:index])
            start = index + 1
    pieces.append(text[start:])
    return pieces


def _unquote(value: str) -> str:
    """Remove the quotes and backslash escapes of an RFC 9110 quoted-string (or return a token)."""
    if len(value) >= 2 and value[0] == value[-1] == '"':
        inner = value[1:-1]
        out: list[str] = []
        escaped = False
        for char in inner:
            if escaped:
                out.append(char)
                escaped = False
            elif char == "\\":
                escaped = True
            else:
                out.append(char)
        return "".join(out)
    return value


def _parse_params(pieces: list[str]) -> list[tuple[str, str]]:
    """Parse ``name=value`` parameter pieces; names lowercased, values unquoted.

    Pieces without ``=`` or with an empty name are ignored (lenient, as browsers are).
    """
    params: list[tuple[str, str]] = []
    for piece in pieces:
        name, eq, value = piece.partition("=")
        name = name.strip().lower()
        if not eq or not name:
            continue
        params.append((name, _unquote(value.strip())))
    return params


def parse_media_type(text: str) -> tuple[str, dict[str, str]]:
    """Parse a ``Content-Type``-style value into the lowercased media type and its parameters.

    Parameter names are lowercased, values unquoted; a later duplicate parameter wins.
    An empty ``text`` gives ``("", {})``.
    """
    pieces = split_quoted(text, ";")
    media_type = pieces[0].strip().lower()
    return media_type, dict(_parse_params(pieces[1:]))


def _parse_q(value: str) -> float | None:
    """Parse an RFC 9110 qvalue (``0`` to ``1``, at most three decimals); ``None`` if invalid."""
    value = value.strip()
    if not value or len(value) > 5 or not all(c.isdigit() or c == "." for c in value):
        return None
    try:
        q = float(value)
    except ValueError:
        return None
    return q if 0.0 <= q <= 1.0 else None


def parse_accept(header: str) -> list[MediaRange]:
    """Parse an ``Accept`` value into media ranges, in the order given.

    Malformed elements (no ``/``, an invalid q-value) are skipped rather than failing the whole
    request, the way browsers and most servers treat them.
    """
    ranges: list[MediaRange] = []
    for element in split_quoted(header, ","):
        pieces = split_quoted(element, ";")
        media_type = pieces[0].strip().lower()
        main, slash, sub = media_type.partition("/")
        if not slash or not main or not sub or any(c.isspace() for c in media_type):
            continue
        params: dict[str, str] = {}
        q = 1.0
        valid = True
        for name, value in _parse_params(pieces[1:]):
            if name == "q":
                parsed = _parse_q(value)
                if parsed is None:
                    valid = False
                    break
                q = parsed
                break  # what follows q are accept-extensions, not media type parameters
            params[name] = value
        if valid:
            ranges.append(MediaRange(main, sub, params, q))
    return ranges


def _ranges(accept: str | None, accept_param: str | None) -> list[MediaRange] | None:
    """The media ranges to negotiate with, or ``None`` when the client expressed no preference.

    The ``accept`` query parameter replaces the header (PS3.18 §8.3.3.1).
    """
    source = accept_param if accept_param is not None and accept_param.strip() else accept
    if source is None or not source.strip():
        return None
    return parse_accept(source)


def _by_preference(ranges: list[MediaRange]) -> list[MediaRange]:
    """Ranges with q > 0, highest q first; the client's order breaks ties (stable sort)."""
    return sorted((r for r in ranges if r.q > 0), key=lambda r: -r.q)


_INSTANCE_OFFER = (
    'multipart/related; type="application/dicom" with transfer-syntax '
    f"{EXPLICIT_VR_LITTLE_ENDIAN} (the default) or transfer-syntax=* (as stored)"
)


def _dicom_multipart_syntax(media_range: MediaRange) -> tuple[bool, str | None]:
    """Whether a ``multipart/related`` range asks for DICOM instances, and in which syntax.

    Returns ``(False, None)`` when the range names another part type or an unsupported syntax.
    """
    part_type = media_range.params.get("type", "application/dicom").strip().lower()
    if part_type != "application/dicom":
        return False, None
    syntax = media_range.params.get("transfer-syntax")
    if syntax is None:
        return True, EXPLICIT_VR_LITTLE_ENDIAN
    syntax = syntax.strip()
    if syntax == "*":
        return True, None
    if syntax in _SUPPORTED_SYNTAXES:
        return True, syntax
    return False, None


def _excluded_default(ranges: list[MediaRange]) -> bool:
    """Whether the client explicitly refused the default format with ``q=0``."""
    for media_range in ranges:
        if media_range.q == 0 and media_range.media_type == "multipart/related":
            ok, syntax = _dicom_multipart_syntax(media_range)
            if ok and syntax == EXPLICIT_VR_LITTLE_ENDIAN:
                return True
    return False


def negotiate_instances(accept: str | None, accept_param: str | None = None) -> RetrieveFormat:
    """Choose how to send instances for a WADO-RS study/series/instance retrieve.

    Acceptable: ``multipart/related; type="application/dicom"`` (optionally with
    ``transfer-syntax``), ``multipart/related`` without ``type``, ``multipart/*``, ``*/*`` and no
    preference at all. Without a transfer syntax the answer is Explicit VR Little Endian;
    ``transfer-syntax=*`` means as stored. The highest-q acceptable range wins.

    :raises NotAcceptable: nothing the client accepts can be produced.
    """
    ranges = _ranges(accept, accept_param)
    default = RetrieveFormat(EXPLICIT_VR_LITTLE_ENDIAN)
    if ranges is None:
        return default
    for media_range in _by_preference(ranges):
        media_type = media_range.media_type
        if media_type == "multipart/related":
            ok, syntax = _dicom_multipart_syntax(media_range)
            if ok:
                return RetrieveFormat(syntax)
        elif media_type in ("*/*", "multipart/*") and not _excluded_default(ranges):
            return default
    raise NotAcceptable(
        f"cannot produce any media type in Accept {_shown(accept, accept_param)}; "
        f"rst serves instances as {_INSTANCE_OFFER}"
    )


def negotiate_json(accept: str | None, accept_param: str | None = None) -> str:
    """Choose the media type of a DICOM JSON response (QIDO-RS, metadata, STOW-RS).

    ``application/json`` is answered as ``application/json`` (same body), everything else that
    is acceptable (``application/dicom+json``, ``*/*``, ``application/*``, no preference) as
    ``application/dicom+json``.

    :raises NotAcceptable: the client accepts neither.
    """
    ranges = _ranges(accept, accept_param)
    if ranges is None:
        return _DICOM_JSON
    refused = {r.media_type for r in ranges if r.q == 0}
    for media_range in _by_preference(ranges):
        media_type = media_range.media_type
        if media_type in (_DICOM_JSON, _JSON):
            return media_type
        if media_type in ("*/*", "application/*"):
            for candidate in (_DICOM_JSON, _JSON):
                if candidate not in refused:
                    return candidate
    raise NotAcceptable(
        f"cannot produce any media type in Accept {_shown(accept, accept_param)}; "
        f"rst answers with {_DICOM_JSON} (or {_JSON})"
    )


def _shown(accept: str | None, accept_param: str | None) -> str:
    """The client's preference as quoted in error messages (truncated)."""
    source = accept_param if accept_param is not None and accept_param.strip() else accept
    text = source or ""
    return repr(text if len(text) <= 200 else text[:200] + "...")
