"""One audited request as a DICOM audit message (PS3.15 Annex A.5), in JSON.

Pure: an :class:`~rst.audit.record.AuditRecord` and how its response ended go in, a dict comes
out. The field names are those of the DICOM audit message schema (PS3.15 A.5.1), so that a
relay can turn each line into the XML an ATNA repository takes; ``rst`` holds the same facts
flat, for people and log tools.

- A search (QIDO-RS, MWL-RS) is a **Query** (EventID 110112, action ``E``): the client is the
  process issuing the query (Source Role ID, the requestor), rst the process responding
  (Destination Role ID); the participant object is the SOP class queried (110181, "SOP Class
  UID": the C-FIND information model rst uses) with the query string in
  ``ParticipantObjectQuery`` (base64, as the schema types it).
- A retrieve (every WADO-RS resource, WADO-URI) is **DICOM Instances Transferred** (110104)
  with action ``R``: rst is the source, the client the destination and requestor.
- A store (STOW-RS) is **DICOM Instances Transferred** with action ``C``: the client is the
  source and requestor, rst the destination.
- Each study is a participant object (110180, "Study Instance UID"), with its SOP classes, the
  number of instances of each and their UIDs (up to :data:`MAX_LISTED` per event).
- Each patient the matches or the instances name is a participant object too (type Person,
  role Patient, ID type (2, RFC-3881, "Patient Number")): the Patient ID, and the Patient's
  Name where the data held it (up to :data:`~rst.audit.record.MAX_PATIENTS` per event).

Never recorded: a secret (only the identity the credentials proved, and the scheme of the
``Authorization`` header).
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any, Literal

from rst.audit.record import AuditRecord
from rst.dicom.uids import MODALITY_WORKLIST_FIND, STUDY_ROOT_FIND

__all__ = ["MAX_LISTED", "Ending", "Outcome", "event", "outcome_of"]

Outcome = Literal["success", "partial", "failure", "client gone"]

MAX_LISTED = 10_000
"""SOP Instance UIDs listed in one event at most (the counts are always whole)."""

# Coded values (PS3.16 DCM and PS3.15 A.5).
QUERY = {"csd-code": "110112", "codeSystemName": "DCM", "originalText": "Query"}
INSTANCES_TRANSFERRED = {
    "csd-code": "110104",
    "codeSystemName": "DCM",
    "originalText": "DICOM Instances Transferred",
}
SOURCE = {"csd-code": "110153", "codeSystemName": "DCM", "originalText": "Source Role ID"}
DESTINATION = {
    "csd-code": "110152",
    "codeSystemName": "DCM",
    "originalText": "Destination Role ID",
}
STATION_AE = {"csd-code": "110119", "codeSystemName": "DCM", "originalText": "Station AE Title"}
STUDY_UID = {"csd-code": "110180", "codeSystemName": "DCM", "originalText": "Study Instance UID"}
SOP_CLASS_UID = {"csd-code": "110181", "codeSystemName": "DCM", "originalText": "SOP Class UID"}
PATIENT_NUMBER = {"csd-code": "2", "codeSystemName": "RFC-3881", "originalText": "Patient Number"}
PERSON, SYSTEM_OBJECT = "1", "2"
"""ParticipantObjectTypeCode."""
PATIENT, REPORT = "1", "3"
"""ParticipantObjectTypeCodeRole (patients; studies and queried SOP classes, per A.5.3)."""
IP_ADDRESS = "2"
"""NetworkAccessPointTypeCode."""
APPLICATION_SERVER = "4"
"""AuditSourceTypeCode."""
SUCCESS, MINOR_FAILURE, SERIOUS_FAILURE = "0", "4", "8"
"""EventOutcomeIndicator."""


@dataclass(frozen=True)
class Ending:
    """How the response of a request ended, as the HTTP layer saw it."""

    status: int | None
    """The response's status; None: no response began."""
    complete: bool
    """The last byte of the response was sent."""
    client_gone: bool
    """The client disconnected before that."""
    bytes_sent: int
    bytes_received: int
    ended: float
    """Wall-clock time (seconds since the epoch)."""
    duration: float


def outcome_of(ending: Ending) -> Outcome:
    if not ending.complete:
        return "client gone" if ending.client_gone else "failure"
    assert ending.status is not None
    if ending.status in (202, 206):  # STOW-RS: some stored; WADO: some instances
        return "partial"
    return "success" if 200 <= ending.status < 300 else "failure"


def _indicator(outcome: Outcome, ending: Ending) -> str:
    """0 for a success; 8 for rst's or the archive's failure (5xx, no response, a response
    broken off); 4 for the rest (a 4xx, a partial success, a client gone)."""
    if outcome == "success":
        return SUCCESS
    if outcome == "failure" and (
        ending.status is None or ending.status >= 500 or not ending.complete
    ):
        return SERIOUS_FAILURE
    return MINOR_FAILURE


def _description(outcome: Outcome, ending: Ending) -> str:
    status = "no response" if ending.status is None else f"HTTP {ending.status}"
    if outcome == "client gone":
        return f"{status}: the client went away before the response ended"
    if outcome == "failure" and not ending.complete and ending.status is not None:
        return f"{status}: the response was broken off"
    return f"{status}: {outcome}"


def _timestamp(seconds: float) -> str:
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{whole}.{int(seconds * 1000) % 1000:03d}Z"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


def event(record: AuditRecord, ending: Ending, *, source_id: str) -> dict[str, Any]:
    """The audit message of *record*, whose response ended as *ending* says."""
    assert record.service is not None
    outcome = outcome_of(ending)
    searching = record.service in ("search", "worklist")
    storing = record.service == "store"
    client = _client(record, requestor=True)
    gateway: dict[str, Any] = {
        "UserID": record.path,
        "AlternativeUserID": source_id,
        "UserIsRequestor": False,
    }
    if searching or storing:
        client["RoleIDCode"], gateway["RoleIDCode"] = SOURCE, DESTINATION
    else:
        client["RoleIDCode"], gateway["RoleIDCode"] = DESTINATION, SOURCE
    participants = [client, gateway]
    if record.aet is not None:
        participants.append(
            {
                "UserID": record.station or record.aet,
                "UserIDTypeCode": STATION_AE,
                "UserIsRequestor": False,
            }
        )
    objects = _studies(record) + _patients(record)
    if searching:
        objects.insert(0, _query_object(record))
    return {
        "EventIdentification": {
            "EventID": QUERY if searching else INSTANCES_TRANSFERRED,
            "EventActionCode": "E" if searching else "C" if storing else "R",
            "EventDateTime": _timestamp(ending.ended),
            "EventOutcomeIndicator": _indicator(outcome, ending),
            "EventOutcomeDescription": _description(outcome, ending),
        },
        "ActiveParticipant": participants,
        "AuditSourceIdentification": {
            "AuditSourceID": source_id,
            "AuditSourceTypeCode": APPLICATION_SERVER,
        },
        "ParticipantObjectIdentification": objects,
        "rst": _flat(record, ending, outcome),
    }


def _client(record: AuditRecord, *, requestor: bool) -> dict[str, Any]:
    who = record.identity
    client: dict[str, Any] = {
        "UserID": who.subject if who is not None else "(unauthenticated)",
        "UserIsRequestor": requestor,
    }
    if who is not None and who.username is not None:
        client["UserName"] = who.username
    if who is not None and who.issuer is not None:
        client["AlternativeUserID"] = who.issuer
    if record.client is not None:
        client["NetworkAccessPointID"] = record.client
        client["NetworkAccessPointTypeCode"] = IP_ADDRESS
    return client


def _query_object(record: AuditRecord) -> dict[str, Any]:
    model = MODALITY_WORKLIST_FIND if record.service == "worklist" else STUDY_ROOT_FIND
    query = record.query or ""
    return {
        "ParticipantObjectTypeCode": SYSTEM_OBJECT,
        "ParticipantObjectTypeCodeRole": REPORT,
        "ParticipantObjectIDTypeCode": SOP_CLASS_UID,
        "ParticipantObjectID": model,
        "ParticipantObjectQuery": _b64(query),
        "ParticipantObjectDetail": [{"type": "QueryEncoding", "value": _b64("UTF-8")}],
    }


def _studies(record: AuditRecord) -> list[dict[str, Any]]:
    studies = dict(record.studies)
    if record.study_uid is not None:
        studies.setdefault(record.study_uid, [])
    listed = 0
    objects = []
    for study_uid, instances in studies.items():
        classes: dict[str, list[str]] = {}
        for sop_class, sop_uid in instances:
            classes.setdefault(sop_class, []).append(sop_uid)
        description = []
        for sop_class, uids in classes.items():
            shown = uids[: max(0, MAX_LISTED - listed)]
            listed += len(shown)
            description.append(
                {
                    "UID": sop_class,
                    "NumberOfInstances": len(uids),
                    "Instance": [{"UID": uid} for uid in shown],
                }
            )
        study: dict[str, Any] = {
            "ParticipantObjectTypeCode": SYSTEM_OBJECT,
            "ParticipantObjectTypeCodeRole": REPORT,
            "ParticipantObjectIDTypeCode": STUDY_UID,
            "ParticipantObjectID": study_uid,
        }
        if description:
            study["ParticipantObjectDescription"] = {"SOPClass": description}
        objects.append(study)
    return objects


def _patients(record: AuditRecord) -> list[dict[str, Any]]:
    objects = []
    for patient_id, name in record.patients.items():
        patient: dict[str, Any] = {
            "ParticipantObjectTypeCode": PERSON,
            "ParticipantObjectTypeCodeRole": PATIENT,
            "ParticipantObjectIDTypeCode": PATIENT_NUMBER,
            "ParticipantObjectID": patient_id,
        }
        if name is not None:
            patient["ParticipantObjectName"] = name
        objects.append(patient)
    return objects


def _flat(record: AuditRecord, ending: Ending, outcome: Outcome) -> dict[str, Any]:
    who = record.identity
    flat: dict[str, Any] = {
        "request_id": record.request_id,
        "service": record.service,
        "resource": record.resource,
        "method": record.method,
        "path": record.path,
        "aet": record.aet,
        "level": record.level,
        "study": record.study_uid,
        "series": record.series_uid,
        "instance": record.sop_uid,
        "client": record.client,
        "subject": who.subject if who is not None else None,
        "auth": who.method if who is not None else None,
        "auth_scheme": record.auth_scheme,
        "username": who.username if who is not None else None,
        "issuer": who.issuer if who is not None else None,
        "roles": sorted(who.roles) if who is not None else [],
        "status": ending.status,
        "outcome": outcome,
        "started": _timestamp(record.started),
        "ended": _timestamp(ending.ended),
        "duration_s": round(ending.duration, 6),
        "instances": record.instances,
        "bytes_sent": ending.bytes_sent,
        "bytes_received": ending.bytes_received,
        "patients": [{"id": pid, "name": name} for pid, name in record.patients.items()],
        "patients_omitted": record.patients_omitted,
    }
    if record.service in ("search", "worklist"):
        flat["matches"] = record.matches
        flat["query"] = record.query
        flat["query_truncated"] = record.query_truncated
    if record.service == "store":
        flat["failed"] = record.failed
    return flat
