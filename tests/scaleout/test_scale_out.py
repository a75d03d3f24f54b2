"""Two replicas, one set of archives: whatever one replica stores, the other finds and serves.

The replicas are separate ``rst serve`` processes (:mod:`tests.support.replicas`), each with
its own C-STORE receiver AE title and port and its own retrieve cache, both in front of the same
Orthanc (DIMSE, C-MOVE into each replica's own receiver) and the same S3 archive (one bucket,
one PostgreSQL index). Requests go to one replica, then the other, and to both at once; what
comes back is compared element by element with what was stored and between the replicas.
"""

from __future__ import annotations

import zlib
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from pydicom.filebase import DicomBytesIO

from rst.dicom.multipart import MultipartWriter
from tests.support.deploy import ROOT, yaml_documents
from tests.support.download import AS_STORED, DEFAULT, Download
from tests.support.frames import parts
from tests.support.nginx import local_config, open_nginx
from tests.support.orthanc import upload
from tests.support.replicas import BASE_URL, DIMSE_AET, S3_AET, Deployment, Replica
from tests.support.sample import StudyFiles, write_ct_study

pytestmark = pytest.mark.integration

ARCHIVES = (S3_AET, DIMSE_AET)
IMAGES = 6
FRAMES = 'multipart/related; type="application/octet-stream"'
TIMEOUT = 120.0  # every test's requests: bounded, generous for a loaded 2-CPU machine


def study_for(tmp_path: Path, name: str) -> StudyFiles:
    """A study of its own for *name* (UIDs no other test in the module uses)."""
    seed = zlib.crc32(name.encode())
    return write_ct_study(
        tmp_path / "study", images=IMAGES, series=2, seed=seed, patient_id=f"SCALE-{seed}"
    )


def http() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=60.0, trust_env=False)


async def stow(client: httpx.AsyncClient, replica: Replica, aet: str, *files: Path) -> None:
    """STOW-RS *files* in one request to archive *aet* through *replica*; all must be stored."""
    writer = MultipartWriter()
    body = b"".join(writer.part_head("application/dicom") + f.read_bytes() for f in files)
    response = await client.post(
        f"{replica.archive(aet)}/studies",
        content=body + writer.close(),
        headers={"Content-Type": writer.content_type("application/dicom")},
    )
    assert response.status_code == 200, (replica.aet, response.text)
    stored = response.json()["00081199"]["Value"]
    assert len(stored) == len(files)
    for item in stored:  # the public URL, whichever replica answered
        assert item["00081190"]["Value"][0].startswith(f"{BASE_URL}/aets/{aet}/studies/")


async def instances_found(
    client: httpx.AsyncClient, replica: Replica, aet: str, study: str
) -> list[str]:
    """The SOP Instance UIDs QIDO-RS finds in *study* through *replica*, sorted."""
    response = await client.get(f"{replica.archive(aet)}/studies/{study}/instances")
    assert response.status_code == 200, (replica.aet, response.text)
    return sorted(item["00080018"]["Value"][0] for item in response.json())


async def retrieved(replica: Replica, aet: str, study: str, accept: str = DEFAULT) -> list[bytes]:
    """The instances of a WADO-RS retrieve of *study* through *replica*: each part's bytes."""
    download = Download(f"{replica.archive(aet)}/studies/{study}", accept=accept)
    await download.run()
    assert download.status == 200, (replica.aet, bytes(download.body[:500]))
    return [data for _, data in download.parts()]


def elements(data: bytes | Path) -> dict[str, Any]:
    """A Part 10 instance's data set as {tag: (VR, value)}: what "the same instance" means
    whatever its file meta or the order it came in."""
    ds = pydicom.dcmread(DicomBytesIO(data) if isinstance(data, bytes) else data)
    return {str(elem.tag): (elem.VR, elem.value) for elem in ds}


def by_sop(instances: list[bytes] | list[Path]) -> dict[str, dict[str, Any]]:
    out = {}
    for data in instances:
        found = elements(data)
        out[found["(0008,0018)"][1]] = found
    return out


async def retrieved_instances(replica: Replica) -> float:
    """Instances the replica's receiver took from Orthanc for retrieves so far (/metrics)."""
    async with http() as client:
        response = await client.get(f"{replica.url}/metrics")
    assert response.status_code == 200
    return sum(
        sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == "rst_retrieved_instances_total" and sample.labels["aet"] == DIMSE_AET
    )


@pytest.mark.parametrize("aet", ARCHIVES)
@pytest.mark.parametrize("writer", [0, 1], ids=["stow-A-read-B", "stow-B-read-A"])
async def test_what_one_replica_stores_the_other_finds_and_serves(
    deployment: Deployment, tmp_path: Path, aet: str, writer: int
) -> None:
    study = study_for(tmp_path, f"{aet}-{writer}")
    stored_by = deployment.replicas[writer]
    reader = deployment.replicas[1 - writer]
    with trio.fail_after(TIMEOUT):
        async with http() as client:
            assert await instances_found(client, reader, aet, study.study_uid) == []
            await stow(client, stored_by, aet, *study.paths)
            assert await instances_found(client, reader, aet, study.study_uid) == sorted(
                study.sop_uids
            )
        served = await retrieved(reader, aet, study.study_uid)
    assert by_sop(served) == by_sop(study.paths)
    if aet == S3_AET:  # the bucket keeps what was sent, byte for byte
        as_stored = await retrieved(reader, aet, study.study_uid, AS_STORED)
        assert sorted(as_stored) == sorted(p.read_bytes() for p in study.paths)


@pytest.mark.parametrize("aet", ARCHIVES)
async def test_stores_spread_over_both_replicas_at_once_make_one_study(
    deployment: Deployment, tmp_path: Path, aet: str
) -> None:
    study = study_for(tmp_path, f"spread-{aet}")
    replicas = deployment.replicas
    with trio.fail_after(TIMEOUT):
        async with http() as client, trio.open_nursery() as nursery:
            for n, path in enumerate(study.paths):  # one instance per request, alternating
                nursery.start_soon(stow, client, replicas[n % len(replicas)], aet, path)
        async with http() as client:
            for replica in replicas:
                found = await instances_found(client, replica, aet, study.study_uid)
                assert found == sorted(study.sop_uids), replica.aet
        served = [await retrieved(replica, aet, study.study_uid) for replica in replicas]
    expected = by_sop(study.paths)
    for instances in served:
        assert by_sop(instances) == expected


@pytest.mark.parametrize("aet", ARCHIVES)
async def test_the_same_study_stored_through_both_replicas_at_once_is_stored_once(
    deployment: Deployment, tmp_path: Path, aet: str
) -> None:
    # Both replicas write the same objects and the same index rows (S3: PutObject twice, an
    # upsert racing an upsert in PostgreSQL; the PACS: the same C-STOREs twice).
    study = study_for(tmp_path, f"twice-{aet}")
    with trio.fail_after(TIMEOUT):
        async with http() as client, trio.open_nursery() as nursery:
            for replica in deployment.replicas:
                nursery.start_soon(stow, client, replica, aet, *study.paths)
        async with http() as client:
            for replica in deployment.replicas:
                found = await instances_found(client, replica, aet, study.study_uid)
                assert found == sorted(study.sop_uids), replica.aet  # each instance once
        served = await retrieved(deployment.replicas[0], aet, study.study_uid)
    assert len(served) == len(study.paths)
    assert by_sop(served) == by_sop(study.paths)


async def test_c_moves_through_both_replicas_at_once_each_reach_their_own_receiver(
    deployment: Deployment, tmp_path: Path
) -> None:
    study = study_for(tmp_path, "c-move")
    await upload(deployment.orthanc, study.paths)  # straight into the PACS: no cache knows it
    replicas = deployment.replicas
    before = [await retrieved_instances(replica) for replica in replicas]
    downloads = [
        Download(f"{replica.archive(DIMSE_AET)}/studies/{study.study_uid}")
        for replica in replicas
        for _ in range(2)
    ]
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            for download in downloads:
                nursery.start_soon(download.run)
    expected = by_sop(study.paths)
    for download in downloads:
        assert download.status == 200
        assert by_sop([data for _, data in download.parts()]) == expected
    # Each replica moved the study into its own receiver, once (its second request joined
    # the first's retrieve or found it cached): Orthanc called each back under its own title.
    after = [await retrieved_instances(replica) for replica in replicas]
    assert [a - b for a, b in zip(after, before, strict=True)] == [IMAGES] * len(replicas)


@pytest.mark.parametrize("aet", ARCHIVES)
async def test_metadata_and_frames_are_the_same_from_every_replica(
    deployment: Deployment, tmp_path: Path, aet: str
) -> None:
    study = study_for(tmp_path, f"metadata-{aet}")
    replicas = deployment.replicas
    async with http() as client:
        if aet == DIMSE_AET:
            await upload(deployment.orthanc, study.paths)
        else:
            await stow(client, replicas[0], aet, *study.paths)
        base = f"studies/{study.study_uid}"
        pixels = {sop: elems["(7FE0,0010)"][1] for sop, elems in by_sop(study.paths).items()}
        with trio.fail_after(TIMEOUT):
            # Twice: the first from the archive (each replica's cache is cold), the second from
            # each replica's own cache for a PACS; every answer the same.
            for _ in range(2):
                metadata = []
                for replica in replicas:
                    response = await client.get(f"{replica.archive(aet)}/{base}/metadata")
                    assert response.status_code == 200, (replica.aet, response.text)
                    metadata.append(response.json())
                assert metadata[0] == metadata[1]
                assert sorted(item["00080018"]["Value"][0] for item in metadata[0]) == sorted(
                    study.sop_uids
                )
                for series, sop in zip(study.instance_series, study.sop_uids, strict=True):
                    url = f"{base}/series/{series}/instances/{sop}/frames/1"
                    frames = []
                    for replica in replicas:
                        response = await client.get(
                            f"{replica.archive(aet)}/{url}", headers={"Accept": FRAMES}
                        )
                        assert response.status_code == 200, (replica.aet, response.text)
                        frames.append([data for _, data in parts(response)])
                    assert frames[0] == frames[1] == [pixels[sop]]


def deployed_nginx_conf() -> str:
    """nginx.conf as ``deploy/kubernetes/nginx.yaml`` deploys it."""
    (config_map,) = [
        doc
        for doc in yaml_documents(ROOT / "deploy" / "kubernetes" / "nginx.yaml")
        if doc["kind"] == "ConfigMap"
    ]
    conf: str = config_map["data"]["nginx.conf"]
    return conf


def nginx(deployment: Deployment, workdir: Path) -> AbstractAsyncContextManager[str]:
    """The deployed nginx configuration in front of the replicas; its URL."""
    upstreams = [replica.url.removeprefix("http://") for replica in deployment.replicas]
    return open_nginx(workdir, local_config(deployed_nginx_conf(), upstreams, workdir))


async def test_nginx_keeps_each_study_on_one_replica_so_each_is_moved_once(
    deployment: Deployment, tmp_path: Path
) -> None:
    """The deployed nginx configuration in front of both replicas: every request a viewer makes
    for a study (metadata, each frame, the study itself, WADO-URI) reaches one replica, so the
    study is moved from the PACS once in all, whichever replica it hashes to. Round robin would
    have both replicas move it."""
    replicas = deployment.replicas
    studies = [study_for(tmp_path / f"s{n}", f"affinity-{n}") for n in range(4)]
    for study in studies:
        await upload(deployment.orthanc, study.paths)
    before = [await retrieved_instances(replica) for replica in replicas]
    async with nginx(deployment, tmp_path / "nginx") as url, http() as client:
        with trio.fail_after(TIMEOUT):
            for study in studies:
                base = f"{url}/aets/{DIMSE_AET}/studies/{study.study_uid}"
                response = await client.get(f"{base}/metadata")
                assert response.status_code == 200, response.text
                for series, sop in zip(study.instance_series, study.sop_uids, strict=True):
                    frame = f"{base}/series/{series}/instances/{sop}/frames/1"
                    response = await client.get(frame, headers={"Accept": FRAMES})
                    assert response.status_code == 200, response.text
                    wado_uri = await client.get(
                        f"{url}/aets/{DIMSE_AET}/wado",
                        params={
                            "requestType": "WADO",
                            "studyUID": study.study_uid,
                            "seriesUID": series,
                            "objectUID": sop,
                            "contentType": "application/dicom",
                        },
                    )
                    assert wado_uri.status_code == 200, wado_uri.text
                response = await client.get(base, headers={"Accept": DEFAULT})
                assert response.status_code == 200
                assert by_sop([data for _, data in parts(response)]) == by_sop(study.paths)
            # no study UID in the path: any replica answers
            found = await client.get(f"{url}/aets/{DIMSE_AET}/studies")
            assert found.status_code == 200
            assert {s.study_uid for s in studies} <= {
                item["0020000D"]["Value"][0] for item in found.json()
            }
            assert (await client.get(f"{url}/readyz")).status_code == 404  # cluster only
    after = [await retrieved_instances(replica) for replica in replicas]
    moved = [a - b for a, b in zip(after, before, strict=True)]
    assert sum(moved) == len(studies) * IMAGES, moved
    assert all(count % IMAGES == 0 for count in moved), moved  # whole studies, per replica


async def test_through_nginx_a_store_into_a_cached_study_is_seen_by_the_next_retrieve(
    deployment: Deployment, tmp_path: Path
) -> None:
    """Each replica caches for itself, and a store makes only its own cache forget the study.
    Through nginx, a store into a study (``POST …/studies/{study}``) reaches the replica whose
    cache holds it: the next retrieve of the study has the new instance."""
    study = study_for(tmp_path, "store-into-cached")
    await upload(deployment.orthanc, study.paths)
    seed = zlib.crc32(b"store-into-cached")
    added = write_ct_study(
        tmp_path / "added",
        images=1,
        study_uid=study.study_uid,
        seed=seed + 1,
        patient_id=f"SCALE-{seed}",
    )
    async with nginx(deployment, tmp_path / "nginx") as url, http() as client:
        base = f"{url}/aets/{DIMSE_AET}/studies/{study.study_uid}"
        with trio.fail_after(TIMEOUT):
            first = await client.get(base, headers={"Accept": DEFAULT})  # now in one cache
            assert first.status_code == 200
            assert len(parts(first)) == IMAGES
            writer = MultipartWriter()
            body = writer.part_head("application/dicom") + added.paths[0].read_bytes()
            stored = await client.post(
                base,
                content=body + writer.close(),
                headers={"Content-Type": writer.content_type("application/dicom")},
            )
            assert stored.status_code == 200, stored.text
            second = await client.get(base, headers={"Accept": DEFAULT})
            assert second.status_code == 200
    assert by_sop([data for _, data in parts(second)]) == by_sop([*study.paths, *added.paths])
