"""Instances into and out of cache files, with flat memory.

Out: :func:`read_entries` makes :class:`~rst.services.protocols.Instance` objects of cached
files — whole in ``data`` up to :data:`CHUNK` bytes (on trio's thread where the page cache holds
them, else several small ones in one trip to a worker thread), else the first chunk there and
the rest read chunk by chunk as the consumer asks (:class:`FileChunks`), raising
:class:`~rst.errors.IncompleteRetrieve` if the file breaks off, as an instance arriving from a
PACS would.

In: an instance coming from the archive passes through unchanged and is written to the cache
on the way. A whole one goes to the :class:`Writer`, a task of its own, so that writing one
instance to disk overlaps with passing on the next; the ``rest`` of a large one goes through a
:class:`Tee`, chunk by chunk as the consumer reads it, into a temporary file
(:class:`Recording`). A file is committed to the cache only once its instance is whole; a
write that fails stops the recording, never the instance.

Sidecars: a cached instance carries :class:`EntrySidecars` (rows of the index, remembered by
the process); one on its way in carries :class:`PendingSidecars`, which hold what is saved in
memory until the instance has its entry, then keep it there (or drop it if the instance is not
cached). A whole instance written by the :class:`Writer` has its frame layout derived from its
bytes on the way. A cached instance's sidecars also read parts of its file
(:class:`FileRanges`): what a frame layout is used with.
"""

from __future__ import annotations

import collections
import logging
import os
import sqlite3
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio

from rst.bridge import run_sync
from rst.cache.cache import Cache
from rst.cache.store import Entry, Pending, Sidecar, Store
from rst.dicom.frames import FrameSource
from rst.dicom.layout import FRAMES, derive, native_layout
from rst.errors import IncompleteRetrieve, RstError
from rst.services.protocols import Instance, RetrieveKeys

__all__ = [
    "CHUNK",
    "EntrySidecars",
    "FileChunks",
    "FileRanges",
    "Gone",
    "PendingSidecars",
    "Recording",
    "Tee",
    "Writer",
    "batch",
    "read_entries",
]

log = logging.getLogger(__name__)

CHUNK = 1 << 20
"""Bytes read from a cache file at a time; files up to this size are read whole."""


class Gone(Exception):
    """The file of a cache entry cannot be read any more (evicted since it was looked up)."""


READ_AHEAD = 1 << 20
"""Bytes of small cached instances read in one trip to a worker thread."""


def batch(entries: Sequence[Entry]) -> int:
    """How many of *entries*, from the first, :func:`read_entries` should read in one trip: small
    ones up to :data:`READ_AHEAD` bytes together, or one large one alone."""
    total = 0
    for count, entry in enumerate(entries):
        if entry.size > CHUNK or total + entry.size > READ_AHEAD:
            return max(count, 1)
        total += entry.size
    return len(entries)


async def read_entries(
    entries: Sequence[Entry], store: Store
) -> tuple[list[Instance], Gone | None]:
    """The cached instances *entries* of *store* (see :func:`batch`), each with its first
    :data:`CHUNK` bytes read; reading stops at the first whose file is gone, returned with
    those before it.

    Files that are whole in the page cache are read on trio's thread (:func:`_resident`);
    from the first that is not, the rest are read in one trip to a worker thread."""
    found: list[Instance] = []
    for entry in entries:
        try:
            instance = _resident(entry, store)
        except Gone as gone:
            await trio.lowlevel.checkpoint()
            return found, gone
        if instance is None:
            break
        found.append(instance)
    rest = entries[len(found) :]
    if not rest:
        await trio.lowlevel.checkpoint()
        return found, None

    def read() -> tuple[list[Instance], Gone | None]:
        for entry in rest:
            try:
                found.append(_open(entry, store))
            except Gone as gone:
                return found, gone
        return found, None

    return await run_sync(read)


def _resident(entry: Entry, store: Store) -> Instance | None:
    """*entry*, read without blocking where its file is small (read whole) and all of it is in
    the page cache (``RWF_NOWAIT``: the kernel answers ``EAGAIN`` rather than wait for the
    disk); ``None`` where it is not, or cannot tell (a file system without ``RWF_NOWAIT``):
    then a worker thread reads it. A warm frame request is then served without a trip to a
    worker thread, whose handover costs more CPU than the read (about 0.1 ms against 0.05 ms
    for 0.5 MB). What stays on trio's thread is opening a file of the cache's own folder,
    whose directory entries a warm cache has in memory."""
    if entry.size > CHUNK or _NOWAIT is None:
        return None
    fd = _open_whole(entry)
    size = entry.size
    try:
        buffer = bytearray(size)
        try:
            got = os.preadv(fd, [buffer], 0, _NOWAIT)
        except OSError:  # EAGAIN: not in memory; EOPNOTSUPP: not on this file system
            return None
        if got != size:  # partly in memory (or cut short: the worker thread tells)
            return None
    except OSError as exc:
        raise Gone(f"{entry.path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    return _instance(entry, store, bytes(buffer), None, size)


_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)
"""``preadv``'s flag for a read that must not wait for the disk (Linux)."""


def _open_whole(entry: Entry) -> int:
    """A descriptor of *entry*'s file, which has the entry's size (else :class:`Gone`)."""
    try:
        fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise Gone(f"{entry.path}: {exc.strerror}") from None
    try:
        size = os.fstat(fd).st_size
    except OSError as exc:
        os.close(fd)
        raise Gone(f"{entry.path}: {exc.strerror}") from None
    if size != entry.size:
        os.close(fd)
        raise Gone(f"{entry.path} has {size} bytes instead of {entry.size}")
    return fd


def _open(entry: Entry, store: Store) -> Instance:
    fd = _open_whole(entry)
    size = entry.size
    try:
        # As many bytes as the entry says: asking for more would allocate CHUNK bytes and
        # shrink them, a fresh mapping of memory per read whose page faults cost ten times the
        # read itself (glibc serves so large a buffer with mmap).
        data = os.pread(fd, min(size, CHUNK), 0)
        if len(data) != min(size, CHUNK):
            raise Gone(f"{entry.path} was cut short while it was read")
    except OSError as exc:
        os.close(fd)
        raise Gone(f"{entry.path}: {exc.strerror}") from None
    except BaseException:
        os.close(fd)
        raise
    rest = None
    if size <= CHUNK:
        os.close(fd)
    else:
        rest = FileChunks(fd, entry, offset=len(data))
    return _instance(entry, store, data, rest, size)


def _instance(
    entry: Entry, store: Store, data: bytes, rest: FileChunks | None, size: int
) -> Instance:
    return Instance(
        data,
        entry.sop_class_uid,
        entry.sop_uid,
        entry.transfer_syntax,
        rest=rest,
        sidecars=EntrySidecars(store, entry.path, FileRanges(data, rest, size)),
    )


class FileRanges:
    """Reads of any part of a cached file (:class:`~rst.services.protocols.ByteRanges`): from
    its first chunk where that holds them, else from its open file — open, like ``rest``,
    until the consumer takes the next instance."""

    def __init__(self, data: bytes, rest: FileChunks | None, size: int) -> None:
        self._data = data
        self._rest = rest
        self.size = size

    async def read(self, start: int, length: int) -> bytes:
        if start + length <= len(self._data) or self._rest is None:
            return self._data[start : start + length]
        return await run_sync(partial(self._rest.pread, start, length))


class EntrySidecars:
    """The sidecars of a cached instance: rows of the index (blocking), remembered by the
    process (:mod:`rst.cache.memo`). ``ranges``: reads of the file itself, where it is open
    (what a sidecar that says where things are in the file is used with)."""

    def __init__(self, store: Store, path: Path, ranges: FileRanges | None = None) -> None:
        self._store = store
        self._path = path
        self.ranges = ranges

    def peek(self, kind: str) -> bytes | None:
        return self._store.memo.sidecar(self._path, kind)

    def load(self, kind: str) -> bytes | None:
        try:
            return self._store.sidecar(self._path, kind)
        except sqlite3.Error as exc:
            log.warning("cache: cannot read the %s of %s: %s", kind, self._path, exc)
            return None

    def save(self, kind: str, data: bytes) -> None:
        save_sidecars(self._store, [(self._path, kind, data)])

    arriving = False

    def keep_nowait(self, kind: str, data: bytes) -> bool:
        return False


def save_sidecars(store: Store, sidecars: list[Sidecar]) -> None:
    """Keep *sidecars* (instance file, kind, data) in *store*, in one transaction; best effort
    (the cache still serves the instances; what is lost is derived again)."""
    if not sidecars:
        return
    try:
        store.save_sidecars(sidecars)
    except sqlite3.Error as exc:
        log.warning("cache: cannot keep what was derived from %s: %s", sidecars[0][0], exc)


class PendingSidecars:
    """The sidecars of an instance on its way into the cache: what is saved before it has its
    entry waits in memory, and is written by :meth:`settle` (on a worker thread: it blocks).
    Thread-safe: the consumer of the instance saves on one worker thread while the cache
    writer settles on another."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._saved: dict[str, bytes] = {}
        self._home: EntrySidecars | None = None
        self._settled = False
        self.ranges: FileRanges | None = None
        """Never: the instance is read as it arrives (what is derived here, no layout)."""

    def peek(self, kind: str) -> bytes | None:
        with self._lock:
            home, saved = self._home, self._saved.get(kind)
        return saved if home is None else home.peek(kind)

    def load(self, kind: str) -> bytes | None:
        with self._lock:
            home, saved = self._home, self._saved.get(kind)
        return saved if home is None else home.load(kind)

    def save(self, kind: str, data: bytes) -> None:
        if self.keep_nowait(kind, data):
            return
        with self._lock:
            home = self._home
        if home is not None:
            home.save(kind, data)

    @property
    def arriving(self) -> bool:
        with self._lock:
            return not self._settled

    def keep_nowait(self, kind: str, data: bytes) -> bool:
        with self._lock:
            if self._settled:
                return False
            self._saved[kind] = data
            return True

    def settle(
        self,
        entry: Entry | None,
        store: Store | None = None,
        gathered: list[Sidecar] | None = None,
    ) -> None:
        """The instance is cached as *entry* in *store* (``None``: not cached, what was saved
        goes). What was saved is kept there — or added to *gathered*, for the caller to keep
        with others in one transaction."""
        with self._lock:
            saved, self._saved = self._saved, {}
            home = None if entry is None or store is None else EntrySidecars(store, entry.path)
            self._home = home
            self._settled = True
        if home is None or entry is None or store is None:
            return
        found = [(entry.path, kind, data) for kind, data in saved.items()]
        if gathered is not None:
            gathered += found
        else:
            save_sidecars(store, found)


class FileChunks:
    """The rest of a cached instance, read :data:`CHUNK` bytes at a time from its open file.

    The file is closed at the end, on an error, or by :meth:`close` (the owner of an instance
    whose consumer stopped early). A class rather than an async generator, so that nothing is
    left for the garbage collector to finalize."""

    def __init__(self, fd: int, entry: Entry, *, offset: int) -> None:
        self._fd: int | None = fd
        self._entry = entry
        self._offset = offset

    def __aiter__(self) -> FileChunks:
        return self

    async def __anext__(self) -> bytes:
        fd = self._fd
        if self._offset >= self._entry.size:
            self.close()
            raise StopAsyncIteration
        if fd is None:
            raise IncompleteRetrieve(
                f"the cached copy of instance {self._entry.sop_uid} was closed before its end"
            )
        want = min(CHUNK, self._entry.size - self._offset)
        try:
            chunk = await run_sync(lambda: os.pread(fd, want, self._offset))
        except OSError as exc:
            self.close()
            raise IncompleteRetrieve(
                f"the cached copy of instance {self._entry.sop_uid} cannot be read: {exc}"
            ) from None
        if len(chunk) != want:
            self.close()
            raise IncompleteRetrieve(
                f"the cached copy of instance {self._entry.sop_uid} was cut short"
            )
        self._offset += want
        return chunk

    def pread(self, start: int, length: int) -> bytes:
        """The file's *length* bytes from *start* (blocking; OSError once it is closed)."""
        fd = self._fd
        if fd is None:
            raise OSError(f"the cached copy of instance {self._entry.sop_uid} is closed")
        return os.pread(fd, length, start)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


WRITE_AHEAD = 16 << 20
"""Bytes of whole instances the :class:`Writer` may have queued (one larger instance passes)."""
WRITE_BATCH = 4 << 20
"""Bytes of queued instances the :class:`Writer` writes at once without waiting any longer."""
WRITE_WINDOW = 0.05
"""Seconds the :class:`Writer` lets a batch gather after its first instance was queued."""


class Writer:
    """Writes whole instances to the cache in the order given, on a task of its own (:meth:`run`),
    and tells *written* each one's entry (``None``: not cached). Holds at most
    :data:`WRITE_AHEAD` bytes of instances not yet written: :meth:`put` waits beyond.

    Instances are written in batches, each in one trip to a worker thread and one index
    transaction: a PACS sends one instance at a time, and writing each as it came cost a trip
    and a transaction per instance (and the thread switches around them). A batch is written
    once *batch* bytes wait (:data:`WRITE_BATCH`), *window* seconds after its first instance
    came (:data:`WRITE_WINDOW`), or at once when :meth:`flush`, :meth:`close` or a full queue
    asks. The request that leads the retrieve never waits for it (it gets each instance as it
    arrives); what waits is another request following the flight, by at most the window."""

    def __init__(
        self,
        cache: Cache,
        *,
        archive: str,
        keys: RetrieveKeys,
        written: Callable[[str, Entry | None], None],
        batch: int = WRITE_BATCH,
        window: float = WRITE_WINDOW,
    ) -> None:
        self._cache = cache
        self._batch = batch
        self._window = window
        self._archive = archive
        self._keys = keys
        self._written = written
        self._queue: collections.deque[Instance] = collections.deque()
        self._queued = 0
        self._closed = False
        self._hurry = 0
        """Tasks waiting for the queue to be written (a flush, a full queue): no gathering."""
        self._changed = trio.Event()

    async def run(self) -> None:
        """Write what is put, until :meth:`close`: in batches (see the class docstring)."""
        while True:
            while not self._queue:
                if self._closed:
                    return
                await self._wait()
            await self._gather()
            instances = list(self._queue)
            entries = await self._cache.put(
                archive=self._archive,
                keys=self._keys,
                instances=instances,
                derive=_layout,
                then=partial(_settle, instances, self._cache.store),
            )
            for instance, entry in zip(instances, entries, strict=True):
                if entry is None and isinstance(instance.sidecars, PendingSidecars):
                    instance.sidecars.settle(None)  # not cached: what waits in memory goes
            for instance, entry in zip(instances, entries, strict=True):
                self._queue.popleft()
                self._queued -= len(instance.data)
                self._written(instance.sop_instance_uid, entry)
            self._signal()

    async def put(self, instance: Instance) -> None:
        """Queue a whole instance (``rest`` is ``None``) to be written (first waiting, while
        :data:`WRITE_AHEAD` bytes are queued, for what is queued to be written)."""
        if self._queue and self._queued + len(instance.data) > WRITE_AHEAD:
            self._hurry += 1  # the batch is as large as it may get
            try:
                self._signal()
                while self._queue and self._queued + len(instance.data) > WRITE_AHEAD:
                    await self._wait()
            finally:
                self._hurry -= 1
        self._queue.append(instance)
        self._queued += len(instance.data)
        self._signal()

    async def flush(self) -> None:
        """Write what is queued now, and wait until everything put has been written."""
        self._hurry += 1
        try:
            self._signal()
            while self._queue:
                await self._wait()
        finally:
            self._hurry -= 1

    def close(self) -> None:
        """No more instances: :meth:`run` returns once the queue is written."""
        self._closed = True
        self._signal()

    async def _gather(self) -> None:
        """Let the batch that has begun grow, up to *batch* bytes and *window* seconds
        (:data:`WRITE_BATCH`, :data:`WRITE_WINDOW`), unless it is wanted now."""
        with trio.move_on_after(self._window):
            while self._queued < self._batch and not self._closed and not self._hurry:
                await self._wait()

    async def _wait(self) -> None:
        await self._changed.wait()

    def _signal(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


def _layout(instance: Instance) -> list[tuple[str, bytes]]:
    """The frame layout of a whole instance, derived from its bytes as it is written to the
    cache (before the index transaction) — a first frame request then reads just its frame. It
    is kept only for the file written from those bytes (not another process's copy, whose
    offsets may differ): see :meth:`~rst.cache.cache.Cache.put`."""
    layout = frame_layout(instance.data)
    return [] if layout is None else [(FRAMES, layout)]


def _settle(
    instances: list[Instance],
    store: Store,
    written: list[tuple[Entry | None, bool]],
) -> list[Sidecar]:
    """Once *instances* have their entries (inside the index transaction that gives them):
    what waited in memory for each is handed back, to be kept in that same transaction."""
    gathered: list[Sidecar] = []
    for instance, (entry, _) in zip(instances, written, strict=True):
        if isinstance(instance.sidecars, PendingSidecars):
            instance.sidecars.settle(entry, store, gathered)
    return gathered


def frame_layout(data: bytes) -> bytes | None:
    """The frame layout of the whole Part 10 file *data* to keep: read from its element headers
    where its pixel data is native and in place (:func:`rst.dicom.layout.native_layout`, no
    pydicom), else derived from the data set pydicom reads (:func:`rst.dicom.layout.derive`);
    ``None`` where it has no frames to serve (no pixel data, unreadable)."""
    quick = native_layout(data)
    if quick is not None:
        return quick
    try:
        return derive(data, FrameSource(data))
    except Exception:  # pydicom raises many kinds on odd data: a frame request will say why
        return None


RECORD_BATCH = 1 << 20
"""Bytes of a streamed instance gathered before they are written (one worker-thread trip)."""


@dataclass
class Recording:
    """One instance still arriving, on its way into the cache (see :meth:`Cache.begin`)."""

    cache: Cache
    pending: Pending | None
    archive: str
    keys: RetrieveKeys
    instance: Instance
    _batch: list[bytes] = field(default_factory=list)
    _batched: int = 0

    async def append(self, chunk: bytes) -> None:
        if self.pending is None:
            return
        self._batch.append(chunk)
        self._batched += len(chunk)
        if self._batched >= RECORD_BATCH:
            await self._flush()

    async def finish(self) -> Entry | None:
        """Commit the whole instance; its entry, or ``None`` if it could not be cached."""
        await self._flush()
        pending, self.pending = self.pending, None
        if pending is None:
            return None
        return await self.cache.commit(
            pending, archive=self.archive, keys=self.keys, instance=self.instance
        )

    def discard(self) -> None:
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.discard()

    async def _flush(self) -> None:
        if self.pending is None or not self._batch:
            return
        data = self._batch[0] if len(self._batch) == 1 else b"".join(self._batch)
        self._batch, self._batched = [], 0
        if not await self.cache.append(self.pending, data):
            self.pending = None  # discarded by the cache; the instance passes on uncached


class Tee:
    """The ``rest`` of an instance arriving from the archive, passed on chunk by chunk and
    recorded on the way. At its end the recording is committed and *on_end* told the entry
    (``None``: not cached); an error of the archive is passed to *on_error*, then raised."""

    def __init__(
        self,
        source: AsyncIterable[bytes],
        recording: Recording,
        *,
        on_end: Callable[[Entry | None], None],
        on_error: Callable[[RstError], None],
    ) -> None:
        self._source: AsyncIterator[bytes] = aiter(source)
        self._recording = recording
        self._on_end = on_end
        self._on_error = on_error
        self.ended = False
        self._closed = False

    def __aiter__(self) -> Tee:
        return self

    async def __anext__(self) -> bytes:
        if self.ended:
            raise StopAsyncIteration
        if self._closed:
            raise IncompleteRetrieve(
                f"instance {self._recording.instance.sop_instance_uid} was broken off"
            )
        try:
            chunk = await self._source.__anext__()
        except StopAsyncIteration:
            self.ended = True
            self._on_end(await self._recording.finish())
            raise
        except RstError as error:
            self.close()
            self._on_error(error)
            raise
        await self._recording.append(chunk)
        return chunk

    async def drain(self) -> None:
        """Read (and record) what the consumer left unread."""
        async for _ in self:
            pass

    def close(self) -> None:
        """The instance will not be completed: its partial file goes."""
        self._closed = True
        self._recording.discard()
