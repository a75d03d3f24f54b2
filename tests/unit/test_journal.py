"""The association's log line: written once, with its fields, at the right level."""

from __future__ import annotations

import contextvars
import logging

import pytest

from rst import logs
from rst.backends.dimse.journal import INCOMING, OUTGOING, AssociationJournal


@pytest.fixture
def caught(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="rst.backends.dimse.journal")
    return caplog


def test_the_first_ending_counts_and_the_line_is_written_once(
    caught: pytest.LogCaptureFixture,
) -> None:
    journal = AssociationJournal(OUTGOING, "10.0.0.1:104", peer_aet="PACS", operation="C-MOVE")
    journal.status = 0xA801
    journal.ended("aborted", "Service User: not specified", by="peer")
    journal.ended("aborted", "broken", by="rst")  # rst closing up afterwards
    journal.close()
    journal.close()
    [record] = caught.records
    fields = getattr(record, "association")  # noqa: B009 - set by extra=
    assert fields["outcome"] == "aborted"
    assert fields["aborted_by"] == "peer"
    assert fields["reason"] == "Service User: not specified"
    assert fields["status"] == "0xA801"
    assert record.levelno == logging.INFO
    assert "aborted by the peer" in record.getMessage()


def test_an_incoming_association_carries_the_requests_it_served(
    caught: pytest.LogCaptureFixture,
) -> None:
    def serve() -> None:  # in a context of its own, as a receiver's task has
        journal = AssociationJournal(INCOMING, "10.0.0.2:5000", peer_aet="PACS")
        journal.served("r-1", "PACS")
        journal.served("r-2", "PACS")
        journal.served("r-1", "PACS")
        assert logs.request_id.get() == "r-1"
        assert logs.request_aet.get() == "PACS"
        journal.stores, journal.bytes = 3, 1000
        journal.close()

    contextvars.copy_context().run(serve)
    assert logs.request_id.get() == "-"
    [record] = caught.records
    fields = getattr(record, "association")  # noqa: B009 - set by extra=
    assert fields["request_ids"] == ["r-1", "r-2"]
    assert fields["operation"] == "3 C-STORE"
    assert fields["outcome"] == "released"


def test_background_echoes_that_succeed_log_at_debug(caught: pytest.LogCaptureFixture) -> None:
    AssociationJournal(OUTGOING, "h:1", peer_aet="PACS", operation="C-ECHO").close()
    failed = AssociationJournal(OUTGOING, "h:1", peer_aet="PACS", operation="C-ECHO")
    failed.ended("failed", "unreachable")
    failed.close()
    busy = AssociationJournal(OUTGOING, "h:1", peer_aet="PACS", operation="C-FIND")
    busy.silent = True
    busy.close()
    assert [r.levelno for r in caught.records] == [logging.DEBUG, logging.INFO]
