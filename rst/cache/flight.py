"""Single flight: requests for the same thing share one retrieve from the archive.

A :class:`Flight` is one retrieve in progress, of a study, a series or an instance, as the
requests waiting on it see it: the instances that have arrived so far (each with its cache
entry, or ``None`` if it could not be cached) and, once over, how it ended. The request that
started it (its *leader*) feeds it; the others (*followers*) read the instances from the cache
files as they arrive and end as it ends. :class:`Flights` finds the flight a new request can
join. No I/O here: the leader and followers live in :mod:`rst.cache.backend`.

A flight is owned by its leader's request: when that request goes away (client gone, timeout),
the retrieve is cancelled and the flight is *abandoned*; its followers then carry on with a
retrieve of their own, skipping the instances they have already sent. A flight that *failed*
(the archive's verdict: nothing found, an incomplete retrieve, a timeout) fails its followers
with the same error.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import trio

from rst.cache.store import Entry
from rst.errors import RstError
from rst.groups import copy_of
from rst.services.protocols import RetrieveKeys

__all__ = ["Arrival", "Flight", "Flights", "State"]


class State(enum.Enum):
    FLYING = "flying"
    DONE = "done"
    """The archive sent everything (the retrieve succeeded)."""
    FAILED = "failed"
    """The archive's answer was an error (:attr:`Flight.error`)."""
    ABANDONED = "abandoned"
    """The leader went away before the end (its followers retrieve for themselves)."""


@dataclass(frozen=True, slots=True)
class Arrival:
    sop_uid: str
    entry: Entry | None
    """Where the instance lies in the cache; ``None`` if it could not be cached."""


class Flight:
    """One retrieve in progress, as the requests that wait on it see it."""

    def __init__(self, keys: RetrieveKeys, started: float) -> None:
        self.keys = keys
        self.started = started
        """When the retrieve began (the cache's clock): the age of what it brings."""
        self.arrivals: list[Arrival] = []
        self.state = State.FLYING
        self.elsewhere = False
        """Whether its leader waits for another process retrieving the same (nothing arrives
        until that one is over: an instance request looks at the cache meanwhile)."""
        self._error: RstError | None = None
        self._by_uid: dict[str, Arrival] = {}
        self._changed = trio.Event()

    # -- the leader's side ---------------------------------------------------------------------

    def arrive(self, arrival: Arrival) -> None:
        """One more instance (ignored once the flight has ended: its followers have gone)."""
        if self.state is not State.FLYING:
            return
        self.arrivals.append(arrival)
        self._by_uid[arrival.sop_uid] = arrival
        self._signal()

    def succeed(self) -> None:
        self._end(State.DONE)

    def fail(self, error: RstError) -> None:
        if self.state is State.FLYING:
            # A copy: *error* is on its way up through frames that hold this flight, and its
            # traceback holds them: kept here, it would be a reference cycle.
            self._error = copy_of(error)
        self._end(State.FAILED)

    def abandon(self) -> None:
        self._end(State.ABANDONED)

    # -- the followers' side -------------------------------------------------------------------

    @property
    def over(self) -> bool:
        return self.state is not State.FLYING

    def arrival(self, sop_uid: str) -> Arrival | None:
        return self._by_uid.get(sop_uid)

    def error(self) -> RstError:
        """A copy of the error the flight failed with, for one follower to raise (an exception
        object raised in several tasks would collect all their tracebacks)."""
        if self._error is None:
            raise RuntimeError(f"the flight is {self.state.value}, not failed")
        return copy_of(self._error)

    async def changed(self) -> None:
        """Wait for the next arrival or the end (check the state first: no wait once over)."""
        await self._changed.wait()

    async def wait_for(self, sop_uid: str) -> Entry | None:
        """The cache entry of instance *sop_uid* once it has arrived; ``None`` if the flight
        ends without it or it could not be cached."""
        while (found := self._by_uid.get(sop_uid)) is None and not self.over:
            await self.changed()
        return None if found is None else found.entry

    # -- internals -----------------------------------------------------------------------------

    def _end(self, state: State) -> None:
        if self.state is State.FLYING:
            self.state = state
            self._signal()

    def _signal(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


class Flights:
    """The flights of one archive in this process, by what they retrieve."""

    def __init__(self) -> None:
        self._flying: dict[RetrieveKeys, Flight] = {}

    def __len__(self) -> int:
        return len(self._flying)

    def get(self, keys: RetrieveKeys) -> Flight | None:
        """The flight retrieving exactly *keys*, if there is one."""
        return self._flying.get(keys)

    def covering(self, keys: RetrieveKeys) -> Flight | None:
        """For an instance: the flight of its series, else of its study, if there is one."""
        if keys.sop_uid is None:
            return None
        if keys.series_uid is not None:
            series = self._flying.get(RetrieveKeys(keys.study_uid, keys.series_uid))
            if series is not None:
                return series
        return self._flying.get(RetrieveKeys(keys.study_uid))

    @contextmanager
    def flying(self, flight: Flight) -> Iterator[Flight]:
        """Make *flight* joinable while the block runs (the leader's retrieve)."""
        if flight.keys in self._flying:
            raise RuntimeError(f"a flight for {flight.keys} is already registered")
        self._flying[flight.keys] = flight
        try:
            yield flight
        finally:
            del self._flying[flight.keys]
