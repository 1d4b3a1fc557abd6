"""Recently read resources in their wire form, kept exact by the ordered change stream.

A Get by id is served from here when it can be, without a thread hop, a query or a
parse: the bytes are what the caller receives. The anchor is the Kubernetes API
server's watch cache and its consistent reads from cache (KEP-2340): a read is served
from the cache only when the cache is known to be recent enough.

- **Exact per entry.** Every committed change reaches the cache in commit order through
  the event stream: this replica's own commits before their callers are answered
  (write-through), other replicas' as the broker reads them from the outbox. An entry
  only ever moves to a newer version (a deleted resource stays deleted), so a change
  that arrives twice, or late, changes nothing.
- **Fills cannot go back in time.** A miss reads the database and keeps what it read,
  unless a change to that resource reached the cache while the read was under way:
  the read may have seen the state before it.
- **Bounded staleness across replicas.** The broker says up to when it has read every
  commit (`caught_up`). While that is more than `staleness` seconds ago (a slow or
  unreachable database), reads bypass the cache. So a replica reads its own writes at
  once, and another replica's within `staleness` seconds (normally within milliseconds:
  PostgreSQL's NOTIFY wakes the broker at each commit); a caller that needs more asks
  for a fresh read, which always goes to the database.
- **Bounded memory.** Entries are evicted least recently used first, to stay within
  `capacity` bytes. Writes update entries that are there but add none, so a write-heavy
  load cannot push the read set out.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from customer_management.domain.notifications import KIND_OF_TYPE
from customer_management.store.outbox import StoredEvent

ENTRY_OVERHEAD = 200
"""Bytes an entry costs besides its wire form (key, tuple, list slot), for the budget."""
TOUCHED = 16_384
"""Changes remembered for the fills under way; a fill slower than that many changes is
not kept (it is still answered)."""
GONE = b""
"""A deleted resource's entry: its wire form is empty, which no resource's is."""


Decode = Callable[[StoredEvent], tuple[int, bytes]]
"""What a committed change made of its resource: its version and wire form (GONE for a
deletion, at version DELETED)."""


@dataclass(frozen=True)
class Stats:
    hits: int
    misses: int
    evictions: int
    entries: int
    bytes: int
    capacity: int
    fresh: bool


DELETED = 1 << 62
"""The version of a deleted resource's entry: nothing supersedes it."""


class ResourceCache:
    def __init__(
        self,
        capacity: int,
        staleness: float,
        decoders: Mapping[str, Decode],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`decoders`: by kind, what a change event makes of its resource."""
        self.capacity = capacity
        self._decoders = decoders
        self.staleness = staleness
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], tuple[int, bytes]] = OrderedDict()
        self._bytes = 0
        self._touched: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._changes = 0
        """Changes applied so far: a fill's ticket is this count when it began."""
        self._floor = 0
        """Tickets below this cannot be checked any more (see TOUCHED, `reset`): a change
        after them may have been forgotten."""
        self._caught_up = -float("inf")
        self.hits = self.misses = self.evictions = 0

    # -- reads ---------------------------------------------------------------------

    def get(self, kind: str, id: str) -> bytes | None:
        """The wire form (GONE: deleted), or None: ask the database."""
        if self._clock() - self._caught_up > self.staleness:
            self.misses += 1
            return None
        key = (kind, id)
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[1]

    def ticket(self) -> int:
        """Taken before a miss reads the database; `fill` needs it."""
        return self._changes

    def fill(self, kind: str, id: str, version: int, wire: bytes, ticket: int) -> None:
        """Keeps what a read found, unless the resource changed since `ticket` (the read
        may have seen it before the change) or a newer version is already here."""
        key = (kind, id)
        if ticket < self._floor or self._touched.get(key, 0) > ticket:
            return
        entry = self._entries.get(key)
        if entry is not None and entry[0] >= version:
            return
        self._put(key, version, wire)

    # -- the change stream ---------------------------------------------------------

    def apply(self, events: Iterable[StoredEvent]) -> None:
        """Committed changes, in the order they were read or made. An entry present is
        moved to the change's version (never back); none is added, and an event is
        decoded only for an entry that is here."""
        for event in events:
            kind = KIND_OF_TYPE.get(event.event_type)
            if kind is None:
                continue
            key = (kind, event.resource_id)
            self._changes += 1
            self._touched[key] = self._changes
            self._touched.move_to_end(key)
            if len(self._touched) > TOUCHED:
                _, oldest = self._touched.popitem(last=False)
                self._floor = max(self._floor, oldest)
            entry = self._entries.get(key)
            if entry is None:
                continue
            version, wire = self._decoders[kind](event)
            if version > entry[0]:
                self._put(key, version, wire)

    def caught_up(self, since: float) -> None:
        """Every commit made before `since` (this clock) has been applied."""
        self._caught_up = max(self._caught_up, since)

    def reset(self) -> None:
        """Changes were missed (pruned before the broker read them): forget everything,
        and every fill under way."""
        self._entries.clear()
        self._bytes = 0
        self._touched.clear()
        self._changes += 1
        self._floor = self._changes

    def clear(self) -> None:
        """Forgets every entry (for tests that change the database behind the service)."""
        self.reset()

    @property
    def fresh(self) -> bool:
        return self._clock() - self._caught_up <= self.staleness

    def stats(self) -> Stats:
        return Stats(
            self.hits,
            self.misses,
            self.evictions,
            len(self._entries),
            self._bytes,
            self.capacity,
            self.fresh,
        )

    def _put(self, key: tuple[str, str], version: int, wire: bytes) -> None:
        old = self._entries.get(key)
        if old is not None:
            self._bytes -= len(old[1]) + ENTRY_OVERHEAD
        self._entries[key] = (version, wire)
        self._entries.move_to_end(key)
        self._bytes += len(wire) + ENTRY_OVERHEAD
        while self._bytes > self.capacity and self._entries:
            _, (_, evicted) = self._entries.popitem(last=False)
            self._bytes -= len(evicted) + ENTRY_OVERHEAD
            self.evictions += 1
