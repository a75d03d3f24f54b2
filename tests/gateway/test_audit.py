"""The audit trail through the real app and listener: one event per search, retrieve and store,
checked field by field — the DICOM audit message (PS3.15 A.5) and rst's flat copy — for QIDO-RS,
WADO-RS at every level, metadata, frames, STOW-RS with a partial success, a caller refused with
401 and 403, and a client that goes away in the middle of a retrieve.

The trail is an :class:`AuditTrail` whose events the test receives as the gateway records them
(no polling); :func:`test_writer_*` run the real writer on a file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import trio
from pydicom import Dataset

from rst.audit import AuditConfig, AuditTrail
from rst.auth import AuthConfig
from rst.config import AeConfig, Config, HttpConfig
from rst.dicom.statuses import OUT_OF_RESOURCES
from rst.http.app import create_app
from rst.http.listener import serve_http
from rst.services.protocols import Backend, Instance, RetrieveKeys, StoreResult
from tests.support.frames import SOP_UID as FRAME_SOP
from tests.support.frames import native, volume
from tests.support.scripted_backend import ScriptedBackend, part10

STUDY, SERIES = "1.2.3", "1.2.3.4"
SOPS = [f"{SERIES}.{n}" for n in (1, 2)]
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
TOKEN = "audit-token-0123456789abcdef"

QUERY = {"csd-code": "110112", "codeSystemName": "DCM", "originalText": "Query"}
TRANSFERRED = {
    "csd-code": "110104",
    "codeSystemName": "DCM",
    "originalText": "DICOM Instances Transferred",
}
SOURCE = {"csd-code": "110153", "codeSystemName": "DCM", "originalText": "Source Role ID"}
DESTINATION = {"csd-code": "110152", "codeSystemName": "DCM", "originalText": "Destination Role ID"}
STUDY_UID = {"csd-code": "110180", "codeSystemName": "DCM", "originalText": "Study Instance UID"}


class CapturedTrail(AuditTrail):
    """The events, as JSON would carry them, handed to the test as they are recorded."""

    def __init__(self, max_query_chars: int = 2048) -> None:
        super().__init__(
            AuditConfig(path="-", source_id="rst-test", max_query_chars=max_query_chars)
        )
        self._to_test, self._events = trio.open_memory_channel[dict[str, Any]](100)
        self.lines: list[str] = []

    def record(self, event: dict[str, Any]) -> None:
        line = json.dumps(event)
        self.lines.append(line)
        self._to_test.send_nowait(json.loads(line))

    async def next(self) -> dict[str, Any]:
        with trio.fail_after(10):
            return await self._events.receive()

    def pending(self) -> int:
        return self._events.statistics().current_buffer_used


@asynccontextmanager
async def gateway(
    backends: Mapping[str, Backend],
    auth: AuthConfig | None = None,
    max_query_chars: int = 2048,
    aets: tuple[AeConfig, ...] = (),
) -> AsyncIterator[tuple[httpx.AsyncClient, CapturedTrail]]:
    config = Config(http=HttpConfig(host="127.0.0.1", port=0), auth=auth, aets=aets)
    trail = CapturedTrail(max_query_chars)
    async with trio.open_nursery() as nursery:
        app = create_app(config, backends, audit=trail)
        binds = await nursery.start(serve_http, app, config.http)
        async with httpx.AsyncClient(base_url=binds[0], timeout=10) as client:
            yield client, trail
        nursery.cancel_scope.cancel()


def archive() -> ScriptedBackend:
    return ScriptedBackend(instances=[part10(sop) for sop in SOPS])


def requestor(event: dict[str, Any]) -> dict[str, Any]:
    (found,) = [p for p in event["ActiveParticipant"] if p["UserIsRequestor"]]
    return cast(dict[str, Any], found)


def gateway_participant(event: dict[str, Any]) -> dict[str, Any]:
    return cast(dict[str, Any], event["ActiveParticipant"][1])


def study_object(event: dict[str, Any], uid: str = STUDY) -> dict[str, Any]:
    (found,) = [
        o
        for o in event["ParticipantObjectIdentification"]
        if o["ParticipantObjectIDTypeCode"] == STUDY_UID and o["ParticipantObjectID"] == uid
    ]
    assert found["ParticipantObjectTypeCode"] == "2"  # system object
    assert found["ParticipantObjectTypeCodeRole"] == "3"  # report
    return cast(dict[str, Any], found)


def check_common(event: dict[str, Any], *, path: str, status: int) -> None:
    flat = event["rst"]
    assert flat["path"] == path
    assert flat["status"] == status
    assert flat["client"] == "127.0.0.1"
    assert flat["aet"] == "X"
    assert flat["started"] <= flat["ended"] == event["EventIdentification"]["EventDateTime"]
    assert flat["duration_s"] >= 0
    assert flat["request_id"] not in ("", "-")
    assert event["AuditSourceIdentification"] == {
        "AuditSourceID": "rst-test",
        "AuditSourceTypeCode": "4",
    }
    client = requestor(event)
    assert client["NetworkAccessPointID"] == "127.0.0.1"
    assert client["NetworkAccessPointTypeCode"] == "2"
    assert gateway_participant(event)["UserID"] == path
    assert event["ActiveParticipant"][2] == {
        "UserID": "X",
        "UserIDTypeCode": {
            "csd-code": "110119",
            "codeSystemName": "DCM",
            "originalText": "Station AE Title",
        },
        "UserIsRequestor": False,
    }


# -- searches -------------------------------------------------------------------------------------


async def test_qido_is_a_query_with_its_parameters() -> None:
    matches = []
    for n in range(3):
        ds = Dataset()
        ds.StudyInstanceUID = f"{STUDY}.{n}"
        matches.append(ds)
    async with gateway({"X": ScriptedBackend(matches=matches)}) as (client, trail):
        response = await client.get("/aets/X/studies", params={"PatientID": "PAT-1", "limit": "10"})
        assert response.status_code == 200
        event = await trail.next()

    check_common(event, path="/aets/X/studies", status=200)
    assert event["EventIdentification"] == {
        "EventID": QUERY,
        "EventActionCode": "E",
        "EventDateTime": event["rst"]["ended"],
        "EventOutcomeIndicator": "0",
        "EventOutcomeDescription": "HTTP 200: success",
    }
    client_part, rst_part = event["ActiveParticipant"][:2]
    assert client_part["RoleIDCode"] == SOURCE
    assert client_part["UserIsRequestor"] is True
    assert client_part["UserID"] == "(unauthenticated)"  # no [auth]
    assert rst_part["RoleIDCode"] == DESTINATION
    assert rst_part["UserIsRequestor"] is False
    (query,) = event["ParticipantObjectIdentification"]
    assert query["ParticipantObjectIDTypeCode"] == {
        "csd-code": "110181",
        "codeSystemName": "DCM",
        "originalText": "SOP Class UID",
    }
    assert query["ParticipantObjectID"] == "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root FIND
    assert query["ParticipantObjectTypeCode"] == "2"
    assert query["ParticipantObjectTypeCodeRole"] == "3"
    assert base64.b64decode(query["ParticipantObjectQuery"]) == b"PatientID=PAT-1&limit=10"
    flat = event["rst"]
    assert flat["service"] == "search"
    assert flat["resource"] == "qido:studies"
    assert flat["level"] == "STUDY"
    assert flat["query"] == "PatientID=PAT-1&limit=10"
    assert flat["query_truncated"] is False
    assert flat["matches"] == 3
    assert flat["outcome"] == "success"
    assert flat["bytes_sent"] == response.num_bytes_downloaded


async def test_the_station_is_the_ae_title_rst_calls_not_the_route() -> None:
    # [[aets]] called_aet: the route X reaches the PACS whose AE title is PACS
    aets = (AeConfig(aet="X", called_aet="PACS"),)
    async with gateway({"X": ScriptedBackend(matches=[])}, aets=aets) as (client, trail):
        assert (await client.get("/aets/X/studies")).status_code == 200
        event = await trail.next()

    assert event["rst"]["aet"] == "X"
    station = event["ActiveParticipant"][2]
    assert (station["UserID"], station["UserIDTypeCode"]["csd-code"]) == ("PACS", "110119")


async def test_series_search_in_a_study_names_the_study_and_bounds_the_query() -> None:
    async with gateway({"X": ScriptedBackend()}, max_query_chars=16) as (client, trail):
        response = await client.get(
            f"/aets/X/studies/{STUDY}/series", params={"SeriesDescription": "x" * 40}
        )
        assert response.status_code == 200
        event = await trail.next()
    flat = event["rst"]
    assert flat["level"] == "SERIES"
    assert flat["study"] == STUDY
    assert flat["matches"] == 0
    assert flat["query"] == "SeriesDescriptio"
    assert flat["query_truncated"] is True
    assert study_object(event)["ParticipantObjectID"] == STUDY


# -- retrieves ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "level", "series", "sop", "count"),
    [
        (f"/studies/{STUDY}", "STUDY", None, None, 2),
        (f"/studies/{STUDY}/series/{SERIES}", "SERIES", SERIES, None, 2),
        (f"/studies/{STUDY}/series/{SERIES}/instances/{SOPS[0]}", "IMAGE", SERIES, SOPS[0], 1),
    ],
    ids=["study", "series", "instance"],
)
async def test_wado_is_instances_transferred_read(
    path: str, level: str, series: str | None, sop: str | None, count: int
) -> None:
    backend = archive() if count == 2 else ScriptedBackend(instances=[part10(SOPS[0])])
    async with gateway({"X": backend}) as (client, trail):
        response = await client.get(f"/aets/X{path}")
        assert response.status_code == 200
        event = await trail.next()

    check_common(event, path=f"/aets/X{path}", status=200)
    identification = event["EventIdentification"]
    assert identification["EventID"] == TRANSFERRED
    assert identification["EventActionCode"] == "R"
    assert identification["EventOutcomeIndicator"] == "0"
    client_part, rst_part = event["ActiveParticipant"][:2]
    assert client_part["RoleIDCode"] == DESTINATION
    assert client_part["UserIsRequestor"] is True
    assert rst_part["RoleIDCode"] == SOURCE
    assert rst_part["UserIsRequestor"] is False
    assert study_object(event)["ParticipantObjectDescription"] == {
        "SOPClass": [
            {
                "UID": SECONDARY_CAPTURE,
                "NumberOfInstances": count,
                "Instance": [{"UID": uid} for uid in SOPS[:count]],
            }
        ]
    }
    assert len(event["ParticipantObjectIdentification"]) == 1
    flat = event["rst"]
    assert (flat["service"], flat["level"]) == ("retrieve", level)
    assert (flat["study"], flat["series"], flat["instance"]) == (STUDY, series, sop)
    assert flat["instances"] == count
    assert flat["bytes_sent"] == response.num_bytes_downloaded
    assert flat["outcome"] == "success"
    assert "query" not in flat


async def test_metadata_counts_the_instances_described() -> None:
    async with gateway({"X": archive()}) as (client, trail):
        response = await client.get(f"/aets/X/studies/{STUDY}/metadata")
        assert response.status_code == 200
        event = await trail.next()
    check_common(event, path=f"/aets/X/studies/{STUDY}/metadata", status=200)
    assert event["EventIdentification"]["EventActionCode"] == "R"
    assert event["rst"]["resource"] == "metadata:studies/<study>"
    assert event["rst"]["instances"] == 2
    assert event["rst"]["bytes_sent"] == response.num_bytes_downloaded
    assert (
        study_object(event)["ParticipantObjectDescription"]["SOPClass"][0]["NumberOfInstances"] == 2
    )


async def test_frames_name_the_instance() -> None:
    data = native(volume(2))
    backend = ScriptedBackend(
        instances=[Instance(data, SECONDARY_CAPTURE, FRAME_SOP, "1.2.840.10008.1.2.1")]
    )
    path = f"/aets/X/studies/{STUDY}/series/{SERIES}/instances/{FRAME_SOP}/frames/2"
    async with gateway({"X": backend}) as (client, trail):
        response = await client.get(path, headers={"Accept": "application/octet-stream"})
        assert response.status_code == 200
        event = await trail.next()
    check_common(event, path=path, status=200)
    flat = event["rst"]
    assert (flat["level"], flat["instance"], flat["instances"]) == ("IMAGE", FRAME_SOP, 1)
    assert flat["bytes_sent"] == response.num_bytes_downloaded
    assert study_object(event)["ParticipantObjectDescription"]["SOPClass"][0]["Instance"] == [
        {"UID": FRAME_SOP}
    ]


async def test_not_found_is_a_failure_that_names_the_study() -> None:
    async with gateway({"X": ScriptedBackend()}) as (client, trail):
        response = await client.get(f"/aets/X/studies/{STUDY}/metadata")
        event = await trail.next()
    assert response.status_code == 404
    assert event["rst"]["outcome"] == "failure"
    assert event["rst"]["instances"] == 0
    assert event["EventIdentification"]["EventOutcomeIndicator"] == "4"
    assert event["EventIdentification"]["EventOutcomeDescription"] == "HTTP 404: failure"
    assert "ParticipantObjectDescription" not in study_object(event)


@dataclass
class Hanging(ScriptedBackend):
    """Sends its instances, then waits for one that never comes."""

    all_sent: trio.Event = field(default_factory=trio.Event)

    @asynccontextmanager
    async def retrieve(
        self, keys: RetrieveKeys, prefer: str | None = None
    ) -> AsyncIterator[AsyncIterator[Instance]]:
        async def parts() -> AsyncGenerator[Instance]:
            for instance in self.instances:
                yield instance
            self.all_sent.set()
            await trio.sleep_forever()  # the archive stalls: only the client ends this
            yield self.instances[0]  # pragma: no cover

        async with aclosing(parts()) as found:
            yield found


async def test_client_gone_mid_retrieve() -> None:
    backend = Hanging(instances=[part10(SOPS[0])])
    async with gateway({"X": backend}) as (client, trail):
        host, port = client.base_url.host, client.base_url.port
        assert port is not None
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream(host, port)
            async with stream:
                await stream.send_all(
                    f"GET /aets/X/studies/{STUDY} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                )
                received = b""
                while SOPS[0].encode() not in received:  # the first instance is here
                    received += await stream.receive_some(65536)
                await backend.all_sent.wait()
            # hung up, in the middle of the response
        event = await trail.next()
    flat = event["rst"]
    assert flat["outcome"] == "client gone"
    assert flat["status"] == 200
    assert flat["instances"] == 1
    assert flat["bytes_sent"] > len(backend.instances[0].data)  # its part, not the next one
    assert event["EventIdentification"]["EventOutcomeIndicator"] == "4"
    assert "client went away" in event["EventIdentification"]["EventOutcomeDescription"]
    assert study_object(event)["ParticipantObjectDescription"]["SOPClass"][0]["Instance"] == [
        {"UID": SOPS[0]}
    ]


# -- stores ---------------------------------------------------------------------------------------


def stow_body(*instances: bytes) -> tuple[bytes, str]:
    parts = b"".join(
        b"--b\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n" for data in instances
    )
    return parts + b"--b--\r\n", 'multipart/related; type="application/dicom"; boundary=b'


async def test_stow_partial_success_names_what_was_stored() -> None:
    body, content_type = stow_body(part10(SOPS[0]).data, part10(SOPS[1]).data)
    refusing = ScriptedBackend(answers={SOPS[1]: StoreResult(OUT_OF_RESOURCES)})
    async with gateway({"X": refusing}) as (client, trail):
        response = await client.post(
            "/aets/X/studies", content=body, headers={"Content-Type": content_type}
        )
        assert response.status_code == 202
        event = await trail.next()

    check_common(event, path="/aets/X/studies", status=202)
    identification = event["EventIdentification"]
    assert identification["EventID"] == TRANSFERRED
    assert identification["EventActionCode"] == "C"
    assert identification["EventOutcomeIndicator"] == "4"
    assert identification["EventOutcomeDescription"] == "HTTP 202: partial"
    client_part, rst_part = event["ActiveParticipant"][:2]
    assert client_part["RoleIDCode"] == SOURCE
    assert client_part["UserIsRequestor"] is True
    assert rst_part["RoleIDCode"] == DESTINATION
    assert study_object(event)["ParticipantObjectDescription"] == {
        "SOPClass": [
            {"UID": SECONDARY_CAPTURE, "NumberOfInstances": 1, "Instance": [{"UID": SOPS[0]}]}
        ]
    }
    flat = event["rst"]
    assert (flat["service"], flat["resource"]) == ("store", "stow")
    assert (flat["instances"], flat["failed"]) == (1, 1)
    assert flat["bytes_received"] == len(body)
    assert flat["outcome"] == "partial"


# -- who: with [auth] -----------------------------------------------------------------------------


def auth() -> AuthConfig:
    return AuthConfig.model_validate(
        {
            "tokens": [
                {
                    "name": "ai-pipeline",
                    "sha256": hashlib.sha256(TOKEN.encode()).hexdigest(),
                    "roles": ["reader"],
                }
            ],
            "grants": [{"role": "reader", "aets": ["X"], "allow": ["search", "retrieve"]}],
        }
    )


async def test_the_caller_is_named_and_no_secret_is_recorded() -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with gateway({"X": archive()}, auth()) as (client, trail):
        response = await client.get(f"/aets/X/studies/{STUDY}", headers=headers)
        assert response.status_code == 200
        event = await trail.next()
    client_part = requestor(event)
    assert client_part["UserID"] == "ai-pipeline"
    flat = event["rst"]
    assert (flat["subject"], flat["auth"], flat["auth_scheme"]) == (
        "ai-pipeline",
        "token",
        "Bearer",
    )
    assert flat["roles"] == ["reader"]
    assert TOKEN not in trail.lines[0]


async def test_unauthenticated_is_a_failed_attempt() -> None:
    """A 401 is recorded as the attempted event that failed: who tried (their address; the
    scheme of what they sent, never its value), on what, and that it was refused."""
    async with gateway({"X": archive()}, auth()) as (client, trail):
        response = await client.get(
            f"/aets/X/studies/{STUDY}", headers={"Authorization": "Bearer wrong-secret"}
        )
        assert response.status_code == 401
        event = await trail.next()
    check_common(event, path=f"/aets/X/studies/{STUDY}", status=401)
    assert event["EventIdentification"]["EventActionCode"] == "R"
    assert event["EventIdentification"]["EventOutcomeIndicator"] == "4"
    assert event["EventIdentification"]["EventOutcomeDescription"] == "HTTP 401: failure"
    assert requestor(event)["UserID"] == "(unauthenticated)"
    flat = event["rst"]
    assert (flat["subject"], flat["auth_scheme"], flat["instances"]) == (None, "Bearer", 0)
    assert "wrong-secret" not in trail.lines[0]


async def test_forbidden_names_the_caller() -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    body, content_type = stow_body(part10(SOPS[0]).data)
    async with gateway({"X": archive()}, auth()) as (client, trail):
        response = await client.post(
            "/aets/X/studies", content=body, headers={**headers, "Content-Type": content_type}
        )
        assert response.status_code == 403
        event = await trail.next()
    assert event["EventIdentification"]["EventActionCode"] == "C"
    assert requestor(event)["UserID"] == "ai-pipeline"
    assert (event["rst"]["status"], event["rst"]["instances"]) == (403, 0)


async def test_other_endpoints_are_not_audited() -> None:
    async with gateway({"X": archive()}) as (client, trail):
        assert (await client.get("/aets")).status_code == 200
        assert (await client.get("/aets/X")).status_code == 200
        assert (await client.get("/livez")).status_code == 200
        response = await client.get("/aets/X/studies")  # audited, and the first event
        assert response.status_code == 200
        event = await trail.next()
    assert event["rst"]["path"] == "/aets/X/studies"
    assert trail.pending() == 0


# -- the writer -----------------------------------------------------------------------------------


async def test_writer_appends_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text('{"earlier":1}\n')
    trail = AuditTrail(AuditConfig(path=str(path)))
    async with trio.open_nursery() as nursery:
        await nursery.start(trail.run)
        trail.record({"n": 1})
        trail.record({"n": 2, "text": "Ünïcode"})
        nursery.cancel_scope.cancel()  # what is queued is still written
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [
        {"earlier": 1},
        {"n": 1},
        {"n": 2, "text": "Ünïcode"},
    ]


async def test_writer_errors_are_logged_with_the_event(caplog: pytest.LogCaptureFixture) -> None:
    trail = AuditTrail(AuditConfig(path="/dev/full"))
    with caplog.at_level(logging.ERROR, logger="rst.audit.trail"):
        async with trio.open_nursery() as nursery:
            await nursery.start(trail.run)
            trail.record({"who": "someone"})
            nursery.cancel_scope.cancel()
    (logged,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert '{"who":"someone"}' in logged.getMessage()


def test_a_full_queue_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    trail = AuditTrail(AuditConfig(path="-", queue=1))
    with caplog.at_level(logging.ERROR, logger="rst.audit.trail"):
        trail.record({"n": 1})
        trail.record({"n": 2})  # nobody writes: the second finds the queue full
    (logged,) = caplog.records
    assert '{"n":2}' in logged.getMessage()


def test_config_section() -> None:
    assert Config.model_validate({"audit": {"path": "-"}}).audit == AuditConfig(path="-")
    assert Config().audit is None
    with pytest.raises(ValueError, match="path"):
        Config.model_validate({"audit": {"path": ""}})


# -- patients: the Patient participant object (PS3.15 A.5.3) --------------------------------------

PATIENT_NUMBER = {"csd-code": "2", "codeSystemName": "RFC-3881", "originalText": "Patient Number"}


def patient_objects(event: dict[str, Any]) -> list[dict[str, Any]]:
    """The Patient participant objects, each checked for the codes every one carries."""
    found = [
        o
        for o in event["ParticipantObjectIdentification"]
        if o["ParticipantObjectIDTypeCode"] == PATIENT_NUMBER
    ]
    for patient in found:
        assert patient["ParticipantObjectTypeCode"] == "1"  # person
        assert patient["ParticipantObjectTypeCodeRole"] == "1"  # patient
    return found


def match(study: str, patient_id: str | None, name: str | None) -> Dataset:
    ds = Dataset()
    ds.StudyInstanceUID = study
    if patient_id is not None:
        ds.PatientID = patient_id
    if name is not None:
        ds.PatientName = name
    return ds


async def test_a_search_names_the_patients_of_its_matches() -> None:
    matches = [
        match(f"{STUDY}.1", "PAT-1", "DOE^JANE"),
        match(f"{STUDY}.2", "PAT-2", None),
        match(f"{STUDY}.3", "PAT-1", "DOE^JANE"),  # the same patient again: listed once
        match(f"{STUDY}.4", None, "NO^ID"),  # no Patient ID: not a patient object
        match(f"{STUDY}.5", "PAT-2", "ROE^RICHARD"),  # the name now known
    ]
    async with gateway({"X": ScriptedBackend(matches=matches)}) as (client, trail):
        response = await client.get("/aets/X/studies", params={"PatientName": "*"})
        assert response.status_code == 200
        event = await trail.next()
    query, *patients = event["ParticipantObjectIdentification"]
    assert query["ParticipantObjectIDTypeCode"]["csd-code"] == "110181"
    assert patients == patient_objects(event)
    assert [(p["ParticipantObjectID"], p["ParticipantObjectName"]) for p in patients] == [
        ("PAT-1", "DOE^JANE"),
        ("PAT-2", "ROE^RICHARD"),
    ]
    assert event["rst"]["patients"] == [
        {"id": "PAT-1", "name": "DOE^JANE"},
        {"id": "PAT-2", "name": "ROE^RICHARD"},
    ]
    assert event["rst"]["patients_omitted"] == 0
    assert event["rst"]["matches"] == 5


async def test_a_search_without_patient_keys_names_no_patient() -> None:
    matches = [match(f"{STUDY}.1", None, None)]
    async with gateway({"X": ScriptedBackend(matches=matches)}) as (client, trail):
        assert (await client.get("/aets/X/series")).status_code == 200
        event = await trail.next()
    assert patient_objects(event) == []
    assert event["rst"]["patients"] == []


@pytest.mark.parametrize(
    "resource", ["", "/metadata", f"/series/{SERIES}/instances/{SOPS[0]}"], ids=str
)
async def test_a_retrieve_names_the_patients_of_its_instances(resource: str) -> None:
    """Read from each instance's first bytes as it passes: Explicit and Implicit VR, a name in
    another character set, an instance that has no Patient ID."""
    implicit = "1.2.840.10008.1.2"
    instances = [
        part10(SOPS[0], patient_id="PAT-1", patient_name="DOE^JANE"),
        part10(SOPS[1], patient_id="PAT-2", patient_name="ROE^RICHARD", syntax=implicit),
        part10(
            f"{SERIES}.3", patient_id="PAT-3", patient_name="Müller^Jürgen", charset="ISO_IR 100"
        ),
        part10(f"{SERIES}.4"),
        part10(f"{SERIES}.5", patient_id="PAT-1", patient_name="DOE^JANE"),
    ]
    if "instances" in resource:
        instances = instances[:1]
    path = f"/aets/X/studies/{STUDY}{resource}"
    async with gateway({"X": ScriptedBackend(instances=instances)}) as (client, trail):
        response = await client.get(path)
        assert response.status_code == 200, response.text[:300]
        event = await trail.next()
    check_common(event, path=path, status=200)
    expected = [("PAT-1", "DOE^JANE"), ("PAT-2", "ROE^RICHARD"), ("PAT-3", "Müller^Jürgen")]
    if "instances" in resource:
        expected = expected[:1]
    patients = patient_objects(event)
    assert [(p["ParticipantObjectID"], p["ParticipantObjectName"]) for p in patients] == expected
    # the study first, then the patients
    assert event["ParticipantObjectIdentification"][0]["ParticipantObjectIDTypeCode"] == STUDY_UID
    assert event["ParticipantObjectIdentification"][1:] == patients
    assert event["rst"]["patients"] == [{"id": i, "name": n} for i, n in expected]
    assert event["rst"]["instances"] == len(instances)


async def test_a_store_names_the_patients_of_what_was_stored() -> None:
    body, content_type = stow_body(
        part10(SOPS[0], patient_id="PAT-1", patient_name="DOE^JANE").data,
        part10(SOPS[1], patient_id="PAT-2", patient_name="ROE^RICHARD").data,
    )
    async with gateway(
        {"X": ScriptedBackend(answers={SOPS[1]: StoreResult(OUT_OF_RESOURCES)})}
    ) as (client, trail):
        response = await client.post(
            "/aets/X/studies", content=body, headers={"Content-Type": content_type}
        )
        assert response.status_code == 202
        event = await trail.next()
    (patient,) = patient_objects(event)
    assert patient == {
        "ParticipantObjectTypeCode": "1",
        "ParticipantObjectTypeCodeRole": "1",
        "ParticipantObjectIDTypeCode": PATIENT_NUMBER,
        "ParticipantObjectID": "PAT-1",
        "ParticipantObjectName": "DOE^JANE",
    }
    assert event["rst"]["patients"] == [{"id": "PAT-1", "name": "DOE^JANE"}]  # not the refused
