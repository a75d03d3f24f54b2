"""Static API tokens (``[[auth.tokens]]``): known by their SHA-256 only.

The presented token is hashed and compared with every configured hash in constant time, all of
them every time, so that neither the comparison nor the position of the match tells a caller
how close it came. A token is a random string of high entropy (``openssl rand -hex 32``), so a
plain SHA-256 is enough: there is nothing to guess that a slow hash would protect.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from rst.auth.identity import Identity
from rst.auth.settings import TokenConfig

__all__ = ["StaticTokens"]


class StaticTokens:
    def __init__(self, tokens: Iterable[TokenConfig]) -> None:
        self._tokens = tuple((bytes.fromhex(token.sha256), token) for token in tokens)

    def __bool__(self) -> bool:
        return bool(self._tokens)

    def identify(self, presented: str) -> Identity | None:
        """The identity of the token *presented*, or None when it is none of ours."""
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        found: TokenConfig | None = None
        for expected, token in self._tokens:
            if hmac.compare_digest(digest, expected):
                found = token
        if found is None:
            return None
        return Identity(found.name, "token", frozenset(found.roles))
