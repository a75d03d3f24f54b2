"""WADO-RS bulk data: the values rst's metadata names by ``BulkDataURI``, and pixel data.

Which values are bulk data, and the URI of each, is decided here once, for both the metadata
(:mod:`rst.services.metadata`) and the resources that resolve the URIs:

* a value is bulk data when its VR is binary (OB, OW, OF, OD, OL, OV, UN — what pydicom's DICOM
  JSON writer treats as binary) and it holds at least :data:`BULK_MIN_BYTES` bytes, wherever it
  is, in sequences too; the top-level Pixel Data (and Float / Double Float Pixel Data) always;
* its URI is ``{instance}/pixeldata`` for the top-level pixel data — the Instance Pixel Data
  resource of PS3.18 §10.4.1.1 — and ``{instance}/bulkdata/{tag path}`` for any other value
  (PS3.18 §10.4.1.2 leaves the form of a BulkDataURI to the origin server), where ``{instance}``
  is the instance's WADO-RS URL and the tag path names the element from the top of the data
  set: ``60003000``, or ``00540016/0/00181072`` for element (0018,1072) in the first item of
  sequence (0054,0016) (item indexes are 0-based).

A value is answered as its bytes (Little Endian, as ``application/octet-stream``); compressed
pixel data as its codec's stream without the fragment delimiters, one part per frame (one for
a video), labelled with its media type and transfer syntax (PS3.18 §8.7.3.3.2), each part's
Content-Location naming its frame (``{instance}/frames/{n}``).

Parsing is sans-IO (:func:`instance_parts` takes the instance's bytes) and runs on a worker
thread; a request for one value reads only that top-level element (pydicom skips the others).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from contextlib import aclosing, contextmanager
from dataclasses import dataclass
from functools import partial
from io import BytesIO
from typing import Literal
from urllib.parse import quote

from pydicom import Dataset
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.encaps import generate_fragments, generate_frames, parse_basic_offsets
from pydicom.uid import ExplicitVRBigEndian
from pydicom.valuerep import AMBIGUOUS_VR, BYTES_VR, VR

from rst.bridge import run_sync
from rst.dicom.accept import BulkdataFormat, RetrieveFormat
from rst.dicom.media_types import OCTET_STREAM, bulk_media_type, is_encapsulated, is_video
from rst.dicom.part10 import read_part10
from rst.dicom.uids import EXPLICIT_VR_LITTLE_ENDIAN
from rst.dicom.without_pixels import read_without_pixels
from rst.errors import BadRequest, NotFound, RstError, UnreadableInstance
from rst.services.protocols import Backend, Instance, RetrieveKeys
from rst.services.ranged import FrameReader, frame_reader, ranges_of
from rst.services.wado import as_requested, whole

__all__ = [
    "BINARY_VRS",
    "BULK_MIN_BYTES",
    "PIXEL_DATA_TAGS",
    "BulkPart",
    "InstanceAddress",
    "Selection",
    "TagPath",
    "bulk_elements",
    "find_value",
    "instance_parts",
    "is_bulk",
    "produce_bulkdata",
    "read_dataset",
    "readable",
    "top_string",
]

log = logging.getLogger(__name__)

BULK_MIN_BYTES = 1024
"""Binary values of at least this many bytes are bulk data; shorter ones are inline
(``InlineBinary``) in the metadata."""
PIXEL_DATA_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
"""Float Pixel Data, Double Float Pixel Data, Pixel Data: an instance has at most one."""
BINARY_VRS = frozenset((BYTES_VR | AMBIGUOUS_VR) - {VR.US_SS})
"""The VRs pydicom's DICOM JSON writer encodes as binary (``InlineBinary``/``BulkDataURI``)."""

_NUMBER_OF_FRAMES = 0x00280008
_EXTENDED_OFFSETS = (0x7FE00001, 0x7FE00002)
_UID_TAGS = (0x0020000D, 0x0020000E, 0x00080018)
_ENCAPSULATED_DOCUMENT = 0x00420011
_DOCUMENT_TYPE = 0x00420012
_TAG = re.compile(r"[0-9A-Fa-f]{8}")
_INDEX = re.compile(r"[0-9]{1,9}")

Selection = Literal["bulkdata", "pixeldata"]
"""Every bulk value of an instance (``…/bulkdata``), or its pixel data (``…/pixeldata``)."""


@dataclass(frozen=True, slots=True)
class TagPath:
    """Where a value is in a data set: the (sequence tag, 0-based item index) steps from the
    top, then the element's tag."""

    items: tuple[tuple[int, int], ...]
    tag: int

    def __str__(self) -> str:
        steps = [f"{tag:08X}/{index}" for tag, index in self.items]
        return "/".join([*steps, f"{self.tag:08X}"])

    @property
    def is_pixel_data(self) -> bool:
        """Whether this names the instance's own (top-level) pixel data."""
        return not self.items and self.tag in PIXEL_DATA_TAGS

    @property
    def top(self) -> int:
        """The tag of the top-level element the path starts in."""
        return self.items[0][0] if self.items else self.tag

    @classmethod
    def parse(cls, text: str) -> TagPath:
        """Read a tag path from a URL: 8-digit hex tags (either case) and decimal item indexes,
        separated by ``/``, starting and ending with a tag.

        :raises BadRequest: anything else.
        """
        pieces = text.split("/")
        if len(pieces) % 2 == 0:
            raise BadRequest(
                f"bulk data path {text[:200]!r}: expected tag/index/…/tag (e.g. 7FE00010 or "
                "00540016/0/00181072), ending with a tag"
            )
        items = []
        for position in range(0, len(pieces) - 1, 2):
            items.append((_tag(pieces[position], text), _index(pieces[position + 1], text)))
        return cls(tuple(items), _tag(pieces[-1], text))


def _tag(piece: str, text: str) -> int:
    if not _TAG.fullmatch(piece):
        raise BadRequest(
            f"bulk data path {text[:200]!r}: {piece[:20]!r} is not a tag of 8 hex digits"
        )
    return int(piece, 16)


def _index(piece: str, text: str) -> int:
    if not _INDEX.fullmatch(piece):
        raise BadRequest(
            f"bulk data path {text[:200]!r}: {piece[:20]!r} is not a sequence item index "
            "(0-based, at most 9 digits)"
        )
    return int(piece)


@dataclass(frozen=True, slots=True)
class InstanceAddress:
    """An instance's WADO-RS URL and the URLs of its values."""

    url: str

    @classmethod
    def of(cls, base: str, dataset: Dataset, keys: RetrieveKeys, sop_uid: str) -> InstanceAddress:
        """The URL under *base* (``…/aets/{aet}``), by the UIDs the instance holds (those of
        the request, and the archive's SOP Instance UID, where it holds none)."""
        study = quote(top_string(dataset, 0x0020000D) or keys.study_uid, safe=".")
        series = quote(top_string(dataset, 0x0020000E) or keys.series_uid or "", safe=".")
        sop = quote(top_string(dataset, 0x00080018) or sop_uid, safe=".")
        return cls(f"{base}/studies/{study}/series/{series}/instances/{sop}")

    @property
    def pixeldata(self) -> str:
        return f"{self.url}/pixeldata"

    def value(self, path: TagPath) -> str:
        """The BulkDataURI of the value at *path*."""
        return self.pixeldata if path.is_pixel_data else f"{self.url}/bulkdata/{path}"

    def frame(self, number: int) -> str:
        return f"{self.url}/frames/{number}"


def top_string(dataset: Dataset, tag: int) -> str:
    """The text *dataset* holds at top-level *tag*, without padding; ``""`` when none."""
    raw = dataset.get_item(tag)
    if raw is None:
        return ""
    if isinstance(raw, RawDataElement) and raw.VR in ("UI", None) and tag in _UID_TAGS:
        # pydicom's reading of a UID without its conversion (read once per instance)
        text = (raw.value or b"").decode("latin-1").rstrip("\0 ")
        return "" if "\\" in text else text.strip("\0 ")
    value = dataset[tag].value
    return str(value).strip("\0 ") if isinstance(value, str) else ""


@dataclass(frozen=True, slots=True)
class BulkPart:
    """One value (or one frame of it) as sent: its Content-Type, its URL, its bytes."""

    content_type: str
    location: str
    data: bytes


@contextmanager
def readable(sop_uid: str) -> Iterator[None]:
    """Turns what pydicom raises on data it cannot read into a 502 naming the instance: the
    archive sent it. rst's own errors pass."""
    try:
        yield
    except RstError:
        raise
    except Exception as exc:  # pydicom raises many kinds on garbage
        raise UnreadableInstance(
            f"the archive sent an instance rst cannot read ({sop_uid}): {exc}"
        ) from exc


def read_dataset(data: bytes, tags: set[int] | None = None, *, pixels: bool = True) -> Dataset:
    """The data set of a Part 10 file, without group 0002; only the top-level elements *tags*
    (and the Specific Character Set) when given — pydicom skips the others unread. Without
    *pixels*, the top-level pixel data's value is a stand-in, not read
    (:func:`~rst.dicom.without_pixels.read_without_pixels`: for metadata, which names it by
    URI)."""
    if pixels:
        dataset = read_part10(data, tags)
    elif tags is None:
        dataset = read_without_pixels(data)
    else:
        raise ValueError("read_dataset: either some tags or no pixel data, not both")
    # group 0002 in the data set itself (it has none but in odd files): by the tags' group, an
    # int operation (a slice ``del`` sorts every tag, comparing them in Python; iterating the
    # data set itself would convert and sort its elements)
    for tag in [tag for tag in dataset.keys() if tag >> 16 == 0x0002]:  # noqa: SIM118
        del dataset[tag]
    return dataset


def _elements(dataset: Dataset) -> Iterator[DataElement]:
    """Each element of *dataset*, converted from its raw form (pydicom keeps the converted
    element, so later reads — the JSON writer's — see the same object). An element pydicom
    cannot convert is left out (logged)."""
    for tag in list(dataset.keys()):
        try:
            yield dataset[tag]
        except Exception as exc:  # pydicom raises many kinds on bad values
            log.warning("skipping element %s that pydicom cannot read: %s", tag, exc)


def is_bulk(element: DataElement, *, top: bool) -> bool:
    """Whether *element* is bulk data (see the module docstring)."""
    if element.VR not in BINARY_VRS or element.is_empty:
        return False
    if top and element.tag in PIXEL_DATA_TAGS:
        return True
    try:
        return len(element.value) >= BULK_MIN_BYTES
    except TypeError:  # an ambiguous VR pydicom resolved to numbers
        return False


def bulk_elements(
    dataset: Dataset, items: tuple[tuple[int, int], ...] = ()
) -> Iterator[tuple[TagPath, DataElement]]:
    """Every bulk value of *dataset*, in sequences too, in data set order."""
    for element in _elements(dataset):
        if element.VR == VR.SQ:
            for index, item in enumerate(element.value):
                yield from bulk_elements(item, (*items, (element.tag, index)))
        elif is_bulk(element, top=not items):
            yield TagPath(items, element.tag), element


def find_value(dataset: Dataset, path: TagPath) -> DataElement:
    """The binary element at *path*.

    :raises NotFound: there is none (no such element or item, or not a binary value).
    """
    current = dataset
    for depth, (tag, index) in enumerate(path.items):
        element = current.get(tag)
        where = str(TagPath(path.items[:depth], tag))
        if element is None or element.VR != VR.SQ:
            raise NotFound(f"the instance has no sequence {where}")
        if index >= len(element.value):
            raise NotFound(f"sequence {where} has {len(element.value)} items, no item {index}")
        current = element.value[index]
    element = current.get(path.tag)
    if element is None:
        raise NotFound(f"the instance has no element {path}")
    if element.VR not in BINARY_VRS:
        raise NotFound(f"element {path} is {element.VR}, not bulk data (a binary value)")
    if element.is_empty:
        raise NotFound(f"element {path} is empty")
    return element


def _pixel_tags(*extra: int) -> set[int]:
    return {*PIXEL_DATA_TAGS, _NUMBER_OF_FRAMES, *_EXTENDED_OFFSETS, *_UID_TAGS, *extra}


def instance_parts(
    data: bytes,
    transfer_syntax: str,
    selection: Selection | TagPath,
    fmt: BulkdataFormat,
    *,
    base: str,
    keys: RetrieveKeys,
    sop_uid: str,
) -> list[BulkPart]:
    """The parts that answer *selection* for one instance (a Part 10 file in *transfer_syntax*,
    Little Endian: see :func:`produce_bulkdata`). Pixel data stored compressed is sent as it is:
    the caller decompresses the instance first where *fmt* asks for that.

    :raises NotFound: the instance has no value at the path.
    :raises NotAcceptable: *fmt* accepts no form of a value.
    """
    with readable(sop_uid):
        if isinstance(selection, TagPath):
            tags = _pixel_tags() if selection.is_pixel_data else {selection.top, *_UID_TAGS}
            tags.add(_DOCUMENT_TYPE)
            dataset = read_dataset(data, tags)
            values = [(selection, find_value(dataset, selection))]
        elif selection == "pixeldata":
            dataset = read_dataset(data, _pixel_tags())
            values = [
                (TagPath((), tag), dataset[tag])
                for tag in sorted(PIXEL_DATA_TAGS)
                if tag in dataset
            ]
        else:
            dataset = read_dataset(data)
            values = list(bulk_elements(dataset))
        address = InstanceAddress.of(base, dataset, keys, sop_uid)
        parts: list[BulkPart] = []
        for path, element in values:
            if path.is_pixel_data:
                parts += _pixel_parts(dataset, element, transfer_syntax, fmt, address)
            else:
                own = OCTET_STREAM
                if path.tag == _ENCAPSULATED_DOCUMENT and not path.items:
                    own = top_string(dataset, _DOCUMENT_TYPE) or OCTET_STREAM
                content_type = fmt.value_type(own)
                parts.append(BulkPart(content_type, address.value(path), bytes(element.value)))
        return parts


def _pixel_parts(
    dataset: Dataset,
    element: DataElement,
    syntax: str,
    fmt: BulkdataFormat,
    address: InstanceAddress,
) -> list[BulkPart]:
    fmt.pixel_form(syntax)  # acceptable as it is now (decompressed already where needed)
    value: bytes = element.value
    if not is_encapsulated(syntax):
        content_type = f"{OCTET_STREAM}; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}"
        return [BulkPart(content_type, address.pixeldata, value)]
    content_type = f"{bulk_media_type(syntax)}; transfer-syntax={syntax}"
    if is_video(syntax):
        stream = BytesIO(value)
        parse_basic_offsets(stream)
        return [BulkPart(content_type, address.pixeldata, b"".join(generate_fragments(stream)))]
    frames = int(dataset.get("NumberOfFrames") or 1)
    offsets = None
    if all(tag in dataset for tag in _EXTENDED_OFFSETS):
        offsets = (dataset[_EXTENDED_OFFSETS[0]].value, dataset[_EXTENDED_OFFSETS[1]].value)
    return [
        BulkPart(content_type, address.frame(number), frame)
        for number, frame in enumerate(
            generate_frames(value, number_of_frames=frames, extended_offsets=offsets), start=1
        )
    ]


def _needs_pixels(selection: Selection | TagPath) -> bool:
    if isinstance(selection, TagPath):
        return selection.is_pixel_data
    return True


async def prepared(
    received: Instance, selection: Selection | TagPath, fmt: BulkdataFormat
) -> Instance:
    """*received* whole and Little Endian (bulk data is, PS3.18 §8.7.3.3.1), its pixel data
    decompressed where the client accepts it only so."""
    instance = await whole(received)
    syntax = instance.transfer_syntax
    decompress = (
        _needs_pixels(selection)
        and is_encapsulated(syntax)
        and fmt.pixel_form(syntax) == "decompressed"
    )
    if syntax == str(ExplicitVRBigEndian) or decompress:
        instance = await as_requested(instance, RetrieveFormat(EXPLICIT_VR_LITTLE_ENDIAN))
    return instance


_PIXEL_TAG_OF = {
    "PixelData": 0x7FE00010,
    "FloatPixelData": 0x7FE00008,
    "DoubleFloatPixelData": 0x7FE00009,
}


async def _by_ranges(
    received: Instance,
    selection: Selection | TagPath,
    fmt: BulkdataFormat,
    *,
    base: str,
    keys: RetrieveKeys,
) -> AsyncGenerator[BulkPart] | None:
    """The pixel data of a large stored instance read by ranges (:mod:`rst.services.ranged`),
    as :func:`instance_parts` answers from the whole instance: native data as one part, read
    alone; encapsulated data as stored, one frame at a time (never the whole value in memory).
    ``None``: read the instance whole instead (and for anything but its pixel data, for data
    to be decompressed, for video)."""
    if ranges_of(received) is None or not (
        selection == "pixeldata" or (isinstance(selection, TagPath) and selection.is_pixel_data)
    ):
        return None
    syntax = received.transfer_syntax
    encapsulated = is_encapsulated(syntax)
    if is_video(syntax) or (encapsulated and fmt.pixel_form(syntax) == "decompressed"):
        return None
    reader = await frame_reader(received)
    if reader is None:
        return None
    source = reader.source
    tag = _PIXEL_TAG_OF.get(source.keyword)
    if isinstance(selection, TagPath) and selection.tag != tag:
        return None  # the whole instance's reader says what there is
    if source.keyword != "PixelData" and encapsulated:
        return None
    address = InstanceAddress.of(base, source.dataset, keys, received.sop_instance_uid)
    fmt.pixel_form(syntax)  # acceptable as stored (raises NotAcceptable)
    if not encapsulated:
        value = await reader.value()
        if value is None:
            return None
        content_type = f"{OCTET_STREAM}; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}"
        return _one(BulkPart(content_type, address.pixeldata, value))
    first = await reader.read([1])
    if first is None:
        return None
    return _frames_by_ranges(reader, first.as_stored([1])[1], syntax, address)


async def _one(part: BulkPart) -> AsyncGenerator[BulkPart]:
    yield part


async def _frames_by_ranges(
    reader: FrameReader, first: bytes, syntax: str, address: InstanceAddress
) -> AsyncGenerator[BulkPart]:
    content_type = f"{bulk_media_type(syntax)}; transfer-syntax={syntax}"
    yield BulkPart(content_type, address.frame(1), first)
    for number in range(2, reader.number_of_frames + 1):
        source = await reader.read([number])
        if source is None:  # the frames before it were sent: too late to read it whole
            raise UnreadableInstance(
                f"frame {number} of the instance {reader.source.sop_instance_uid} cannot be "
                "read from the archive's object by its offsets"
            )
        yield BulkPart(content_type, address.frame(number), source.as_stored([number])[number])


async def produce_bulkdata(
    backend: Backend,
    keys: RetrieveKeys,
    selection: Selection | TagPath,
    fmt: BulkdataFormat,
    base: str,
    send: Callable[[BulkPart], Awaitable[None]],
) -> None:
    """Send the parts answering *selection* for each instance *keys* names, as the instances
    arrive (parsed on a worker thread, one instance at a time).

    :raises NotFound: nothing to send (no instance, or none has such a value).
    """
    sent = 0
    async with backend.retrieve(keys, fmt.prefer) as instances:
        async for received in instances:
            ranged = await _by_ranges(received, selection, fmt, base=base, keys=keys)
            if ranged is not None:
                async with aclosing(ranged) as parts_by_ranges:
                    async for part in parts_by_ranges:
                        await send(part)
                        sent += 1
                continue
            instance = await prepared(received, selection, fmt)
            parts = await run_sync(
                partial(
                    instance_parts,
                    instance.data,
                    instance.transfer_syntax,
                    selection,
                    fmt,
                    base=base,
                    keys=keys,
                    sop_uid=instance.sop_instance_uid,
                )
            )
            for part in parts:
                await send(part)
                sent += 1
    if not sent:
        what = "pixel data" if selection == "pixeldata" else "bulk data"
        raise NotFound(f"the {keys.level.lower()} {keys.uid} has no {what}")
