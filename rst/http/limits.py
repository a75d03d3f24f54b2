"""The size of a request's head: its URL and its headers, checked before anything reads them.

The HTTP parsers bound what they buffer (``http.max_header_bytes`` is handed to h11, twice it
to h2, which counts 32 bytes more a header: :func:`rst.http.listener.hypercorn_config`), but
h11 only counts what is still incomplete: a head that arrives whole in one read passes whatever
its size. So the app measures every request once more, exactly and the same way for both (as
HTTP/1.1 sends the head), as the first thing it does (:func:`check_head`), and answers
414 for a URL over ``http.max_url_bytes`` and 431 for a head over ``http.max_header_bytes``,
each a JSON error naming the limit, for HTTP/1.1 and HTTP/2 alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rst.config import HttpConfig
from rst.errors import RequestHeadTooLarge, UriTooLong

__all__ = ["check_head", "head_length", "target_length"]


def target_length(scope: Mapping[str, Any]) -> int:
    """The length of the request target as the client sent it: path and query string."""
    path = scope.get("raw_path") or scope.get("path", "").encode()
    query = scope.get("query_string") or b""
    return len(path) + (len(query) + 1 if query else 0)


def head_length(scope: Mapping[str, Any]) -> int:
    """The request line and headers as HTTP/1.1 would carry them (``name: value`` and CRLF)."""
    headers: Iterable[tuple[bytes, bytes]] = scope.get("headers") or ()
    line = len(scope.get("method", "")) + 1 + target_length(scope) + len(" HTTP/1.1\r\n")
    return line + sum(len(name) + len(value) + 4 for name, value in headers)


def check_head(scope: Mapping[str, Any], http: HttpConfig) -> None:
    """:raises UriTooLong: the URL is longer than ``http.max_url_bytes``.
    :raises RequestHeadTooLarge: the head is larger than ``http.max_header_bytes``."""
    target = target_length(scope)
    if target > http.max_url_bytes:
        raise UriTooLong(
            f"the URL ({target} bytes) exceeds the limit of {http.max_url_bytes} bytes "
            "(http.max_url_bytes)"
        )
    head = head_length(scope)
    if head > http.max_header_bytes:
        raise RequestHeadTooLarge(
            f"the request line and headers ({head} bytes) exceed the limit of "
            f"{http.max_header_bytes} bytes (http.max_header_bytes)"
        )
