"""Single flight across processes: a lock file per retrieve, held by the process retrieving.

:mod:`rst.cache.flight` shares one retrieve among the requests of one process. Worker processes
(``http.workers > 1``) share the cache folder but not their memory: without more, two workers
asked for the same series at once would each make a C-MOVE. So the process that retrieves a
study, series or instance from the archive holds an exclusive ``flock`` on a file named by it,
``{cache}/locks/{hash}.lock``, for as long as its retrieve runs; another process that finds it
held waits for it to be released and then looks at the cache again.

Why ``flock``: the kernel drops the lock with the last descriptor of the process that held it,
however that process ends — a worker killed in the middle of a C-MOVE leaves nothing that looks
held, and the waiters go on (one of them retrieves in its turn). The file itself is removed by
its holder on release. Removing a lock file has a well-known race (a waiter opened the old
file, a newcomer creates a new one: both "hold"), closed here the usual way: a process that
got the lock checks that its file is still the one at the path, and tries again otherwise.

Blocking calls (quick: an ``open`` and a non-blocking ``flock``); the waiting — polling, as
``flock`` cannot be waited for on trio's thread — is :mod:`rst.cache.backend`'s.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from pathlib import Path

from rst.services.protocols import RetrieveKeys

__all__ = ["Held", "Locks"]

LOCKS = "locks"
"""The folder of the lock files, in the cache folder."""
_ATTEMPTS = 8
"""Tries to hold a lock whose file keeps being replaced under us (then: held elsewhere)."""


class Held:
    """A lock this process holds; :meth:`release` it (idempotent, never raises). Without a
    descriptor: a lock that could not be taken, released as a no-op."""

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        """Remove the file while holding it, then let go (the kernel frees the lock)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(fd)


class Locks:
    """The lock files of one cache folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder / LOCKS
        self.folder.mkdir(mode=0o700, exist_ok=True)

    def path(self, archive: str, keys: RetrieveKeys) -> Path:
        name = hashlib.sha256(f"{archive}\0{keys.level}\0{keys.uid}".encode()).hexdigest()[:40]
        return self.folder / f"{name}.lock"

    def hold(self, archive: str, keys: RetrieveKeys) -> Held | None:
        """The lock of *keys* for this process, or ``None`` if another open file holds it
        (another process retrieving it — or another request of this one, whose flight the
        caller would have found first)."""
        path = self.path(archive, keys)
        for _ in range(_ATTEMPTS):
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            except BaseException:
                os.close(fd)
                raise
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            mine = os.fstat(fd)
            if current is not None and (current.st_dev, current.st_ino) == (
                mine.st_dev,
                mine.st_ino,
            ):
                return Held(path, fd)
            os.close(fd)  # its holder removed it as we opened it: try the new one
        return None

    def held_elsewhere(self, archive: str, keys: RetrieveKeys) -> bool:
        """Whether some process holds the lock of *keys* now."""
        path = self.path(archive, keys)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops a shared lock we got
        return False
