"""rst.http.frame_routes: a frames request's Accept is parsed once per distinct header."""

from __future__ import annotations

import pytest

from rst.dicom.accept import negotiate_frames
from rst.errors import NotAcceptable
from rst.http.frame_routes import _negotiated

OHIF = "multipart/related; type=application/octet-stream; transfer-syntax=*"


def test_the_same_accept_gives_the_same_choices_parsed_once() -> None:
    first = _negotiated(OHIF, None)
    assert first == negotiate_frames(OHIF, None)
    assert _negotiated(OHIF, None) is first
    # The query parameter is part of the key: it overrides the header.
    assert _negotiated(OHIF, "image/jls") == negotiate_frames(OHIF, "image/jls")
    assert _negotiated(OHIF, "image/jls") != first


def test_a_refusal_is_raised_each_time_never_kept() -> None:
    for _ in range(2):
        with pytest.raises(NotAcceptable):
            _negotiated("text/html", None)
