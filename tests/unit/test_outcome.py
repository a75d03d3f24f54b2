"""What final C-FIND / C-MOVE / C-GET statuses mean: every branch of the reconciliation."""

from __future__ import annotations

import pytest
from pydicom import Dataset

from rst.backends.dimse.outcome import (
    SubOperations,
    check_find_status,
    retrieve_outcome,
)
from rst.errors import (
    BackendTimeout,
    DimseFailure,
    IncompleteRetrieve,
    MoveDestinationUnknown,
    NotFound,
)

PACS = "ORTHANC"


def status(
    code: int | None,
    *,
    completed: int | None = None,
    failed: int | None = None,
    warning: int | None = None,
    remaining: int | None = None,
    comment: str | None = None,
) -> Dataset:
    ds = Dataset()
    if code is not None:
        ds.Status = code
    if completed is not None:
        ds.NumberOfCompletedSuboperations = completed
    if failed is not None:
        ds.NumberOfFailedSuboperations = failed
    if warning is not None:
        ds.NumberOfWarningSuboperations = warning
    if remaining is not None:
        ds.NumberOfRemainingSuboperations = remaining
    if comment is not None:
        ds.ErrorComment = comment
    return ds


def outcome(ds: Dataset, received: int, *, cancelled: bool = False) -> Exception | None:
    return retrieve_outcome(
        ds, received=received, pacs=PACS, operation="C-MOVE", cancelled=cancelled
    )


# -- SubOperations ---------------------------------------------------------------------------


def test_sub_operations_read_counts_and_default_to_zero() -> None:
    assert SubOperations.of(status(0, completed=3, failed=1, warning=2, remaining=4)) == (
        SubOperations(completed=3, failed=1, warning=2, remaining=4)
    )
    assert SubOperations.of(status(0)) == SubOperations(0, 0, 0, 0)


# -- retrieve_outcome -----------------------------------------------------------------------


def test_success_with_everything_received_is_none() -> None:
    assert outcome(status(0x0000, completed=5, failed=0, warning=0, remaining=0), 5) is None


def test_success_counts_warning_sub_operations_as_sent() -> None:
    assert outcome(status(0x0000, completed=3, warning=2), 5) is None


def test_more_received_than_reported_is_none() -> None:
    # Some PACS report 0 sub-operations in the final response; what arrived is what counts.
    assert outcome(status(0x0000), 4) is None


def test_success_with_fewer_received_than_completed_is_incomplete() -> None:
    error = outcome(status(0x0000, completed=5), 3)

    assert isinstance(error, IncompleteRetrieve)
    assert "5 completed" in str(error)
    assert "received 3 instance(s)" in str(error)
    assert PACS in str(error)


def test_success_with_fewer_received_than_completed_plus_warning_is_incomplete() -> None:
    assert isinstance(outcome(status(0x0000, completed=3, warning=2), 4), IncompleteRetrieve)


def test_failed_sub_operations_make_it_incomplete_even_if_all_sent_arrived() -> None:
    error = outcome(status(0x0000, completed=4, failed=1), 4)

    assert isinstance(error, IncompleteRetrieve)
    assert "1 failed" in str(error)


def test_warning_status_with_failed_sub_operations_is_incomplete() -> None:
    error = outcome(status(0xB000, completed=2, failed=3), 2)

    assert isinstance(error, IncompleteRetrieve)
    assert "3 failed" in str(error)


def test_warning_status_without_failures_and_all_received_is_none() -> None:
    assert outcome(status(0xB000, completed=2, warning=1), 3) is None


def test_move_destination_unknown_explains_what_to_configure() -> None:
    error = outcome(status(0xA801), 0)

    assert isinstance(error, MoveDestinationUnknown)
    message = str(error)
    assert "0xA801" in message
    assert PACS in message
    assert "[dimse] aet/host/port" in message
    assert "DICOM modalities" in message


def test_cancel_that_rst_sent_is_none() -> None:
    assert outcome(status(0xFE00, completed=2, remaining=3), 2, cancelled=True) is None


def test_cancel_that_rst_did_not_send_is_incomplete() -> None:
    error = outcome(status(0xFE00, completed=2, remaining=3), 2)

    assert isinstance(error, IncompleteRetrieve)
    assert "cancelled the C-MOVE after 2 instance(s)" in str(error)


def test_empty_status_means_the_pacs_broke_off() -> None:
    error = outcome(Dataset(), 3)

    assert isinstance(error, IncompleteRetrieve)
    assert "broke off after 3 instance(s)" in str(error)


def test_empty_status_is_incomplete_even_if_rst_cancelled() -> None:
    assert isinstance(outcome(Dataset(), 0, cancelled=True), IncompleteRetrieve)


def test_nothing_to_send_and_nothing_received_is_not_found() -> None:
    error = outcome(status(0x0000, completed=0, failed=0, warning=0, remaining=0), 0)

    assert isinstance(error, NotFound)
    assert PACS in str(error)


def test_nothing_received_but_sub_operations_completed_is_incomplete_not_not_found() -> None:
    assert isinstance(outcome(status(0x0000, completed=2), 0), IncompleteRetrieve)


@pytest.mark.parametrize("code", [0xA701, 0xA702, 0xA900, 0xC000, 0x0122])
def test_other_failure_is_dimse_failure_with_the_status(code: int) -> None:
    error = outcome(status(code, completed=1, failed=2, comment="out of resources"), 1)

    assert isinstance(error, DimseFailure)
    assert error.dimse_status == code
    message = str(error)
    assert f"0x{code:04X} (out of resources)" in message
    assert "after 1 instance(s) (1 completed, 2 failed)" in message


def test_operation_name_appears_in_the_message() -> None:
    error = retrieve_outcome(status(0x0000, completed=2), received=1, pacs=PACS, operation="C-GET")

    assert isinstance(error, IncompleteRetrieve)
    assert "incomplete C-GET" in str(error)


# -- check_find_status ----------------------------------------------------------------------


@pytest.mark.parametrize("code", [0x0000, 0xFE00, 0xFF00, 0xFF01])
def test_find_success_cancel_and_pending_pass(code: int) -> None:
    check_find_status(status(code), PACS)


def test_find_without_status_is_a_backend_timeout() -> None:
    with pytest.raises(BackendTimeout, match=f"PACS {PACS} stopped answering the C-FIND"):
        check_find_status(Dataset(), PACS)


def test_find_failure_is_dimse_failure_with_status_and_comment() -> None:
    with pytest.raises(DimseFailure) as info:
        check_find_status(status(0xA700, comment="Out of resources"), PACS)

    assert info.value.dimse_status == 0xA700
    assert "failed the C-FIND with status 0xA700 (Out of resources)" in str(info.value)


def test_find_failure_without_comment_names_the_status_only() -> None:
    with pytest.raises(DimseFailure) as info:
        check_find_status(status(0xC001), PACS)

    assert info.value.dimse_status == 0xC001
    assert str(info.value).endswith("status 0xC001")
