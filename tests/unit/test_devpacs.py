"""rst.devpacs: the archive's C-FIND matching and the DevPacs SCP over real pynetdicom associations.

Every server binds 127.0.0.1 port 0 and is stopped in a fixture finaliser; threads synchronise
through queues / events with bounded timeouts (no sleeps).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)
from pynetdicom import (
    AE,
    ALL_TRANSFER_SYNTAXES,
    AllStoragePresentationContexts,
    build_role,
    evt,
)

from rst.devpacs import DevPacs, Faults, FolderArchive, write_sample_study

VERIFICATION = UID("1.2.840.10008.1.1")
STUDY_FIND = UID("1.2.840.10008.5.1.4.1.2.2.1")
STUDY_MOVE = UID("1.2.840.10008.5.1.4.1.2.2.2")
STUDY_GET = UID("1.2.840.10008.5.1.4.1.2.2.3")
PATIENT_FIND = UID("1.2.840.10008.5.1.4.1.2.1.1")
TIMEOUT = 10.0
IMAGES = 6  # 2 series of 3


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture
def study(tmp_path: Path) -> list[Path]:
    return write_sample_study(tmp_path / "pacs", images=IMAGES, rows=16, columns=16, series=2)


@pytest.fixture
def archive(study: list[Path]) -> FolderArchive:
    return FolderArchive(study[0].parent)


@pytest.fixture
def make_pacs(archive: FolderArchive) -> Iterator[Callable[..., DevPacs]]:
    started: list[DevPacs] = []

    def make(**kwargs: Any) -> DevPacs:
        pacs = DevPacs(archive, **kwargs)
        pacs.ae.dimse_timeout = TIMEOUT
        started.append(pacs)
        pacs.start()
        return pacs

    yield make
    for pacs in started:
        pacs.stop()


@pytest.fixture
def pacs(make_pacs: Callable[..., DevPacs]) -> DevPacs:
    return make_pacs()


class Received(NamedTuple):
    sop_instance_uid: str
    originator_aet: str | None
    originator_id: int | None
    transfer_syntax: str


@dataclass
class Destination:
    """A pynetdicom Storage SCP standing in for the gateway's C-MOVE receiver."""

    aet: str
    port: int
    received: queue.Queue[Received] = field(default_factory=queue.Queue)
    aborted: threading.Event = field(default_factory=threading.Event)

    def drain(self) -> list[Received]:
        items = []
        while not self.received.empty():
            items.append(self.received.get_nowait())
        return items


@pytest.fixture
def destination() -> Iterator[Destination]:
    ae = AE(ae_title="DEST")
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(str(cx.abstract_syntax), ALL_TRANSFER_SYNTAXES)
    box: list[Destination] = []

    def on_store(event: Any) -> int:
        req = event.request
        box[0].received.put(
            Received(
                str(req.AffectedSOPInstanceUID),
                req.MoveOriginatorApplicationEntityTitle,
                req.MoveOriginatorMessageID,
                str(event.context.transfer_syntax),
            )
        )
        return 0x0000

    server = ae.start_server(
        ("127.0.0.1", 0),
        block=False,
        evt_handlers=[
            (evt.EVT_C_STORE, on_store),
            (evt.EVT_ABORTED, lambda event: box[0].aborted.set()),
        ],
    )
    assert server is not None
    try:
        box.append(Destination("DEST", int(server.server_address[1])))
        yield box[0]
    finally:
        server.shutdown()


def associate(pacs: DevPacs, *contexts: UID, get_roles: bool = False) -> Any:
    ae = AE(ae_title="SCU")
    ae.dimse_timeout = TIMEOUT
    ae.acse_timeout = TIMEOUT
    for uid in contexts:
        ae.add_requested_context(uid)
    ext_neg: list[Any] = []
    if get_roles:
        ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        ext_neg.append(build_role(CTImageStorage, scp_role=True))
    return ae.associate("127.0.0.1", pacs.port, ae_title=pacs.aet, ext_neg=ext_neg)


@pytest.fixture
def scu(pacs: DevPacs) -> Iterator[Any]:
    assoc = associate(pacs, VERIFICATION, STUDY_FIND, STUDY_MOVE, PATIENT_FIND)
    assert assoc.is_established
    try:
        yield assoc
    finally:
        assoc.release()


def query(level: str, **keys: Any) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def find(assoc: Any, identifier: Dataset, model: UID = STUDY_FIND) -> list[Dataset]:
    results = []
    final = None
    for status, ds in assoc.send_c_find(identifier, model):
        if status.Status in (0xFF00, 0xFF01):
            results.append(ds)
        else:
            final = status.Status
    assert final == 0x0000
    return results


def run_retrieve(responses: Iterator[tuple[Dataset, Dataset | None]]) -> list[Dataset]:
    return [status for status, _ in responses if "Status" in status]


def context_id(assoc: Any, uid: UID) -> int:
    return int(next(cx.context_id for cx in assoc.accepted_contexts if cx.abstract_syntax == uid))


def in_thread(target: Callable[[], list[Dataset]]) -> queue.Queue[list[Dataset] | BaseException]:
    out: queue.Queue[list[Dataset] | BaseException] = queue.Queue()

    def run() -> None:
        try:
            out.put(target())
        except BaseException as exc:  # handed to the test thread
            out.put(exc)

    threading.Thread(target=run, daemon=True).start()
    return out


def result(out: queue.Queue[list[Dataset] | BaseException]) -> list[Dataset]:
    value = out.get(timeout=TIMEOUT)
    if isinstance(value, BaseException):
        raise value
    return value


# ---------------------------------------------------------------------------- archive


def test_archive_indexes_sample(archive: FolderArchive, study: list[Path]) -> None:
    assert len(archive) == IMAGES
    ds = dcmread(study[0])
    assert ds.PatientName == "RST^DEMO"
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.pixel_array.shape == (16, 16)


def test_archive_matching_rules(archive: FolderArchive) -> None:
    def count(level: str, **keys: Any) -> int:
        return len(list(archive.match(query(level, **keys))))

    assert count("STUDY", PatientName="rst^d?mo") == 1  # PN: case-insensitive wildcard
    assert count("STUDY", PatientID="rst-demo") == 0  # LO: case-sensitive
    assert count("STUDY", PatientID="RST-*") == 1
    assert count("STUDY", StudyDate="20240315") == 1
    assert count("STUDY", StudyDate="-20240314") == 0
    assert count("STUDY", StudyDate="20240315-") == 1
    assert count("STUDY", StudyTime="1000-1100") == 1
    assert count("STUDY", ModalitiesInStudy="MR") == 0
    assert count("STUDY", ModalitiesInStudy=["MR", "CT"]) == 1
    assert count("SERIES", SeriesDescription="*2") == 1
    assert count("SERIES", Modality="") == 2  # universal
    assert count("IMAGE", AccessionNumber="NOPE*") == 0
    assert count("IMAGE") == IMAGES
    assert count("PATIENT", PatientID="RST-DEMO") == 1
    with pytest.raises(ValueError, match="QueryRetrieveLevel"):
        archive.match(query("FRAME"))


def test_archive_paths_levels(archive: FolderArchive, study: list[Path]) -> None:
    first, last = dcmread(study[0]), dcmread(study[-1])
    assert len(archive.paths(query("STUDY", StudyInstanceUID=first.StudyInstanceUID))) == IMAGES
    assert len(archive.paths(query("SERIES", SeriesInstanceUID=first.SeriesInstanceUID))) == 3
    both = [first.SeriesInstanceUID, last.SeriesInstanceUID]
    assert len(archive.paths(query("SERIES", SeriesInstanceUID=both))) == IMAGES
    sops = [first.SOPInstanceUID, last.SOPInstanceUID]
    assert archive.paths(query("IMAGE", SOPInstanceUID=sops)) == [study[0], study[-1]]
    with pytest.raises(ValueError, match="unique key"):
        archive.paths(query("STUDY"))


def test_archive_store_and_rescan(archive: FolderArchive, tmp_path: Path) -> None:
    [extra] = write_sample_study(tmp_path / "extra", images=1, series=1, rows=8, columns=8, seed=3)
    ds = dcmread(extra)
    path = archive.store(ds, ds.file_meta)
    assert path.is_relative_to(archive.root)
    assert len(archive) == IMAGES + 1
    assert len(FolderArchive(archive.root)) == IMAGES + 1
    assert dcmread(path).SOPInstanceUID == ds.SOPInstanceUID


# ---------------------------------------------------------------------------- services


def test_echo(pacs: DevPacs, scu: Any) -> None:
    assert scu.send_c_echo().Status == 0x0000
    assert "echo" in pacs.events


def test_find_study_level(scu: Any) -> None:
    [row] = find(
        scu,
        query(
            "STUDY",
            PatientName="RST*",
            StudyDate="20240101-20241231",
            StudyInstanceUID="",
            StudyDescription="",
            ModalitiesInStudy="",
            NumberOfStudyRelatedSeries="",
            NumberOfStudyRelatedInstances="",
        ),
    )
    assert row.StudyDescription == "RST demo CT"
    assert row.ModalitiesInStudy == "CT"
    assert int(row.NumberOfStudyRelatedSeries) == 2
    assert int(row.NumberOfStudyRelatedInstances) == IMAGES
    assert row.StudyInstanceUID
    assert find(scu, query("STUDY", StudyDate="-20231231", StudyInstanceUID="")) == []


def test_find_series_without_study_uid(scu: Any) -> None:
    rows = find(scu, query("SERIES", SeriesNumber="", NumberOfSeriesRelatedInstances=""))
    assert [int(r.SeriesNumber) for r in rows] == [1, 2]
    assert all(int(r.NumberOfSeriesRelatedInstances) == 3 for r in rows)
    assert all(r.StudyInstanceUID and r.SeriesInstanceUID for r in rows)


def test_find_image_uid_list(scu: Any, study: list[Path]) -> None:
    sops = [dcmread(study[1]).SOPInstanceUID, dcmread(study[4]).SOPInstanceUID, "1.2.3.4"]
    rows = find(scu, query("IMAGE", SOPInstanceUID=sops, InstanceNumber=""))
    assert sorted(str(r.SOPInstanceUID) for r in rows) == sorted(sops[:2])


def test_find_patient_root(scu: Any) -> None:
    [row] = find(scu, query("PATIENT", PatientID="RST-DEMO", PatientName=""), PATIENT_FIND)
    assert row.PatientName == "RST^DEMO"


def test_move_study(make_pacs: Callable[..., DevPacs], destination: Destination) -> None:
    pacs = make_pacs(destinations={"DEST": ("127.0.0.1", destination.port)})
    assoc = associate(pacs, STUDY_MOVE)
    try:
        uid = next(iter(pacs.archive.instances())).study_uid
        statuses = run_retrieve(
            assoc.send_c_move(query("STUDY", StudyInstanceUID=uid), "DEST", STUDY_MOVE, msg_id=7)
        )
    finally:
        assoc.release()
    final = statuses[-1]
    assert final.Status == 0x0000
    assert final.NumberOfCompletedSuboperations == IMAGES
    received = destination.drain()
    assert len(received) == IMAGES
    assert {(r.originator_aet, r.originator_id) for r in received} == {("SCU", 7)}
    assert {r.transfer_syntax for r in received} == {ExplicitVRLittleEndian}
    assert "move" in pacs.events


def test_move_series_level_moves_only_that_series(
    make_pacs: Callable[..., DevPacs], destination: Destination
) -> None:
    pacs = make_pacs()
    pacs.add_destination("DEST", "127.0.0.1", destination.port)
    series_uid = pacs.archive.instances()[-1].series_uid
    assoc = associate(pacs, STUDY_MOVE)
    try:
        ident = query("SERIES", SeriesInstanceUID=series_uid)
        statuses = run_retrieve(assoc.send_c_move(ident, "DEST", STUDY_MOVE))
    finally:
        assoc.release()
    assert statuses[-1].NumberOfCompletedSuboperations == 3
    expected = {i.sop_instance_uid for i in pacs.archive.instances() if i.series_uid == series_uid}
    assert {r.sop_instance_uid for r in destination.drain()} == expected


def test_move_unknown_destination(pacs: DevPacs, scu: Any) -> None:
    uid = pacs.archive.instances()[0].study_uid
    statuses = run_retrieve(
        scu.send_c_move(query("STUDY", StudyInstanceUID=uid), "NOBODY", STUDY_MOVE)
    )
    assert statuses[-1].Status == 0xA801


def test_move_omit_move_originator(
    make_pacs: Callable[..., DevPacs], destination: Destination
) -> None:
    pacs = make_pacs(
        destinations={"DEST": ("127.0.0.1", destination.port)},
        faults=Faults(omit_move_originator=True),
    )
    assoc = associate(pacs, STUDY_MOVE)
    try:
        uid = pacs.archive.instances()[0].study_uid
        statuses = run_retrieve(
            assoc.send_c_move(query("STUDY", StudyInstanceUID=uid), "DEST", STUDY_MOVE)
        )
    finally:
        assoc.release()
    assert statuses[-1].Status == 0x0000
    received = destination.drain()
    assert len(received) == IMAGES
    assert {(r.originator_aet, r.originator_id) for r in received} == {(None, None)}


def test_move_drop_instances_claims_all_completed(
    make_pacs: Callable[..., DevPacs], destination: Destination
) -> None:
    pacs = make_pacs(
        destinations={"DEST": ("127.0.0.1", destination.port)}, faults=Faults(drop_instances=2)
    )
    assoc = associate(pacs, STUDY_MOVE)
    try:
        uid = pacs.archive.instances()[0].study_uid
        statuses = run_retrieve(
            assoc.send_c_move(query("STUDY", StudyInstanceUID=uid), "DEST", STUDY_MOVE)
        )
    finally:
        assoc.release()
    assert statuses[-1].Status == 0x0000
    assert statuses[-1].NumberOfCompletedSuboperations == IMAGES
    assert len(destination.drain()) == IMAGES - 2


def test_get_with_role_negotiation(pacs: DevPacs) -> None:
    received: list[str] = []

    def on_store(event: Any) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    assoc = associate(pacs, STUDY_GET, get_roles=True)
    assoc.bind(evt.EVT_C_STORE, on_store)
    try:
        uid = pacs.archive.instances()[0].study_uid
        statuses = run_retrieve(assoc.send_c_get(query("STUDY", StudyInstanceUID=uid), STUDY_GET))
    finally:
        assoc.release()
    assert statuses[-1].Status == 0x0000
    assert statuses[-1].NumberOfCompletedSuboperations == IMAGES
    assert sorted(received) == sorted(i.sop_instance_uid for i in pacs.archive.instances())
    assert "get" in pacs.events


def test_reject_association(make_pacs: Callable[..., DevPacs]) -> None:
    pacs = make_pacs(faults=Faults(reject_association=True))
    assoc = associate(pacs, VERIFICATION)
    assert assoc.is_rejected
    assert pacs.wait_for("reject")
    pacs.faults.reject_association = False  # faults apply live
    assoc = associate(pacs, VERIFICATION)
    try:
        assert assoc.is_established
    finally:
        assoc.release()


def test_hang_after_move_then_cancel(
    make_pacs: Callable[..., DevPacs], destination: Destination
) -> None:
    gate = threading.Event()
    pacs = make_pacs(
        destinations={"DEST": ("127.0.0.1", destination.port)},
        faults=Faults(hang_after_move=gate),
    )
    assoc = associate(pacs, STUDY_MOVE)
    try:
        uid = pacs.archive.instances()[0].study_uid
        responses = assoc.send_c_move(
            query("STUDY", StudyInstanceUID=uid), "DEST", STUDY_MOVE, msg_id=3
        )
        out = in_thread(lambda: run_retrieve(responses))
        assert pacs.wait_for("hang")
        assert out.empty()  # nothing answered while hanging
        assoc.send_c_cancel(3, context_id(assoc, STUDY_MOVE))
        statuses = result(out)
    finally:
        gate.set()
        assoc.release()
    assert statuses[-1].Status == 0xFE00
    assert statuses[-1].NumberOfRemainingSuboperations == IMAGES
    assert "cancel" in pacs.events
    assert destination.drain() == []


def test_hang_after_get_until_released(pacs: DevPacs) -> None:
    gate = threading.Event()
    pacs.faults.hang_after_move = gate
    received: queue.Queue[str] = queue.Queue()

    def on_store(event: Any) -> int:
        received.put(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    assoc = associate(pacs, STUDY_GET, get_roles=True)
    assoc.bind(evt.EVT_C_STORE, on_store)
    try:
        uid = pacs.archive.instances()[0].study_uid
        responses = assoc.send_c_get(query("STUDY", StudyInstanceUID=uid), STUDY_GET)
        out = in_thread(lambda: run_retrieve(responses))
        assert pacs.wait_for("hang")
        assert received.empty()
        gate.set()
        statuses = result(out)
    finally:
        assoc.release()
    assert statuses[-1].Status == 0x0000
    assert received.qsize() == IMAGES


def test_die_after_aborts_mid_transfer(
    make_pacs: Callable[..., DevPacs], destination: Destination
) -> None:
    pacs = make_pacs(
        destinations={"DEST": ("127.0.0.1", destination.port)}, faults=Faults(die_after=2)
    )
    assoc = associate(pacs, STUDY_MOVE)
    aborted = threading.Event()
    assoc.bind(evt.EVT_ABORTED, lambda event: aborted.set())
    uid = pacs.archive.instances()[0].study_uid
    statuses = run_retrieve(
        assoc.send_c_move(query("STUDY", StudyInstanceUID=uid), "DEST", STUDY_MOVE)
    )
    assert aborted.wait(TIMEOUT)
    assert all(s.Status == 0xFF00 for s in statuses)  # no final response
    assert len(destination.drain()) == 2
    assert destination.aborted.wait(TIMEOUT)
    assert pacs.wait_for("abort")
    assert "die" in pacs.events


def test_die_after_on_get(pacs: DevPacs) -> None:
    pacs.faults.die_after = 1
    assoc = associate(pacs, STUDY_GET, get_roles=True)
    assoc.bind(evt.EVT_C_STORE, lambda event: 0x0000)
    aborted = threading.Event()
    assoc.bind(evt.EVT_ABORTED, lambda event: aborted.set())
    uid = pacs.archive.instances()[0].study_uid
    statuses = run_retrieve(assoc.send_c_get(query("STUDY", StudyInstanceUID=uid), STUDY_GET))
    assert aborted.wait(TIMEOUT)
    assert all(s.Status == 0xFF00 for s in statuses)


def test_store_scp(make_pacs: Callable[..., DevPacs], tmp_path: Path) -> None:
    pacs = make_pacs()
    [extra] = write_sample_study(tmp_path / "extra", images=1, series=1, rows=8, columns=8, seed=9)
    ae = AE(ae_title="SCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", pacs.port, ae_title=pacs.aet)
    try:
        assert assoc.send_c_store(extra).Status == 0x0000
        pacs.faults.store_status = 0xA700
        assert assoc.send_c_store(extra).Status == 0xA700
    finally:
        assoc.release()
    assert len(pacs.archive) == IMAGES + 1
    stored = pacs.archive.locate(query("IMAGE", SOPInstanceUID=dcmread(extra).SOPInstanceUID))
    assert stored[0].transfer_syntax_uid == ExplicitVRLittleEndian
    assert dcmread(stored[0].path).PixelData == dcmread(extra).PixelData
    assert pacs.events.count("store") == 2
    assert pacs.wait_for("release")


def test_stop_ends_a_hanging_move(make_pacs: Callable[..., DevPacs]) -> None:
    pacs = make_pacs(
        destinations={"X": ("127.0.0.1", 9)}, faults=Faults(hang_after_move=threading.Event())
    )
    assoc = associate(pacs, STUDY_MOVE)
    uid = pacs.archive.instances()[0].study_uid
    responses = assoc.send_c_move(query("STUDY", StudyInstanceUID=uid), "X", STUDY_MOVE)
    aborted = threading.Event()
    assoc.bind(evt.EVT_ABORTED, lambda event: aborted.set())
    out = in_thread(lambda: run_retrieve(responses))
    assert pacs.wait_for("hang")
    pacs.stop()
    assert result(out) == []
    assert aborted.wait(TIMEOUT)


def test_compressed_instance_kept_as_stored(
    make_pacs: Callable[..., DevPacs], destination: Destination
) -> None:
    rle = Path(str(get_testdata_file("MR_small_RLE.dcm", download=False)))
    ds = dcmread(rle)
    pacs = make_pacs(destinations={"DEST": ("127.0.0.1", destination.port)})
    ae = AE(ae_title="SCU")
    ae.add_requested_context(ds.SOPClassUID, RLELossless)
    ae.add_requested_context(STUDY_MOVE)
    assoc = ae.associate("127.0.0.1", pacs.port, ae_title=pacs.aet)
    try:
        assert assoc.send_c_store(rle).Status == 0x0000
        ident = query("IMAGE", SOPInstanceUID=ds.SOPInstanceUID)
        statuses = run_retrieve(assoc.send_c_move(ident, "DEST", STUDY_MOVE))
    finally:
        assoc.release()
    assert statuses[-1].NumberOfCompletedSuboperations == 1
    [received] = destination.drain()
    assert received.transfer_syntax == RLELossless
    [stored] = pacs.archive.locate(ident)
    assert stored.transfer_syntax_uid == RLELossless


def test_find_cancel(pacs: DevPacs, scu: Any) -> None:
    real_match = pacs.archive.match

    def slow_match(identifier: Dataset) -> Iterator[Dataset]:
        """Hold the second result until the C-CANCEL (message id 5) has reached the PACS."""
        results = real_match(identifier)
        yield next(results)
        done = threading.Event()
        while not done.wait(0.01):
            if any(5 in a.dimse.cancel_req for a in pacs.ae.active_associations):
                done.set()
        yield from results

    pacs.archive.match = slow_match  # type: ignore[method-assign]
    responses = scu.send_c_find(query("IMAGE", SOPInstanceUID=""), STUDY_FIND, msg_id=5)
    status, _ = next(responses)
    assert status.Status == 0xFF00
    scu.send_c_cancel(5, context_id(scu, STUDY_FIND))
    statuses = [status.Status for status, _ in responses]
    assert statuses == [0xFE00]
    assert "cancel" in pacs.events
