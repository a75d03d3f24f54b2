"""The test infrastructure itself: Orthanc launcher, loopback shim, dcmtk helpers, sample data.

These tests also show that the helpers can fail (closed ports, unknown move destinations,
Orthanc start-up errors), so a green suite means something.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pydicom
import pytest
import trio

from tests.support import orthanc as orthanc_module
from tests.support.dcmqrscp import open_dcmqrscp
from tests.support.dcmtk import (
    DcmtkError,
    StoreDestination,
    echoscu,
    findscu,
    getscu,
    movescu,
    open_store_destination,
    open_storescp,
    storescu,
)
from tests.support.loopback import free_port, listening_sockets
from tests.support.orthanc import (
    Orthanc,
    OrthancError,
    add_modality,
    delete_all,
    http_client,
    open_orthanc,
    upload,
)
from tests.support.sample import StudyFiles, write_ct_study, write_multiframe

LOCALHOST = "127.0.0.1"


def _ss_listeners(port: int) -> list[str]:
    """Local addresses listening on ``port`` according to ``ss -Hltn``."""
    out = subprocess.run(
        ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    return [line.split()[3] for line in out.splitlines() if line.strip()]


def _received_sop_uids(folder: Path) -> set[str]:
    return {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in folder.iterdir()}


# --- Orthanc -------------------------------------------------------------------------------


@pytest.mark.integration
async def test_orthanc_listens_on_loopback_only(orthanc: Orthanc) -> None:
    sockets = listening_sockets(orthanc.pid)
    assert {s.port for s in sockets} == {orthanc.dicom_port, orthanc.http_port}
    assert all(s.host == LOCALHOST for s in sockets), sockets
    for port in (orthanc.dicom_port, orthanc.http_port):
        assert _ss_listeners(port) == [f"{LOCALHOST}:{port}"]


@pytest.mark.integration
async def test_orthanc_rest_and_dicomweb_plugin(orthanc: Orthanc) -> None:
    async with http_client(orthanc) as client:
        system = (await client.get("/system")).json()
        plugins = (await client.get("/plugins")).json()
        studies = await client.get("/dicom-web/studies")
    assert system["DicomAet"] == orthanc.aet
    assert system["DicomPort"] == orthanc.dicom_port
    assert "dicom-web" in plugins
    assert studies.status_code == 200
    assert studies.json() == []
    assert orthanc.dicomweb_url == f"http://{LOCALHOST}:{orthanc.http_port}/dicom-web"


@pytest.mark.integration
async def test_echoscu(orthanc: Orthanc) -> None:
    result = (await echoscu(LOCALHOST, orthanc.dicom_port, orthanc.aet)).check()
    assert result.status == "Success"


@pytest.mark.integration
async def test_echoscu_to_closed_port_fails() -> None:
    result = await echoscu(LOCALHOST, free_port(), "NOBODY")
    assert not result.ok
    with pytest.raises(DcmtkError, match="echoscu failed"):
        result.check()


@pytest.mark.integration
async def test_upload_then_findscu(orthanc: Orthanc, ct_study: StudyFiles) -> None:
    ids = await upload(orthanc, ct_study.paths)
    assert len(ids) == len(ct_study.paths) == 6

    studies = await findscu(
        LOCALHOST,
        orthanc.dicom_port,
        orthanc.aet,
        {"PatientID": "RST*", "StudyInstanceUID": "", "NumberOfStudyRelatedInstances": ""},
    )
    studies.check()
    assert [m.StudyInstanceUID for m in studies.matches] == [ct_study.study_uid]
    assert int(studies.matches[0].NumberOfStudyRelatedInstances) == 6

    series = await findscu(
        LOCALHOST,
        orthanc.dicom_port,
        orthanc.aet,
        {"StudyInstanceUID": ct_study.study_uid, "SeriesInstanceUID": ""},
        level="SERIES",
    )
    assert sorted(m.SeriesInstanceUID for m in series.check().matches) == sorted(
        ct_study.series_uids
    )

    nothing = await findscu(
        LOCALHOST, orthanc.dicom_port, orthanc.aet, {"PatientID": "SOMEONE-ELSE"}
    )
    assert nothing.check().matches == []


@pytest.mark.integration
async def test_movescu_to_storescp(
    orthanc_with_study: Orthanc, ct_study: StudyFiles, store_destination: StoreDestination
) -> None:
    orthanc = orthanc_with_study
    result = await movescu(
        LOCALHOST,
        orthanc.dicom_port,
        orthanc.aet,
        store_destination.aet,
        {"StudyInstanceUID": ct_study.study_uid},
    )
    assert result.check().status == "Success"
    assert len(store_destination.received()) == 6
    assert _received_sop_uids(store_destination.folder) == set(ct_study.sop_uids)


@pytest.mark.integration
async def test_movescu_series_level_moves_one_series(
    orthanc_with_study: Orthanc, ct_study: StudyFiles, store_destination: StoreDestination
) -> None:
    series_uid = ct_study.series_uids[1]
    result = await movescu(
        LOCALHOST,
        orthanc_with_study.dicom_port,
        orthanc_with_study.aet,
        store_destination.aet,
        {"StudyInstanceUID": ct_study.study_uid, "SeriesInstanceUID": series_uid},
        level="SERIES",
    )
    result.check()
    expected = {
        uid
        for uid, s in zip(ct_study.sop_uids, ct_study.instance_series, strict=True)
        if s == series_uid
    }
    assert len(expected) == 3
    assert _received_sop_uids(store_destination.folder) == expected


@pytest.mark.integration
async def test_movescu_to_unknown_destination_fails(
    orthanc_with_study: Orthanc, ct_study: StudyFiles
) -> None:
    result = await movescu(
        LOCALHOST,
        orthanc_with_study.dicom_port,
        orthanc_with_study.aet,
        "NOT-DECLARED",
        {"StudyInstanceUID": ct_study.study_uid},
    )
    assert result.status is not None
    assert result.status.startswith("Failed")
    with pytest.raises(DcmtkError):
        result.check()


@pytest.mark.integration
async def test_getscu(orthanc_with_study: Orthanc, ct_study: StudyFiles, tmp_path: Path) -> None:
    out = tmp_path / "got"
    result = await getscu(
        LOCALHOST,
        orthanc_with_study.dicom_port,
        orthanc_with_study.aet,
        {"StudyInstanceUID": ct_study.study_uid},
        output_dir=out,
    )
    result.check()
    assert result.suboperations["Completed"] == 6
    assert result.suboperations["Failed"] == 0
    assert len(list(out.iterdir())) == 6
    assert _received_sop_uids(out) == set(ct_study.sop_uids)


@pytest.mark.integration
async def test_getscu_refused_without_allow_get(ct_study: StudyFiles, tmp_path: Path) -> None:
    async with open_orthanc(tmp_path / "orthanc", allow_get=False, fast_stop=True) as orthanc:
        await upload(orthanc, ct_study.paths)
        result = await getscu(
            LOCALHOST,
            orthanc.dicom_port,
            orthanc.aet,
            {"StudyInstanceUID": ct_study.study_uid},
            ignore=True,
        )
    assert not result.ok


@pytest.mark.integration
async def test_storescu_to_storescp_on_loopback(ct_study: StudyFiles, tmp_path: Path) -> None:
    folder = tmp_path / "received"
    async with open_storescp(folder, "STORE-DEST", max_pdu=131072) as port:
        assert _ss_listeners(port) == [f"{LOCALHOST}:{port}"]
        result = await storescu(LOCALHOST, port, "STORE-DEST", ct_study.paths)
        assert result.check().store_statuses == ["Success"] * 6
    assert _received_sop_uids(folder) == set(ct_study.sop_uids)
    assert _ss_listeners(port) == []  # stopped


@pytest.mark.integration
@pytest.mark.parametrize("verbose", [False, True])
async def test_storescp_logs_each_store_only_when_verbose(
    ct_study: StudyFiles, tmp_path: Path, verbose: bool
) -> None:
    folder = tmp_path / "ignored"
    async with open_storescp(folder, "STORE-DEST", ignore=True, verbose=verbose) as port:
        (await storescu(LOCALHOST, port, "STORE-DEST", ct_study.paths)).check()
    log = folder.with_name(folder.name + ".storescp.log").read_text()
    assert log.count("Received Store Request") == (len(ct_study.paths) if verbose else 0)


@pytest.mark.integration
async def test_storescp_ignore_stores_nothing(ct_study: StudyFiles, tmp_path: Path) -> None:
    async with open_store_destination(tmp_path / "ignored", "SINK", ignore=True) as sink:
        (await storescu(sink.host, sink.port, sink.aet, ct_study.paths)).check()
    assert sink.received() == []


@pytest.mark.integration
async def test_add_modality_and_delete_all(orthanc_with_study: Orthanc) -> None:
    orthanc = orthanc_with_study
    await add_modality(orthanc, "elsewhere", "ELSEWHERE", LOCALHOST, 11112)
    async with http_client(orthanc) as client:
        modalities = (await client.get("/modalities", params={"expand": ""})).json()
        assert modalities["elsewhere"]["AET"] == "ELSEWHERE"
        assert modalities["elsewhere"]["AllowGet"] is True
        assert len((await client.get("/instances")).json()) == 6
        await delete_all(orthanc)
        assert (await client.get("/instances")).json() == []


@pytest.mark.integration
async def test_configured_modality_is_a_move_destination(
    ct_study: StudyFiles, tmp_path: Path
) -> None:
    async with open_store_destination(tmp_path / "received", "CONFIGURED") as dest:
        async with open_orthanc(
            tmp_path / "orthanc",
            aet="PACS",
            modalities={"configured": (dest.aet, dest.host, dest.port)},
            extra_config={"DicomWeb": {"StudiesMetadata": "MainDicomTags"}},
            fast_stop=True,
        ) as orthanc:
            assert orthanc.aet == "PACS"
            config = orthanc.config
            assert config is not None
            assert '"Root": "/dicom-web/"' in config.read_text()  # merged one level deep
            await upload(orthanc, ct_study.paths)
            result = await movescu(
                LOCALHOST,
                orthanc.dicom_port,
                "PACS",
                dest.aet,
                {"StudyInstanceUID": ct_study.study_uid},
            )
            result.check()
        assert len(dest.received()) == 6


@pytest.mark.integration
async def test_orthanc_graceful_stop_and_cancellation(tmp_path: Path) -> None:
    # Graceful path: SIGTERM, Orthanc exits on its own (a few seconds).
    async with open_orthanc(tmp_path / "graceful") as orthanc:
        pid = orthanc.pid
    assert not _alive(pid)
    assert orthanc.log is not None
    assert "Orthanc has stopped" in _read(orthanc.log)

    # Cancelled from outside while in use: the process is gone when the scope exits.
    pids: list[int] = []
    with trio.move_on_after(10) as scope:
        async with open_orthanc(tmp_path / "cancelled", fast_stop=True) as orthanc:
            pids.append(orthanc.pid)
            scope.cancel()
            await trio.sleep_forever()
    assert pids
    assert not _alive(pids[0])

    # Cancelled during start-up.
    with trio.move_on_after(0.01):
        async with open_orthanc(tmp_path / "starting"):
            pytest.fail("not ready that fast")
    assert "Orthanc" not in _children_names()


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _read(path: Path) -> str:
    return path.read_text()


def _children_names() -> str:
    """Command names of this process's children (from /proc)."""
    me = str(os.getpid())
    names = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm, _, rest = text.rpartition(")")
        if rest.split()[1] == me:  # fields after "(comm)": state, ppid, ...
            names.append(comm.partition("(")[2])
    return "\n".join(names)


@pytest.mark.integration
async def test_orthanc_start_failure_reports_log(tmp_path: Path) -> None:
    with pytest.raises(OrthancError, match=r"(?s)exited during start-up.*Unable to open"):
        async with open_orthanc(
            tmp_path / "broken", extra_config={"IndexDirectory": "/dev/null/x"}
        ):
            pytest.fail("should not start")


def test_missing_orthanc_tells_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(orthanc_module, "ORTHANC_BIN", Path("/nonexistent/Orthanc"))
    with pytest.raises(OrthancError, match="scripts/install-deps"):
        orthanc_module.require_orthanc()


# --- sample data ---------------------------------------------------------------------------


def test_sample_study_is_valid_and_deterministic(tmp_path: Path) -> None:
    study = write_ct_study(tmp_path / "a", images=7, series=3, rows=32, columns=48, seed=5)
    again = write_ct_study(tmp_path / "b", images=7, series=3, rows=32, columns=48, seed=5)
    other = write_ct_study(tmp_path / "c", images=7, series=3, rows=32, columns=48, seed=6)
    assert again.sop_uids == study.sop_uids
    assert [p.read_bytes() for p in again.paths] == [p.read_bytes() for p in study.paths]
    assert other.study_uid != study.study_uid
    assert not set(other.sop_uids) & set(study.sop_uids)
    assert len(set(study.sop_uids)) == 7
    assert [len(study.series_paths(s)) for s in study.series_uids] == [3, 2, 2]

    ds = pydicom.dcmread(study.paths[0])
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert ds.Modality == "CT"
    assert ds.StudyInstanceUID == study.study_uid
    assert ds.pixel_array.shape == (32, 48)
    assert str(ds.pixel_array.dtype) == "int16"
    for keyword in ("StudyDate", "StudyTime", "AccessionNumber", "StudyDescription"):
        assert ds.get(keyword), keyword
    first_series = study.series_paths(study.series_uids[0])
    assert [pydicom.dcmread(p).InstanceNumber for p in first_series] == [1, 2, 3]


def test_sample_study_explicit_uid_and_transfer_syntax(tmp_path: Path) -> None:
    study = write_ct_study(
        tmp_path,
        images=2,
        study_uid="1.2.3.4",
        transfer_syntax=pydicom.uid.RLELossless,
        patient_id="P1",
    )
    ds = pydicom.dcmread(study.paths[1])
    assert study.study_uid == ds.StudyInstanceUID == "1.2.3.4"
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.RLELossless
    assert ds.PatientID == "P1"
    assert ds.pixel_array.shape == (64, 64)


def test_multiframe(tmp_path: Path) -> None:
    mf = write_multiframe(tmp_path, frames=5, rows=16, columns=24)
    ds = pydicom.dcmread(mf.paths[0])
    assert ds.NumberOfFrames == 5
    assert ds.pixel_array.shape == (5, 16, 24)
    assert ds.SOPInstanceUID == mf.sop_uids[0]
    assert len(ds.PerFrameFunctionalGroupsSequence) == 5


def test_benchmark_study_size(tmp_path: Path) -> None:
    # The benchmark study is 200 such images: ~105 MB.
    study = write_ct_study(tmp_path, images=4, rows=512, columns=512)
    per_image = study.total_bytes / 4
    assert 100e6 < 200 * per_image < 110e6


@pytest.mark.integration
async def test_orthanc_accepts_multiframe(orthanc: Orthanc, tmp_path: Path) -> None:
    mf = write_multiframe(tmp_path, frames=3)
    [instance_id] = await upload(orthanc, mf.paths)
    async with http_client(orthanc) as client:
        frames = (await client.get(f"/instances/{instance_id}/frames")).json()
    assert frames == [0, 1, 2]


# --- dcmqrscp ---------------------------------------------------------------------------------


@pytest.mark.integration
async def test_dcmqrscp_serves_its_files_and_stores_on_loopback(
    ct_study: StudyFiles, tmp_path: Path
) -> None:
    loaded, sent = ct_study.paths[:3], ct_study.paths[3:]
    async with open_dcmqrscp(tmp_path / "qr", files=loaded) as qr:
        assert _ss_listeners(qr.port) == [f"{LOCALHOST}:{qr.port}"]
        keys = {
            "StudyInstanceUID": ct_study.study_uid,
            "SeriesInstanceUID": ct_study.series_uids[0],
            "SOPInstanceUID": "",
        }
        found = await findscu(LOCALHOST, qr.port, qr.aet, keys, level="IMAGE")
        stored = await storescu(LOCALHOST, qr.port, qr.aet, sent)
        assert stored.check().store_statuses == ["Success"] * len(sent)
        held = qr.stored()
    assert {str(ds.SOPInstanceUID) for ds in found.check().matches} == set(ct_study.sop_uids[:3])
    assert set(held) == set(ct_study.sop_uids)
    assert _ss_listeners(qr.port) == []  # stopped
    with pytest.raises(ProcessLookupError):  # and so are the children that served associations
        os.killpg(qr.pid, 0)
