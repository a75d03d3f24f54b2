"""Hostile HTTP clients for rst: request generators, a raw exchange, and the invariant.

The generators are plain functions of a :class:`random.Random` (the chaos run in
``benchmarks/chaos.py`` draws from them with a seeded one); the hypothesis strategies at the end
feed them ``st.randoms()`` (shrinkable draws) and add hypothesis's own text where it finds more.
Large payloads come from a child ``random.Random`` seeded by one draw, so a strategy stays small.

A request is sent as the exact bytes generated (:func:`exchange`: its own socket, any bytes in the
request line and headers) and the answer is parsed with h11. :func:`answer_problems` is the
invariant of the hostile-client suite: a 4xx with a JSON body carrying a message, or a
well-formed 2xx (a JSON array for a search, a complete multipart body for a retrieve, an image
for a rendered resource, DICOM JSON for a store) — never a 5xx (except 501 where a backend may
not offer a resource, and 502/503/504 from an archive that is down on purpose), never a broken
stream; :func:`stow_problems` adds "nothing half-stored". Bounding the time (never a hang) is
the caller's part. The DICOM content of STOW bodies comes from :mod:`.hostile_dicom`.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import random
import urllib.parse
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import h11
import trio
from hypothesis import strategies as st
from pydicom._dicom_dict import DicomDictionary

from rst.dicom.query import IMAGE_KEYS, SERIES_KEYS, STUDY_KEYS

from .hostile_dicom import MUTATIONS, fresh_uid, small_instance

__all__ = [
    "FAILED",
    "REFERENCED",
    "SOP_INSTANCE",
    "Answer",
    "HostileRequest",
    "StowPart",
    "Target",
    "accept_request",
    "answer_problems",
    "exchange",
    "good_requests",
    "hostile_accept",
    "hostile_query",
    "hostile_segment",
    "http_request",
    "path_request",
    "query_request",
    "raw_request",
    "rendered_request",
    "stow_outcome",
    "stow_problems",
    "stow_request",
    "stow_uids",
    "strategy",
    "text_segments",
    "text_values",
]

Route = Literal["aets", "health", "qido", "wado", "metadata", "bulk", "rendered", "stow", "other"]
"""What a route answers: instances (``wado``), DICOM JSON (``metadata``), bulk data and frames
(``bulk``), images (``rendered``: rendered and thumbnail resources)."""
NEWER_RESOURCES: frozenset[Route] = frozenset({"metadata", "bulk", "rendered"})
"""Resources a backend may not offer: 501 is an honest answer there."""

REFERENCED = "00081199"
FAILED = "00081198"
SOP_INSTANCE = "00081155"


@dataclass(frozen=True)
class Target:
    """What the gateway under attack serves: a working AE with one known instance, and AEs
    whose archive is down on purpose (where 502/503/504 are honest answers)."""

    host: str
    port: int
    aet: str
    study: str
    series: str
    sop: str
    broken_aets: tuple[str, ...] = ()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port


@dataclass(frozen=True)
class StowPart:
    """One instance sent in a STOW body and what was done to it."""

    sop_uid: str
    mutation: str  # "valid" when untouched

    @property
    def valid(self) -> bool:
        return self.mutation == "valid"


@dataclass(frozen=True)
class HostileRequest:
    """The exact bytes of one request, with what is needed to judge its answer."""

    kind: str  # which generator: "path", "query", "accept", "stow", "raw", "good"
    label: str  # what it does, for reports
    method: str
    raw: bytes
    route: Route
    aet: str | None = None
    upstream_may_fail: bool = False
    """It addresses an archive that is down on purpose: 502/503/504 are right answers."""
    needs_answer: bool = True
    """False for bytes that are not a request hypercorn must answer (it may just close)."""
    must_succeed: bool = False
    """A valid request: only a 2xx will do."""
    stow_parts: tuple[StowPart, ...] = ()
    framing_ok: bool = False
    """A STOW body whose multipart framing and Content-Type are right."""
    half_close: bool = False
    """Send EOF after the request (some malformed requests are only answered at EOF)."""

    def __str__(self) -> str:
        shown = self.raw[:300] + (b"..." if len(self.raw) > 300 else b"")
        return f"{self.kind}/{self.label} ({len(self.raw)} bytes): {shown!r}"


@dataclass
class Answer:
    status: int | None  # None: no response at all
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    complete: bool = False
    """The body arrived whole, as framed (not broken off)."""
    error: str | None = None
    seconds: float = 0.0

    @property
    def json(self) -> Any:
        body = self.body
        if self.headers.get("content-encoding", "").strip().lower() == "gzip":
            body = gzip.decompress(body)
        return json.loads(body)


# --- building requests ------------------------------------------------------------------------


def http_request(
    method: str,
    target: bytes,
    headers: Sequence[tuple[bytes, bytes]] = (),
    body: bytes = b"",
    *,
    close: bool = True,
) -> bytes:
    """A request with Host, Content-Length (if a body or a POST) and ``Connection: close``."""
    lines = [method.encode("latin-1") + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1"]
    lines += [name + b": " + value for name, value in headers]
    if body or method == "POST":
        lines.append(b"Content-Length: %d" % len(body))
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _quote(text: str, rng: random.Random) -> bytes:
    """*text* percent-encoded: usually fully, sometimes leaving URL-special characters raw."""
    safe = rng.choice(["", "", "/", "/.;,=&", "*\\"])
    return urllib.parse.quote(text, safe=safe, errors="surrogatepass").encode("ascii")


def _bulk(rng: random.Random) -> random.Random:
    """A child generator for large payloads (one draw from *rng*)."""
    return random.Random(rng.getrandbits(32))


_UNICODE = ("é", "ß", "😀", "\u202e", "\ufeff", "\u0000", "Ω", "中文", "\udc80", "\U0010ffff")


def _text(rng: random.Random, size: int) -> str:
    """Random text: ASCII, controls, unicode (lone surrogates too)."""
    pool = rng.choice(
        [
            "0123456789.",
            "abcdefXYZ",
            "".join(map(chr, range(32, 127))),
            "".join(map(chr, range(0, 32))) + "\x7f",
            "".join(_UNICODE),
        ]
    )
    bulk = _bulk(rng)
    return "".join(bulk.choice(pool) for _ in range(size))


def _size(rng: random.Random) -> int:
    return rng.choice([0, 1, 2, 8, 17, 64, 65, 100, 1000, 5000, 20000, 70000])


# --- path segments ----------------------------------------------------------------------------


def hostile_segment(rng: random.Random, known: Sequence[str] = ()) -> bytes:
    """One path segment: known or unknown UIDs, near-UIDs, wildcards, lists, encodings, junk."""
    choice = rng.randrange(16)
    if choice == 0 and known:
        return rng.choice(known).encode()
    if choice == 1:
        return ".".join(str(rng.randrange(10**6)) for _ in range(rng.randint(1, 8))).encode()
    if choice == 2:
        return rng.choice(
            [b"1..2", b".1.2", b"1.2.", b"01.002", b"1" * 64, b"1" * 65, b"1." * 40 + b"1", b"0"]
        )
    if choice == 3:
        return rng.choice([b"*", b"?", b"1.2.*", b"1.2.?", b"%2A", b"%3F", b"1.2%2A"])
    if choice == 4:
        return rng.choice([b"1.2%5C1.3", b"1.2\\1.3", b"1.2,1.3", b"1.2%2C1.3", b"%5C"])
    if choice == 5:
        return rng.choice([b"..", b".", b"%2E%2E", b"%2e", b"..%2F..%2Fetc", b"%2F", b"a%2Fb"])
    if choice == 6:
        return b"".join(b"%%%02X" % rng.randrange(256) for _ in range(rng.randint(1, 12)))
    if choice == 7:
        return _quote(_text(rng, rng.randint(1, 40)), rng)
    if choice == 8:
        return b"9" * _size(rng)
    if choice == 9:
        return rng.choice([b"", b";", b"1.2;v=1", b"1.2%3Bx", b"%00", b"1.2%00", b"%0D%0A"])
    if choice == 10:  # raw bytes hypercorn must refuse (non-ASCII, controls)
        return bytes(_bulk(rng).randrange(128, 256) for _ in range(rng.randint(1, 8)))
    if choice == 11:
        return rng.choice([b"#frag", b"1.2#x", b"@", b"~", b"$", b"'", b'"', b"<x>", b"{}"])
    if choice == 12:
        return _quote(rng.choice(_UNICODE) * rng.randint(1, 20), rng)
    if choice == 13:
        return b"%" + rng.choice([b"", b"G", b"1", b"zz", b"%"])
    if choice == 14:
        return f"{rng.choice(['1.2', '1.2.840'])}.{rng.getrandbits(64)}".encode()
    return str(rng.randrange(10**12)).encode()


def hostile_aet(rng: random.Random, target: Target) -> bytes:
    choice = rng.randrange(8)
    if choice < 4:
        return target.aet.encode()
    if choice == 4 and target.broken_aets:
        return rng.choice(target.broken_aets).encode()
    return rng.choice(
        [
            target.aet.lower().encode(),
            b"NOPE",
            b"A" * 17,
            b"%20" + target.aet.encode(),
            target.aet.encode() + b"%00",
            b"%E2%9C%93",
            b"A%5CB",
            b"X" * 5000,
        ]
    )


_LEVELS = (
    "/aets/{aet}/studies/{study}",
    "/aets/{aet}/studies/{study}/series/{series}",
    "/aets/{aet}/studies/{study}/series/{series}/instances/{sop}",
)
_INSTANCE = _LEVELS[2]
_FRAMES = _INSTANCE + "/frames/{frames}"
_GET_ROUTES: tuple[tuple[str, Route], ...] = (
    ("/aets", "aets"),
    ("/aets/{aet}", "health"),
    ("/aets/{aet}/studies", "qido"),
    ("/aets/{aet}/series", "qido"),
    ("/aets/{aet}/instances", "qido"),
    ("/aets/{aet}/studies/{study}/series", "qido"),
    ("/aets/{aet}/studies/{study}/instances", "qido"),
    ("/aets/{aet}/studies/{study}/series/{series}/instances", "qido"),
    ("/aets/{aet}/studies/{study}", "wado"),
    ("/aets/{aet}/studies/{study}/series/{series}", "wado"),
    ("/aets/{aet}/studies/{study}/series/{series}/instances/{sop}", "wado"),
    *((f"{level}/metadata", "metadata") for level in _LEVELS),
    *((f"{level}/{name}", "bulk") for level in _LEVELS for name in ("bulkdata", "pixeldata")),
    (_INSTANCE + "/bulkdata/{tags}", "bulk"),
    (_FRAMES, "bulk"),
    *(
        (f"{level}/{name}", "rendered")
        for level in (*_LEVELS, _FRAMES)
        for name in ("rendered", "thumbnail")
    ),
)
QIDO_ROUTES = tuple(route for route in _GET_ROUTES if route[1] == "qido")
WADO_ROUTES = tuple(route for route in _GET_ROUTES if route[1] in ("wado", *NEWER_RESOURCES))
RENDERED_ROUTES = tuple(route for route in _GET_ROUTES if route[1] == "rendered")
_STOW_ROUTES = ("/aets/{aet}/studies", "/aets/{aet}/studies/{study}")
_METHODS = ("GET", "GET", "GET", "POST", "HEAD", "OPTIONS", "DELETE", "PUT", "PATCH", "TRACE")


_FRAME_LISTS = (
    b"1",
    b"1,2",
    b"2,1,1",
    b"0",
    b"-1",
    b"1%2C2",
    b"a",
    b"4294967297",
    b"1.5",
    b"%201",
    b"",
    b"9" * 30,
    b"1," * 5000 + b"1",
)
_TAG_PATHS = (
    b"7FE00010",
    b"7fe00010",
    b"00280010",
    b"7FE00010/1",
    b"00081140/0/00081155",
    b"FFFFFFFF",
    b"7FE0001",
    b"..%2F..",
    b"00400275/999999999999/00400007",
    b"7FE00010%2F" * 300,
)


def _fill(
    template: str,
    rng: random.Random,
    target: Target,
    hostile: float,
    override: dict[str, bytes] | None = None,
) -> tuple[bytes, bytes | None]:
    """The path of *template*: each placeholder the known value or, with probability
    *hostile*, a hostile segment (or the one *override* gives it). Returns the path and the AE
    title used."""
    known = {"study": target.study, "series": target.series, "sop": target.sop}
    out = b""
    aet: bytes | None = None
    for piece in template.strip("/").split("/"):
        name = piece.strip("{}")
        if override and name in override:
            segment = override[name]
        elif piece == "{aet}":
            segment = hostile_aet(rng, target) if rng.random() < hostile else target.aet.encode()
        elif piece == "{frames}":
            segment = rng.choice(_FRAME_LISTS) if rng.random() < hostile else b"1"
        elif piece == "{tags}":
            segment = rng.choice(_TAG_PATHS) if rng.random() < hostile else b"7FE00010"
        elif piece.startswith("{"):
            value = known[name]
            segment = (
                hostile_segment(rng, [value, target.study])
                if rng.random() < hostile
                else value.encode()
            )
        else:
            segment = piece.encode()
        if piece == "{aet}":
            aet = segment
        out += b"/" + segment
    return out, aet


def _route_of(template: str, method: str, route: Route) -> Route:
    if method == "POST":
        return "stow" if template in _STOW_ROUTES else "other"
    if method not in ("GET", "HEAD"):
        return "other"
    return route


def _upstream(aet: bytes | None, target: Target) -> bool:
    return aet is not None and aet.decode("latin-1") in target.broken_aets


def path_request(rng: random.Random, target: Target) -> HostileRequest:
    """A request on any route with hostile path segments (and sometimes another method, a
    trailing slash, an extra segment or a query)."""
    template, route = rng.choice(_GET_ROUTES)
    method = rng.choice(_METHODS)
    if method == "POST" and rng.random() < 0.7:
        template, route = rng.choice(_STOW_ROUTES), "stow"
    path, aet = _fill(template, rng, target, hostile=0.7)
    extra = rng.randrange(6)
    if extra == 0:
        path += b"/"
    elif extra == 1:
        path += b"/" + hostile_segment(rng)
    elif extra == 2:
        path = path.replace(b"/", b"//", 1)
    body = b""
    headers: list[tuple[bytes, bytes]] = []
    if method == "POST":
        headers.append((b"Content-Type", b"multipart/related; type=application/dicom; boundary=x"))
        body = b"--x--\r\n"
    return HostileRequest(
        kind="path",
        label=f"{method} {template}",
        method=method,
        raw=http_request(method, path, headers, body),
        route=_route_of(template, method, route),
        aet=None if aet is None else aet.decode("latin-1"),
        upstream_may_fail=_upstream(aet, target),
    )


# --- query parameters -------------------------------------------------------------------------

_RETIRED = 3


def _keywords_by_vr() -> dict[str, list[str]]:
    table: dict[str, list[str]] = {}
    for tag, entry in DicomDictionary.items():
        vr, keyword = entry[0], entry[4]
        if not keyword or entry[_RETIRED] or tag >> 16 in (0x0000, 0x0002, 0xFFFE):
            continue
        table.setdefault(vr, []).append(keyword)
    return table


KEYWORDS_BY_VR = _keywords_by_vr()
_QUERY_KEYS = sorted(
    keyword for tag in STUDY_KEYS | SERIES_KEYS | IMAGE_KEYS if (keyword := DicomDictionary[tag][4])
)
_SEQUENCES = KEYWORDS_BY_VR["SQ"]
_INT_EDGES = {
    "US": (0, 65535),
    "SS": (-32768, 32767),
    "UL": (0, 2**32 - 1),
    "SL": (-(2**31), 2**31 - 1),
    "UV": (0, 2**64 - 1),
    "SV": (-(2**63), 2**63 - 1),
    "IS": (-(2**31) + 1, 2**31 - 1),
}
_FLOATS = (
    "nan",
    "NaN",
    "inf",
    "-inf",
    "Infinity",
    "1e39",
    "-1e39",
    "3.4028235e38",
    "1e308",
    "1.8e308",
    "1e400",
    "-0",
    "1e",
    ".",
    "0x10",
    "1_000",
    "1e-400",
    "+.5e-3",
    "\u0661",
    " 1 ",
    "1" * 17,
)
_DATES = (
    "20200101",
    "20200101-",
    "-20200101",
    "20200101-20191231",
    "2020-01-01",
    "20201301",
    "99999999",
    "2020",
    "-",
    "20200101--20200102",
    "20200101-20200102-20200103",
)
_TIMES = ("101500", "10:15", "1015-1116", "25", "101500.1234567", "-101500", "1", "101500.")
_DATETIMES = ("20200101101500", "2020+0100", "20200101101500.123456+0100-", "2020010110150")
_TEXT_VALUES = (
    "*",
    "?",
    "**",
    "DOE*",
    "DOE^JOHN",
    "a=b=c=d",
    "^^^^^",
    "=",
    "\\",
    "a\\b\\c",
    "lower",
    " ",
    "XXXXXXXXXXXXXXXX",
    "XXXXXXXXXXXXXXXXX",
    *("X" * n for n in (16, 17, 64, 65, 10241)),
)


def _vr_value(rng: random.Random, vr: str) -> str:
    """A value at or past the edge of what *vr* can hold."""
    if vr in _INT_EDGES:
        low, high = _INT_EDGES[vr]
        edge = rng.choice([low, high, low - 1, high + 1, 0, 2**64, -(2**63) - 1, 10**40])
        return rng.choice([str(edge), f"{edge}\\{edge}", f" {edge} ", f"{edge}.0", f"+{edge}"])
    if vr in ("FL", "FD", "DS", "OF", "OD"):
        return rng.choice(_FLOATS)
    if vr == "DA":
        return rng.choice(_DATES)
    if vr == "TM":
        return rng.choice(_TIMES)
    if vr == "DT":
        return rng.choice(_DATETIMES)
    if vr == "UI":
        return rng.choice(
            ["1.2.3", "1.2.3,1.2.4", "1.2\\1.3", "1.2,,1.3", "1.2.*", "abc", "1" * 65, ","]
        )
    if vr == "AS":
        return rng.choice(["030Y", "30Y", "030X", "0300Y", "999D"])
    if vr == "CS":
        return rng.choice(["CT", "ct", "C T", "CT\\MR", "C*", "Ω", "X" * 17, "A-B"])
    if vr == "AT":
        return rng.choice(["00100010", "(0010,0010)", "xyz"])
    return rng.choice(_TEXT_VALUES)


def _hostile_value(rng: random.Random, vr: str) -> str:
    choice = rng.randrange(6)
    if choice < 3:
        return _vr_value(rng, vr)
    if choice == 3:
        return ""
    if choice == 4:
        return _text(rng, rng.choice([1, 5, 20, 70, 3000]))
    return rng.choice(["*", "\\", "%", "&", "=", "a\x00b", "\r\n", "\t"])


def _keyword(rng: random.Random) -> tuple[str, str]:
    """A keyword and its VR: often a query key, else any VR's keyword."""
    if rng.random() < 0.4:
        keyword = rng.choice(_QUERY_KEYS)
    else:
        vr = rng.choice(sorted(KEYWORDS_BY_VR))
        keyword = rng.choice(KEYWORDS_BY_VR[vr])
    vr = DicomDictionary[_tag_of(keyword)][0]
    return keyword, vr


def _tag_of(keyword: str) -> int:
    return _TAGS[keyword]


_TAGS = {entry[4]: tag for tag, entry in DicomDictionary.items() if entry[4]}


def _attribute(rng: random.Random) -> tuple[str, str]:
    """A query attribute (keyword, tag, sequence path or junk) and the VR of its leaf."""
    keyword, vr = _keyword(rng)
    choice = rng.randrange(10)
    if choice < 4:
        return keyword, vr
    if choice == 4:
        tag = f"{_tag_of(keyword):08X}"
        return (tag.lower() if rng.random() < 0.5 else tag), vr
    if choice == 5:  # a sequence path, sometimes far too deep
        depth = rng.choice([1, 2, 4, 5, 8, 60, 300])
        sequences = [_bulk(rng).choice(_SEQUENCES) for _ in range(depth)]
        return ".".join([*sequences, keyword]), vr
    if choice == 6:
        return rng.choice(["7FE00010", "00020010", "FFFEE000", "00090010", "00100000", "0000"]), vr
    if choice == 7:
        return rng.choice(["NotAKeyword", "patientname", "Patient Name", "00100010x", "ß"]), vr
    if choice == 8:
        return rng.choice([".PatientName", "PatientName.", "a..b", ".", "PatientName.Rows"]), vr
    return _text(rng, rng.randint(1, 30)), vr


def _reserved(rng: random.Random) -> tuple[str, str]:
    name = rng.choice(["limit", "offset", "fuzzymatching", "includefield", "accept", "charset"])
    if name in ("limit", "offset"):
        value = rng.choice(["0", "1", "-1", "1.5", "", "a", "9" * 18, "9" * 19, "1e3", " 1", "+1"])
    elif name == "fuzzymatching":
        value = rng.choice(["true", "false", "TRUE", "1", "", "yes"])
    elif name == "includefield":
        fields = [_attribute(rng)[0] for _ in range(rng.randint(1, 4))]
        if rng.random() < 0.2:
            fields += ["StudyDescription"] * rng.choice([100, 300])
        value = rng.choice([",", ", "]).join([*fields, rng.choice(["all", "", "ALL"])])
    elif name == "accept":
        value = hostile_accept(rng).decode("latin-1")
    else:
        value = rng.choice(["utf-8", "ISO_IR 192", "", "x" * 300, "utf-16"])
    return name, value


def hostile_query(rng: random.Random) -> bytes:
    """A query string: VR edge values, paths, reserved parameters with junk, repeats, junk
    separators, encodings."""
    pairs: list[tuple[bytes, bytes | None]] = []
    for _ in range(rng.choice([1, 1, 2, 3, 5])):
        if rng.random() < 0.3:
            name, value = _reserved(rng)
        else:
            name, vr = _attribute(rng)
            value = _hostile_value(rng, vr)
        encoded = _quote(value, rng)
        pairs.append((_quote(name, rng), None if rng.random() < 0.05 else encoded))
    if rng.random() < 0.1:
        pairs += [pairs[0]] * rng.choice([1, 2, 300])  # repeated keys, or too many
    separator = rng.choice([b"&", b"&", b"&", b";", b"&&"])
    query = separator.join(name if value is None else name + b"=" + value for name, value in pairs)
    if rng.random() < 0.05:
        query += rng.choice([b"&", b"=", b"#x", b"?", b"%"])
    return query


def query_request(rng: random.Random, target: Target) -> HostileRequest:
    """A search with a hostile query (valid path, mostly the working AE)."""
    template, _ = rng.choice(QIDO_ROUTES)
    path, aet = _fill(template, rng, target, hostile=0.1)
    query = hostile_query(rng)
    return HostileRequest(
        kind="query",
        label=template,
        method="GET",
        raw=http_request("GET", path + b"?" + query),
        route="qido",
        aet=None if aet is None else aet.decode("latin-1"),
        upstream_may_fail=_upstream(aet, target),
    )


# --- Accept headers ---------------------------------------------------------------------------

_MEDIA_TYPES = (
    "multipart/related",
    "multipart/related",
    "application/dicom",
    "application/dicom+json",
    "application/json",
    "*/*",
    "multipart/*",
    "application/*",
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/*",
    "image/jp2",
    "video/mpeg",
    "application/pdf",
    "text/html",
    "application/octet-stream",
    "a/b/c",
    "/",
    "*/json",
    "multipart",
    "MULTIPART/RELATED",
    "😀/😀",
    "",
)
_PARAMS = (
    "type=application/dicom",
    'type="application/dicom"',
    "type=application/dicom+json",
    'type="application/octet-stream"',
    "transfer-syntax=*",
    'transfer-syntax="*"',
    "transfer-syntax=1.2.840.10008.1.2.1",
    "transfer-syntax=1.2.840.10008.1.2",
    "transfer-syntax=1.2.840.10008.1.2.4.50",
    "transfer-syntax=",
    "transfer-syntax=*;transfer-syntax=1.2",
    "charset=utf-8",
    'type="application/dicom',
    'type="a\\"b"',
    'type="a,b"',
    "type",
    "=",
    ";",
    "boundary=x",
)
MAX_ACCEPT = 100_000
"""Longest Accept generated (hypercorn refuses heads beyond 64 KiB: more adds nothing)."""
_QS = ("1", "0", "0.5", "0.001", "1.0001", "2", "-1", "nan", "inf", "1e400", "", "abc", "0.0000001")


def hostile_accept(rng: random.Random) -> bytes:
    """An Accept value: media types, parameters, q-values and quoting, valid to absurd."""
    ranges = []
    for _ in range(rng.choice([1, 1, 2, 3, 8])):
        parts = [rng.choice(_MEDIA_TYPES)]
        parts += [rng.choice(_PARAMS) for _ in range(rng.choice([0, 1, 1, 2, 3]))]
        if rng.random() < 0.4:
            parts.append(f"q={rng.choice(_QS)}")
        if rng.random() < 0.05:
            parts.append("x=" + "y" * rng.choice([100, 10000]))
        ranges.append(rng.choice([";", "; ", " ; "]).join(parts))
    if rng.random() < 0.05:
        ranges *= rng.choice([50, 400])
    if rng.random() < 0.1:
        ranges.append(_text(rng, rng.randint(1, 30)))
    text = rng.choice([",", ", ", ",,"]).join(ranges)
    return text.encode("utf-8", errors="surrogatepass")[:MAX_ACCEPT]


def accept_request(rng: random.Random, target: Target) -> HostileRequest:
    """A search or retrieve (valid URL, the working AE) with a hostile Accept header and
    sometimes an ``accept`` query parameter."""
    template, route = rng.choice(QIDO_ROUTES + WADO_ROUTES + (("/aets/{aet}", "health"),))
    path, aet = _fill(template, rng, target, hostile=0.0)
    if rng.random() < 0.25:
        path += b"?accept=" + _quote(hostile_accept(rng).decode("utf-8", "surrogatepass"), rng)
    headers = [] if rng.random() < 0.1 else [(b"Accept", hostile_accept(rng))]
    if rng.random() < 0.2:
        headers.append((b"Accept-Encoding", rng.choice(_ENCODINGS)))
    return HostileRequest(
        kind="accept",
        label=template,
        method="GET",
        raw=http_request("GET", path, headers),
        route=route,
        aet=None if aet is None else aet.decode("latin-1"),
    )


_ENCODINGS = (
    b"gzip",
    b"gzip;q=0",
    b"*;q=0",
    b"identity;q=0",
    b"gzip;q=nan",
    b"br, zstd",
    b"gzip, gzip, gzip",
    b"x" * 5000,
)
_RENDERING: dict[str, tuple[str, ...]] = {
    "quality": ("0", "1", "100", "101", "-1", "1e9", "nan", "", "50.5", "abc"),
    "viewport": (
        "256,256",
        "1,1",
        "0,0",
        "-1,10",
        "100000,100000",
        "65536,1",
        "10,10,0,0,5,5",
        "256,256,-5,-5,1e9,1",
        "256",
        "a,b",
        ",",
        "",
    ),
    "window": (
        "40,400,LINEAR",
        "40,400,SIGMOID",
        "40,400,LINEAR_EXACT",
        "40,0,LINEAR",
        "40,-1,LINEAR",
        "nan,inf,LINEAR",
        "1e400,1,LINEAR",
        "40,400",
        "40,400,FOO",
        "",
    ),
    "annotation": ("patient", "technique", "patient,technique", "foo", ""),
    "charset": ("utf-8", "", "x" * 300),
    "unknown": ("1",),
}


def rendered_request(rng: random.Random, target: Target) -> HostileRequest:
    """A rendered or thumbnail resource of the working AE with hostile rendering parameters
    (quality, viewport, window, annotation) and sometimes a hostile Accept."""
    template, route = rng.choice(RENDERED_ROUTES)
    path, aet = _fill(template, rng, target, hostile=0.1)
    pairs = []
    for _ in range(rng.choice([1, 1, 2, 3, 4])):
        name = rng.choice(sorted(_RENDERING))
        value = rng.choice(_RENDERING[name]) if rng.random() < 0.85 else _text(rng, 10)
        pairs.append(_quote(name, rng) + b"=" + _quote(value, rng))
    headers = [] if rng.random() < 0.6 else [(b"Accept", hostile_accept(rng))]
    return HostileRequest(
        kind="rendered",
        label=template,
        method="GET",
        raw=http_request("GET", path + b"?" + b"&".join(pairs), headers),
        route=route,
        aet=None if aet is None else aet.decode("latin-1"),
        upstream_may_fail=_upstream(aet, target),
    )


# --- STOW bodies ------------------------------------------------------------------------------

_STOW_TYPE = "multipart/related; type=application/dicom"
_PART_HEAD = b"Content-Type: application/dicom\r\n"


def _valid_variant(rng: random.Random) -> tuple[str, str, str, bytes, bytes, bytes]:
    """Framing that is unusual but right: (label, boundary, Content-Type, part head,
    preamble, epilogue)."""
    label = rng.choice(
        [
            "quoted-boundary",
            "quoted-type",
            "no-type",
            "preamble-epilogue",
            "70-char-boundary",
            "part-syntax",
            "odd-boundary-chars",
        ]
    )
    boundary, content_type, head = "b", f"{_STOW_TYPE}; boundary=b", _PART_HEAD
    preamble = epilogue = b""
    if label == "quoted-boundary":
        boundary, content_type = "b c", f'{_STOW_TYPE}; boundary="b c"'
    elif label == "quoted-type":
        content_type = 'multipart/related; type="application/dicom"; boundary=b'
    elif label == "no-type":
        content_type = "multipart/related; boundary=b"
    elif label == "preamble-epilogue":
        preamble, epilogue = b"ignore me\r\n", b"and me too"
    elif label == "70-char-boundary":
        boundary = "x" * 70
        content_type = f"{_STOW_TYPE}; boundary={boundary}"
    elif label == "part-syntax":
        head = b"Content-Type: application/dicom; transfer-syntax=1.2.840.10008.1.2.1\r\n"
    else:
        boundary = "'()+_,-./:=?"
        content_type = f'{_STOW_TYPE}; boundary="{boundary}"'
    return label, boundary, content_type, head, preamble, epilogue


def _spoilt_boundary(rng: random.Random) -> tuple[str, str]:
    """A boundary and a Content-Type that do not name it right."""
    boundary = "b"
    content_type = rng.choice(
        [
            _STOW_TYPE,
            f"{_STOW_TYPE}; boundary=",
            f'{_STOW_TYPE}; boundary=""',
            f"{_STOW_TYPE}; boundary=other",
            f"{_STOW_TYPE}; boundary",
            f"{_STOW_TYPE}; boundary=b; boundary=c",
            f"{_STOW_TYPE}; boundary=" + "z" * rng.choice([71, 300, 5000]),
            f"{_STOW_TYPE}; boundary=é",
            f'{_STOW_TYPE}; boundary="b',
            f"{_STOW_TYPE}; boundary=b\x00",
        ]
    )
    if content_type.endswith("z" * 71):
        boundary = content_type.rpartition("=")[2]
    return boundary, content_type


_BAD_TYPES = (
    "multipart/related; type=application/dicom+json; boundary=b",
    "multipart/related; type=text/plain; boundary=b",
    "application/dicom",
    "multipart/form-data; boundary=b",
    "text/plain",
    "",
    ";;;",
    "multipart/related; type=application/dicom; type=text/plain; boundary=b",
    "multipart/mixed; boundary=b",
)


def _spoilt_part_head(rng: random.Random) -> bytes:
    choice = rng.randrange(6)
    if choice == 0:
        return _PART_HEAD + b"X-Junk: " + b"j" * rng.choice([5000, 20000, 100_000]) + b"\r\n"
    if choice == 1:
        return b"".join(b"X-H%d: v\r\n" % n for n in range(rng.choice([40, 500])))
    return rng.choice(
        [
            b"Content-Type: application/json\r\n",
            b"no colon here\r\n",
            _PART_HEAD + b"Content-Length: 3\r\n",
            b"Content-Type: \xff\xfe\r\n",
            b" folded: header\r\n",
            b"",
        ]
    )


def _spoilt_ending(rng: random.Random, body: bytes, delimiter: bytes) -> tuple[str, bytes]:
    """*body* (parts without the close delimiter) ended wrongly."""
    choice = rng.randrange(7)
    if choice == 0:
        return "no-close-delimiter", body
    if choice == 1:
        return "lf-only", (body + delimiter + b"--\r\n").replace(b"\r\n", b"\n")
    if choice == 2:
        extra = rng.choice([500, 12000])
        return f"{extra}-empty-parts", body + (
            delimiter + b"\r\n\r\n\r\n"
        ) * extra + delimiter + b"--"
    if choice == 3:
        return "cut-short", body[: rng.randrange(len(body) + 1)]
    if choice == 4:
        return "no-parts", delimiter + b"--\r\n"
    if choice == 5:
        return "empty-body", b""
    return "close-without-crlf", body + delimiter + b"--junk"


def stow_request(rng: random.Random, target: Target) -> HostileRequest:
    """A STOW-RS request: 1-4 small instances, each valid or spoilt, in a body whose framing
    is right (plain or an unusual but valid variant) or spoilt in one way (the boundary, the
    Content-Type, one part's headers, the end of the body)."""
    url_study = None if rng.random() < 0.7 else fresh_uid()
    aet = target.aet
    if target.broken_aets and rng.random() < 0.05:
        aet = rng.choice(target.broken_aets)
    path = f"/aets/{aet}/studies" + (f"/{url_study}" if url_study else "")
    series, study = fresh_uid(), url_study or fresh_uid()
    parts: list[StowPart] = []
    payloads: list[bytes] = []
    for _ in range(rng.choice([1, 1, 2, 3, 4])):
        instance = small_instance(rng, study_uid=study, series_uid=series)
        if rng.random() < 0.5:
            payloads.append(instance.part10())
            parts.append(StowPart(instance.sop_uid, "valid"))
        else:
            name = rng.choice(sorted(MUTATIONS))
            payloads.append(MUTATIONS[name](rng, instance, url_study))
            parts.append(StowPart(instance.sop_uid, name))
    spoil = rng.choice(
        ["none", "none", "none", "variant", "variant", "boundary", "type", "part-head", "ending"]
    )
    label = spoil
    boundary, content_type, head = "b", f"{_STOW_TYPE}; boundary=b", _PART_HEAD
    preamble = epilogue = b""
    heads = [head] * len(payloads)
    if spoil == "variant":
        label, boundary, content_type, head, preamble, epilogue = _valid_variant(rng)
        heads = [head] * len(payloads)
    elif spoil == "boundary":
        boundary, content_type = _spoilt_boundary(rng)
    elif spoil == "type":
        content_type = rng.choice(_BAD_TYPES)
    elif spoil == "part-head":
        heads[rng.randrange(len(heads))] = _spoilt_part_head(rng)
    delimiter = b"--" + boundary.encode("utf-8")
    body = preamble + b"".join(
        delimiter + b"\r\n" + h + b"\r\n" + payload + b"\r\n"
        for h, payload in zip(heads, payloads, strict=True)
    )
    if spoil == "ending":
        label, body = _spoilt_ending(rng, body, delimiter)
    else:
        body += delimiter + b"--\r\n" + epilogue
    headers: list[tuple[bytes, bytes]] = []
    if content_type or rng.random() < 0.5:
        headers.append((b"Content-Type", content_type.encode("utf-8")))
    if spoil not in ("none", "variant") and rng.random() < 0.2:
        headers.append((b"Accept", hostile_accept(rng)))
    mutated = [p.mutation for p in parts if not p.valid]
    return HostileRequest(
        kind="stow",
        label=f"{label}; {', '.join(mutated) or 'all valid'}",
        method="POST",
        raw=http_request("POST", path.encode(), headers, body),
        route="stow",
        aet=aet,
        upstream_may_fail=aet in target.broken_aets,
        stow_parts=tuple(parts),
        framing_ok=spoil in ("none", "variant"),
    )


# --- raw bytes --------------------------------------------------------------------------------

_TLS_HELLO = bytes.fromhex("16030100a5010000a10303") + bytes(32) + b"\x00\x00\x02\x00\x2f\x01\x00"
_ASSOCIATE_RQ = b"\x01\x00\x00\x00\x00\x44\x00\x01\x00\x00" + b"RST             " * 2 + bytes(32)


def raw_request(rng: random.Random, target: Target) -> HostileRequest:
    """Bytes that are not a well-formed HTTP/1.1 request, or are one hypercorn must refuse:
    junk, other protocols, broken request lines and headers, lying lengths, bad chunking.
    An answer is not required (closing is fine); one that comes is judged like any other."""
    aets = f"/aets/{target.aet}".encode()
    post = (
        b"POST "
        + aets
        + b"/studies HTTP/1.1\r\nHost: x\r\n"
        + (b"Content-Type: multipart/related; type=application/dicom; boundary=b\r\n")
    )
    part = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + b"x" * 1000 + b"\r\n--b--\r\n"
    get = b"GET /aets HTTP/1.1\r\nHost: x\r\n"
    chunks = rng.choice(
        [
            b"zz\r\nabc\r\n0\r\n\r\n",
            b"5\r\nabc\r\n",
            b"FFFFFFFFFFFFFFFF\r\nab",
            b"3;ext=" + b"e" * 20000 + b"\r\nabc\r\n0\r\n\r\n",
        ]
    )
    lengths = rng.choice(
        [b"Content-Length: -1", b"Content-Length: abc", b"Content-Length: 99999999999999999999"]
    )
    request_id = rng.choice([b"", b"\xff\xfe", b"a" * 5000, b"<script>", b"a b c", b"%0d%0a"])
    cases: dict[str, bytes] = {
        "random-bytes": _bulk(rng).randbytes(rng.choice([1, 16, 1000, 70000])),
        "tls-hello": _TLS_HELLO,
        "dicom-associate": _ASSOCIATE_RQ,
        "http2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "bare-line": b"GET\r\n\r\n",
        "http-0.9": b"GET " + aets + b"\r\n",
        "version-9.9": b"GET " + aets + b" HTTP/9.9\r\nHost: x\r\n\r\n",
        "no-host": b"GET " + aets + b" HTTP/1.1\r\nConnection: close\r\n\r\n",
        "no-colon": get + b"Bad Header\r\n\r\n",
        "obs-fold": get + b"X: a\r\n b\r\n\r\n",
        "nul-header": get + b"X: a\x00b\r\n\r\n",
        "huge-header": get + b"X: " + b"a" * 70000 + b"\r\n\r\n",
        "many-headers": get + b"X-A: b\r\n" * 3000 + b"\r\n",
        "absolute-form": b"GET http://evil.example/aets HTTP/1.1\r\nHost: x\r\n\r\n",
        "asterisk": b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
        "connect": b"CONNECT evil.example:443 HTTP/1.1\r\nHost: x\r\n\r\n",
        "junk-method": b"G\x01T /aets HTTP/1.1\r\nHost: x\r\n\r\n",
        "upgrade-h2c": get + b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
        b"Connection: Upgrade, HTTP2-Settings\r\n\r\n",
        "websocket": get + b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        "length-short-close": post + b"Content-Length: 10\r\nConnection: close\r\n\r\n" + part,
        "length-long": post + b"Content-Length: 5000\r\n\r\n" + part,
        "two-lengths": post + b"Content-Length: 10\r\nContent-Length: 20\r\n\r\n" + part,
        "length-junk": post + lengths + b"\r\n\r\n" + part,
        "bad-chunks": post + b"Transfer-Encoding: chunked\r\n\r\n" + chunks,
        "chunked-and-length": post
        + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "pipelined": get + b"\r\nGET " + aets + b"/studies?Rows=70000 HTTP/1.1\r\nHost: x\r\n"
        b"\r\nGARBAGE\r\n\r\n",
        "expect-continue": post + b"Expect: 100-continue\r\nContent-Length: 1030\r\n\r\n",
        "http-1.0": b"GET " + aets + b"/studies?limit=1 HTTP/1.0\r\n\r\n",
        "request-id": get + b"X-Request-ID: " + request_id + b"\r\nConnection: close\r\n\r\n",
    }
    label = rng.choice(sorted(cases))
    return HostileRequest(
        kind="raw",
        label=label,
        method="GET",
        raw=cases[label],
        route="other",
        needs_answer=False,
        half_close=rng.random() < 0.5,
    )


# --- good requests ----------------------------------------------------------------------------


def good_requests(target: Target) -> list[HostileRequest]:
    """Valid requests to the working AE; each must succeed."""
    base = f"/aets/{target.aet}"
    study, series, sop = target.study, target.series, target.sop
    gets: list[tuple[str, Route, bytes]] = [
        ("/aets", "aets", b""),
        (base, "health", b""),
        (f"{base}/studies?StudyInstanceUID={study}", "qido", b"application/dicom+json"),
        (f"{base}/studies/{study}/series?includefield=all", "qido", b""),
        (f"{base}/instances?limit=1&offset=0", "qido", b"application/json"),
        (
            f"{base}/studies/{study}/series/{series}/instances/{sop}",
            "wado",
            b'multipart/related; type="application/dicom"; transfer-syntax=*',
        ),
    ]
    return [
        HostileRequest(
            kind="good",
            label=url,
            method="GET",
            raw=http_request("GET", url.encode(), [(b"Accept", accept)] if accept else []),
            route=route,
            aet=target.aet,
            must_succeed=True,
        )
        for url, route, accept in gets
    ]


# --- sending and judging ----------------------------------------------------------------------


async def exchange(
    address: tuple[str, int],
    request: HostileRequest,
    *,
    max_body: int = 64 << 20,
) -> Answer:
    """Send *request* on a new connection and read the answer (bound it with
    ``trio.fail_after``: a hang is the caller's finding).

    The request is sent while the answer is read (rst may answer before it has read a body);
    once the answer is complete the rest is not sent."""
    started = trio.current_time()
    answer = Answer(status=None)
    stream = await trio.open_tcp_stream(*address)
    async with stream, trio.open_nursery() as nursery:

        async def send() -> None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(request.raw)
                if request.half_close:
                    await stream.send_eof()

        nursery.start_soon(send)
        await _read_answer(stream, request.method, answer, max_body)
        nursery.cancel_scope.cancel()
    answer.seconds = trio.current_time() - started
    return answer


async def _read_answer(
    stream: trio.SocketStream, method: str, answer: Answer, max_body: int
) -> None:
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=1 << 20)
    # h11 reads the answer as if it had sent this request (the bytes sent were others).
    conn.send(
        h11.Request(
            method=method if method == "HEAD" else "GET", target="/", headers=[("Host", "x")]
        )
    )
    conn.send(h11.EndOfMessage())
    body = bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            answer.error = f"unparsable answer: {exc}"
            break
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive_some(1 << 16)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                answer.error = f"connection broken: {exc!r}"
                break
            conn.receive_data(data)
            continue
        if isinstance(event, h11.InformationalResponse):
            continue
        if isinstance(event, h11.Response):
            answer.status = event.status_code
            answer.headers = {
                name.decode("latin-1").lower(): value.decode("latin-1")
                for name, value in event.headers
            }
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > max_body:
                answer.error = f"body larger than {max_body} bytes"
                break
        elif isinstance(event, h11.EndOfMessage):
            answer.complete = True
            break
        elif isinstance(event, h11.ConnectionClosed):
            break
    answer.body = bytes(body)


def answer_problems(request: HostileRequest, answer: Answer) -> list[str]:
    """What is wrong with *answer* to *request* (empty: nothing)."""
    status = answer.status
    if status is None:
        if request.needs_answer:
            return [f"no answer ({answer.error})"]
        return []
    found: list[str] = []
    # A client that shuts its side down is taken for gone (hypercorn's choice, as most
    # servers'): the answer may be cut; an archive down on purpose may break a stream.
    broken_ok = request.half_close or (request.upstream_may_fail and 200 <= status < 300)
    if not answer.complete and request.method != "HEAD" and not broken_ok:
        found.append(f"{status} with a broken body ({answer.error})")
    allowed_5xx = (request.route in NEWER_RESOURCES and status == 501) or (
        request.upstream_may_fail and status in (502, 503, 504)
    )
    if request.must_succeed and not 200 <= status < 300:
        found.append(f"a valid request answered {status}")
    if status >= 500 and not allowed_5xx:
        found.append(f"answered {status}")
    if request.method == "HEAD":
        return found  # no body to judge
    if request.route == "stow" and status == 409:
        found += _success_body(request, answer)  # none stored: the STOW answer says why
    elif 400 <= status < 600:
        found += _error_body(answer, status)
    elif 300 <= status < 400:
        if "location" not in answer.headers:
            found.append(f"{status} without Location")
    elif 200 <= status < 300 and answer.complete and request.method != "OPTIONS":
        found += _success_body(request, answer)
    elif status < 200 or status >= 600:
        found.append(f"answered {status}")
    return found


def _error_body(answer: Answer, status: int) -> list[str]:
    if not answer.headers.get("content-type", "").startswith("application/json"):
        return [f"{status} with Content-Type {answer.headers.get('content-type')!r}"]
    if not answer.complete:
        return []
    try:
        body = answer.json
    except ValueError:
        return [f"{status} with a body that is not JSON: {answer.body[:200]!r}"]
    if not isinstance(body, dict) or not isinstance(body.get("error"), str) or not body["error"]:
        return [f"{status} with a JSON body without a message: {answer.body[:200]!r}"]
    if isinstance(body.get("status"), int) and body["status"] != status:
        return [f"{status} whose body says status {body['status']}"]
    return []


def _success_body(request: HostileRequest, answer: Answer) -> list[str]:
    content_type = answer.headers.get("content-type", "")
    route = request.route
    status = answer.status
    if route == "wado":
        return _multipart_problems(answer, content_type)
    if route in ("bulk", "rendered") and content_type.startswith("multipart/"):
        return _multipart_problems(answer, content_type)
    if route == "bulk":
        return [] if content_type else [f"{status} bulk data without a Content-Type"]
    if route == "rendered":
        if not content_type.startswith("image/") or not answer.body:
            return [f"{status} rendered answer: {content_type!r}, {len(answer.body)} bytes"]
        return []
    if route in ("qido", "metadata", "stow", "aets", "health"):
        try:
            body = answer.json
        except ValueError:
            return [f"{status} {route} answer is not JSON: {answer.body[:200]!r}"]
        wanted = "object" if route in ("stow", "health") else "array"
        if not isinstance(body, list if wanted == "array" else dict):
            return [f"{status} {route} answer is not a JSON {wanted}"]
        if wanted == "array" and not all(isinstance(row, dict) for row in body):
            return [f"{status} {route} answer with items that are not objects"]
        if route in ("qido", "metadata", "stow") and not content_type.startswith(
            ("application/dicom+json", "application/json")
        ):
            return [f"{status} {route} answer with Content-Type {content_type!r}"]
    return []


def _multipart_problems(answer: Answer, content_type: str) -> list[str]:
    if not content_type.startswith("multipart/related"):
        return [f"{answer.status} retrieve with Content-Type {content_type!r}"]
    boundary = None
    for param in content_type.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.lower() == "boundary":
            boundary = value.strip('"')
    if not boundary:
        return [f"retrieve without a boundary: {content_type!r}"]
    delimiter = b"--" + boundary.encode()
    if not answer.body.rstrip(b"\r\n").endswith(delimiter + b"--"):
        return ["retrieve body without its close delimiter"]
    if not answer.body.startswith(delimiter):
        return ["retrieve body that does not start with a delimiter"]
    return []


def stow_outcome(answer: Answer) -> tuple[list[str], list[str]]:
    """The SOP Instance UIDs a STOW-RS answer says were stored, and those it says failed."""
    try:
        body = answer.json
    except ValueError:
        return [], []
    if not isinstance(body, dict):
        return [], []

    def uids(tag: str) -> list[str]:
        items = body.get(tag, {}).get("Value", [])
        return [
            str(item[SOP_INSTANCE]["Value"][0])
            for item in items
            if isinstance(item, dict) and SOP_INSTANCE in item
        ]

    return uids(REFERENCED), uids(FAILED)


def stow_uids(request: HostileRequest, answer: Answer) -> set[str]:
    """The SOP Instance UIDs whose presence on the archive :func:`stow_problems` needs."""
    referenced, _ = stow_outcome(answer)
    return set(referenced) | {part.sop_uid for part in request.stow_parts}


def stow_problems(
    request: HostileRequest, answer: Answer, on_archive: Collection[str]
) -> list[str]:
    """Nothing half-stored: every instance the answer calls stored is on the archive, none it
    calls failed is; with right framing every valid instance is stored. *on_archive*: which of
    :func:`stow_uids` the archive holds."""
    if answer.status is None or not answer.complete:
        return []
    found = []
    referenced, failed = stow_outcome(answer) if 200 <= answer.status < 500 else ([], [])
    ours = {part.sop_uid for part in request.stow_parts}
    for uid in referenced:
        if uid not in on_archive:
            found.append(f"{uid} reported stored but is not on the archive")
    for uid in failed:
        if uid in ours and uid in on_archive:
            found.append(f"{uid} reported failed but is on the archive")
    if request.framing_ok and not request.upstream_may_fail:
        for part in request.stow_parts:
            if part.valid and part.sop_uid not in referenced:
                found.append(f"valid instance {part.sop_uid} not stored ({answer.status})")
    return found


# --- hypothesis -------------------------------------------------------------------------------

Generator = Callable[[random.Random, Target], HostileRequest]


def strategy(generator: Generator, target: Target) -> st.SearchStrategy[HostileRequest]:
    """Requests from *generator*, its choices drawn by hypothesis (so they shrink)."""
    return st.randoms(use_true_random=False).map(lambda rng: generator(rng, target))


@st.composite
def text_segments(draw: st.DrawFn, target: Target) -> HostileRequest:
    """A route with one path segment made of hypothesis's own text (percent-encoded)."""
    template, route = draw(st.sampled_from([r for r in _GET_ROUTES if "{" in r[0]]))
    names = [p.strip("{}") for p in template.split("/") if p.startswith("{") and p != "{frames}"]
    name = draw(st.sampled_from(names))
    text = draw(st.text(max_size=80))
    segment = urllib.parse.quote(text, safe="", errors="surrogatepass").encode()
    path, aet = _fill(template, random.Random(0), target, hostile=0.0, override={name: segment})
    return HostileRequest(
        kind="path",
        label=f"text as {name} of {template}",
        method="GET",
        raw=http_request("GET", path),
        route=route,
        aet=None if aet is None else aet.decode("latin-1"),
    )


@st.composite
def text_values(draw: st.DrawFn, target: Target) -> HostileRequest:
    """A search whose one matching key (any query keyword) holds hypothesis's own text."""
    keyword = draw(st.sampled_from(_QUERY_KEYS))
    value = draw(st.text(max_size=100))
    template, _ = draw(st.sampled_from([r for r in QIDO_ROUTES if "{study}" not in r[0]]))
    path = template.replace("{aet}", target.aet).encode()
    query = (
        _quote(keyword, random.Random(0))
        + b"="
        + urllib.parse.quote(value, safe="", errors="surrogatepass").encode()
    )
    return HostileRequest(
        kind="query",
        label=f"text in {keyword}",
        method="GET",
        raw=http_request("GET", path + b"?" + query),
        route="qido",
        aet=target.aet,
    )
