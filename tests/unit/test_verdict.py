"""The retrieve verdict: every branch of the reconciliation of a final C-MOVE/C-GET response with
what arrived, "not found" told from "failed", and the bounded wait for each instance — all without
sockets (an in-memory sink, the autojump clock, a fake C-FIND)."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing

import pytest
import trio
import trio.testing

from rst.backends.dimse.sink import Instance, InstanceSink
from rst.backends.dimse.verdict import (
    arrivals,
    conclude,
    may_be_missing,
    reconcile,
    silence,
)
from rst.dicom.statuses import Status
from rst.errors import (
    BackendTimeout,
    DimseFailure,
    IncompleteRetrieve,
    MoveDestinationUnknown,
    NotFound,
    RstError,
)
from rst.services.protocols import RetrieveKeys

PACS = "ORTHANC"


def status(
    code: int,
    *,
    completed: int = 0,
    failed: int = 0,
    warning: int = 0,
    remaining: int = 0,
    comment: str = "",
) -> Status:
    return Status(code, comment, completed, failed, warning, remaining)


def outcome(final: Status, received: int, *, cancelled: bool = False) -> Exception | None:
    return reconcile(final, received=received, pacs=PACS, operation="C-MOVE", cancelled=cancelled)


# -- reconcile --------------------------------------------------------------------------


def test_success_with_everything_received_is_none() -> None:
    assert outcome(status(0x0000, completed=5, failed=0, warning=0, remaining=0), 5) is None


def test_success_counts_warning_sub_operations_as_sent() -> None:
    assert outcome(status(0x0000, completed=3, warning=2), 5) is None


def test_more_received_than_reported_is_none() -> None:
    # Some PACS report 0 sub-operations in the final response; what arrived is what counts.
    assert outcome(status(0x0000), 4) is None


def test_success_with_fewer_received_than_completed_is_incomplete() -> None:
    error = outcome(status(0x0000, completed=5), 3)

    assert isinstance(error, IncompleteRetrieve)
    assert "5 completed" in str(error)
    assert "received 3 instance(s)" in str(error)
    assert PACS in str(error)


def test_success_with_fewer_received_than_completed_plus_warning_is_incomplete() -> None:
    assert isinstance(outcome(status(0x0000, completed=3, warning=2), 4), IncompleteRetrieve)


def test_failed_sub_operations_make_it_incomplete_even_if_all_sent_arrived() -> None:
    error = outcome(status(0x0000, completed=4, failed=1), 4)

    assert isinstance(error, IncompleteRetrieve)
    assert "1 failed" in str(error)


def test_warning_status_with_failed_sub_operations_is_incomplete() -> None:
    error = outcome(status(0xB000, completed=2, failed=3), 2)

    assert isinstance(error, IncompleteRetrieve)
    assert "3 failed" in str(error)


def test_warning_status_without_failures_and_all_received_is_none() -> None:
    assert outcome(status(0xB000, completed=2, warning=1), 3) is None


def test_move_destination_unknown_explains_what_to_configure() -> None:
    error = outcome(status(0xA801), 0)

    assert isinstance(error, MoveDestinationUnknown)
    message = str(error)
    assert "0xA801" in message
    assert PACS in message
    assert "[dimse] aet/host/port" in message
    assert "DICOM modalities" in message


def test_cancel_that_rst_sent_is_none() -> None:
    assert outcome(status(0xFE00, completed=2, remaining=3), 2, cancelled=True) is None


def test_cancel_that_rst_did_not_send_is_incomplete() -> None:
    error = outcome(status(0xFE00, completed=2, remaining=3), 2)

    assert isinstance(error, IncompleteRetrieve)
    assert "cancelled the C-MOVE after 2 instance(s)" in str(error)


def test_nothing_to_send_and_nothing_received_is_not_found() -> None:
    error = outcome(status(0x0000, completed=0, failed=0, warning=0, remaining=0), 0)

    assert isinstance(error, NotFound)
    assert PACS in str(error)


def test_nothing_received_but_sub_operations_completed_is_incomplete_not_not_found() -> None:
    assert isinstance(outcome(status(0x0000, completed=2), 0), IncompleteRetrieve)


@pytest.mark.parametrize("code", [0xA701, 0xA702, 0xA900, 0xC000, 0x0122])
def test_other_failure_is_dimse_failure_with_the_status(code: int) -> None:
    error = outcome(status(code, completed=1, failed=2, comment="out of resources"), 1)

    assert isinstance(error, DimseFailure)
    assert error.dimse_status == code
    message = str(error)
    assert f"0x{code:04X} (out of resources)" in message
    assert "after 1 instance(s) (1 completed, 2 failed)" in message


def test_operation_name_appears_in_the_message() -> None:
    error = reconcile(status(0x0000, completed=2), received=1, pacs=PACS, operation="C-GET")

    assert isinstance(error, IncompleteRetrieve)
    assert "incomplete C-GET" in str(error)


# -- conclude: "not found" told from "failed" --------------------------------------------------

STUDY = RetrieveKeys("1.2.3")
SERIES = RetrieveKeys("1.2.3", "1.2.3.4")


class FakeFind:
    """The C-FIND the verdict may ask for, answered from memory and counted."""

    def __init__(self, found: bool) -> None:
        self.found = found
        self.asked = 0

    async def __call__(self) -> bool:
        self.asked += 1
        return self.found


async def verdict(
    final: Status, received: int, find: FakeFind, keys: RetrieveKeys = STUDY
) -> RstError | None:
    return await conclude(
        final, received=received, keys=keys, pacs=PACS, operation="C-MOVE", exists=find
    )


async def test_a_complete_retrieve_is_none_without_a_c_find() -> None:
    find = FakeFind(found=True)

    assert await verdict(status(0x0000, completed=3), 3, find) is None
    assert find.asked == 0


async def test_fewer_arrived_than_reported_is_incomplete_without_a_c_find() -> None:
    find = FakeFind(found=True)

    error = await verdict(status(0x0000, completed=3), 2, find)

    assert isinstance(error, IncompleteRetrieve)
    assert "rst received 2 instance(s)" in str(error)
    assert find.asked == 0


async def test_zero_matched_is_not_found_without_a_c_find() -> None:
    find = FakeFind(found=True)

    assert isinstance(await verdict(status(0x0000, completed=0), 0, find), NotFound)
    assert find.asked == 0


@pytest.mark.parametrize(
    ("code", "failed", "received"), [(0xB000, 0, 3), (0xB000, 1, 3), (0xB007, 0, 3), (0xB007, 1, 3)]
)
async def test_warning_status(code: int, failed: int, received: int) -> None:
    find = FakeFind(found=True)

    error = await verdict(status(code, completed=2, warning=1, failed=failed), received, find)

    assert error is None if failed == 0 else isinstance(error, IncompleteRetrieve)
    assert find.asked == 0


async def test_failed_sub_operations_are_incomplete_even_with_nothing_received() -> None:
    find = FakeFind(found=False)

    error = await verdict(status(0x0000, completed=0, failed=2), 0, find)

    assert isinstance(error, IncompleteRetrieve)
    assert "2 failed" in str(error)
    assert find.asked == 0  # a success status: the PACS had something to send


async def test_a_failure_with_nothing_received_and_nothing_found_is_not_found() -> None:
    # Orthanc fails a C-MOVE of unknown UIDs (0xC000) instead of answering "0 sub-operations".
    find = FakeFind(found=False)

    error = await verdict(status(0xC000, failed=0), 0, find, SERIES)

    assert isinstance(error, NotFound)
    assert str(error) == f"the PACS {PACS} has no series 1.2.3.4"
    assert find.asked == 1


async def test_a_failure_with_nothing_received_but_a_match_is_the_failure() -> None:
    find = FakeFind(found=True)

    error = await verdict(status(0xA702, failed=3), 0, find)

    assert isinstance(error, DimseFailure)
    assert error.dimse_status == 0xA702
    assert find.asked == 1


async def test_a_failure_after_instances_arrived_is_the_failure_without_a_c_find() -> None:
    find = FakeFind(found=False)

    error = await verdict(status(0xC000, completed=1, failed=1), 1, find)

    assert isinstance(error, DimseFailure)
    assert find.asked == 0


async def test_an_unknown_move_destination_is_not_taken_for_a_missing_study() -> None:
    find = FakeFind(found=False)

    assert isinstance(await verdict(status(0xA801), 0, find), MoveDestinationUnknown)
    assert find.asked == 0


def test_may_be_missing_only_a_failure_with_nothing_received() -> None:
    failure = DimseFailure("failed", 0xC000)
    assert may_be_missing(failure, 0)
    assert not may_be_missing(failure, 1)
    assert not may_be_missing(IncompleteRetrieve("partial"), 0)
    assert not may_be_missing(NotFound("none"), 0)
    assert not may_be_missing(None, 0)


async def test_the_verdict_is_logged_not_found_as_info_the_rest_as_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="rst.backends.dimse.verdict")

    await verdict(status(0xC000), 0, FakeFind(found=False))
    await verdict(status(0x0000, completed=2), 1, FakeFind(found=True))
    await verdict(status(0x0000, completed=1), 1, FakeFind(found=True))

    logged = [(r.levelno, r.getMessage().endswith(f"(C-MOVE of {STUDY})")) for r in caplog.records]
    assert logged == [(logging.INFO, True), (logging.WARNING, True)]


# -- arrivals: the bounded wait for each instance -----------------------------------------------

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def instance(n: int) -> Instance:
    return Instance(b"\0" * 16, CT, f"1.2.3.{n}", EXPLICIT_LE)


def waiting(sink: InstanceSink) -> AsyncGenerator[Instance]:
    return arrivals(sink, pacs=PACS, first_timeout=10.0, idle_timeout=3.0)


async def collect(sink: InstanceSink, received: list[tuple[float, Instance]]) -> None:
    """Read *sink* through :func:`arrivals`, noting when each instance came."""
    async with aclosing(waiting(sink)) as instances:
        async for item in instances:
            received.append((trio.current_time(), item))


def test_silence_names_the_wait_and_what_arrived() -> None:
    error = silence(PACS, waited=10.0, received=0, first=True)

    assert isinstance(error, BackendTimeout)
    assert str(error) == (
        f"the PACS {PACS} sent no C-STORE for 10 s while rst waited for the first instance "
        "(0 received)"
    )
    assert "the next instance (2 received)" in str(silence(PACS, waited=3, received=2, first=False))


async def test_arrivals_yields_what_came_and_ends_with_the_sink(
    autojump_clock: trio.abc.Clock,
) -> None:
    sink = InstanceSink(capacity=4, stall_timeout=4.0)
    sent = [instance(n) for n in range(3)]
    for item in sent:
        assert await sink.offer(item)
    sink.finish()

    async with aclosing(waiting(sink)) as instances:
        assert [item async for item in instances] == sent


async def test_arrivals_ends_with_the_error_the_sink_ended_with(
    autojump_clock: trio.abc.Clock,
) -> None:
    sink = InstanceSink(capacity=4, stall_timeout=4.0)
    assert await sink.offer(instance(1))
    sink.finish(IncompleteRetrieve("the PACS broke off"))
    received: list[tuple[float, Instance]] = []

    with pytest.raises(IncompleteRetrieve, match="broke off"):
        await collect(sink, received)
    assert [item for _, item in received] == [instance(1)]


async def test_no_first_instance_within_first_timeout_is_a_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    sink = InstanceSink(capacity=4, stall_timeout=4.0)
    start = trio.current_time()

    with pytest.raises(BackendTimeout, match=r"for 10 s .* the first instance \(0 received\)"):
        await collect(sink, [])
    assert trio.current_time() - start == pytest.approx(10.0)


async def test_after_the_first_instance_the_idle_timeout_applies(
    autojump_clock: trio.abc.Clock,
) -> None:
    sink = InstanceSink(capacity=4, stall_timeout=4.0)
    assert await sink.offer(instance(1))
    received: list[tuple[float, Instance]] = []

    with pytest.raises(BackendTimeout, match=r"for 3 s .* the next instance \(1 received\)"):
        await collect(sink, received)
    [(start, item)] = received
    assert item == instance(1)
    assert trio.current_time() - start == pytest.approx(3.0)


async def test_instances_that_keep_coming_are_never_cut_off(
    autojump_clock: trio.abc.Clock,
) -> None:
    sink = InstanceSink(capacity=4, stall_timeout=4.0)

    async def slow_pacs() -> None:
        await trio.sleep(9.0)  # the first just within first_timeout
        for n in range(3):
            assert await sink.offer(instance(n))
            await trio.sleep(2.9)  # each next one just within idle_timeout
        sink.finish()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow_pacs)
        async with aclosing(waiting(sink)) as instances:
            assert len([item async for item in instances]) == 3
