"""Routes each incoming C-STORE to the retrieve that asked for it.

A C-MOVE makes the PACS open a *new* association to rst's receiver; nothing on that association
says which HTTP request it serves except the Move Originator AE Title and Message ID that the
PACS should copy from the C-MOVE. rst gives every C-MOVE a message id unique per calling AE
title (:class:`MessageIds`), so ``(AE title, message id)`` names exactly one subscription.

Some PACS leave those fields out. For them a subscription may also be found by UIDs: the
instance's Study/Series/SOP Instance UIDs are matched against what each open retrieve asked
for, the oldest open retrieve that has not yet received that SOP instance wins. Two concurrent
retrieves of the same study each get their own copy (each C-MOVE sends every instance once),
and retrieves of different studies never wait for each other: there is no global lock.

All methods run in trio.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rst import logs
from rst.backends.dimse.sink import InstanceSink

__all__ = ["Mediator", "MessageIds", "Subscription"]


class MessageIds:
    """DIMSE message ids, unique per calling AE title among the operations in flight.

    Worker *index* of *count* processes uses only the ids ≡ index + 1 (mod count), so that the
    Move Originator Message ID of a C-STORE names the worker that waits for it."""

    def __init__(self, index: int = 0, count: int = 1) -> None:
        if not 0 <= index < count:
            raise ValueError(f"worker {index} of {count}")
        self._ids = range(index + 1, 65536, count)
        self._next: dict[str, int] = {}
        """Per calling AE title, the position in ``_ids`` of its next id (a position, not an
        ``itertools.cycle``: that would keep a copy of every id of its first round, ~2 MiB)."""

    def next(self, calling_aet: str) -> int:
        position = self._next.get(calling_aet)
        if position is None:
            # A random start: a worker restarted after a crash must not reuse at once the ids
            # of its predecessor's C-MOVEs, whose late C-STOREs might still arrive.
            position = secrets.randbelow(len(self._ids))
        self._next[calling_aet] = (position + 1) % len(self._ids)
        return self._ids[position]


@dataclass(eq=False)
class Subscription:
    """One open retrieve waiting for C-STOREs."""

    sink: InstanceSink
    study_uid: str
    series_uid: str | None = None
    sop_uid: str | None = None
    originator: tuple[str, int] | None = None
    """(Move Originator AE Title, Message ID) that the PACS will put on its C-STOREs."""
    uid_fallback: bool = True
    """Whether C-STOREs without Move Originator fields may be matched to it by UID."""
    trust_originator: bool = True
    """Whether the Move Originator fields are used at all (``correlation = "uid"`` turns it off)."""
    claimed: set[str] = field(default_factory=set)
    request_id: str = field(default_factory=logs.request_id.get)
    """The HTTP request the retrieve serves (its log lines' id; the receiver's lines for the
    instances it routes here carry it too)."""
    aet: str | None = field(default_factory=logs.request_aet.get)

    def wants(self, study_uid: str, series_uid: str, sop_uid: str) -> bool:
        return (
            study_uid == self.study_uid
            and (self.series_uid is None or series_uid == self.series_uid)
            and (self.sop_uid is None or sop_uid == self.sop_uid)
            and sop_uid not in self.claimed
        )


class Mediator:
    """The table of open retrieves, keyed for both ways of correlation."""

    def __init__(self) -> None:
        self._by_originator: dict[tuple[str, int], Subscription] = {}
        self._open: list[Subscription] = []  # oldest first

    @contextmanager
    def subscribe(self, subscription: Subscription) -> Iterator[Subscription]:
        """Register *subscription* for the duration of the ``with`` block.

        On exit the subscription is removed and its sink closed, so C-STOREs still arriving for
        it are refused instead of waiting for a reader that is gone.
        """
        key = subscription.originator
        if key is not None:
            if key in self._by_originator:
                raise RuntimeError(f"message id {key} is already in use")
            self._by_originator[key] = subscription
        self._open.append(subscription)
        try:
            yield subscription
        finally:
            if key is not None:
                del self._by_originator[key]
            self._open.remove(subscription)
            subscription.sink.close()

    def by_originator(self, aet: str, message_id: int) -> Subscription | None:
        sub = self._by_originator.get((aet.strip(), message_id))
        return sub if sub is not None and sub.trust_originator else None

    def needs_uids(self) -> bool:
        """Whether any open retrieve could take an instance matched by UID."""
        return any(sub.uid_fallback for sub in self._open)

    def by_uids(self, study_uid: str, series_uid: str, sop_uid: str) -> Subscription | None:
        for sub in self._open:
            if sub.uid_fallback and sub.wants(study_uid, series_uid, sop_uid):
                sub.claimed.add(sop_uid)
                return sub
        return None

    def subscriptions(self) -> list[Subscription]:
        """The open retrieves, oldest first (for monitoring and tests)."""
        return list(self._open)

    def __len__(self) -> int:
        return len(self._open)
