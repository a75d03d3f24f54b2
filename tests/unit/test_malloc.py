"""rst.malloc: glibc's malloc_trim called every interval, off the trio thread, until cancelled."""

from __future__ import annotations

import threading

import pytest
import trio
import trio.testing

import rst.malloc
from rst.malloc import load_malloc_trim, trim_periodically


def test_glibc_has_malloc_trim() -> None:
    trim = load_malloc_trim()
    assert trim is not None  # the machines rst runs on (Debian, the container) use glibc
    assert trim(0) in (0, 1)  # 1: memory was released, 0: there was none to release


async def test_trims_every_interval_on_a_worker_thread(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls: list[tuple[int, float, bool]] = []
    trio_thread = threading.get_ident()
    three = trio.Event()

    def trim(pad: int) -> int:
        now = trio.from_thread.run_sync(trio.current_time)
        calls.append((pad, now, threading.get_ident() != trio_thread))
        if len(calls) == 3:
            trio.from_thread.run_sync(three.set)
        return 0

    # Jump only when nothing has moved for 0.5 s of real time, not while trim runs on its thread.
    autojump_clock.autojump_threshold = 0.5
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(_trimming, trim)
        assert calls == []  # not at start
        with trio.fail_after(100):  # virtual time: fails at once if the calls never come
            await three.wait()
        nursery.cancel_scope.cancel()
    assert [pad for pad, _, _ in calls] == [0, 0, 0]
    assert all(off_trio for _, _, off_trio in calls)
    assert [round(at - start) for _, at, _ in calls] == [10, 20, 30]


async def test_without_malloc_trim_the_task_ends_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rst.malloc, "load_malloc_trim", lambda: None)
    with trio.fail_after(1):
        await trim_periodically(interval=10.0)


async def _trimming(
    trim: rst.malloc.Trim, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    await trim_periodically(interval=10.0, trim=trim, task_status=task_status)
