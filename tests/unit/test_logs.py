"""Log lines: text or JSON, each with its request id and, where known, its AE."""

from __future__ import annotations

import json
import logging
import sys

from rst.logs import JsonFormatter, RequestIdFilter, request_aet, request_id


def record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = sys.exc_info() if exc else None
    made = logging.LogRecord("rst.test", logging.WARNING, __file__, 1, message, args, exc_info)
    RequestIdFilter().filter(made)
    return made


def test_a_json_line_carries_the_request_id_and_the_ae() -> None:
    id_token, aet_token = request_id.set("viewer-42"), request_aet.set("ORTHANC")
    try:
        line = JsonFormatter(worker=1).format(record("retrieve of %s failed", "1.2.3"))
    finally:
        request_id.reset(id_token)
        request_aet.reset(aet_token)
    parsed = json.loads(line)
    assert parsed.pop("time").endswith("+00:00")
    assert parsed == {
        "level": "WARNING",
        "logger": "rst.test",
        "message": "retrieve of 1.2.3 failed",
        "request_id": "viewer-42",
        "aet": "ORTHANC",
        "worker": 1,
    }


def test_outside_a_request_there_is_no_ae_and_the_id_is_a_dash() -> None:
    parsed = json.loads(JsonFormatter().format(record("idle")))
    assert parsed["request_id"] == "-"
    assert "aet" not in parsed
    assert "worker" not in parsed


def test_an_exception_stays_on_one_line() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        line = JsonFormatter().format(record("failed", exc=True))
    assert "\n" not in line
    assert "ValueError: boom\nsecond line" in json.loads(line)["exception"]


def test_fields_passed_as_extra_become_json_fields() -> None:
    made = record("association ended")
    made.association = {"direction": "outgoing", "status": "0x0000"}
    parsed = json.loads(JsonFormatter().format(made))
    assert parsed["association"] == {"direction": "outgoing", "status": "0x0000"}
    assert parsed["message"] == "association ended"
    assert "args" not in parsed  # the record's own attributes are not fields
    assert "msg" not in parsed
