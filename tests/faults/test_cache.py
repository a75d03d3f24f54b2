"""The retrieve cache through the real server, in front of the development PACS, which logs
every C-MOVE and C-GET it serves: single flight, serving without the PACS, restarts, and
retrieves that fail or are given up."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
import trio
import trio.testing
from pydicom.filebase import DicomBytesIO

from rst.cache import Store, archive_key
from rst.config import AeConfig
from rst.devpacs import DevPacs, Faults, FolderArchive, write_sample_study
from rst.dicom import part10
from rst.dicom.frames import FrameSource
from rst.server import Running
from rst.services import metadata
from rst.services.protocols import RetrieveKeys
from tests.support.download import Download, download_all
from tests.support.frames import encapsulated, parts, volume
from tests.support.gateway import run_gateway, settled

Mode = str  # "move" or "get"

DOWNLOADS_WITHIN = 30.0
"""Seconds the concurrent downloads of one step may take."""


def ae(pacs: DevPacs, **kw: Any) -> AeConfig:
    return AeConfig(aet="FAULTY", host="127.0.0.1", port=pacs.port, **kw)


def first_series(pacs: DevPacs) -> tuple[str, str, list[str]]:
    """Study UID, series UID and SOP Instance UIDs of the sample's first series."""
    instances = pacs.archive.instances()
    series = instances[0].series_uid
    sops = [str(i.sop_instance_uid) for i in instances if i.series_uid == series]
    return str(instances[0].study_uid), str(series), sops


def series_url(running: Running, pacs: DevPacs) -> str:
    study, series, _ = first_series(pacs)
    return f"{running.http_url}/aets/FAULTY/studies/{study}/series/{series}"


def retrieves(pacs: DevPacs) -> int:
    """C-MOVEs and C-GETs the PACS has served."""
    return pacs.events.count("move") + pacs.events.count("get")


async def pacs_saw(pacs: DevPacs, what: str, count: int = 1) -> None:
    assert await trio.to_thread.run_sync(pacs.wait_for, what, 10.0, count), f"no {what}"


def instances_of(download: Download) -> dict[str, bytes]:
    """The parts of a complete response, by SOP Instance UID (the parts' order may differ)."""
    found = {}
    for _, data in download.parts():
        found[str(pydicom.dcmread(DicomBytesIO(data)).SOPInstanceUID)] = data
    return found


@pytest.mark.parametrize("mode", ["move", "get"])
async def test_concurrent_series_requests_share_one_retrieve(
    pacs: DevPacs, faults: Faults, mode: Mode
) -> None:
    faults.hang_after_move = gate = threading.Event()
    async with run_gateway(ae(pacs, retrieve=mode)) as running:
        pacs.add_destination("RST", *running.dimse_address)
        downloads = [Download(series_url(running, pacs)) for _ in range(6)]
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for download in downloads:
                    nursery.start_soon(download.run)
                await pacs_saw(pacs, "hang")  # the first retrieve has reached the PACS
                gate.set()
        await settled(running)

    assert retrieves(pacs) == 1
    assert all(d.status == 200 for d in downloads)
    first = instances_of(downloads[0])
    assert len(first) == 6
    assert all(instances_of(d) == first for d in downloads[1:])


@pytest.mark.parametrize(("cache", "expected"), [(True, 1), (False, 7)])
async def test_instance_requests_during_a_series_retrieve_share_its_c_move(
    pacs: DevPacs, faults: Faults, cache: bool, expected: int
) -> None:
    """A viewer asks for a series' metadata, then for each instance (each frame) at once: one
    C-MOVE (without the cache: one more per instance, which shows this test can fail)."""
    faults.hang_after_move = gate = threading.Event()
    _study, _series, sops = first_series(pacs)
    async with run_gateway(ae(pacs, cache=cache)) as running:
        pacs.add_destination("RST", *running.dimse_address)
        base = series_url(running, pacs)
        whole = Download(base)
        frames = [Download(f"{base}/instances/{sop}") for sop in sops]
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(whole.run)
                await pacs_saw(pacs, "hang")  # the series' C-MOVE is under way
                for frame in frames:
                    nursery.start_soon(frame.run)
                if not cache:
                    await pacs_saw(pacs, "hang", count=expected)
                gate.set()
        await settled(running)

    assert retrieves(pacs) == expected
    series_instances = instances_of(whole)
    for sop, frame in zip(sops, frames, strict=True):
        assert frame.status == 200
        assert instances_of(frame) == {sop: series_instances[sop]}


async def test_a_retrieved_series_is_then_served_without_the_pacs(pacs: DevPacs) -> None:
    _study, _series, sops = first_series(pacs)
    async with run_gateway(ae(pacs)) as running:
        pacs.add_destination("RST", *running.dimse_address)
        (first,) = await download_all([series_url(running, pacs)], within=DOWNLOADS_WITHIN)
        assert retrieves(pacs) == 1

        again, one = await download_all(
            [series_url(running, pacs), f"{series_url(running, pacs)}/instances/{sops[2]}"],
            within=DOWNLOADS_WITHIN,
        )

    assert retrieves(pacs) == 1
    assert instances_of(again) == instances_of(first)
    assert instances_of(one) == {sops[2]: instances_of(first)[sops[2]]}


async def test_a_restarted_gateway_serves_what_it_had(pacs: DevPacs, tmp_path: Path) -> None:
    cache = {"path": str(tmp_path / "cache")}
    async with run_gateway(ae(pacs), cache=cache) as running:
        pacs.add_destination("RST", *running.dimse_address)
        (before,) = await download_all([series_url(running, pacs)], within=DOWNLOADS_WITHIN)

    async with run_gateway(ae(pacs), cache=cache) as running:
        pacs.add_destination("RST", *running.dimse_address)
        (after,) = await download_all([series_url(running, pacs)], within=DOWNLOADS_WITHIN)

    assert retrieves(pacs) == 1
    assert instances_of(after) == instances_of(before)


@pytest.mark.parametrize("mode", ["move", "get"])
@pytest.mark.parametrize(
    "fault",
    [{"die_after": 3}, {"drop_instances": 2}],
    ids=["pacs-dies-mid-retrieve", "fewer-instances-than-reported"],
)
async def test_a_failed_retrieve_leaves_nothing_served_as_complete(
    pacs: DevPacs, faults: Faults, tmp_path: Path, mode: Mode, fault: dict[str, int]
) -> None:
    for name, value in fault.items():
        setattr(faults, name, value)
    study, series, _ = first_series(pacs)
    config = ae(pacs, retrieve=mode)
    async with run_gateway(config, cache={"path": str(tmp_path / "cache")}) as running:
        pacs.add_destination("RST", *running.dimse_address)
        broken = await download_all([series_url(running, pacs)] * 3, within=DOWNLOADS_WITHIN)
        assert all(d.error is not None for d in broken)  # every body broke off
        await settled(running)

        store = Store.open(tmp_path / "cache", max_bytes=1 << 30, ttl=3600)
        try:
            keys = RetrieveKeys(study, series)
            assert store.level(archive_key(config), keys) is None
            assert list((tmp_path / "cache" / "tmp").iterdir()) == []
        finally:
            store.close()

        for name in fault:
            setattr(faults, name, Faults.__dataclass_fields__[name].default)
        (complete,) = await download_all([series_url(running, pacs)], within=DOWNLOADS_WITHIN)

    assert retrieves(pacs) == 2
    assert len(instances_of(complete)) == 6


async def test_requests_waiting_on_a_client_gone_retrieve_their_own(
    pacs: DevPacs, faults: Faults
) -> None:
    """The C-MOVE belongs to the request that started it: its client hangs up, the C-MOVE is
    cancelled, and a request that was waiting on it makes its own."""
    faults.hang_after_move = gate = threading.Event()
    async with run_gateway(ae(pacs, cancel_timeout=1.0)) as running:
        pacs.add_destination("RST", *running.dimse_address)
        url = series_url(running, pacs)
        waiting = Download(url)
        first = trio.CancelScope()

        async def first_client() -> None:
            with first:
                await http.get(url)

        with trio.fail_after(30):
            async with httpx.AsyncClient(timeout=30) as http, trio.open_nursery() as nursery:
                nursery.start_soon(first_client)
                await pacs_saw(pacs, "hang")
                nursery.start_soon(waiting.run)
                await trio.testing.wait_all_tasks_blocked()
                first.cancel()  # the first client is gone
                await pacs_saw(pacs, "cancel")
                await pacs_saw(pacs, "hang", count=2)  # the waiting request's own C-MOVE
                gate.set()
        await settled(running)

    assert retrieves(pacs) == 2
    assert len(instances_of(waiting)) == 6


async def test_large_instances_are_cached_whole_and_served_again_identical(
    tmp_path: Path,
) -> None:
    """Instances of 2 MiB: the trio receiver hands them over while they arrive (the cache
    records them fragment by fragment), the cache serves them from their files in chunks."""
    write_sample_study(tmp_path / "pacs", images=3, rows=1024, columns=1024, series=1)
    with DevPacs(FolderArchive(tmp_path / "pacs"), aet="FAULTY", port=0) as pacs:
        async with run_gateway(ae(pacs)) as running:
            pacs.add_destination("RST", *running.dimse_address)
            (cold,) = await download_all([series_url(running, pacs)], within=DOWNLOADS_WITHIN)
            (warm,) = await download_all([series_url(running, pacs)], within=DOWNLOADS_WITHIN)

        assert retrieves(pacs) == 1
    sources = {
        str(i.sop_instance_uid): pydicom.dcmread(i.path).PixelData for i in pacs.archive.instances()
    }
    for download in (cold, warm):
        received = {
            uid: pydicom.dcmread(DicomBytesIO(data)).PixelData
            for uid, data in instances_of(download).items()
        }
        assert received == sources
    assert instances_of(warm) == instances_of(cold)


@pytest.mark.parametrize("large", [False, True], ids=["whole", "streamed"])
async def test_metadata_is_derived_once_and_then_read_beside_the_cached_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, large: bool
) -> None:
    """The first series metadata derives each instance's JSON while the series arrives (and
    keeps it as the instances are cached, whole or recorded as they stream in); later requests,
    under another base URL too, read what was kept."""
    derived: list[str] = []
    derive = metadata._derive

    def counting(data: bytes, keys: RetrieveKeys, sop_uid: str) -> tuple[bytes, bool]:
        derived.append(sop_uid)
        return derive(data, keys, sop_uid)

    monkeypatch.setattr(metadata, "_derive", counting)
    size = 1024 if large else 64
    write_sample_study(tmp_path / "pacs", images=3, rows=size, columns=size, series=1)
    with DevPacs(FolderArchive(tmp_path / "pacs"), aet="FAULTY", port=0) as pacs:
        async with run_gateway(ae(pacs), http={"allowed_hosts": ["viewer.test"]}) as running:
            pacs.add_destination("RST", *running.dimse_address)
            url = f"{series_url(running, pacs)}/metadata"
            headers = {"Accept": "application/dicom+json"}
            async with httpx.AsyncClient(timeout=30) as client:
                cold = (await client.get(url, headers=headers)).json()
                warm = (await client.get(url, headers=headers)).json()
                other = await client.get(url, headers={**headers, "Host": "viewer.test"})
        assert retrieves(pacs) == 1

    assert sorted(derived) == sorted(str(i.sop_instance_uid) for i in pacs.archive.instances())
    assert warm == cold
    uris = [item["7FE00010"]["BulkDataURI"] for item in other.json()]
    assert uris == [u.replace(running.http_url, "http://viewer.test") for u in pixel_uris(cold)]
    assert all(u.startswith(f"{running.http_url}/aets/FAULTY/studies/") for u in pixel_uris(cold))


def pixel_uris(items: list[dict[str, Any]]) -> list[str]:
    return [str(item["7FE00010"]["BulkDataURI"]) for item in items]


@pytest.mark.parametrize("size", [512, 1024], ids=["whole", "streamed"])
async def test_frames_of_a_cached_instance_are_cut_by_its_layout_without_parsing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """The first frame request of a cached instance parses it and keeps its frame layout beside
    it; later ones read only the frames' bytes: no parse, the same bytes, native and
    encapsulated, one frame or a list, as stored or transcoded."""
    parses: list[int] = []
    read_part10 = part10.read_part10

    def counting(*args: Any, **kwargs: Any) -> Any:
        parses.append(1)
        return read_part10(*args, **kwargs)

    monkeypatch.setattr("rst.dicom.frames.read_part10", counting)
    [ct] = write_sample_study(tmp_path / "pacs", images=1, rows=size, columns=size, series=1)
    rle, _ = encapsulated(volume(5, rows=64, columns=64), fragments_per_frame=2)
    multi = pydicom.dcmread(DicomBytesIO(rle))
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "PatientID", "StudyDate"):
        if keyword in (original := pydicom.dcmread(ct, stop_before_pixels=True)):
            setattr(multi, keyword, getattr(original, keyword))
    multi.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.77"
    multi.save_as(tmp_path / "pacs" / "RLE.dcm", enforce_file_format=True)
    files = {str(pydicom.dcmread(p).SOPInstanceUID): p for p in (ct, tmp_path / "pacs" / "RLE.dcm")}
    octets, rle_type = "application/octet-stream", "image/dicom-rle"
    asks = [
        ("1", octets, "*"),
        ("1,1", octets, "1.2.840.10008.1.2.1"),
        ("1", rle_type, "1.2.840.10008.1.2.5"),
        ("5", octets, "*"),
        ("3,1,5", octets, "*"),
        ("2", octets, "1.2.840.10008.1.2.1"),
    ]
    with DevPacs(FolderArchive(tmp_path / "pacs"), aet="FAULTY", port=0) as pacs:
        async with run_gateway(ae(pacs)) as running:
            pacs.add_destination("RST", *running.dimse_address)
            study = str(pydicom.dcmread(ct, stop_before_pixels=True).StudyInstanceUID)
            async with httpx.AsyncClient(timeout=30) as client:
                for sop, path in files.items():
                    ds = pydicom.dcmread(path, stop_before_pixels=True)
                    url = (
                        f"{running.http_url}/aets/FAULTY/studies/{study}/series/"
                        f"{ds.SeriesInstanceUID}/instances/{sop}/frames"
                    )
                    count = int(ds.get("NumberOfFrames", 1) or 1)
                    for numbers, media, syntax in asks:
                        if max(map(int, numbers.split(","))) > count:
                            continue
                        accept = f"multipart/related; type={media}; transfer-syntax={syntax}"
                        headers = {"Accept": accept}
                        bodies, counts = [], []
                        for _ in range(4):  # cold, warm (derives the layout), warm, warm
                            before = len(parses)
                            got = await client.get(f"{url}/{numbers}", headers=headers)
                            assert got.status_code == 200, got.text
                            bodies.append([data for _, data in parts(got)])
                            counts.append(len(parses) - before)
                        wanted = [int(n) for n in numbers.split(",")]
                        want = FrameSource(path.read_bytes()).frames(
                            wanted, None if syntax == "*" else syntax
                        )
                        assert all(b == [f.data for f in want] for b in bodies), (sop, numbers)
                        assert counts[2:] == [0, 0], (sop, numbers, counts)
        assert retrieves(pacs) == 2
