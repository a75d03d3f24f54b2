"""Two replicas, one set of archives: whatever one replica stores, the other finds and serves.

The replicas are separate ``rst serve`` processes (:mod:`tests.support.replicas`), each with
its own C-STORE receiver AE title and port and its own retrieve cache, both in front of the same
Orthanc (DIMSE, C-MOVE into each replica's own receiver) and the same S3 archive (one bucket,
one PostgreSQL index). Requests go to one replica, then the other, and to both at once; what
comes back is compared element by element with what was stored and between the replicas.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pydicom
import pytest
import trio

from tests.support.download import AS_STORED, download_all
from tests.support.frames import parts
from tests.support.orthanc import upload
from tests.support.replicas import DIMSE_AET, S3_AET, Deployment, Replica

from .dicomweb import (
    ARCHIVES,
    FRAMES,
    IMAGES,
    TIMEOUT,
    by_sop,
    http,
    instances_found,
    one_more_in_series,
    retrieved,
    retrieved_instances,
    stow,
    study_for,
)

pytestmark = pytest.mark.integration


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
    urls = [
        f"{replica.archive(DIMSE_AET)}/studies/{study.study_uid}"
        for replica in replicas
        for _ in range(2)
    ]
    downloads = await download_all(urls, within=TIMEOUT)
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


async def sop_uids_of_metadata(client: httpx.AsyncClient, replica: Replica, url: str) -> list[str]:
    response = await client.get(f"{replica.archive(DIMSE_AET)}/{url}/metadata")
    assert response.status_code == 200, (replica.aet, response.text)
    return sorted(item["00080018"]["Value"][0] for item in response.json())


@pytest.mark.parametrize("writer", [0, 1], ids=["stow-A-cached-B", "stow-B-cached-A"])
async def test_a_store_through_one_replica_shows_through_the_others_cache(
    deployment: Deployment, tmp_path: Path, writer: int
) -> None:
    """Each replica caches for itself, and a store makes only its own cache forget the study.
    The other one checks a cached study or series with the PACS (one C-FIND, ``[cache]
    revalidate_seconds``, 0 in this harness) before serving it: a STOW-RS through replica A
    into a study that replica B has cached is in B's next study retrieve, series retrieve and
    metadata."""
    study = study_for(tmp_path, f"revalidated-{writer}")
    added = one_more_in_series(study, 0, tmp_path / "added.dcm")
    await upload(deployment.orthanc, study.paths)  # straight into the PACS
    stored_by = deployment.replicas[writer]
    reader = deployment.replicas[1 - writer]
    series_uid = study.series_uids[0]
    series = f"studies/{study.study_uid}/series/{series_uid}"
    in_series = sorted(
        s
        for s, se in zip(study.sop_uids, study.instance_series, strict=True)
        if se == study.series_uids[0]
    )
    with trio.fail_after(TIMEOUT):
        async with http() as client:
            assert by_sop(await retrieved(reader, DIMSE_AET, study.study_uid)) == by_sop(
                study.paths
            )
            assert await sop_uids_of_metadata(client, reader, series) == in_series
            moved = await retrieved_instances(reader)
            assert len(await retrieved(reader, DIMSE_AET, study.study_uid)) == IMAGES  # cached
            assert await retrieved_instances(reader) == moved

            await stow(client, stored_by, DIMSE_AET, added)

            served = await retrieved(reader, DIMSE_AET, study.study_uid)
            assert by_sop(served) == by_sop([*study.paths, added])
            added_uid = str(pydicom.dcmread(added).SOPInstanceUID)
            assert await sop_uids_of_metadata(client, reader, series) == sorted(
                [*in_series, added_uid]
            )
            in_series_now = await retrieved(reader, DIMSE_AET, study.study_uid, series=series_uid)
            assert sorted(by_sop(in_series_now)) == sorted([*in_series, added_uid])
            assert await retrieved_instances(reader) == moved + 1  # the new instance alone
