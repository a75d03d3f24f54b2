"""rst in front of a real Orthanc, driven by real clients (dicomweb-client, httpx).

Every route is exercised against Orthanc; retrieved pixel data must be byte-identical to what
was uploaded.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any, Literal

import httpx
import pydicom
import pytest
import trio
from dicomweb_client.api import DICOMwebClient

from rst.backends.dimse.incoming import STREAM_AFTER
from rst.config import AeConfig
from rst.dicom.multipart import MultipartWriter
from rst.server import Running
from tests.support.download import Download
from tests.support.gateway import run_gateway, wait_until
from tests.support.orthanc import Orthanc, add_modality, http_client
from tests.support.receiver_counts import stores
from tests.support.relay import open_relay
from tests.support.sample import StudyFiles, write_ct_study, write_multiframe

pytestmark = pytest.mark.integration

Mode = Literal["move", "get"]


@pytest.fixture
async def move_gateway(orthanc_with_study: Orthanc) -> AsyncIterator[Running]:
    orthanc = orthanc_with_study
    config = AeConfig(aet=orthanc.aet, host="127.0.0.1", port=orthanc.dicom_port)
    async with run_gateway(config) as running:
        await add_modality(orthanc, "rst", "RST", *running.dimse_address)
        yield running


def base(running: Running) -> str:
    return f"{running.http_url}/aets/ORTHANC"


def dicomweb(running: Running) -> DICOMwebClient:
    return DICOMwebClient(url=base(running))


async def in_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """dicomweb-client is synchronous (requests): run it off the event loop rst runs on."""
    return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs))


def pixels(path_or_ds: Any) -> bytes:
    ds = path_or_ds if isinstance(path_or_ds, pydicom.Dataset) else pydicom.dcmread(path_or_ds)
    return bytes(ds.PixelData)


def sources(study: StudyFiles) -> dict[str, bytes]:
    return {uid: pixels(path) for uid, path in zip(study.sop_uids, study.paths, strict=True)}


# -- AEs and health -----------------------------------------------------------------------------


async def test_aets_and_health(move_gateway: Running) -> None:
    async with httpx.AsyncClient() as http:
        aets = (await http.get(f"{move_gateway.http_url}/aets")).json()
        health = await http.get(base(move_gateway))
        unknown = await http.get(f"{move_gateway.http_url}/aets/NOPE/studies")
    assert [a["aet"] for a in aets] == ["ORTHANC"]
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert unknown.status_code == 404
    assert "NOPE" in unknown.json()["error"]


# -- QIDO-RS ------------------------------------------------------------------------------------


async def test_search_studies_with_dicomweb_client(
    move_gateway: Running, ct_study: StudyFiles
) -> None:
    studies = await in_thread(dicomweb(move_gateway).search_for_studies)
    assert len(studies) == 1
    row = pydicom.Dataset.from_json(studies[0])
    assert row.StudyInstanceUID == ct_study.study_uid
    assert row.NumberOfStudyRelatedInstances == len(ct_study.paths)
    # dicomweb-client sends "Host" without the port, so only the path can be compared here
    # (deployments behind proxies set http.base_url); httpx below sends the full Host.
    assert row.RetrieveURL.endswith(f"/aets/ORTHANC/studies/{ct_study.study_uid}")
    async with httpx.AsyncClient() as http:
        rows = (await http.get(f"{base(move_gateway)}/studies")).json()
    assert rows[0]["00081190"]["Value"] == [f"{base(move_gateway)}/studies/{ct_study.study_uid}"]


async def test_search_series_rows_carry_the_study_uid(
    move_gateway: Running, ct_study: StudyFiles
) -> None:
    client = dicomweb(move_gateway)
    for rows in (
        await in_thread(client.search_for_series, ct_study.study_uid),
        await in_thread(client.search_for_series),
    ):
        assert len(rows) == 2
        for row in rows:
            ds = pydicom.Dataset.from_json(row)
            assert ds.StudyInstanceUID == ct_study.study_uid
            assert ds.SeriesInstanceUID in ct_study.series_uids


async def test_search_instances_at_every_resource(
    move_gateway: Running, ct_study: StudyFiles
) -> None:
    client = dicomweb(move_gateway)
    series = ct_study.series_uids[0]
    in_series = await in_thread(client.search_for_instances, ct_study.study_uid, series)
    in_study = await in_thread(client.search_for_instances, ct_study.study_uid)
    everywhere = await in_thread(client.search_for_instances)
    assert len(in_series) == len(ct_study.series_paths(series))
    assert len(in_study) == len(everywhere) == len(ct_study.paths)
    uids = {pydicom.Dataset.from_json(r).SOPInstanceUID for r in everywhere}
    assert uids == set(ct_study.sop_uids)


async def test_query_parameters_reach_the_pacs_decoded(
    move_gateway: Running, ct_study: StudyFiles
) -> None:
    async with httpx.AsyncClient(base_url=base(move_gateway)) as http:
        # %2A is "*": Orthanc itself would not decode it; rst must.
        wildcard = await http.get("/studies?PatientName=TEST%2A")
        nothing = await http.get("/studies", params={"PatientName": "NOBODY*"})
        uid_list = await http.get(
            "/studies", params={"StudyInstanceUID": f"1.2.3,{ct_study.study_uid}"}
        )
        backslash = await http.get(
            "/studies", params={"StudyInstanceUID": f"1.2.3\\{ct_study.study_uid}"}
        )
        date_range = await http.get("/studies", params={"StudyDate": "19000101-21000101"})
        outside = await http.get("/studies", params={"StudyDate": "-19000101"})
    assert len(wildcard.json()) == 1
    assert nothing.status_code == 200
    assert nothing.json() == []
    assert len(uid_list.json()) == 1
    assert len(backslash.json()) == 1
    assert len(date_range.json()) == 1
    assert outside.json() == []


async def test_includefield_limit_offset_and_warnings(
    move_gateway: Running, ct_study: StudyFiles
) -> None:
    async with httpx.AsyncClient(base_url=base(move_gateway)) as http:
        included = await http.get(
            f"/studies/{ct_study.study_uid}/instances",
            params=[("includefield", "ImageType,SliceThickness"), ("includefield", "00280030")],
        )
        page = await http.get("/instances", params={"limit": "2", "offset": "1"})
        last = await http.get("/instances", params={"limit": "10", "offset": "4"})
        fuzzy = await http.get("/studies", params={"fuzzymatching": "true"})
        bad = await http.get("/studies", params={"NoSuchAttribute": "x"})
        bad_limit = await http.get("/studies", params={"limit": "-1"})
    row = included.json()[0]
    assert {"00080008", "00180050", "00280030"} <= row.keys()
    assert len(page.json()) == 2
    assert "additional results" in page.headers["Warning"]
    assert page.headers["Warning"].startswith("299 ")
    assert len(last.json()) == len(ct_study.paths) - 4
    assert "Warning" not in last.headers
    assert "fuzzymatching" in fuzzy.headers["Warning"]
    assert bad.status_code == 400
    assert "NoSuchAttribute" in bad.json()["error"]
    assert bad_limit.status_code == 400


# -- WADO-RS ------------------------------------------------------------------------------------


async def test_retrieve_study_series_instance_byte_identical(
    gateway: Running, ct_study: StudyFiles
) -> None:
    client = dicomweb(gateway)
    expected = sources(ct_study)
    study = await in_thread(client.retrieve_study, ct_study.study_uid)
    assert {ds.SOPInstanceUID: pixels(ds) for ds in study} == expected

    series_uid = ct_study.series_uids[1]
    series = await in_thread(client.retrieve_series, ct_study.study_uid, series_uid)
    assert {ds.SeriesInstanceUID for ds in series} == {series_uid}
    assert len(series) == len(ct_study.series_paths(series_uid))

    sop = ct_study.sop_uids[3]
    series_of_sop = ct_study.instance_series[3]
    instance = await in_thread(client.retrieve_instance, ct_study.study_uid, series_of_sop, sop)
    assert instance.SOPInstanceUID == sop
    assert pixels(instance) == expected[sop]


async def test_retrieve_multipart_shape(gateway: Running, ct_study: StudyFiles) -> None:
    async with httpx.AsyncClient(base_url=base(gateway), timeout=60) as http:
        first = await http.get(f"/studies/{ct_study.study_uid}")
        second = await http.get(
            f"/studies/{ct_study.study_uid}",
            headers={"Accept": "multipart/related; type=application/dicom; transfer-syntax=*"},
        )
    content_type = first.headers["Content-Type"]
    assert content_type.startswith('multipart/related; type="application/dicom"')
    boundary = content_type.split("boundary=")[1]
    assert boundary != second.headers["Content-Type"].split("boundary=")[1]  # random per response
    parts = first.content.split(f"--{boundary}".encode())
    assert len(parts) == len(ct_study.paths) + 2  # preamble, parts, closing "--"
    for part in parts[1:-1]:
        assert part.startswith(
            b"\r\nContent-Type: application/dicom; transfer-syntax=1.2.840.10008.1.2.1\r\n"
        )


async def test_retrieve_errors(gateway: Running, ct_study: StudyFiles) -> None:
    async with httpx.AsyncClient(base_url=base(gateway), timeout=60) as http:
        missing = await http.get("/studies/1.2.3.4.5")
        unacceptable = await http.get(
            f"/studies/{ct_study.study_uid}", headers={"Accept": "image/jpeg"}
        )
        frame = await http.get(
            f"/studies/{ct_study.study_uid}/series/{ct_study.instance_series[0]}"
            f"/instances/{ct_study.sop_uids[0]}/frames/99"
        )
    assert missing.status_code == 404
    assert unacceptable.status_code == 406
    assert frame.status_code == 404  # a frame number out of range
    assert "frame" in frame.json()["error"]
    for response in (missing, unacceptable, frame):
        assert response.json()["error"]


# -- STOW-RS ------------------------------------------------------------------------------------


async def test_store_through_rst_with_dicomweb_client(
    move_gateway: Running, orthanc_with_study: Orthanc, tmp_path: Any
) -> None:
    new = write_ct_study(tmp_path / "new", images=3, seed=7, patient_id="STOW-1")
    datasets = [pydicom.dcmread(p) for p in new.paths]
    result = await in_thread(dicomweb(move_gateway).store_instances, datasets)
    referenced = result.ReferencedSOPSequence
    assert {item.ReferencedSOPInstanceUID for item in referenced} == set(new.sop_uids)
    assert "FailedSOPSequence" not in result
    async with http_client(orthanc_with_study) as orthanc:
        found = await orthanc.post(
            "/tools/find", json={"Level": "Instance", "Query": {"PatientID": "STOW-1"}}
        )
    assert len(found.json()) == 3
    # and back through rst, byte-identical
    study = await in_thread(dicomweb(move_gateway).retrieve_study, new.study_uid)
    assert {ds.SOPInstanceUID: pixels(ds) for ds in study} == sources(new)


async def test_store_status_codes(move_gateway: Running, tmp_path: Any) -> None:
    new = write_ct_study(tmp_path / "new", images=2, seed=8)
    writer = MultipartWriter()
    body = b"".join(writer.part_head("application/dicom") + p.read_bytes() for p in new.paths)
    body += writer.part_head("application/dicom") + b"this is not DICOM"
    body += writer.close()
    headers = {"Content-Type": writer.content_type("application/dicom")}
    async with httpx.AsyncClient(base_url=base(move_gateway), timeout=60) as http:
        partial = await http.post("/studies", content=body, headers=headers)
        mismatch = await http.post("/studies/1.2.3.4", content=body, headers=headers)
        wrong_type = await http.post(
            "/studies", content=b"{}", headers={"Content-Type": "application/json"}
        )
    assert partial.status_code == 202
    assert len(partial.json()["00081199"]["Value"]) == 2  # ReferencedSOPSequence
    failed = partial.json()["00081198"]["Value"]  # FailedSOPSequence
    assert [item["00081197"]["Value"][0] for item in failed] == [0xC000]
    assert mismatch.status_code == 409
    reasons = {i["00081197"]["Value"][0] for i in mismatch.json()["00081198"]["Value"]}
    assert reasons == {0xA900, 0xC000}
    assert wrong_type.status_code == 415


# -- cancellation ---------------------------------------------------------------------------------


async def test_disconnect_mid_retrieve_releases_everything(orthanc: Orthanc, tmp_path: Any) -> None:
    big = write_ct_study(tmp_path / "big", images=40, rows=256, columns=256)
    from tests.support.orthanc import upload

    await upload(orthanc, big.paths)
    config = AeConfig(aet=orthanc.aet, host="127.0.0.1", port=orthanc.dicom_port)
    async with run_gateway(config, dimse={"channel_size": 1}) as running:
        await add_modality(orthanc, "rst", "RST", *running.dimse_address)
        host, port = running.http_url.removeprefix("http://").split(":")
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            path = f"/aets/ORTHANC/studies/{big.study_uid}"
            await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            received = b""
            while b"\r\n\r\n" not in received:  # the headers and the start of the first part
                received += await stream.receive_some(65536)
            assert received.startswith(b"HTTP/1.1 200")
        # the client has hung up mid-retrieve
        backend: Any = running.backends["ORTHANC"]
        with trio.fail_after(2):
            await wait_until(
                lambda: backend.peer.open_associations == 0 and len(running.mediator) == 0,
                within=2,
                what="the C-MOVE association to be closed",
            )
        assert stores(running.receiver, "accepted") < len(big.paths)


# -- transfer syntaxes ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["move", "get"])
async def test_compressed_study_default_and_as_stored(
    orthanc: Orthanc, tmp_path: Any, mode: Mode
) -> None:
    from tests.support.orthanc import upload

    rle = "1.2.840.10008.1.2.5"
    study = write_ct_study(tmp_path / "rle", images=3, transfer_syntax=rle, seed=11)
    await upload(orthanc, study.paths)
    decoded = {
        ds.SOPInstanceUID: ds.pixel_array.tobytes() for ds in map(pydicom.dcmread, study.paths)
    }
    config = AeConfig(aet=orthanc.aet, host="127.0.0.1", port=orthanc.dicom_port, retrieve=mode)
    async with run_gateway(config) as running:
        await add_modality(orthanc, "rst", "RST", *running.dimse_address)
        client = dicomweb(running)
        # default Accept: Explicit VR Little Endian, decompressed by rst (or the PACS)
        default = await in_thread(client.retrieve_study, study.study_uid)
        assert {ds.file_meta.TransferSyntaxUID for ds in default} == {"1.2.840.10008.1.2.1"}
        assert {ds.SOPInstanceUID: ds.pixel_array.tobytes() for ds in default} == decoded
        # "as stored": the PACS decides which of the proposed syntaxes it sends. Orthanc sends
        # C-MOVE sub-operations as stored, and C-GET ones too when a context offers the stored
        # syntax (rst's per-class proposal); what arrives is passed through unchanged and
        # labelled with its real syntax.
        stored = await in_thread(
            client.retrieve_study, study.study_uid, media_types=(("application/dicom", "*"),)
        )
        assert {ds.file_meta.TransferSyntaxUID for ds in stored} == {rle}
        assert {ds.SOPInstanceUID: ds.pixel_array.tobytes() for ds in stored} == decoded


# -- large instances ------------------------------------------------------------------------------


@pytest.fixture
async def large_in_orthanc(orthanc: Orthanc, tmp_path: Any) -> StudyFiles:
    """A 4 MiB multi-frame instance (32 frames of 256x256, 16 bit) in a study of its own."""
    from tests.support.orthanc import upload

    large = write_multiframe(
        tmp_path / "large", frames=32, rows=256, columns=256, seed=21, patient_id="LARGE-MF"
    )
    assert large.total_bytes > 3 * STREAM_AFTER
    await upload(orthanc, large.paths)
    return large


@pytest.mark.parametrize("mode", ["move", "get"])
async def test_large_multiframe_instance_byte_identical(
    orthanc: Orthanc, large_in_orthanc: StudyFiles, mode: Mode
) -> None:
    """Study, series and instance retrieves of a multi-frame instance larger than the size
    after which rst streams it: the pixel data, every frame, byte for byte."""
    large = large_in_orthanc
    expected = pixels(large.paths[0])
    config = AeConfig(aet=orthanc.aet, host="127.0.0.1", port=orthanc.dicom_port, retrieve=mode)
    async with run_gateway(config) as running:
        await add_modality(orthanc, "rst", "RST", *running.dimse_address)
        client = dicomweb(running)
        study = await in_thread(client.retrieve_study, large.study_uid)
        stored = await in_thread(
            client.retrieve_study, large.study_uid, media_types=(("application/dicom", "*"),)
        )
        series = await in_thread(client.retrieve_series, large.study_uid, large.series_uids[0])
        instance = await in_thread(
            client.retrieve_instance, large.study_uid, large.series_uids[0], large.sop_uids[0]
        )
    for got in (*study, *stored, *series, instance):
        assert got.SOPInstanceUID == large.sop_uids[0]
        assert got.NumberOfFrames == 32
        assert pixels(got) == expected
    assert len(study) == len(stored) == len(series) == 1
    assert study[0].file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"


@pytest.mark.parametrize("mode", ["move", "get"])
async def test_large_instance_from_orthanc_reaches_the_client_before_it_has_fully_arrived(
    orthanc: Orthanc, large_in_orthanc: StudyFiles, mode: Mode
) -> None:
    """Orthanc's connection passes a relay that holds it 2 MiB into the instance: by then the
    HTTP client has more than a MiB of the response. Let go, the instance completes intact."""
    large = large_in_orthanc
    hold_after = 2 * 1024**2
    async with AsyncExitStack() as stack:
        if mode == "get":
            relay = await stack.enter_async_context(
                open_relay(("127.0.0.1", orthanc.dicom_port), hold_after=hold_after)
            )
            host, port = relay.address
            config = AeConfig(aet=orthanc.aet, host=host, port=port, retrieve="get")
            running = await stack.enter_async_context(run_gateway(config))
            await add_modality(orthanc, "rst", "RST", *running.dimse_address)
        else:
            config = AeConfig(aet=orthanc.aet, host="127.0.0.1", port=orthanc.dicom_port)
            running = await stack.enter_async_context(run_gateway(config))
            relay = await stack.enter_async_context(
                open_relay(running.dimse_address, hold_after=hold_after)
            )
            await add_modality(orthanc, "rst", "RST", *relay.address)
        download = Download(f"{base(running)}/studies/{large.study_uid}")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(download.run)
            with trio.fail_after(20):
                await relay.held.wait()
                await download.flowing.wait()  # without streaming: nothing while held
            assert not download.done.is_set()
            relay.resume()
            with trio.fail_after(60):
                await download.done.wait()
    assert download.status == 200
    assert download.error is None
    [(syntax, data)] = download.parts()
    assert syntax == "1.2.840.10008.1.2.1"
    got = pydicom.dcmread(io.BytesIO(data))
    assert got.SOPInstanceUID == large.sop_uids[0]
    assert pixels(got) == pixels(large.paths[0])
