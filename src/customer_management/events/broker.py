"""Fans the event outbox out to this process's watchers.

One reader per process follows the outbox in commit order. It wakes when a local
commit wrote events, when another replica's commit NOTIFYs (PostgreSQL), and every
`poll_interval` in case a notification was lost. Each watcher has a bounded buffer: a
watcher that falls that far behind is ended, never waited for, so one slow consumer
costs the others nothing and memory stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from collections.abc import Callable
from enum import Enum

from customer_management.store import outbox
from customer_management.store.database import Database
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


class Broker:
    def __init__(
        self,
        database: Database,
        *,
        poll_interval: float,
        buffer: int,
        max_watchers: int,
    ) -> None:
        self.database = database
        self.poll_interval = poll_interval
        self.buffer = buffer
        self.max_watchers = max_watchers
        self.position = 0
        """Every event up to here has been offered to every subscription."""
        self.history_id = ""
        self._subscriptions: set[Subscription] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.closed = False

    async def start(self) -> None:
        history = await self.database.read(outbox.history)
        self.position, self.history_id = history.latest, history.id
        loop = asyncio.get_running_loop()
        self.database.on_events(lambda: loop.call_soon_threadsafe(self._wake.set))
        self._tasks.append(asyncio.create_task(self._follow()))
        if not self.database.is_sqlite:
            self._tasks.append(asyncio.create_task(self._listen()))

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

    @property
    def watchers(self) -> int:
        return len(self._subscriptions)

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
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            self._wake.clear()
            try:
                await self._read_new()
            except Exception:
                log.warning("reading the event outbox failed; retrying", exc_info=True)
                await asyncio.sleep(RETRY_DELAY)

    async def _read_new(self) -> None:
        while True:
            page = await self.database.read(
                functools.partial(outbox.after, seq=self.position, limit=PAGE)
            )
            events = page.events
            for event in events:
                for subscription in list(self._subscriptions):
                    subscription.offer(event)
                self.position = event.seq
            if len(events) < PAGE:
                return

    async def _listen(self) -> None:
        """PostgreSQL notifications from every replica's commits, as wake-ups."""
        while True:
            try:
                async for _ in outbox.notifications(self.database.url):
                    self._wake.set()
            except Exception:
                log.warning("listening for event notifications failed; retrying", exc_info=True)
            await asyncio.sleep(RETRY_DELAY)
