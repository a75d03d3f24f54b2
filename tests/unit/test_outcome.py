"""What a final C-FIND status means (the retrieve verdict is tested in test_verdict.py)."""

from __future__ import annotations

import pytest
from pydicom import Dataset

from rst.backends.dimse.outcome import check_find_status, status_text
from rst.errors import BackendTimeout, DimseFailure

PACS = "ORTHANC"


def status(code: int, *, comment: str | None = None) -> Dataset:
    ds = Dataset()
    ds.Status = code
    if comment is not None:
        ds.ErrorComment = comment
    return ds


def test_status_text_names_the_code_and_the_comment() -> None:
    assert status_text(status(0xA700, comment="Out of resources")) == "0xA700 (Out of resources)"
    assert status_text(status(0xC001)) == "0xC001"
    assert status_text(Dataset()) == "none"


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
