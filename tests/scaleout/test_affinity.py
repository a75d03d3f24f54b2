"""nginx in front of the replicas, with the configuration ``deploy/kubernetes/nginx.yaml``
deploys (:mod:`tests.support.nginx`): each study stays on one replica, so it is moved from the
PACS once, and a store into it reaches the replica whose cache holds it (a store elsewhere is
seen too: a replica checks a cached study with the PACS before serving it).
"""

from __future__ import annotations

import zlib
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
import trio

from rst.dicom.multipart import MultipartWriter
from tests.support.deploy import ROOT, yaml_documents
from tests.support.download import DEFAULT
from tests.support.frames import parts
from tests.support.nginx import local_config, open_nginx
from tests.support.orthanc import upload
from tests.support.replicas import DIMSE_AET, Deployment
from tests.support.sample import write_ct_study

from .dicomweb import (
    FRAMES,
    IMAGES,
    TIMEOUT,
    by_sop,
    http,
    retrieved_instances,
    study_for,
)

pytestmark = pytest.mark.integration


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


@pytest.mark.parametrize("store_via", ["nginx", "other-replica"])
async def test_through_nginx_a_store_into_a_cached_study_is_seen_by_the_next_retrieve(
    deployment: Deployment, tmp_path: Path, store_via: str
) -> None:
    """Each replica caches for itself, and a store makes only its own cache forget the study.
    Through nginx, a store into a study (``POST …/studies/{study}``) reaches the replica whose
    cache holds it; a store through the other replica (``POST …/studies`` lands anywhere) does
    not, and the replica holding the study sees it when it checks its cache with the PACS
    (``[cache] revalidate_seconds``, 0 here). Either way the next retrieve of the study has the
    new instance."""
    study = study_for(tmp_path, f"store-into-cached-{store_via}")
    await upload(deployment.orthanc, study.paths)
    seed = zlib.crc32(f"store-into-cached-{store_via}".encode())
    added = write_ct_study(
        tmp_path / "added",
        images=1,
        study_uid=study.study_uid,
        seed=seed + 1,
        patient_id=f"SCALE-{seed}",
    )
    replicas = deployment.replicas
    async with nginx(deployment, tmp_path / "nginx") as url, http() as client:
        base = f"{url}/aets/{DIMSE_AET}/studies/{study.study_uid}"
        with trio.fail_after(TIMEOUT):
            before = [await retrieved_instances(replica) for replica in replicas]
            first = await client.get(base, headers={"Accept": DEFAULT})  # now in one cache
            assert first.status_code == 200
            assert len(parts(first)) == IMAGES
            after = [await retrieved_instances(replica) for replica in replicas]
            (holder,) = [n for n in range(len(replicas)) if after[n] > before[n]]
            other = replicas[1 - holder].archive(DIMSE_AET)
            target = base if store_via == "nginx" else f"{other}/studies/{study.study_uid}"
            writer = MultipartWriter()
            body = writer.part_head("application/dicom") + added.paths[0].read_bytes()
            stored = await client.post(
                target,
                content=body + writer.close(),
                headers={"Content-Type": writer.content_type("application/dicom")},
            )
            assert stored.status_code == 200, stored.text
            second = await client.get(base, headers={"Accept": DEFAULT})
            assert second.status_code == 200
    assert by_sop([data for _, data in parts(second)]) == by_sop([*study.paths, *added.paths])
