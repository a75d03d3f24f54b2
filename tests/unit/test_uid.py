"""The UID rule (PS3.5 §9.1) shared by path UIDs and UID matching keys."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rst.dicom.uid import MAX_UID_LENGTH, check_uid, is_valid_uid
from rst.errors import BadRequest


@pytest.mark.parametrize(
    "text",
    [
        "1",
        "0",
        "1.2.840.10008.1.2.1",
        "2.25.329800735698586629295641978511506172918",
        "1." + "2" * 62,  # exactly 64 characters
        "1.02",  # a leading zero breaks PS3.5 but archives hold such UIDs: rst must reach them
    ],
)
def test_valid(text: str) -> None:
    assert is_valid_uid(text)
    assert check_uid("study", text) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        ".",
        "1.",
        ".1",
        "1..2",
        "A\\B",  # a list: the C-FIND/C-MOVE key would match two studies
        "1.2\\1.3",
        "1.2,1.3",
        "*",
        "1.2.*",
        "?",
        "abc",
        "1.2.abc",
        " 1.2",
        "1.2 ",
        "1.2\n",
        "1.2\x00",
        "\U0001f600",
        "\u0661.\u0662",  # Arabic-Indic digits: Unicode digits, not DICOM's
        "1." + "2" * 63,  # 65 characters
        "-1.2",
        "+1",
    ],
)
def test_invalid(text: str) -> None:
    assert not is_valid_uid(text)
    with pytest.raises(BadRequest, match="invalid series UID") as info:
        check_uid("series", text)
    assert info.value.status == 400


def test_message_cuts_a_long_value() -> None:
    with pytest.raises(BadRequest) as info:
        check_uid("study", "9" * 10_000)
    assert len(info.value.message) < 200


@settings(max_examples=300, deadline=None, database=None)
@given(st.text())
def test_valid_means_encodable_digits_and_dots(text: str) -> None:
    if is_valid_uid(text):
        assert len(text) <= MAX_UID_LENGTH
        assert set(text) <= set("0123456789.")
        assert all(text.split("."))
        text.encode("ascii")


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.integers(0, 10**12), min_size=1, max_size=12))
def test_dotted_numbers_are_valid_up_to_64_characters(parts: list[int]) -> None:
    text = ".".join(map(str, parts))
    assert is_valid_uid(text) == (len(text) <= MAX_UID_LENGTH)
