"""Runs concurrent requests together on the database threads.

While `lanes` batches are in flight, new requests wait and leave together in the next
batch. An idle service answers each request at once (a batch of one); a busy one pays a
thread hop, a round trip and, for writes, a commit (an fsync) per batch instead of per
request. That is group commit for writes and one `IN (…)` query for reads by id.

A request whose caller's deadline would pass before its turn (at the pace the lanes
have kept) is refused at once (StoreOverloaded). A request waits at most `wait_timeout`
for a lane (then StoreBusy, so a stalled database
is answered at once instead of piling up callers); a request whose caller has gone
leaves no work behind: it is dropped while it waits, and a running batch whose callers
have all gone is cancelled (see guards.py), as is one that runs past `run_timeout`. The
database's Sweeper enforces both limits.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import Generic, TypeVar

from customer_management.store.errors import StoreBusy, StoreOverloaded
from customer_management.store.guards import Guard, Sweeper, deadline

SMOOTHING = 0.1
"""Weight of each batch in the running average of the time a request takes."""
Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(frozen=True)
class Outcome(Generic[Result]):
    """What one request of a batch came to: a value, or the exception it raised."""

    value: Result | None = None
    error: BaseException | None = None


class _Batch:
    """A batch in flight: cancelled once none of its callers waits for it."""

    __slots__ = ("guard", "started", "waiting")

    def __init__(self, guard: Guard, waiting: int, started: float) -> None:
        self.guard = guard
        self.waiting = waiting
        self.started = started

    def left(self) -> None:
        self.waiting -= 1
        if not self.waiting:
            self.guard.cancel()


class _Request(Generic[Item, Result]):
    __slots__ = ("batch", "future", "item", "since")

    def __init__(self, item: Item, future: asyncio.Future[Result], since: float) -> None:
        self.item = item
        self.future = future
        self.since = since
        self.batch: _Batch | None = None


class Batcher(Generic[Item, Result]):
    def __init__(
        self,
        executor: Executor,
        run: Callable[[Sequence[Item], Guard], Sequence[Outcome[Result]]],
        *,
        lanes: int,
        max_batch: int,
        wait_timeout: float,
        run_timeout: float,
        sweeper: Sweeper,
    ) -> None:
        self._executor = executor
        self._run = run
        self._lanes = lanes
        self._max_batch = max_batch
        self._wait_timeout = wait_timeout
        self._run_timeout = run_timeout
        self._lock = threading.Lock()
        """Guards what the event loop and the lanes' threads share: the queue, the
        count of busy lanes and the running batches."""
        self._in_flight = 0
        self._waiting: deque[_Request[Item, Result]] = deque()
        self._scheduled = False
        self._running: set[_Batch] = set()
        self._sweeper = sweeper
        sweeper.add(self._sweep)
        self._per_item = 0.0
        """Running average of a lane's seconds per request, to foresee a queue's wait."""

    @property
    def waiting(self) -> int:
        """Requests waiting for a lane."""
        return len(self._waiting)

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        now = loop.time()
        limit = deadline.get()
        if limit is not None:
            wait = (len(self._waiting) + 1) * self._per_item / self._lanes
            if now + wait > limit:
                raise StoreOverloaded(
                    f"the database queue would take {wait:.3f} s, past the call's deadline",
                    retry_after=wait,
                )
        future: asyncio.Future[Result] = loop.create_future()
        request = _Request(item, future, now)
        with self._lock:  # with the count of busy lanes, which a lane ending changes
            self._waiting.append(request)
            idle_lane = self._in_flight < self._lanes
        self._sweeper.ensure(loop)
        if idle_lane and not self._scheduled:
            # Start a lane at the end of this turn of the loop, so that the requests the
            # loop is handling now leave together.
            self._scheduled = True
            loop.call_soon(self._start)
        try:
            return await future
        except asyncio.CancelledError:  # the caller has gone
            with self._lock:
                batch = request.batch
            if batch is not None:
                batch.left()
            raise

    def _start(self) -> None:
        self._scheduled = False
        with self._lock:
            if self._in_flight >= self._lanes or not self._waiting:
                return
            self._in_flight += 1
        loop = asyncio.get_running_loop()
        self._executor.submit(self._lane, loop)

    def _lane(self, loop: asyncio.AbstractEventLoop) -> None:
        """A lane's thread: runs batch after batch while requests wait, taking each next
        batch itself the moment the last one is done, rather than waiting for the event
        loop (busy with other calls) to hand it over."""
        while True:
            with self._lock:
                batch = self._take(loop.time())
                if batch is None:
                    self._in_flight -= 1
                    return
                requests, state = batch
            started = time.monotonic()
            try:
                outcomes = state.guard.run(
                    partial(self._run, [request.item for request in requests])
                )
            except BaseException as error:
                outcomes = [Outcome[Result](error=error)] * len(requests)
            per_item = (time.monotonic() - started) / len(requests)
            self._per_item += SMOOTHING * (per_item - self._per_item)
            with self._lock:
                self._running.discard(state)
            loop.call_soon_threadsafe(self._settle, requests, outcomes)

    def _take(self, now: float) -> tuple[list[_Request[Item, Result]], _Batch] | None:
        """The next batch (under the lock), skipping callers that went away."""
        requests: list[_Request[Item, Result]] = []
        while self._waiting and len(requests) < self._max_batch:
            request = self._waiting.popleft()
            if not request.future.done():  # a caller that went away costs nothing
                requests.append(request)
        if not requests:
            return None
        state = _Batch(Guard(self._sweeper), len(requests), now)
        for request in requests:
            request.batch = state
        self._running.add(state)
        return requests, state

    def _sweep(self, now: float) -> bool:
        """Fails the requests that have waited `wait_timeout` for a lane and stops the
        batches that have run for `run_timeout`; says whether any are left to watch."""
        limit = now - self._wait_timeout
        expired: list[_Request[Item, Result]] = []
        with self._lock:
            while self._waiting and self._waiting[0].since <= limit:
                expired.append(self._waiting.popleft())
            running = [batch for batch in self._running if batch.started <= now - self._run_timeout]
            busy = bool(self._waiting or self._running)
        for request in expired:
            if not request.future.done():
                request.future.set_exception(
                    StoreBusy(f"no database connection was free for {self._wait_timeout:g} s")
                )
        for batch in running:
            batch.guard.cancel()
        return busy

    def _settle(
        self, batch: list[_Request[Item, Result]], outcomes: Sequence[Outcome[Result]]
    ) -> None:
        for request, outcome in zip(batch, outcomes, strict=True):
            if request.future.done():  # the caller went away; the work itself has happened
                continue
            if outcome.error is not None:
                request.future.set_exception(outcome.error)
            else:
                request.future.set_result(outcome.value)  # type: ignore[arg-type]
