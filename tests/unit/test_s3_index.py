"""rst.backends.s3.index: the QIDO-RS index of an S3 archive, searched with parse_qido.

Every index test runs twice: on SQLite and on PostgreSQL (one throwaway server for the session,
started by tests/support/postgres.py, a fresh schema per test; it fails, never skips, when
PostgreSQL is not installed).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pydicom
import pytest
import trio
from pydicom.dataset import Dataset

from rst.backends.s3.index import Index, IndexUnavailable
from rst.backends.s3.reindex import rebuild
from rst.cli import main
from rst.dicom.matching import find, sort_key
from rst.dicom.query import Level, parse_qido, to_dicom_json
from rst.errors import StorageError
from tests.support.loopback import free_port
from tests.support.postgres import create_database, create_schema, open_postgres, serve_in_thread
from tests.support.sample import write_ct_study


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One PostgreSQL server for the session: the URL of its database ``rst``."""
    with serve_in_thread(open_postgres(tmp_path_factory.mktemp("postgres"))) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a test's index lives: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "index" / "ARCHIVE.sqlite3")
    return create_schema(request.getfixturevalue("postgres_server"))


def _stored_header(location: str, key: str) -> str:
    """The header column of ``key``, read with the database's own driver."""
    sql = "SELECT header FROM instances WHERE key = ?"
    if location.startswith("postgresql://"):
        with psycopg.connect(location) as pg:
            row = pg.execute(sql.replace("?", "%s"), (key,)).fetchone()
    else:
        with sqlite3.connect(location) as db:
            row = db.execute(sql, (key,)).fetchone()
    assert row is not None
    return str(row[0])


@dataclass
class Archive:
    index: Index
    headers: dict[str, Dataset]  # key -> header
    a: str  # study UIDs: A (20240202, DOE^JOHN, CT+MR, 2 series x 3), B (20240606, 1 x 3)
    b: str
    a_series: list[str]
    b_series: list[str]


def _key(header: Dataset) -> str:
    return f"{header.StudyInstanceUID}/{header.SeriesInstanceUID}/{header.SOPInstanceUID}.dcm"


@pytest.fixture
async def archive(tmp_path: Path, location: str) -> AsyncIterator[Archive]:
    study_a = write_ct_study(
        tmp_path / "a", images=6, series=2, patient_id="P1", patient_name="DOE^JOHN", seed=1
    )
    study_b = write_ct_study(
        tmp_path / "b", images=3, patient_id="P2", patient_name="SMITH^JANE", seed=5
    )
    index = await Index.open(location)
    headers: dict[str, Dataset] = {}
    for path in [*study_a.paths, *study_b.paths]:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        if header.SeriesInstanceUID == study_a.series_uids[1]:
            header.Modality = "MR"
        headers[_key(header)] = header
        await index.add(_key(header), header)
    yield Archive(
        index,
        headers,
        study_a.study_uid,
        study_b.study_uid,
        study_a.series_uids,
        study_b.series_uids,
    )
    await index.close()  # a second close is harmless


async def _search(
    index: Index,
    level: Level,
    params: list[tuple[str, str]] | None = None,
    *,
    study: str | None = None,
    series: str | None = None,
) -> list[Dataset]:
    query = parse_qido(level, params or [], study_uid=study, series_uid=series)
    async with index.search(query) as rows:
        return [row async for row in rows]


def _uids(rows: list[Dataset], keyword: str = "StudyInstanceUID") -> list[str]:
    return [str(row.get(keyword)) for row in rows]


async def test_studies_order_and_computed_attributes(archive: Archive) -> None:
    rows = await _search(archive.index, "STUDY")
    assert _uids(rows) == [archive.a, archive.b]  # by StudyDate
    a, b = rows
    assert (a.NumberOfStudyRelatedSeries, a.NumberOfStudyRelatedInstances) == (2, 6)
    assert list(a.ModalitiesInStudy) == ["CT", "MR"]
    assert (b.NumberOfStudyRelatedSeries, b.NumberOfStudyRelatedInstances) == (1, 3)
    assert b.ModalitiesInStudy == "CT"
    assert str(a.PatientName) == "DOE^JOHN"
    assert a.QueryRetrieveLevel == "STUDY"


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ([("PatientName", "doe*")], ["a"]),
        ([("PatientName", "SM?TH^JANE")], ["b"]),
        ([("PatientName", "*")], ["a", "b"]),
        ([("PatientName", "NOBODY*")], []),
        ([("PatientID", "P2")], ["b"]),
        ([("PatientID", "P*")], ["a", "b"]),
        ([("StudyDate", "20240606")], ["b"]),
        ([("StudyDate", "20240301-")], ["b"]),
        ([("StudyDate", "-20240301")], ["a"]),
        ([("StudyDate", "20240101-20240301")], ["a"]),
        ([("StudyDate", "20250101-")], []),
        ([("StudyTime", "0800-0959")], ["a"]),
        ([("AccessionNumber", "ACC000005")], ["b"]),
        ([("ModalitiesInStudy", "MR")], ["a"]),
        ([("ModalitiesInStudy", "CT")], ["a", "b"]),
        ([("StudyDescription", "RST*")], ["a", "b"]),
        ([("StudyID", "")], ["a", "b"]),
    ],
)
async def test_study_matching(
    archive: Archive, params: list[tuple[str, str]], expected: list[str]
) -> None:
    rows = await _search(archive.index, "STUDY", params)
    names = {archive.a: "a", archive.b: "b"}
    assert [names[uid] for uid in _uids(rows)] == expected


async def test_uid_lists(archive: Archive) -> None:
    both = await _search(archive.index, "STUDY", [("StudyInstanceUID", f"{archive.b},{archive.a}")])
    assert _uids(both) == [archive.a, archive.b]
    one = await _search(archive.index, "STUDY", [("StudyInstanceUID", archive.b)])
    assert _uids(one) == [archive.b]
    series = await _search(
        archive.index, "SERIES", [("SeriesInstanceUID", "\\".join(archive.a_series))]
    )
    assert _uids(series, "SeriesInstanceUID") == archive.a_series


async def test_includefield(archive: Archive) -> None:
    plain = await _search(archive.index, "STUDY")
    assert "StudyDescription" not in plain[0]
    named = await _search(archive.index, "STUDY", [("includefield", "StudyDescription")])
    assert named[0].StudyDescription == "RST synthetic CT"
    query = parse_qido("STUDY", [("includefield", "all")])
    async with archive.index.search(query) as rows:
        first = await anext(rows)
    rendered = to_dicom_json(query, first, "http://rst/aets/X/studies/1")
    assert rendered["00081030"] == {"vr": "LO", "Value": ["RST synthetic CT"]}  # StudyDescription
    assert rendered["00201208"] == {"vr": "IS", "Value": [6]}  # NumberOfStudyRelatedInstances


async def test_series_rows_carry_study_attributes(archive: Archive) -> None:
    rows = await _search(archive.index, "SERIES")
    assert _uids(rows, "SeriesInstanceUID") == [*archive.a_series, *archive.b_series]
    assert _uids(rows) == [archive.a, archive.a, archive.b]
    assert [row.NumberOfSeriesRelatedInstances for row in rows] == [3, 3, 3]
    assert [row.NumberOfStudyRelatedInstances for row in rows] == [6, 6, 3]
    assert [str(row.PatientName) for row in rows] == ["DOE^JOHN", "DOE^JOHN", "SMITH^JANE"]
    mr = await _search(archive.index, "SERIES", [("Modality", "MR")])
    assert _uids(mr, "SeriesInstanceUID") == [archive.a_series[1]]
    assert mr[0].NumberOfStudyRelatedInstances == 6  # counted over the whole study
    assert list(mr[0].ModalitiesInStudy) == ["CT", "MR"]
    in_study = await _search(archive.index, "SERIES", study=archive.b)
    assert _uids(in_study, "SeriesInstanceUID") == archive.b_series
    assert in_study[0].StudyInstanceUID == archive.b


async def test_instance_rows(archive: Archive) -> None:
    rows = await _search(archive.index, "IMAGE", study=archive.a, series=archive.a_series[0])
    assert [row.InstanceNumber for row in rows] == [1, 2, 3]
    assert {row.StudyInstanceUID for row in rows} == {archive.a}
    assert {row.SeriesInstanceUID for row in rows} == {archive.a_series[0]}
    assert all(row.SOPClassUID and row.Rows == 64 for row in rows)
    everything = await _search(archive.index, "IMAGE")
    assert len(everything) == 9
    assert all(row.NumberOfSeriesRelatedInstances == 3 for row in everything)
    one = await _search(archive.index, "IMAGE", [("SOPInstanceUID", rows[1].SOPInstanceUID)])
    assert _uids(one, "SOPInstanceUID") == [rows[1].SOPInstanceUID]
    assert one[0].NumberOfStudyRelatedInstances == 6
    numbered = await _search(archive.index, "IMAGE", [("InstanceNumber", "2")], study=archive.b)
    assert [row.InstanceNumber for row in numbered] == [2]


async def test_matches_like_the_dev_pacs_matcher(archive: Archive) -> None:
    """The index answers exactly what matching.find answers over all headers in memory."""
    everything = sorted(archive.headers.values(), key=sort_key)
    cases: list[tuple[Level, list[tuple[str, str]]]] = [
        ("STUDY", [("PatientName", "*JO*"), ("includefield", "all")]),
        ("STUDY", [("StudyDate", "20240101-20241231"), ("ModalitiesInStudy", "MR")]),
        ("SERIES", [("Modality", "CT"), ("includefield", "all")]),
        ("SERIES", [("PatientID", "P1"), ("SeriesNumber", "2")]),
        ("IMAGE", [("Modality", "MR"), ("includefield", "all")]),
        ("IMAGE", [("StudyDate", "-20240301"), ("InstanceNumber", "3")]),
    ]
    for level, params in cases:
        query = parse_qido(level, params)
        async with archive.index.search(query) as rows:
            got = [row.to_json_dict() async for row in rows]
        want = [row.to_json_dict() for row in find(query.identifier, everything)]
        assert got == want, (level, params)
        assert got


async def test_upsert_is_idempotent(archive: Archive) -> None:
    key, header = next(iter(archive.headers.items()))
    await archive.index.add(key, header)
    await archive.index.add(key, header)
    rows = await _search(archive.index, "STUDY", [("StudyInstanceUID", archive.a)])
    assert rows[0].NumberOfStudyRelatedInstances == 6
    header.PatientName = "DOE^JOHNNY"
    await archive.index.add(key, header)
    instances = await _search(archive.index, "IMAGE", [("SOPInstanceUID", header.SOPInstanceUID)])
    assert [str(row.PatientName) for row in instances] == ["DOE^JOHNNY"]


async def test_remove_and_clear(archive: Archive) -> None:
    keys = await archive.index.keys(archive.b)
    await archive.index.remove(keys[0])
    await archive.index.remove(keys[0])  # already gone: no error
    rows = await _search(archive.index, "STUDY", [("StudyInstanceUID", archive.b)])
    assert rows[0].NumberOfStudyRelatedInstances == 2
    assert await archive.index.keys(archive.b) == keys[1:]
    await archive.index.clear()
    assert await _search(archive.index, "STUDY") == []
    assert await archive.index.keys(archive.a) == []


async def test_keys_order(archive: Archive) -> None:
    def number(key: str) -> tuple[int, int]:
        header = archive.headers[key]
        return (int(header.SeriesNumber), int(header.InstanceNumber))

    keys = await archive.index.keys(archive.a)
    assert len(keys) == 6
    assert [number(k) for k in keys] == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    series = await archive.index.keys(archive.a, archive.a_series[1])
    assert series == keys[3:]
    header = archive.headers[keys[4]]
    assert await archive.index.keys(archive.a, archive.a_series[1], header.SOPInstanceUID) == [
        keys[4]
    ]
    assert await archive.index.keys(archive.a, archive.b_series[0]) == []


async def test_headers_stored_without_bulk_data(archive: Archive, location: str) -> None:
    key, header = next(iter(archive.headers.items()))
    header.add_new(0x00291010, "OB", b"\x00\x01" * 4096)  # a private binary blob
    header.add_new(0x00880200, "SQ", [Dataset()])  # IconImageSequence
    header[0x00880200].value[0].add_new(0x7FE00010, "OB", b"\x00" * 64)
    await archive.index.add(key, header)
    await archive.index.close()
    stored = _stored_header(location, key)
    data = json.loads(stored)
    assert "00291010" not in data
    assert data["00880200"] == {"vr": "SQ", "Value": [{}]}
    assert "InlineBinary" not in stored
    assert "BulkDataURI" not in stored


async def test_reopen_keeps_the_rows(archive: Archive, location: str) -> None:
    await archive.index.close()
    again = await Index.open(location)
    try:
        assert len(await _search(again, "IMAGE")) == 9
    finally:
        await again.close()


async def test_closed_index_is_unavailable(archive: Archive) -> None:
    await archive.index.close()
    with pytest.raises(IndexUnavailable, match="closed"):
        await archive.index.keys(archive.a)


async def test_unreachable_postgresql_is_unavailable() -> None:
    url = f"postgresql://rst:secret@127.0.0.1:{free_port()}/rst"  # nothing listens there
    with pytest.raises(IndexUnavailable, match="cannot open") as caught:
        await Index.open(url)
    assert "secret" not in str(caught.value)


async def test_replicas_share_a_postgresql_index(postgres_server: str, tmp_path: Path) -> None:
    """Two rst replicas on one database: each sees the other's writes, concurrent opens and
    upserts of the same key do not fail."""
    url = create_database(postgres_server)
    replicas: list[Index] = []

    async def open_one() -> None:
        replicas.append(await Index.open(url))

    async with trio.open_nursery() as nursery:  # both create the schema at once
        nursery.start_soon(open_one)
        nursery.start_soon(open_one)
    one, two = replicas
    try:
        study = write_ct_study(tmp_path / "s", images=2)
        headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in study.paths]
        await one.add(_key(headers[0]), headers[0])
        rows = await _search(two, "IMAGE")
        assert _uids(rows, "SOPInstanceUID") == [headers[0].SOPInstanceUID]

        key, header = _key(headers[1]), headers[1]

        async def upsert(index: Index, name: str) -> None:
            for _ in range(20):
                header.PatientName = name
                await index.add(key, header)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(upsert, one, "ONE^REPLICA")
            nursery.start_soon(upsert, two, "TWO^REPLICA")
        assert await one.keys(study.study_uid) == await two.keys(study.study_uid)
        assert len(await two.keys(study.study_uid)) == 2
        await two.remove(_key(headers[0]))
        assert await one.keys(study.study_uid) == [key]
    finally:
        for index in replicas:
            await index.close()


async def test_add_refuses_headers_without_uids(archive: Archive) -> None:
    with pytest.raises(ValueError, match="UID"):
        await archive.index.add("x.dcm", Dataset())


async def test_leaving_a_search_early(archive: Archive) -> None:
    query = parse_qido("IMAGE", [])
    async with archive.index.search(query) as rows:
        async for _row in rows:
            break
    assert len(await _search(archive.index, "STUDY")) == 2


class _Bucket:
    """A fake S3Client for rebuilds: objects in a dict; ``missing`` keys fail to read."""

    def __init__(self, objects: dict[str, bytes], missing: set[str]) -> None:
        self.objects = objects
        self.missing = missing

    async def list_keys(self, prefix: str) -> AsyncIterator[str]:
        for key in sorted(self.objects):
            if key.startswith(prefix):
                yield key

    async def get(self, key: str) -> bytes:
        if key in self.missing:
            raise StorageError(f"GetObject {key}: NoSuchKey")
        return self.objects[key]


async def test_rebuild_from_a_bucket(tmp_path: Path, location: str) -> None:
    study = write_ct_study(tmp_path / "s", images=4, series=2)
    objects = {
        f"dicom/{study.study_uid}/{series}/{sop}.dcm": path.read_bytes()
        for path, series, sop in zip(
            study.paths, study.instance_series, study.sop_uids, strict=True
        )
    }
    # in the layout but not DICOM / listed but unreadable; outside the layout; outside the prefix
    not_dicom = f"dicom/{study.study_uid}/1.2.3/4.5.6.dcm"
    gone = f"dicom/{study.study_uid}/1.2.3/4.5.7.dcm"
    objects[not_dicom] = b"not dicom"
    objects[gone] = b""
    objects["dicom/README.txt"] = b"not in the {study}/{series}/{instance}.dcm layout"
    objects["other/x.dcm"] = next(iter(objects.values()))
    index = await Index.open(location)
    try:
        await index.add("stale.dcm", pydicom.dcmread(study.paths[0], stop_before_pixels=True))
        totals: list[int] = []
        done: list[None] = []
        report = await rebuild(
            _Bucket(objects, {gone}),
            index,
            "dicom/",
            concurrency=3,
            on_total=totals.append,
            on_done=lambda: done.append(None),
        )
        assert (report.indexed, report.skipped, report.failed) == (4, 1, 1)
        assert totals == [6]
        assert len(done) == 6
        keys = await index.keys(study.study_uid)
        assert keys == [
            k
            for k in objects
            if k.startswith(f"dicom/{study.study_uid}") and k not in (not_dicom, gone)
        ]
        rows = await _search(index, "STUDY")
        assert [row.NumberOfStudyRelatedInstances for row in rows] == [4]  # stale row cleared
    finally:
        await index.close()


def test_index_command_refuses_a_dimse_ae(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "rst.toml"
    config.write_text('[[aets]]\naet = "PACS"\nhost = "127.0.0.1"\nport = 11112\n')
    assert main(["index", "PACS", "--config", str(config)]) == 2
    assert "not an S3 AE" in capsys.readouterr().err
