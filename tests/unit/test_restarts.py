"""The supervisor's back-off for a worker slot that keeps crashing (``rst/restarts.py``)."""

from __future__ import annotations

from rst.restarts import (
    CRASH_LOOP_CRASHES,
    CRASH_LOOP_WINDOW,
    RESTART_BACKOFF_MAX,
    STABLE_AFTER,
    Restart,
    RestartSchedule,
    backoff,
)


def crash_at_once(schedule: RestartSchedule, times: int, start: float = 0.0) -> list[Restart]:
    """*times* workers in a row that die as soon as they start, each started after the wait."""
    restarts, now = [], start
    for _ in range(times):
        restarts.append(schedule.crashed(now, now))
        now += restarts[-1].delay
    return restarts


def test_the_first_crash_restarts_at_once_then_the_wait_doubles_up_to_the_cap() -> None:
    assert [backoff(n) for n in range(1, 10)] == [0, 0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff(10_000) == RESTART_BACKOFF_MAX  # no overflow, however long it lasts


def test_crashes_in_a_row_follow_the_schedule() -> None:
    restarts = crash_at_once(RestartSchedule(), 10)

    assert [r.delay for r in restarts] == [backoff(n) for n in range(1, 11)]
    assert [r.crashes for r in restarts] == list(range(1, 11))


def test_a_worker_that_stayed_up_long_enough_counts_as_recovered() -> None:
    schedule = RestartSchedule()
    crash_at_once(schedule, 6)

    started = 1_000.0
    assert schedule.crashed(started, started + STABLE_AFTER - 1).delay == backoff(7)
    started += STABLE_AFTER + backoff(7)
    after_a_good_run = schedule.crashed(started, started + STABLE_AFTER)
    assert after_a_good_run == Restart(delay=0.0, crashes=1, looping=False)
    assert schedule.crashed(started + STABLE_AFTER, started + STABLE_AFTER + 1).delay == 0.5


def test_frequent_crashes_are_a_crash_loop_until_a_worker_stays_up() -> None:
    schedule = RestartSchedule()
    restarts = crash_at_once(schedule, CRASH_LOOP_CRASHES + 2)
    assert [r.looping for r in restarts] == [False] * (CRASH_LOOP_CRASHES - 1) + [True] * 3

    # still a loop when the workers last a little longer and the crashes spread out
    now = 1_000.0
    for _ in range(CRASH_LOOP_CRASHES):
        assert schedule.crashed(now, now + STABLE_AFTER - 1).looping
        now += STABLE_AFTER + RESTART_BACKOFF_MAX
    assert not schedule.crashed(now, now + STABLE_AFTER).looping


def test_as_many_crashes_spread_over_more_than_the_window_are_no_crash_loop() -> None:
    # workers that each last nearly a minute: a growing wait, but no error
    schedule = RestartSchedule()
    now, restarts = 0.0, []
    for _ in range(CRASH_LOOP_CRASHES + 2):
        started = now
        now += STABLE_AFTER - 1
        restarts.append(schedule.crashed(started, now))
        now += restarts[-1].delay

    assert now > CRASH_LOOP_WINDOW
    assert not any(r.looping for r in restarts)
    assert restarts[-1].crashes == CRASH_LOOP_CRASHES + 2
    assert restarts[-1].delay == backoff(CRASH_LOOP_CRASHES + 2)
