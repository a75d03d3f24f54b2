"""What a response's status means: the classes of PS3.7 Annex C, a parsed response read as a
:class:`Status`, and a final C-FIND status (the retrieve verdict is tested in test_verdict.py)."""

from __future__ import annotations

import pytest

from rst.backends.dimse.outcome import check_find_status, status_of
from rst.backends.dimse.ul import OtherCommand
from rst.dicom.statuses import (
    Status,
    is_cancel,
    is_failure,
    is_pending,
    is_stored,
    is_success,
    is_warning,
)
from rst.errors import DimseFailure, IncompleteRetrieve

PACS = "ORTHANC"

# -- PS3.7 Annex C ---------------------------------------------------------------------------

CLASSES = {
    0x0000: "success",
    0xFF00: "pending",
    0xFF01: "pending",
    0xFE00: "cancel",
    0xB000: "warning",
    0xB007: "warning",
    0x0001: "warning",
    0x0107: "warning",
    0x0116: "warning",
    0xA700: "failure",
    0xA801: "failure",
    0xC000: "failure",
    0xC122: "failure",
    0x0110: "failure",
    0x0122: "failure",
    0x0211: "failure",
    0x1234: "failure",  # not in the standard: not a success either
}


@pytest.mark.parametrize(("code", "kind"), CLASSES.items())
def test_each_code_is_in_exactly_one_class(code: int, kind: str) -> None:
    found = {
        name
        for name, test in (
            ("success", is_success),
            ("pending", is_pending),
            ("cancel", is_cancel),
            ("warning", is_warning),
            ("failure", is_failure),
        )
        if test(code)
    }
    assert found == {kind}
    assert is_stored(code) == (kind in ("success", "warning"))


def test_status_reads_as_its_code_and_comment() -> None:
    assert str(Status(0xA700, "Out of resources")) == "0xA700 (Out of resources)"
    assert str(Status(0xC001)) == "0xC001"


# -- status_of -------------------------------------------------------------------------------


def response(status: int | None, **fields: int | str | None) -> OtherCommand:
    return OtherCommand(0x8021, None, False, 1, status, **fields)  # type: ignore[arg-type]


def test_status_of_takes_the_code_comment_and_counts() -> None:
    parsed = response(0xB000, completed=3, failed=1, warning=2, remaining=4, error_comment="x")

    assert status_of(parsed) == Status(0xB000, "x", completed=3, failed=1, warning=2, remaining=4)


def test_absent_counts_and_comment_read_as_zero_and_empty() -> None:
    assert status_of(response(0x0000)) == Status(0x0000, "", 0, 0, 0, 0)


def test_a_response_without_status_has_none() -> None:
    assert status_of(response(None)) is None


# -- check_find_status ----------------------------------------------------------------------


@pytest.mark.parametrize("code", [0x0000, 0xB000])
def test_find_success_and_warning_pass(code: int) -> None:
    check_find_status(Status(code), PACS)


def test_find_cancelled_by_the_pacs_is_incomplete_not_success() -> None:
    """rst's own C-CANCEL is answered elsewhere: a cancel here cut the matches short."""
    with pytest.raises(IncompleteRetrieve, match="cancelled the C-FIND itself") as info:
        check_find_status(Status(0xFE00), PACS)

    assert info.value.status == 502


def test_find_failure_is_dimse_failure_with_status_and_comment() -> None:
    with pytest.raises(DimseFailure) as info:
        check_find_status(Status(0xA700, "Out of resources"), PACS)

    assert info.value.dimse_status == 0xA700
    assert info.value.status == 502
    assert "failed the C-FIND with status 0xA700 (Out of resources)" in str(info.value)


def test_find_failure_without_comment_names_the_status_only() -> None:
    with pytest.raises(DimseFailure) as info:
        check_find_status(Status(0xC001), PACS)

    assert info.value.dimse_status == 0xC001
    assert str(info.value).endswith("status 0xC001")
