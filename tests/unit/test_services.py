"""The DICOMweb services (``rst/services/``) over the in-memory fake archive, without HTTP or a
PACS: QIDO-RS pages, WADO-RS at each level, metadata, frames — and a retrieve that breaks off
is never presented as complete. (STOW-RS fate reporting is in test_stow.py, on the same fake.)"""

from __future__ import annotations

import json
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
import trio
from pydicom import Dataset, dcmread

from rst.bridge import run_sync
from rst.cache.files import PendingSidecars
from rst.dicom.accept import FrameChoice, RetrieveFormat
from rst.dicom.media_types import OCTET_STREAM
from rst.dicom.multipart import MultipartWriter
from rst.dicom.query import parse_qido
from rst.dicom.uids import EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN
from rst.errors import BackendTimeout, IncompleteRetrieve, NotFound
from rst.http.multipart_body import PartSender
from rst.services import metadata as metadata_module
from rst.services.frames import retrieve_frames
from rst.services.metadata import produce_metadata
from rst.services.protocols import Instance, RetrieveKeys
from rst.services.qido import MORE, produce_matches
from rst.services.wado import produce_parts
from tests.support import frames
from tests.support.sample import write_ct_study
from tests.support.scripted_backend import ScriptedBackend, part10

BASE = "http://rst/aets/FAKE"
STUDY, OTHER_STUDY = "1.2.3", "1.2.9"
SERIES, OTHER_SERIES = "1.2.3.1", "1.2.3.2"


def archive(**options: Any) -> ScriptedBackend:
    """Study 1.2.3: series .1 with instances .1.1 and .1.2, series .2 with .2.1; and another
    study with one instance. Retrieves send what their keys name."""
    instances = [
        part10(f"{SERIES}.1", study=STUDY, series=SERIES),
        part10(f"{SERIES}.2", study=STUDY, series=SERIES),
        part10(f"{OTHER_SERIES}.1", study=STUDY, series=OTHER_SERIES),
        part10(f"{OTHER_STUDY}.1.1", study=OTHER_STUDY, series=f"{OTHER_STUDY}.1"),
    ]
    return ScriptedBackend(instances=instances, by_keys=True, **options)


def sop_uid(data: bytes) -> str:
    return str(dcmread(BytesIO(data), stop_before_pixels=True).SOPInstanceUID)


# -- QIDO-RS -----------------------------------------------------------------------------------


def study_match(n: int) -> Dataset:
    ds = Dataset()
    ds.StudyInstanceUID = f"1.2.3.{n}"
    ds.QueryRetrieveLevel = "STUDY"
    return ds


async def search(backend: ScriptedBackend, params: list[tuple[str, str]]) -> list[Any]:
    send, receive = trio.open_memory_channel[Any](100)
    async with send:
        await produce_matches(backend, parse_qido("STUDY", params), BASE, send)
    return [row async for row in receive]


async def test_qido_sends_the_page_then_says_there_is_more() -> None:
    backend = ScriptedBackend(matches=[study_match(n) for n in range(5)])

    rows = await search(backend, [("offset", "1"), ("limit", "2")])

    assert rows[-1] is MORE
    uids = [row["0020000D"]["Value"][0] for row in rows[:-1]]
    assert uids == ["1.2.3.1", "1.2.3.2"]
    assert backend.closed == backend.opened == 1  # read no further than needed, then closed


async def test_qido_without_limit_sends_every_match_with_its_retrieve_url() -> None:
    backend = ScriptedBackend(matches=[study_match(n) for n in range(3)])

    rows = await search(backend, [])

    assert MORE not in rows
    assert [row["00081190"]["Value"][0] for row in rows] == [
        f"{BASE}/studies/1.2.3.{n}" for n in range(3)
    ]
    assert backend.queries[0].level == "STUDY"


async def test_qido_that_breaks_off_raises_after_the_rows_sent() -> None:
    backend = ScriptedBackend(
        matches=[study_match(n) for n in range(4)],
        fail_search_after=2,
        error=lambda: BackendTimeout("the PACS went quiet"),
    )
    send, receive = trio.open_memory_channel[Any](100)

    with pytest.raises(BackendTimeout):
        async with send:
            await produce_matches(backend, parse_qido("STUDY", []), BASE, send)

    assert len([row async for row in receive]) == 2  # what came went out; then the error
    assert backend.closed == 1


# -- WADO-RS -----------------------------------------------------------------------------------


async def wado(
    backend: ScriptedBackend, keys: RetrieveKeys, syntax: str | None = None
) -> tuple[MultipartWriter, list[bytes]]:
    """The parts produced, joined per item; the writer counted the part heads."""
    writer = MultipartWriter()
    sent: list[bytes] = []

    async def send(pieces: tuple[bytes, ...]) -> None:
        sent.append(b"".join(pieces))

    await produce_parts(backend, keys, RetrieveFormat(syntax), PartSender(writer, send))
    return writer, sent


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (RetrieveKeys(STUDY), [f"{SERIES}.1", f"{SERIES}.2", f"{OTHER_SERIES}.1"]),
        (RetrieveKeys(STUDY, SERIES), [f"{SERIES}.1", f"{SERIES}.2"]),
        (RetrieveKeys(STUDY, SERIES, f"{SERIES}.2"), [f"{SERIES}.2"]),
    ],
    ids=["study", "series", "instance"],
)
async def test_wado_sends_what_each_level_names(keys: RetrieveKeys, expected: list[str]) -> None:
    backend = archive()

    writer, sent = await wado(backend, keys)

    assert writer.parts_written == len(expected)
    assert [sop_uid(item[item.index(b"\r\n\r\n") + 4 :]) for item in sent] == expected
    assert backend.retrieves == [(keys, None)]  # at exactly that level, as stored


async def test_wado_reencodes_into_the_syntax_asked_for() -> None:
    backend = archive()
    keys = RetrieveKeys(STUDY, SERIES, f"{SERIES}.1")

    _, sent = await wado(backend, keys, IMPLICIT_VR_LITTLE_ENDIAN)

    head, _, data = sent[0].partition(b"\r\n\r\n")
    assert f"transfer-syntax={IMPLICIT_VR_LITTLE_ENDIAN}".encode() in head
    assert dcmread(BytesIO(data)).file_meta.TransferSyntaxUID == IMPLICIT_VR_LITTLE_ENDIAN
    assert backend.retrieves == [(keys, IMPLICIT_VR_LITTLE_ENDIAN)]  # the hint went along


async def test_wado_of_an_unknown_study_is_not_found() -> None:
    with pytest.raises(NotFound):
        await wado(archive(), RetrieveKeys("1.2.404"))


async def test_a_partial_wado_retrieve_raises_after_what_arrived() -> None:
    """The caller breaks the response off: no close delimiter, never a complete body."""
    backend = archive(
        fail_retrieve_after=1, error=lambda: IncompleteRetrieve("2 of 3 instances arrived")
    )

    writer = MultipartWriter()
    sent: list[tuple[bytes, ...]] = []

    async def send(pieces: tuple[bytes, ...]) -> None:
        sent.append(pieces)

    with pytest.raises(IncompleteRetrieve):
        await produce_parts(
            backend, RetrieveKeys(STUDY), RetrieveFormat(None), PartSender(writer, send)
        )

    assert writer.parts_written == 1
    assert backend.closed == 1


async def test_an_instance_that_breaks_off_mid_stream_raises() -> None:
    whole = part10("1.2.3.1.7", study=STUDY, series=SERIES)
    cut = len(whole.data) // 2

    async def rest() -> Any:
        yield whole.data[cut : cut + 10]
        raise IncompleteRetrieve("instance 1.2.3.1.7 was cut short")

    arriving = Instance(
        whole.data[:cut], whole.sop_class_uid, whole.sop_instance_uid, whole.transfer_syntax, rest()
    )
    with pytest.raises(IncompleteRetrieve, match="cut short"):
        await wado(ScriptedBackend(instances=[arriving]), RetrieveKeys(STUDY))


# -- metadata ----------------------------------------------------------------------------------


async def metadata(backend: ScriptedBackend, keys: RetrieveKeys) -> list[bytes]:
    sent: list[bytes] = []

    async def send(pieces: tuple[bytes, ...]) -> None:
        sent.append(b"".join(pieces))

    await produce_metadata(backend, keys, BASE, send)
    return sent


@pytest.mark.parametrize(
    ("keys", "count"),
    [(RetrieveKeys(STUDY), 3), (RetrieveKeys(STUDY, SERIES), 2), (RetrieveKeys(OTHER_STUDY), 1)],
)
async def test_metadata_is_one_json_array_of_the_instances_named(
    keys: RetrieveKeys, count: int
) -> None:
    objects = json.loads(b"".join(await metadata(archive(), keys)))

    assert len(objects) == count
    assert all(item["0020000D"]["Value"] == [keys.study_uid] for item in objects)


async def test_metadata_of_nothing_is_not_found() -> None:
    with pytest.raises(NotFound):
        await metadata(archive(), RetrieveKeys("1.2.404"))


async def test_partial_metadata_never_closes_its_array() -> None:
    backend = archive(fail_retrieve_after=2, error=lambda: IncompleteRetrieve("broke off"))
    sent: list[bytes] = []

    async def send(pieces: tuple[bytes, ...]) -> None:
        sent.append(b"".join(pieces))

    with pytest.raises(IncompleteRetrieve):
        await produce_metadata(backend, RetrieveKeys(STUDY), BASE, send)

    assert len(sent) == 2
    assert not b"".join(sent).endswith(b"]")


class Trips:
    """The metadata service's trips to a worker thread, counted."""

    def __init__(self) -> None:
        self.count = 0

    async def run_sync(self, fn: Callable[[], Any]) -> Any:
        self.count += 1
        return await run_sync(fn)


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> Trips:
    counted = Trips()
    monkeypatch.setattr(metadata_module, "run_sync", counted.run_sync)
    return counted


async def test_small_instances_metadata_is_derived_without_a_worker_thread(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, trips: Trips
) -> None:
    [path] = write_ct_study(tmp_path, images=1, rows=256, columns=256, study_uid=STUDY).paths
    ct = dcmread(path, stop_before_pixels=True)
    syntax = ct.file_meta.TransferSyntaxUID
    instances = [
        # a CT image: a small data set before 128 KiB of pixel data
        Instance(path.read_bytes(), ct.SOPClassUID, ct.SOPInstanceUID, syntax),
        part10(f"{SERIES}.1", study=STUDY, series=SERIES),  # small, no pixel data
        part10(f"{SERIES}.2", study=STUDY, series=SERIES, size=1 << 20),  # a 1 MiB document
    ]
    keys = RetrieveKeys(STUDY)

    inline = await metadata(ScriptedBackend(instances=instances), keys)
    assert trips.count == 1  # the document only
    monkeypatch.setattr(metadata_module, "INLINE_BYTES", 100)  # now none is small
    on_threads = await metadata(ScriptedBackend(instances=instances), keys)
    assert trips.count == 1 + 3

    assert inline == on_threads
    sops = [item["00080018"]["Value"][0] for item in json.loads(b"".join(inline))]
    assert sops == [ct.SOPInstanceUID, f"{SERIES}.1", f"{SERIES}.2"]


async def test_metadata_of_an_instance_arriving_in_the_cache_is_kept_without_a_worker_thread(
    tmp_path: Path, trips: Trips
) -> None:
    """An instance on its way into the cache (sidecars still in memory) is derived on trio's
    thread and its metadata kept in memory; once the cache has it (settled), a worker thread
    loads or saves as before."""
    [path] = write_ct_study(tmp_path, images=1, rows=64, columns=64, study_uid=STUDY).paths
    ct = dcmread(path, stop_before_pixels=True)
    syntax = ct.file_meta.TransferSyntaxUID
    data = path.read_bytes()
    arriving, settled = PendingSidecars(), PendingSidecars()
    settled.settle(None)  # not cached: nothing can be kept any more
    assert arriving.arriving
    assert not settled.arriving
    keys = RetrieveKeys(STUDY)

    def instance(sidecars: PendingSidecars) -> Instance:
        return Instance(data, ct.SOPClassUID, ct.SOPInstanceUID, syntax, sidecars=sidecars)

    first = await metadata(ScriptedBackend(instances=[instance(arriving)]), keys)
    assert trips.count == 0
    kept = arriving.peek(metadata_module.METADATA)
    assert kept is not None
    assert metadata_module.under(BASE, kept) in b"".join(first)
    second = await metadata(ScriptedBackend(instances=[instance(settled)]), keys)
    assert trips.count == 1
    assert first == second
    assert not settled.keep_nowait(metadata_module.METADATA, kept)


# -- frames ------------------------------------------------------------------------------------

PIXELS = frames.volume(3)
FRAMES_KEYS = RetrieveKeys(STUDY, SERIES, frames.SOP_UID)
OCTETS = [FrameChoice(OCTET_STREAM, EXPLICIT_VR_LITTLE_ENDIAN)]


def multiframe(**options: Any) -> ScriptedBackend:
    data = frames.native(PIXELS)
    sop_class = "1.2.840.10008.5.1.4.1.1.7"
    instance = Instance(data, sop_class, frames.SOP_UID, EXPLICIT_VR_LITTLE_ENDIAN)
    return ScriptedBackend(instances=[instance], **options)


async def test_frames_are_cut_from_the_instance_in_the_order_asked() -> None:
    answer = await retrieve_frames(multiframe(), FRAMES_KEYS, [3, 1], OCTETS)

    assert [frame.number for frame in answer.frames] == [3, 1]
    assert answer.frames[0].data == PIXELS[2].tobytes()
    assert answer.frames[1].data == PIXELS[0].tobytes()
    assert answer.part_type == f"{OCTET_STREAM}; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}"


@pytest.mark.parametrize(
    ("backend", "numbers"),
    [
        (multiframe, [4]),  # no such frame
        (lambda: ScriptedBackend(instances=[part10("1.2.3.1.9")]), [1]),  # not the instance
    ],
    ids=["frame", "instance"],
)
async def test_frames_not_there_are_not_found(
    backend: Callable[[], ScriptedBackend], numbers: list[int]
) -> None:
    with pytest.raises(NotFound):
        await retrieve_frames(backend(), FRAMES_KEYS, numbers, OCTETS)


async def test_frames_wait_for_the_retrieve_to_end_and_fail_with_it() -> None:
    """The instance arrived whole, but the retrieve then failed: frames are not served from a
    retrieve the archive did not finish."""
    backend = multiframe(fail_retrieve_after=1, error=lambda: IncompleteRetrieve("broke off"))

    with pytest.raises(IncompleteRetrieve):
        await retrieve_frames(backend, FRAMES_KEYS, [1], OCTETS)

    assert backend.closed == 1


async def test_frames_belong_to_one_instance() -> None:
    with pytest.raises(ValueError, match="one instance"):
        await retrieve_frames(multiframe(), RetrieveKeys(STUDY), [1], OCTETS)
