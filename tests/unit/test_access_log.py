"""rst's access log atoms are hypercorn's, without the per-request copy of the environment."""

from __future__ import annotations

import logging
from typing import Any, cast

import pytest
from hypercorn.logging import AccessLogAtoms
from hypercorn.typing import ResponseSummary, WWWScope

from rst.http.access_log import AccessAtoms

SCOPE = cast(
    WWWScope,
    {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/aets/X/studies/1.2.3",
        "query_string": b"includefield=all",
        "client": ("127.0.0.1", 40000),
        "headers": [(b"Host", b"x"), (b"User-Agent", b"viewer/1"), (b"Referer", b"http://r/")],
    },
)
RESPONSE = cast(
    ResponseSummary,
    {"status": 200, "headers": [(b"content-length", b"512"), (b"content-type", b"a/b")]},
)


@pytest.mark.parametrize("response", [RESPONSE, None], ids=["answered", "unanswered"])
def test_the_atoms_are_hypercorns(response: ResponseSummary | None) -> None:
    theirs = AccessLogAtoms(SCOPE, response, 0.25)
    ours = AccessAtoms(SCOPE, response, 0.25)
    keys = [k for k in theirs if not k.endswith("}e") and k != "t"]
    assert keys
    assert {k: ours[k] for k in keys} == {k: theirs[k] for k in keys}
    assert not [k for k in ours if k.endswith("}e")]  # no copy of the environment
    assert ours["{nothing-like-this}i"] == "-"


def test_an_environment_variable_is_read_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RST_ACCESS_PROBE", "probe-value")
    ours: Any = AccessAtoms(SCOPE, RESPONSE, 0.1)
    theirs = AccessLogAtoms(SCOPE, RESPONSE, 0.1)
    assert ours["{rst_access_probe}e"] == theirs["{rst_access_probe}e"] == "probe-value"
    line = "%({RST_ACCESS_PROBE}e)s %(s)s %(b)s"  # as the access logger formats it
    record = logging.LogRecord("rst.access", logging.INFO, "", 0, line, (ours,), None)
    assert record.getMessage() == "probe-value 200 512"
    assert ours["{rst_no_such_variable}e"] == "-"
