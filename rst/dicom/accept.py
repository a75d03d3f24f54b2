"""Content negotiation for DICOMweb responses (PS3.18 §8.3.3, §8.7; RFC 9110 §12.5.1).

Sans-IO: the HTTP layer passes in the ``Accept`` header and the ``accept`` query parameter and gets
back the representation to produce, or :class:`~rst.errors.NotAcceptable` when rst cannot satisfy
the client. The media-type parser here is shared with :mod:`rst.dicom.multipart`.

Frames are negotiated in two steps: what the client accepts, in its order of preference, is
known from the request (:func:`negotiate_frames`, before any traffic to the archive); which of
those rst can produce depends on how the instance is stored, known once it has arrived
(:func:`choose_frame_format`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Literal

from rst.dicom.media_types import (
    BULK_MEDIA_TYPES,
    OCTET_STREAM,
    bulk_media_type,
    default_transfer_syntax,
    is_video,
)
from rst.dicom.part10 import encodable_syntaxes
from rst.dicom.uids import EXPLICIT_VR_LITTLE_ENDIAN
from rst.errors import BadRequest, NotAcceptable

__all__ = [
    "MAX_MEDIA_RANGES",
    "BulkChoice",
    "BulkdataFormat",
    "FrameChoice",
    "FrameFormat",
    "MediaRange",
    "RetrieveFormat",
    "choose_frame_format",
    "negotiate_bulkdata",
    "negotiate_frames",
    "negotiate_instances",
    "negotiate_json",
    "parse_accept",
    "parse_media_type",
    "split_quoted",
]

MAX_MEDIA_RANGES = 64
"""Media ranges one ``Accept`` header (or ``accept`` parameter) may list; more is a 400. Real
clients send a handful; each range is tried against every representation rst offers."""

_SUPPORTED_SYNTAXES = frozenset({EXPLICIT_VR_LITTLE_ENDIAN})
"""The uncompressed transfer syntax rst serves instances and frames in (Implicit VR and Big
Endian shall not be used in web services); compressed ones come from :func:`encodable_syntaxes`."""

_MEDIA_TYPE_ALIASES = {"image/x-jls": "image/jls", "image/x-dicom-rle": "image/dicom-rle"}
"""Names some clients (dicomweb-client among them) still send for the registered types."""

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

    :raises BadRequest: more than :data:`MAX_MEDIA_RANGES` elements.
    """
    elements = split_quoted(header, ",")
    if len(elements) > MAX_MEDIA_RANGES:
        raise BadRequest(
            f"the Accept header lists {len(elements)} media ranges, more than "
            f"{MAX_MEDIA_RANGES} (rst's limit MAX_MEDIA_RANGES)"
        )
    ranges: list[MediaRange] = []
    for element in elements:
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


def _instance_offer() -> str:
    encodable = ", ".join(sorted(encodable_syntaxes()))
    return (
        'multipart/related; type="application/dicom" with transfer-syntax '
        f"{EXPLICIT_VR_LITTLE_ENDIAN} (the default), transfer-syntax=* (as stored)"
        + (f" or one of {encodable} (transcoded)" if encodable else "")
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
    if syntax in _SUPPORTED_SYNTAXES or syntax in encodable_syntaxes():
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
    ``transfer-syntax=*`` means as stored; a compressed syntax rst can encode into
    (:func:`~rst.dicom.part10.encodable_syntaxes`) means transcoded where not stored so. The
    highest-q acceptable range wins.

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
        f"rst serves instances as {_instance_offer()}"
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


@dataclass(frozen=True)
class FrameChoice:
    """One way a client accepts frames: a bulk media type (``application/octet-stream``,
    ``image/jls``, ...) in a transfer syntax (``None``: as stored), as the parts of a
    ``multipart/related`` body or as a single-part body (one frame only)."""

    media_type: str
    transfer_syntax: str | None
    multipart: bool = True


_DEFAULT_FRAMES = FrameChoice(OCTET_STREAM, EXPLICIT_VR_LITTLE_ENDIAN)


@dataclass(frozen=True)
class FrameFormat:
    """How to send the frames of one instance: every part (or the single body) is
    ``{media_type}; transfer-syntax={transfer_syntax}``."""

    media_type: str
    transfer_syntax: str
    multipart: bool = True


def _frame_choice(media_type: str, syntax: str | None, *, multipart: bool) -> FrameChoice | None:
    """The choice a media type and its ``transfer-syntax`` parameter name, if rst knows it."""
    media_type = _MEDIA_TYPE_ALIASES.get(media_type, media_type)
    default = default_transfer_syntax(media_type)
    if default is None:  # not a bulk image media type (video frames are not served)
        return None
    if syntax is None:
        return FrameChoice(media_type, default, multipart)
    syntax = syntax.strip()
    if syntax == "*":
        return FrameChoice(media_type, None, multipart)
    if media_type == OCTET_STREAM:
        fits = syntax in _SUPPORTED_SYNTAXES
    else:
        fits = BULK_MEDIA_TYPES.get(syntax) == media_type
    return FrameChoice(media_type, syntax, multipart) if fits else None


def _frame_choices(media_range: MediaRange) -> list[FrameChoice]:
    media_type = media_range.media_type
    if media_type in ("*/*", "multipart/*"):
        return [_DEFAULT_FRAMES]
    if media_type == "multipart/related":
        part_type = media_range.params.get("type", OCTET_STREAM).strip().lower()
        if part_type in ("*/*", "application/*"):  # dicomweb-client's default: type="*/*"
            part_type = OCTET_STREAM
        syntax = media_range.params.get("transfer-syntax")
        choice = _frame_choice(part_type, syntax, multipart=True)
    else:
        choice = _frame_choice(
            media_type, media_range.params.get("transfer-syntax"), multipart=False
        )
    return [] if choice is None else [choice]


def negotiate_frames(
    accept: str | None, accept_param: str | None = None
) -> tuple[FrameChoice, ...]:
    """What a client accepts for a WADO-RS frames retrieve, most preferred first.

    ``multipart/related; type=<bulk media type>`` with or without ``transfer-syntax`` (without:
    the type's default, Explicit VR Little Endian for ``application/octet-stream``; ``*``: as
    stored), the same types alone for a single-part answer, ``multipart/*``, ``*/*`` and no
    preference at all (``application/octet-stream`` in Explicit VR Little Endian). Parameter
    values may be quoted or not; ranges with ``q=0`` refuse what they name.

    :raises NotAcceptable: the client accepts nothing rst could send as frames.
    """
    ranges = _ranges(accept, accept_param)
    if ranges is None:
        return (_DEFAULT_FRAMES,)
    refused = {choice for r in ranges if r.q == 0 for choice in _frame_choices(r)}
    choices: list[FrameChoice] = []
    for media_range in _by_preference(ranges):
        for choice in _frame_choices(media_range):
            if choice not in refused and choice not in choices:
                choices.append(choice)
    if not choices:
        raise NotAcceptable(
            f"cannot produce any media type in Accept {_shown(accept, accept_param)} for frames; "
            f"rst serves them as {_frames_offer()}"
        )
    return tuple(choices)


def choose_frame_format(
    choices: Sequence[FrameChoice],
    stored: str,
    *,
    frames: int,
    encodable: Collection[str] | None = None,
) -> FrameFormat:
    """The first of *choices* rst can produce for *frames* frames stored in transfer syntax
    *stored* (Explicit VR Little Endian for native pixel data).

    As stored is always possible (``transfer-syntax=*`` with ``application/octet-stream`` or
    with the stored syntax's own media type), so is Explicit VR Little Endian (decompressed);
    another compressed syntax only if rst can encode into it (*encodable*, by default
    :func:`~rst.dicom.part10.encodable_syntaxes`). A single-part choice fits one frame only.

    :raises NotAcceptable: none of the choices can be produced, or the instance is a video.
    """
    encodable = encodable_syntaxes() if encodable is None else encodable
    stored_type = bulk_media_type(stored)
    if is_video(stored):
        raise NotAcceptable(
            f"the instance is a video (transfer syntax {stored}): its frames are not separately "
            "encoded; retrieve the instance or its pixel data"
        )
    for choice in choices:
        if not choice.multipart and frames != 1:
            continue
        if choice.transfer_syntax is None:
            if choice.media_type in (OCTET_STREAM, stored_type):
                return FrameFormat(stored_type, stored, choice.multipart)
            continue
        syntax = choice.transfer_syntax
        if syntax in (stored, EXPLICIT_VR_LITTLE_ENDIAN) or syntax in encodable:
            return FrameFormat(choice.media_type, syntax, choice.multipart)
    raise NotAcceptable(
        f"the frames are stored in transfer syntax {stored} ({stored_type}) and none of the "
        f"{len(choices)} accepted forms can be produced"
        + (" as a single part for several frames" if all(not c.multipart for c in choices) else "")
        + f"; rst serves frames as {_frames_offer()}"
    )


def _frames_offer() -> str:
    encodable = sorted(encodable_syntaxes())
    encoded = ", ".join(f"{bulk_media_type(ts)} ({ts})" for ts in encodable)
    return (
        'multipart/related; type="application/octet-stream" (Explicit VR Little Endian, the '
        "default), transfer-syntax=* (as stored)"
        + (f", or encoded as {encoded}" if encoded else "")
    )


_NOT_BULK = frozenset({"application/dicom", _DICOM_JSON, "application/dicom+xml", _JSON})
"""Representations of whole instances or of metadata, never of a bulk data value."""
_COMPRESSED_TYPES = frozenset(BULK_MEDIA_TYPES.values()) - {OCTET_STREAM}


@dataclass(frozen=True)
class BulkChoice:
    """One way a client accepts a bulk data value: a media type — ``application/octet-stream``,
    a compressed pixel data type (``image/jls``, ...), an encapsulated document's own type
    (``application/pdf``, ...) or a wildcard (``*/*``, ``image/*``) — with the
    ``transfer-syntax`` parameter it came with (``None``: not named; ``"*"``: as stored)."""

    media_type: str
    transfer_syntax: str | None = None

    def names(self, media_type: str) -> bool:
        """Whether this choice's media type, or its wildcard, covers *media_type*."""
        if self.media_type == "*/*":
            return True
        if self.media_type.endswith("/*"):
            return media_type.startswith(self.media_type[:-1])
        return self.media_type == media_type


@dataclass(frozen=True)
class BulkdataFormat:
    """What a client accepts for bulk data (PS3.18 §8.7.3.3), most preferred first: as the parts
    of a ``multipart/related`` body, or — when it accepts no multipart form at all — as one
    single-part value. Which choice applies depends on the value (pixel data stored compressed
    or not, an encapsulated document), known once the instance has arrived."""

    choices: tuple[BulkChoice, ...]
    multipart: bool = True

    @property
    def prefer(self) -> str | None:
        """The transfer syntax to ask the archive for: ``None`` (as stored) when some choice
        takes compressed pixel data as it is, else Explicit VR Little Endian."""
        for choice in self.choices:
            if choice.transfer_syntax == "*" or choice.media_type in _COMPRESSED_TYPES:
                return None
            if choice.media_type in ("image/*", "video/*"):
                return None
        return EXPLICIT_VR_LITTLE_ENDIAN

    def pixel_form(self, stored: str) -> Literal["stored", "decompressed"]:
        """How to send pixel data stored in transfer syntax *stored*: as stored (native pixel
        data as ``application/octet-stream``, compressed data as its own media type), or
        decompressed first (Explicit VR Little Endian). A wildcard alone means uncompressed,
        the default of PS3.18 §8.7.3.3 — except for a video, which has no uncompressed form.

        :raises NotAcceptable: no choice fits.
        """
        stored_type = bulk_media_type(stored)
        for choice in self.choices:
            syntax = choice.transfer_syntax
            if stored_type == OCTET_STREAM:
                if choice.names(OCTET_STREAM) and syntax in (None, "*", EXPLICIT_VR_LITTLE_ENDIAN):
                    return "stored"
                continue
            if syntax == "*" and (choice.media_type == OCTET_STREAM or choice.names(stored_type)):
                return "stored"
            named = choice.media_type != "*/*" and choice.names(stored_type)
            if named and syntax in (None, stored):
                return "stored"
            if choice.names(OCTET_STREAM) and syntax in (None, EXPLICIT_VR_LITTLE_ENDIAN):
                if is_video(stored):
                    if choice.media_type == "*/*":
                        return "stored"
                    continue
                return "decompressed"
        raise NotAcceptable(
            f"the pixel data is stored in transfer syntax {stored} ({stored_type}) and the "
            f"request accepts neither that nor application/octet-stream: {self._shown()}"
        )

    def value_type(self, own: str = OCTET_STREAM) -> str:
        """The media type to label a value that is not pixel data with: its *own* (an
        encapsulated document's MIME type) where a choice names it, else
        ``application/octet-stream``.

        :raises NotAcceptable: no choice fits.
        """
        for choice in self.choices:
            if choice.media_type == own:
                return own
            if choice.names(OCTET_STREAM):
                return OCTET_STREAM
        raise NotAcceptable(
            f"the value is {own} and the request accepts neither that nor "
            f"application/octet-stream: {self._shown()}"
        )

    def _shown(self) -> str:
        form = "multipart/related" if self.multipart else "single part"
        return f"{form} of " + ", ".join(
            c.media_type + (f" (transfer-syntax {c.transfer_syntax})" if c.transfer_syntax else "")
            for c in self.choices
        )


def negotiate_bulkdata(accept: str | None, accept_param: str | None = None) -> BulkdataFormat:
    """What a client accepts for bulk data and pixel data (``…/bulkdata``, ``…/pixeldata``,
    BulkDataURIs), most preferred first.

    ``multipart/related; type=<media type>`` (``transfer-syntax`` optional, ``*`` as stored;
    without ``type``: any), ``multipart/*`` and ``*/*`` ask for a multipart body; a media type
    alone (``application/octet-stream``, ``image/jls``, ``application/pdf``, ...) for a
    single-part body, which is chosen only when no multipart form is acceptable. No preference
    is ``multipart/related; type="application/octet-stream"``. Ranges with ``q=0`` are left out.

    :raises NotAcceptable: the client accepts nothing that could be bulk data.
    """
    ranges = _ranges(accept, accept_param)
    if ranges is None:
        return BulkdataFormat((BulkChoice(OCTET_STREAM),))
    multipart: list[BulkChoice] = []
    single: list[BulkChoice] = []
    for media_range in _by_preference(ranges):
        media_type = media_range.media_type
        syntax = media_range.params.get("transfer-syntax")
        syntax = None if syntax is None else syntax.strip()
        if media_type in ("*/*", "multipart/*"):
            multipart.append(BulkChoice("*/*", syntax))
        elif media_type == "multipart/related":
            part = media_range.params.get("type", "*/*").strip().lower()
            part = _MEDIA_TYPE_ALIASES.get(part, part)
            if part not in _NOT_BULK:
                multipart.append(BulkChoice(part, syntax))
        elif media_type not in _NOT_BULK and not media_type.startswith("multipart/"):
            single.append(BulkChoice(_MEDIA_TYPE_ALIASES.get(media_type, media_type), syntax))
    if multipart:
        return BulkdataFormat(tuple(dict.fromkeys(multipart)))
    if single:
        return BulkdataFormat(tuple(dict.fromkeys(single)), multipart=False)
    raise NotAcceptable(
        f"cannot produce any media type in Accept {_shown(accept, accept_param)} for bulk "
        'data; rst serves it as multipart/related; type="application/octet-stream" (the '
        "default), the compressed media type of the pixel data (transfer-syntax=*), or one "
        "value alone as application/octet-stream"
    )


def _shown(accept: str | None, accept_param: str | None) -> str:
    """The client's preference as quoted in error messages (truncated)."""
    source = accept_param if accept_param is not None and accept_param.strip() else accept
    text = source or ""
    return repr(text if len(text) <= 200 else text[:200] + "...")
