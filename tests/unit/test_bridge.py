"""Work off the trio thread (rst.bridge) and exception-group collapsing (rst.groups).

The blocking functions here synchronise with the test through ``threading.Event`` waits that are
always bounded, so a bug fails the test instead of hanging it. These tests use real threads and
therefore the real clock (no autojump).
"""

from __future__ import annotations

import contextlib
import threading

import pytest
import trio
import trio.testing

from rst.bridge import run_sync
from rst.errors import BackendTimeout
from rst.groups import collapse, copy_of, single
from tests.support.garbage import LARGE, cyclic_collection_paused, cyclic_garbage

WAIT = 5.0
"""Upper bound for every wait on another thread; only reached when something is broken."""


async def wait_for(event: threading.Event, within: float = WAIT) -> bool:
    """Wait for a threading.Event without blocking the trio loop."""
    return await trio.to_thread.run_sync(event.wait, within)


# -- run_sync -------------------------------------------------------------------------------


async def test_run_sync_runs_in_another_thread_and_returns() -> None:
    def work() -> int:
        return threading.get_ident()

    assert await run_sync(work) != threading.get_ident()


async def test_run_sync_waits_for_the_function_when_cancelled() -> None:
    started = threading.Event()
    release = threading.Event()
    returned = threading.Event()
    task_done = trio.Event()

    def blocking() -> None:
        started.set()
        release.wait(WAIT)
        returned.set()

    async def caller(scope: trio.CancelScope) -> None:
        with scope:
            await run_sync(blocking)
        task_done.set()

    scope = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller, scope)
        assert await wait_for(started)
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert not task_done.is_set()  # not abandoned: still waiting for the thread
        release.set()

    assert returned.is_set()
    assert task_done.is_set()


# -- collapse / single ----------------------------------------------------------------------


def test_collapse_unwraps_a_single_exception_group() -> None:
    leaf = ValueError("one")

    with pytest.raises(ValueError, match="one") as info, collapse():
        raise ExceptionGroup("nursery", [leaf])

    assert info.value is leaf
    assert info.value.__context__ is None  # not the group, which holds it: a cycle


def test_collapse_leaves_the_cause_and_context_of_the_leaf_alone() -> None:
    cause, context = KeyError("why"), OSError("before")
    leaf = ValueError("one")
    leaf.__cause__, leaf.__context__ = cause, context

    with pytest.raises(ValueError, match="one") as info, collapse():
        raise ExceptionGroup("nursery", [leaf])

    assert (info.value.__cause__, info.value.__context__) == (cause, context)
    assert info.value.__suppress_context__


def test_collapse_unwraps_nested_single_exception_groups() -> None:
    leaf = KeyError("deep")

    with pytest.raises(KeyError) as info, collapse():
        raise ExceptionGroup("outer", [ExceptionGroup("inner", [leaf])])

    assert info.value is leaf


def test_collapse_unwraps_base_exceptions_too() -> None:
    with pytest.raises(KeyboardInterrupt), collapse():
        raise BaseExceptionGroup("nursery", [KeyboardInterrupt()])


def test_collapse_leaves_multi_exception_groups_alone() -> None:
    group = ExceptionGroup("nursery", [ValueError("a"), KeyError("b")])

    with pytest.raises(ExceptionGroup) as info, collapse():
        raise group

    assert info.value is group


def test_collapse_leaves_nested_groups_with_several_leaves_alone() -> None:
    group = ExceptionGroup("outer", [ExceptionGroup("inner", [ValueError("a"), KeyError("b")])])

    with pytest.RaisesGroup(pytest.RaisesGroup(ValueError, KeyError)), collapse():
        raise group


def test_collapse_passes_plain_exceptions_and_success_through() -> None:
    error = OSError("plain")
    with pytest.raises(OSError, match="plain") as info, collapse():
        raise error
    assert info.value is error

    with collapse():
        pass


def test_single() -> None:
    leaf = ValueError()

    assert single(ExceptionGroup("", [leaf])) is leaf
    assert single(ExceptionGroup("", [ExceptionGroup("", [leaf])])) is leaf
    assert single(ExceptionGroup("", [ValueError(), ValueError()])) is None
    assert single(ExceptionGroup("", [ExceptionGroup("", [leaf]), ValueError()])) is None


async def test_collapse_raises_cancellations_alone_as_one() -> None:
    # A group of them would reach code that keeps it in a local while re-raising it
    # (hypercorn's ``_handle``): a reference cycle.
    escaped: list[type[BaseException]] = []
    with trio.CancelScope() as scope:
        try:
            with collapse():
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(trio.sleep_forever)
                    nursery.start_soon(trio.sleep_forever)
                    await trio.testing.wait_all_tasks_blocked()
                    scope.cancel()
                    await trio.sleep_forever()
        except BaseException as exc:
            escaped.append(type(exc))
            raise

    assert scope.cancelled_caught
    assert escaped == [trio.Cancelled]


async def test_collapse_leaves_groups_of_cancellations_and_errors_alone() -> None:
    async def fail_once_cancelled() -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            raise ValueError("a") from None

    with (
        trio.CancelScope() as scope,
        pytest.RaisesGroup(ValueError, trio.Cancelled),
        collapse(),
    ):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fail_once_cancelled)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
            await trio.sleep_forever()


def test_copy_of_is_a_new_error_like_the_first() -> None:
    cause = KeyError("why")
    error = BackendTimeout("the PACS did not answer")
    error.__cause__ = cause

    copy = copy_of(error)

    assert copy is not error
    assert type(copy) is BackendTimeout
    assert (copy.args, copy.message, copy.status) == (error.args, error.message, error.status)
    assert (copy.__cause__, copy.__suppress_context__) == (cause, True)
    assert copy.__traceback__ is None


# -- no reference cycles (issue 8: a cycle through a traceback holds its frames, and what they
# hold, until a full garbage collection) ---------------------------------------------------


def test_single_leaves_no_reference_cycle() -> None:
    with cyclic_collection_paused():
        group = ExceptionGroup("outer", [ExceptionGroup("inner", [ValueError(bytes(LARGE))])])
        assert isinstance(single(group), ValueError)
        del group
        garbage = cyclic_garbage()

    assert not garbage, garbage.describe()


async def test_collapse_leaves_no_reference_cycle() -> None:
    async def fail() -> None:
        held = bytes(LARGE)  # what a failed task's frame holds
        raise ValueError(len(held))

    with cyclic_collection_paused():
        with contextlib.suppress(ValueError), collapse():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(fail)
        garbage = cyclic_garbage()

    assert not garbage, garbage.describe()
