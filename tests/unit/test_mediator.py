"""The mediator: message ids, and routing C-STOREs by Move Originator or by UIDs."""

from __future__ import annotations

import tracemalloc

import pytest
import trio

from rst.backends.dimse.mediator import Mediator, MessageIds, Subscription
from rst.backends.dimse.sink import Instance, InstanceSink, SinkClosed

STUDY = "1.2.826.0.1.1"
OTHER_STUDY = "1.2.826.0.1.2"
SERIES = "1.2.826.0.1.1.1"
OTHER_SERIES = "1.2.826.0.1.1.2"


def sink() -> InstanceSink:
    return InstanceSink(capacity=1, stall_timeout=1.0)


def subscription(study_uid: str = STUDY, **kwargs: object) -> Subscription:
    return Subscription(sink(), study_uid, **kwargs)  # type: ignore[arg-type]


# -- MessageIds -----------------------------------------------------------------------------


def test_message_ids_count_up_from_a_random_start() -> None:
    starts = set()
    for _ in range(20):
        ids = MessageIds()
        first = ids.next("RST")
        assert [ids.next("RST") for _ in range(2)] == [first % 65535 + 1, (first + 1) % 65535 + 1]
        starts.add(first)
    assert len(starts) > 1, "every counter started at the same id"


def test_message_ids_are_counted_per_calling_aet() -> None:
    ids = MessageIds()
    ids.next("A")
    a = ids.next("A")
    b = ids.next("B")

    assert ids.next("A") == a % 65535 + 1
    assert ids.next("B") == b % 65535 + 1


def test_message_ids_cover_1_to_65535_never_0() -> None:
    ids = MessageIds()
    issued = [ids.next("RST") for _ in range(65535)]

    assert 0 not in issued
    assert len(set(issued)) == 65535
    assert ids.next("RST") == issued[0]


def test_message_ids_hold_no_memory_per_id_issued() -> None:
    """A long-running gateway issues ids for ever: the counter must not keep the ids it gave
    out (``itertools.cycle`` keeps its whole first round, 65,535 ints: ~2 MiB)."""
    ids = MessageIds()
    ids.next("RST")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(20_000):
            ids.next("RST")
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()

    assert held < 20_000, f"{held} bytes held after 20,000 message ids"


def test_a_worker_uses_only_its_share_of_ids() -> None:
    ids = MessageIds(1, 3)
    assert {ids.next("RST") % 3 for _ in range(100)} == {2}


# -- subscribe ------------------------------------------------------------------------------


def test_subscribe_registers_by_originator_until_exit() -> None:
    mediator = Mediator()
    sub = subscription(originator=("RST", 7))

    with mediator.subscribe(sub) as entered:
        assert entered is sub
        assert len(mediator) == 1
        assert mediator.by_originator("RST", 7) is sub

    assert mediator.by_originator("RST", 7) is None
    assert len(mediator) == 0


def test_by_originator_needs_both_aet_and_message_id() -> None:
    mediator = Mediator()
    with mediator.subscribe(subscription(originator=("RST", 7))):
        assert mediator.by_originator("RST", 8) is None
        assert mediator.by_originator("OTHER", 7) is None


def test_by_originator_ignores_padding_of_the_received_aet() -> None:
    # AE titles arrive space-padded to 16 characters from some PACS.
    mediator = Mediator()
    sub = subscription(originator=("RST", 7))
    with mediator.subscribe(sub):
        assert mediator.by_originator("RST             ", 7) is sub
        assert mediator.by_originator(" RST", 7) is sub


async def test_exit_closes_the_sink() -> None:
    mediator = Mediator()
    sub = subscription(originator=("RST", 1))
    with mediator.subscribe(sub):
        assert await sub.sink.offer(Instance(b"x", "1.2", "1.2.3", "1.2.840.10008.1.2.1"))

    with pytest.raises(SinkClosed):
        await sub.sink.offer(Instance(b"y", "1.2", "1.2.4", "1.2.840.10008.1.2.1"))


def test_exit_by_exception_unregisters_and_closes() -> None:
    mediator = Mediator()
    sub = subscription(originator=("RST", 1))

    with pytest.raises(KeyError), mediator.subscribe(sub):
        raise KeyError("boom")

    assert mediator.by_originator("RST", 1) is None
    assert len(mediator) == 0
    with pytest.raises(SinkClosed):
        sub.sink.spool(Instance(b"x", "1.2", "1.2.3", "1.2.840.10008.1.2.1"))


async def test_exit_by_cancellation_unregisters() -> None:
    mediator = Mediator()
    sub = subscription(originator=("RST", 1))

    with trio.CancelScope() as scope, mediator.subscribe(sub):
        scope.cancel()
        await trio.sleep_forever()

    assert scope.cancelled_caught
    assert len(mediator) == 0


def test_duplicate_originator_key_raises_and_leaves_the_first_alone() -> None:
    mediator = Mediator()
    first = subscription(originator=("RST", 7))
    second = subscription(originator=("RST", 7))

    with mediator.subscribe(first):
        with pytest.raises(RuntimeError, match=r"message id \('RST', 7\) is already in use"):  # noqa: SIM117
            with mediator.subscribe(second):
                pytest.fail("entered a subscription with a duplicate key")
        assert mediator.by_originator("RST", 7) is first
        assert len(mediator) == 1
        assert mediator.by_uids(STUDY, SERIES, "1.1") is first


def test_same_message_id_for_different_aets_is_fine() -> None:
    mediator = Mediator()
    a = subscription(originator=("A", 1))
    b = subscription(originator=("B", 1))
    with mediator.subscribe(a), mediator.subscribe(b):
        assert mediator.by_originator("A", 1) is a
        assert mediator.by_originator("B", 1) is b


def test_originator_key_is_free_again_after_exit() -> None:
    mediator = Mediator()
    with mediator.subscribe(subscription(originator=("RST", 7))):
        pass
    again = subscription(originator=("RST", 7))
    with mediator.subscribe(again):
        assert mediator.by_originator("RST", 7) is again


def test_untrusted_originator_is_not_found() -> None:
    mediator = Mediator()
    with mediator.subscribe(subscription(originator=("RST", 7), trust_originator=False)):
        assert mediator.by_originator("RST", 7) is None


def test_subscription_without_originator_is_found_by_uids_only() -> None:
    mediator = Mediator()
    sub = subscription()
    with mediator.subscribe(sub):
        assert len(mediator) == 1
        assert mediator.by_uids(STUDY, SERIES, "1.1") is sub


# -- by_uids --------------------------------------------------------------------------------


def test_study_level_subscription_takes_any_series_of_its_study() -> None:
    mediator = Mediator()
    sub = subscription()
    with mediator.subscribe(sub):
        assert mediator.by_uids(STUDY, SERIES, "1.1") is sub
        assert mediator.by_uids(STUDY, OTHER_SERIES, "1.2") is sub
        assert mediator.by_uids(OTHER_STUDY, SERIES, "1.3") is None


def test_series_level_subscription_takes_only_its_series() -> None:
    mediator = Mediator()
    sub = subscription(series_uid=SERIES)
    with mediator.subscribe(sub):
        assert mediator.by_uids(STUDY, OTHER_SERIES, "1.1") is None
        assert mediator.by_uids(STUDY, SERIES, "1.2") is sub


def test_instance_level_subscription_takes_only_its_instance() -> None:
    mediator = Mediator()
    sub = subscription(series_uid=SERIES, sop_uid="1.5")
    with mediator.subscribe(sub):
        assert mediator.by_uids(STUDY, SERIES, "1.4") is None
        assert mediator.by_uids(STUDY, SERIES, "1.5") is sub
        assert mediator.by_uids(STUDY, SERIES, "1.5") is None  # already claimed


def test_by_uids_prefers_the_oldest_subscription() -> None:
    mediator = Mediator()
    older = subscription()
    newer = subscription()
    with mediator.subscribe(older), mediator.subscribe(newer):
        assert mediator.by_uids(STUDY, SERIES, "1.1") is older


def test_same_instance_goes_to_the_next_subscription_once_claimed() -> None:
    mediator = Mediator()
    first = subscription()
    second = subscription()
    with mediator.subscribe(first), mediator.subscribe(second):
        assert mediator.by_uids(STUDY, SERIES, "1.1") is first
        assert mediator.by_uids(STUDY, SERIES, "1.1") is second
        assert mediator.by_uids(STUDY, SERIES, "1.1") is None

        assert first.claimed == {"1.1"}
        assert second.claimed == {"1.1"}


def test_two_retrieves_of_one_study_each_get_one_copy_of_every_instance() -> None:
    mediator = Mediator()
    first = subscription()
    second = subscription()
    sops = [f"1.{n}" for n in range(5)]
    routed: dict[int, list[str]] = {id(first): [], id(second): []}

    with mediator.subscribe(first), mediator.subscribe(second):
        # Each C-MOVE sends every instance once; the two streams interleave.
        for sop in sops:
            for _ in range(2):
                sub = mediator.by_uids(STUDY, SERIES, sop)
                assert sub is not None
                routed[id(sub)].append(sop)

    assert routed[id(first)] == sops
    assert routed[id(second)] == sops


def test_older_subscription_of_another_study_does_not_take_the_instance() -> None:
    mediator = Mediator()
    other = subscription(OTHER_STUDY)
    wanted = subscription()
    with mediator.subscribe(other), mediator.subscribe(wanted):
        assert mediator.by_uids(STUDY, SERIES, "1.1") is wanted
        assert other.claimed == set()


def test_subscription_without_uid_fallback_is_never_matched_by_uids() -> None:
    mediator = Mediator()
    strict = subscription(originator=("RST", 1), uid_fallback=False)
    loose = subscription()
    with mediator.subscribe(strict):
        assert mediator.by_uids(STUDY, SERIES, "1.1") is None
        with mediator.subscribe(loose):
            assert mediator.by_uids(STUDY, SERIES, "1.2") is loose
    assert strict.claimed == set()


def test_closed_subscription_is_not_matched_by_uids() -> None:
    mediator = Mediator()
    with mediator.subscribe(subscription()):
        pass

    assert mediator.by_uids(STUDY, SERIES, "1.1") is None


def test_needs_uids() -> None:
    mediator = Mediator()
    assert not mediator.needs_uids()

    with mediator.subscribe(subscription(originator=("RST", 1), uid_fallback=False)):
        assert not mediator.needs_uids()
        with mediator.subscribe(subscription(originator=("RST", 2))):
            assert mediator.needs_uids()
        assert not mediator.needs_uids()

    assert not mediator.needs_uids()


def test_wants_checks_every_level_and_claims() -> None:
    sub = subscription(series_uid=SERIES, sop_uid="1.5")

    assert sub.wants(STUDY, SERIES, "1.5")
    assert not sub.wants(OTHER_STUDY, SERIES, "1.5")
    assert not sub.wants(STUDY, OTHER_SERIES, "1.5")
    assert not sub.wants(STUDY, SERIES, "1.6")
    sub.claimed.add("1.5")
    assert not sub.wants(STUDY, SERIES, "1.5")
