"""The thread bridge (rst.bridge) and exception-group collapsing (rst.groups).

Producers here are plain Python functions on a worker thread; they synchronise with the test
through ``threading.Event`` waits that are always bounded, so a bug fails the test instead of
hanging it. These tests use real threads and therefore the real clock (no autojump).

Thread leaks: trio keeps finished worker threads cached for reuse (idle, named
``Trio thread N``), so ``threading.active_count()`` legitimately stays above its starting value.
A worker thread that is still running a job carries the job's name instead; trio resets the name
before it hands the result back. The check below therefore compares the set of threads that are
*not* idle trio workers before and after.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

import pytest
import trio
import trio.testing

from rst.bridge import Portal, StreamControl, iterate_in_thread, run_sync
from rst.errors import BackendTimeout
from rst.groups import collapse, copy_of, single
from tests.support.garbage import LARGE, cyclic_collection_paused, cyclic_garbage

WAIT = 5.0
"""Upper bound for every wait on another thread; only reached when something is broken."""


def busy_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if not t.name.startswith("Trio thread ")}


async def wait_for(event: threading.Event, within: float = WAIT) -> bool:
    """Wait for a threading.Event without blocking the trio loop."""
    return await trio.to_thread.run_sync(event.wait, within)


class Calls:
    """Counts calls of ``interrupt`` / ``force_stop`` and sets an Event on each."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log
        self.count = 0
        self.called = threading.Event()

    def __call__(self) -> None:
        self.count += 1
        self.log.append(self.name)
        self.called.set()


class Harness:
    def __init__(self) -> None:
        self.log: list[str] = []
        self.interrupt = Calls("interrupt", self.log)
        self.force_stop = Calls("force_stop", self.log)
        self.returned = threading.Event()
        """Set by the producers below when they return (or raise)."""
        self.control: StreamControl[int] | None = None

    def producer(
        self, count: int, *, then: Callable[[], object] | None = None
    ) -> Callable[[StreamControl[int]], None]:
        """Emit 0..count-1 (stopping when the consumer has gone), then run *then*."""

        def produce(control: StreamControl[int]) -> None:
            self.control = control
            try:
                for item in range(count):
                    if not control.emit(item):
                        break
                if then is not None:
                    then()
            finally:
                self.returned.set()

        return produce

    def until_interrupted(self) -> None:
        """Like a PACS that ends the operation on C-CANCEL."""
        self.interrupt.called.wait(WAIT)

    def until_forced(self) -> None:
        """Like a PACS that ignores C-CANCEL: only an abort ends it."""
        self.force_stop.called.wait(WAIT)


# -- iterate_in_thread ----------------------------------------------------------------------


async def test_items_arrive_in_order() -> None:
    before = busy_threads()
    h = Harness()

    async with iterate_in_thread(
        h.producer(20), interrupt=h.interrupt, force_stop=h.force_stop, grace=WAIT
    ) as items:
        received = [item async for item in items]

    assert received == list(range(20))
    assert h.log == []  # a producer that finished needs no stopping
    assert h.returned.is_set()
    assert busy_threads() == before


async def test_producer_is_held_back_while_the_consumer_does_not_read() -> None:
    read_first = 3
    attempts: list[int] = []
    lock = threading.Lock()
    at_limit = threading.Event()
    beyond_limit = threading.Event()

    def produce(control: StreamControl[int]) -> None:
        for item in range(10):
            with lock:
                attempts.append(item)
                if len(attempts) == read_first + 1:
                    at_limit.set()
                if len(attempts) > read_first + 1:
                    beyond_limit.set()
            control.emit(item)

    h = Harness()
    async with iterate_in_thread(
        produce, interrupt=h.interrupt, force_stop=h.force_stop, grace=WAIT
    ) as items:
        received = [await items.receive() for _ in range(read_first)]
        # The producer reaches the next emit and must stay blocked in it.
        assert await wait_for(at_limit)
        assert not await wait_for(beyond_limit, within=0.2)
        with lock:
            assert len(attempts) == read_first + 1

        received += [item async for item in items]

    assert received == list(range(10))


async def test_consumer_breaking_early_interrupts_once_and_the_thread_ends() -> None:
    before = busy_threads()
    h = Harness()

    async with iterate_in_thread(
        h.producer(1000, then=h.until_interrupted),
        interrupt=h.interrupt,
        force_stop=h.force_stop,
        grace=WAIT,
    ) as items:
        async for item in items:
            if item == 2:
                break

    assert h.log == ["interrupt"]
    assert h.returned.is_set()
    assert busy_threads() == before


async def test_emit_returns_false_once_the_consumer_has_gone() -> None:
    h = Harness()

    async with iterate_in_thread(
        h.producer(1000, then=h.until_interrupted),
        interrupt=h.interrupt,
        force_stop=h.force_stop,
        grace=WAIT,
    ) as items:
        assert await items.receive() == 0
        assert h.control is not None
        assert not h.control.consumer_gone

    assert h.control.consumer_gone
    assert h.control.emit(99) is False


async def test_force_stop_after_grace_when_the_producer_ignores_interrupt() -> None:
    before = busy_threads()
    h = Harness()
    grace = 0.3
    start = trio.current_time()

    async with iterate_in_thread(
        h.producer(1000, then=h.until_forced),
        interrupt=h.interrupt,
        force_stop=h.force_stop,
        grace=grace,
    ) as items:
        assert await items.receive() == 0

    elapsed = trio.current_time() - start
    assert h.log == ["interrupt", "force_stop"]
    assert grace <= elapsed < WAIT
    assert h.returned.is_set()
    assert busy_threads() == before


async def test_cancel_scope_cancel_stops_the_thread_and_exits_the_block() -> None:
    before = busy_threads()
    h = Harness()

    with trio.CancelScope() as scope:
        async with iterate_in_thread(
            h.producer(1, then=h.until_interrupted),
            interrupt=h.interrupt,
            force_stop=h.force_stop,
            grace=WAIT,
        ) as items:
            assert await items.receive() == 0
            scope.cancel()
            await items.receive()  # the producer is waiting on the "PACS": nothing comes
            pytest.fail("received after cancellation")

    assert scope.cancelled_caught
    assert h.log == ["interrupt"]
    assert h.returned.is_set()
    assert busy_threads() == before


async def test_timeout_of_the_enclosing_scope_stops_the_thread() -> None:
    before = busy_threads()
    h = Harness()
    start = trio.current_time()

    with trio.move_on_after(0.2) as scope:
        async with iterate_in_thread(
            h.producer(0, then=h.until_interrupted),
            interrupt=h.interrupt,
            force_stop=h.force_stop,
            grace=WAIT,
        ) as items:
            await items.receive()
            pytest.fail("received from a producer that emits nothing")

    assert scope.cancelled_caught
    assert 0.2 <= trio.current_time() - start < WAIT
    assert h.log == ["interrupt"]
    assert h.returned.is_set()
    assert busy_threads() == before


async def test_cancellation_while_the_producer_ignores_interrupt_still_force_stops() -> None:
    h = Harness()

    with trio.move_on_after(0.1) as scope:
        async with iterate_in_thread(
            h.producer(0, then=h.until_forced),
            interrupt=h.interrupt,
            force_stop=h.force_stop,
            grace=0.1,
        ) as items:
            await items.receive()

    assert scope.cancelled_caught
    assert h.log == ["interrupt", "force_stop"]
    assert h.returned.is_set()


async def test_producer_exception_reaches_the_consumer_as_itself() -> None:
    before = busy_threads()
    h = Harness()
    error = ValueError("the PACS said no")

    def fail() -> None:
        raise error

    received: list[int] = []
    with pytest.raises(ValueError, match="the PACS said no") as info:
        async with iterate_in_thread(
            h.producer(2, then=fail), interrupt=h.interrupt, force_stop=h.force_stop, grace=WAIT
        ) as items:
            received.extend([item async for item in items])

    assert info.value is error
    assert not isinstance(info.value, BaseExceptionGroup)
    assert received == [0, 1]
    assert h.log == []
    assert busy_threads() == before


async def test_consumer_exception_propagates_as_itself_and_interrupts() -> None:
    before = busy_threads()
    h = Harness()

    async def consume_then_fail() -> None:
        async with iterate_in_thread(
            h.producer(1000, then=h.until_interrupted),
            interrupt=h.interrupt,
            force_stop=h.force_stop,
            grace=WAIT,
        ) as items:
            await items.receive()
            raise KeyError("consumer failed")

    with pytest.raises(KeyError, match="consumer failed") as info:
        await consume_then_fail()

    assert not isinstance(info.value, BaseExceptionGroup)
    assert h.log == ["interrupt"]
    assert h.returned.is_set()
    assert busy_threads() == before


async def test_worker_holds_a_limiter_token_while_it_runs() -> None:
    limiter = trio.CapacityLimiter(1)
    h = Harness()

    async with iterate_in_thread(
        h.producer(3), interrupt=h.interrupt, force_stop=h.force_stop, grace=WAIT, limiter=limiter
    ) as items:
        assert await items.receive() == 0
        assert limiter.borrowed_tokens == 1
        assert [item async for item in items] == [1, 2]

    assert limiter.borrowed_tokens == 0


async def test_interrupt_that_raises_still_leads_to_force_stop() -> None:
    # e.g. send_c_cancel() on an association that was aborted just after is_established.
    h = Harness()

    def broken_interrupt() -> None:
        h.interrupt()
        raise RuntimeError("association is not established")

    # Whether the interrupt's error surfaces is secondary; the thread must be stopped.
    with contextlib.suppress(RuntimeError):
        async with iterate_in_thread(
            # Bounded so that the current behaviour ends the test instead of hanging it.
            h.producer(1000, then=lambda: h.force_stop.called.wait(1.0)),
            interrupt=broken_interrupt,
            force_stop=h.force_stop,
            grace=0.1,
        ) as items:
            await items.receive()

    assert h.log == ["interrupt", "force_stop"]


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


# -- Portal ---------------------------------------------------------------------------------


async def test_portal_run_from_a_foreign_thread() -> None:
    portal = Portal()
    trio_thread = threading.get_ident()
    ran_on: list[int] = []
    results: list[int] = []

    async def double(value: int) -> int:
        await trio.lowlevel.checkpoint()
        ran_on.append(threading.get_ident())
        return 2 * value

    thread = threading.Thread(target=lambda: results.append(portal.run(double, 21)))
    thread.start()
    await trio.to_thread.run_sync(thread.join, WAIT)

    assert not thread.is_alive()
    assert results == [42]
    assert ran_on == [trio_thread]


async def test_portal_run_raises_in_the_calling_thread() -> None:
    portal = Portal(trio.lowlevel.current_trio_token())
    errors: list[BaseException] = []

    async def fail() -> None:
        raise LookupError("no such retrieve")

    def call() -> None:
        try:
            portal.run(fail)
        except LookupError as exc:
            errors.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    await trio.to_thread.run_sync(thread.join, WAIT)

    assert not thread.is_alive()
    assert [str(e) for e in errors] == ["no such retrieve"]


async def test_portal_run_sync_from_a_foreign_thread() -> None:
    portal = Portal()
    trio_thread = threading.get_ident()
    results: list[tuple[int, int]] = []

    def add(a: int, b: int) -> tuple[int, int]:
        return a + b, threading.get_ident()

    thread = threading.Thread(target=lambda: results.append(portal.run_sync(add, 2, 3)))
    thread.start()
    await trio.to_thread.run_sync(thread.join, WAIT)

    assert not thread.is_alive()
    assert results == [(5, trio_thread)]


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


async def test_a_producer_exception_leaves_no_reference_cycle() -> None:
    h = Harness()

    def fail() -> None:
        held = bytes(LARGE)
        raise ValueError(len(held))

    async def consume() -> None:
        async with iterate_in_thread(
            h.producer(2, then=fail), interrupt=h.interrupt, force_stop=h.force_stop, grace=WAIT
        ) as items:
            async for _ in items:
                pass

    with cyclic_collection_paused():
        with contextlib.suppress(ValueError):
            await consume()
        garbage = cyclic_garbage()

    assert not garbage, garbage.describe()
