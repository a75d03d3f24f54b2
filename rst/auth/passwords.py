"""HTTP Basic users (``[[auth.users]]``): passwords checked against argon2 or bcrypt hashes.

A password hash is slow on purpose (argon2-cffi's defaults: about 50 ms and 64 MiB), so it is
never computed on the trio loop: it runs on a worker thread (both libraries release the GIL
while hashing), at most :data:`CONCURRENT_CHECKS` at a time, so that a flood of wrong passwords
costs those threads and not the requests of everyone else. A client that can do nothing but
Basic sends the same credentials with every request (a viewer: hundreds per study); a password
that was right is remembered for ``cache_seconds``, under an HMAC with a key made at start-up
and never stored, so that what stays in memory is no faster to attack than the hash itself.

An unknown user costs the same hash as a known one (against a hash of a random password made
once), so that the time taken does not tell which user names exist.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable, Iterable

import bcrypt
import trio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from rst.auth.identity import Identity
from rst.auth.settings import UserConfig

__all__ = ["CONCURRENT_CHECKS", "BasicUsers", "check_password"]

CONCURRENT_CHECKS = 2
"""Password hashes computed at the same time (each takes a core for ~50 ms)."""
REMEMBERED = 1024
"""Right passwords remembered at most (the oldest is forgotten first)."""

_argon2 = PasswordHasher()


def check_password(password_hash: str, password: str) -> bool:
    """Whether *password* matches *password_hash* (argon2 or bcrypt). Blocking and slow."""
    if password_hash.startswith("$argon2"):
        try:
            return _argon2.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False
    try:
        return bcrypt.checkpw(password.encode("utf-8", "surrogatepass"), password_hash.encode())
    except ValueError:  # a malformed hash, or a password bcrypt cannot take (> 72 bytes)
        return False


class BasicUsers:
    def __init__(
        self,
        users: Iterable[UserConfig],
        *,
        cache_seconds: float = 300.0,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self._users = {user.name: user for user in users}
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._remembered: OrderedDict[bytes, float] = OrderedDict()
        self._limiter = trio.CapacityLimiter(CONCURRENT_CHECKS)
        self._decoy: str | None = None

    def __bool__(self) -> bool:
        return bool(self._users)

    async def identify(self, name: str, password: str) -> Identity | None:
        """The identity of user *name* if *password* is theirs, else None."""
        user = self._users.get(name)
        fingerprint = hmac.digest(
            self._key, f"{name}\0{password}".encode("utf-8", "surrogatepass"), hashlib.sha256
        )
        if user is not None and self._recalls(fingerprint):
            return Identity(user.name, "basic", frozenset(user.roles))
        if user is None:
            await trio.to_thread.run_sync(self._decoy_check, password, limiter=self._limiter)
            return None
        stored = user.password_hash.get_secret_value()
        right = await trio.to_thread.run_sync(
            check_password, stored, password, limiter=self._limiter
        )
        if not right:
            return None
        self._remember(fingerprint)
        return Identity(user.name, "basic", frozenset(user.roles))

    def _decoy_check(self, password: str) -> None:
        if self._decoy is None:
            self._decoy = _argon2.hash(secrets.token_urlsafe(16))
        check_password(self._decoy, password)

    def _recalls(self, fingerprint: bytes) -> bool:
        until = self._remembered.get(fingerprint)
        if until is None:
            return False
        if until <= self._clock():
            del self._remembered[fingerprint]
            return False
        return True

    def _remember(self, fingerprint: bytes) -> None:
        self._remembered[fingerprint] = self._clock() + self._cache_seconds
        self._remembered.move_to_end(fingerprint)
        while len(self._remembered) > REMEMBERED:
            self._remembered.popitem(last=False)
