"""Fans the event outbox out to this process's watchers.

One reader per process follows the outbox in commit order. This process's own commits
hand it their events directly when they follow on from its position; otherwise it
reads the outbox, woken by another replica's commit (PostgreSQL NOTIFY), by a gap, and
every `poll_interval` in case a notification was lost. Each watcher has a bounded buffer: a
watcher that falls that far behind is ended, never waited for, so one slow consumer
costs the others nothing and memory stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Protocol

import psycopg

from customer_management.store import outbox
from customer_management.store.database import Database
from customer_management.store.errors import StoreError
from customer_management.store.outbox import StoredEvent

log = logging.getLogger(__name__)

PAGE = 500
RETRY_DELAY = 1.0


class Ended(Enum):
    OVERFLOW = "overflow"
    SHUTDOWN = "shutdown"


class WatchersFull(Exception):
    """Every watcher slot is taken."""


class Closed(Exception):
    """The broker has stopped: the server is shutting down."""


class Subscription:
    """One watcher's view of the live stream: the matching events since `start`."""

    def __init__(self, start: int, matches: Callable[[StoredEvent], bool], limit: int) -> None:
        self.start = start
        self.events: deque[StoredEvent] = deque()
        self.ended: Ended | None = None
        self.wakeup = asyncio.Event()
        self.heartbeat_due = False
        self.sent_at = asyncio.get_running_loop().time()
        """When the watcher last sent something; it records it."""
        self._matches = matches
        self._limit = limit

    def offer(self, event: StoredEvent) -> None:
        if self.ended is not None or not self._matches(event):
            return
        if len(self.events) >= self._limit:
            self.events.clear()  # it will resume from the last token it was sent
            self.end(Ended.OVERFLOW)
            return
        self.events.append(event)
        self.wakeup.set()

    def end(self, why: Ended) -> None:
        self.ended = why
        self.wakeup.set()


class Follower(Protocol):
    """Something kept exact by the stream (the resource cache): it is given every
    committed event in commit order, this process's own as soon as they commit."""

    def apply(self, events: Iterable[StoredEvent]) -> None: ...

    def caught_up(self, since: float) -> None:
        """Every commit made before `since` (time.monotonic) has been applied."""

    def reset(self) -> None:
        """Events were pruned before they were read: what was kept may be stale."""


class Broker:
    def __init__(
        self,
        database: Database,
        *,
        poll_interval: float,
        heartbeat_interval: float,
        buffer: int,
        max_watchers: int,
    ) -> None:
        self.database = database
        self.poll_interval = poll_interval
        self.heartbeat_interval = heartbeat_interval
        self.buffer = buffer
        self.max_watchers = max_watchers
        self.position = 0
        """Every event up to here has been offered to every subscription."""
        self.history_id = ""
        self._subscriptions: set[Subscription] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.listener: asyncio.Task[None] | None = None
        """PostgreSQL only: the task holding the LISTEN connection."""
        self.closed = False
        self._followers: list[Follower] = []

    def follow(self, follower: Follower) -> None:
        """Keeps `follower` exact from start() on."""
        self._followers.append(follower)

    async def start(self) -> None:
        since = time.monotonic()
        history = await self.database.read(outbox.history)
        self.position, self.history_id = history.latest, history.id
        for follower in self._followers:
            follower.caught_up(since)
        loop = asyncio.get_running_loop()
        self.database.on_events(
            lambda events: loop.call_soon_threadsafe(self._committed_here, events)
        )
        self._tasks.append(asyncio.create_task(self._follow()))
        self._tasks.append(asyncio.create_task(self._beat()))
        if not self.database.is_sqlite:
            self.listener = asyncio.create_task(self._listen())
            self._tasks.append(self.listener)

    @property
    def watchers(self) -> int:
        return len(self._subscriptions)

    def subscribe(self, matches: Callable[[StoredEvent], bool]) -> Subscription:
        if self.closed:
            raise Closed
        if len(self._subscriptions) >= self.max_watchers:
            raise WatchersFull
        subscription = Subscription(self.position, matches, self.buffer)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    async def close(self) -> None:
        """Ends every watcher (they answer UNAVAILABLE with their token) and stops."""
        self.closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for subscription in list(self._subscriptions):
            subscription.end(Ended.SHUTDOWN)

    async def _follow(self) -> None:
        failing = False
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            self._wake.clear()
            try:
                await self._read_new()
            except Exception as error:
                if not failing:  # once per outage, not once a second
                    _failed("reading the event outbox", error)
                failing = True
                await asyncio.sleep(RETRY_DELAY)
                continue
            if failing:
                log.warning("reading the event outbox works again; watchers carry on")
            failing = False

    def _committed_here(self, events: list[StoredEvent]) -> None:
        """This process's own commit, before its callers are answered: followers have
        its events at once; watchers too while they follow on from the position, and
        after a gap (another replica's commit) once the outbox has been read."""
        for follower in self._followers:
            follower.apply(events)
        for event in events:
            if event.seq != self.position + 1:
                self._wake.set()
                return
            self._offer(event)

    def _offer(self, event: StoredEvent) -> None:
        for subscription in list(self._subscriptions):
            subscription.offer(event)
        self.position = event.seq

    async def _beat(self) -> None:
        """Marks the watchers that have been quiet for a heartbeat interval. One task
        for all of them, so a watcher's wait costs no timer of its own."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.heartbeat_interval / 4)
            quiet_since = loop.time() - self.heartbeat_interval
            for subscription in self._subscriptions:
                if subscription.sent_at <= quiet_since and not subscription.events:
                    subscription.heartbeat_due = True
                    subscription.wakeup.set()

    async def _read_new(self) -> None:
        while True:
            since = time.monotonic()
            page = await self.database.read(
                functools.partial(outbox.after, seq=self.position, limit=PAGE)
            )
            if page.pruned_through > self.position:  # pruned before this replica read them
                for follower in self._followers:
                    follower.reset()
            fresh = [event for event in page.events if event.seq > self.position]
            for follower in self._followers:
                follower.apply(fresh)
            for event in fresh:  # those _committed_here did not offer meanwhile
                self._offer(event)
            if len(page.events) < PAGE:
                for follower in self._followers:
                    follower.caught_up(since)
                return

    async def _listen(self) -> None:
        """PostgreSQL notifications from every replica's commits, as wake-ups."""
        failing = False
        while True:
            try:
                async for _ in outbox.notifications(self.database.url):
                    failing = False
                    self._wake.set()
            except Exception as error:
                if not failing:
                    _failed("listening for event notifications", error)
                failing = True
            self._wake.set()  # a commit notified while not listening is read now
            await asyncio.sleep(RETRY_DELAY)


def _failed(what: str, error: Exception) -> None:
    """A lost database is expected and said in one line; anything else with its trace."""
    if isinstance(error, (StoreError, psycopg.OperationalError)):
        log.warning("%s failed (%s); retrying every %g s", what, error, RETRY_DELAY)
    else:
        log.warning("%s failed; retrying every %g s", what, RETRY_DELAY, exc_info=error)
