"""What only a full garbage collection would free: reference cycles a request left behind.

CPython frees an object as soon as nothing refers to it, except objects in reference cycles,
which wait for the cyclic collector, and that runs on object counts, not bytes. A cycle through
an exception holds its traceback, and the frames of that traceback hold whatever the request
was working on (a retrieve's response chunks, a megabyte each): under a stream of abandoned
retrieves, memory then grows by the megabyte until a full collection happens to run (issue 8).

    with cyclic_collection_paused():
        baseline = live_tasks()
        await abandon(host, port, "/aets/X/studies/1.2.3", "never-reads", baseline)
        garbage = cyclic_garbage()
    assert not garbage, garbage.describe()
"""

from __future__ import annotations

import gc
import socket
import types
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import trio

__all__ = [
    "LARGE",
    "Abandon",
    "Garbage",
    "abandon",
    "cyclic_collection_paused",
    "cyclic_garbage",
    "live_tasks",
    "read_all",
    "wait_for_tasks",
]

LARGE = 64 * 1024
"""A bytes-like object at least this large held by garbage is reported."""

_BUFFERS = (bytes, bytearray, memoryview)

Abandon = Literal["never-reads", "hangs-up"]
"""How a client abandons a response: it reads nothing until rst takes it for gone
(``http.send_timeout``), or it hangs up after the first bytes."""


@dataclass(frozen=True)
class Garbage:
    """What a collection found unreachable: the frames (``file:function``), the exceptions and
    the large buffers garbage holds. It is a failure if it holds a frame (a cycle through a
    traceback, whatever the frame holds this time) or a large buffer; exceptions are told to
    help, but one alone may be harmless: an error without a traceback that a third-party
    cycle holds (pynetdicom's ``Association`` is one, and holds its event handlers)."""

    frames: list[str]
    exceptions: list[str]
    buffers: list[int]

    def __bool__(self) -> bool:
        return bool(self.frames or self.buffers)

    def describe(self) -> str:
        return (
            f"cyclic garbage: {len(self.buffers)} buffers of {sum(self.buffers) / 2**20:.1f} MiB, "
            f"exceptions {self.exceptions}, frames {self.frames}"
        )


@contextmanager
def cyclic_collection_paused() -> Iterator[None]:
    """No automatic collection inside: what a collection would free is still there to find."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def cyclic_garbage(*, large: int = LARGE) -> Garbage:
    """Collect, and tell what the collection found unreachable (it is freed afterwards); a
    buffer counts from *large* bytes."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        found = list(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    frames: list[str] = []
    exceptions: list[str] = []
    buffers: dict[int, int] = {}
    for obj in found:
        kind = type(obj)  # not isinstance: garbage may hold dead weak proxies
        if kind is types.FrameType:
            code = obj.f_code
            frames.append(f"{_short(code.co_filename)}:{code.co_name}")
        elif issubclass(kind, BaseException):
            exceptions.append(kind.__name__)
        for held in (obj, *gc.get_referents(obj)):
            if type(held) in _BUFFERS and len(held) >= large:
                buffers[id(held)] = len(held)
    del found
    return Garbage(sorted(frames), sorted(exceptions), sorted(buffers.values()))


def _short(filename: str) -> str:
    parts = Path(filename).parts
    for anchor in ("site-packages", "rst", "tests"):
        if anchor in parts:
            return "/".join(parts[parts.index(anchor) + (anchor == "site-packages") :])
    return filename


def live_tasks() -> int:
    """Tasks of this trio run (the root task and all its descendants)."""
    root = trio.lowlevel.current_root_task()
    assert root is not None, "not in a trio run"
    count = 0
    pending = [root]
    while pending:
        task = pending.pop()
        count += 1
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return count


async def wait_for_tasks(baseline: int, *, within: float = 20.0) -> None:
    """Until no more tasks run than *baseline*: whatever a request started has ended, so its
    frames are either freed or garbage (no event marks the last of them ending)."""
    with trio.fail_after(within):
        while live_tasks() > baseline:  # noqa: ASYNC110 - see above
            await trio.sleep(0.01)


async def abandon(host: str, port: int, target: str, how: Abandon, baseline: int) -> int:
    """``GET`` *target* and abandon the response *how*; return once every task the request
    started has ended (:func:`wait_for_tasks`), with the number of bytes received (what the
    client that never read finds in its socket at the end, never the whole response)."""
    stream = await trio.open_tcp_stream(host, port)
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    received = 0
    async with stream:
        await stream.send_all(f"GET {target} HTTP/1.1\r\nHost: rst\r\n\r\n".encode())
        if how == "hangs-up":
            with trio.fail_after(20):
                received = len(await stream.receive_some(4096))
        else:
            await wait_for_tasks(baseline)  # rst gave up on this client, closed, and ended it
            with trio.fail_after(20):
                try:
                    while data := await stream.receive_some(1 << 16):
                        received += len(data)
                except trio.BrokenResourceError:
                    pass  # closed with a reset: what the kernel had not delivered is lost
    await wait_for_tasks(baseline)
    return received


async def read_all(host: str, port: int, target: str) -> bytes:
    """``GET`` *target* and read the answer to the end of the connection (a raw client: no
    HTTP library's exceptions, which may have cycles of their own)."""
    stream = await trio.open_tcp_stream(host, port)
    received = bytearray()
    async with stream:
        await stream.send_all(f"GET {target} HTTP/1.1\r\nHost: rst\r\n\r\n".encode())
        with trio.fail_after(20):
            while data := await stream.receive_some():
                received += data
    return bytes(received)
