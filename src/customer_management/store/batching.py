"""Runs concurrent requests together on the database threads.

While `lanes` batches are in flight, new requests wait and leave together in the next
batch. An idle service answers each request at once (a batch of one); a busy one pays a
thread hop, a round trip and, for writes, a commit (an fsync) per batch instead of per
request. That is group commit for writes and one `IN (…)` query for reads by id.

A request waits at most `wait_timeout` for a lane (then StoreBusy, so a stalled database
is answered at once instead of piling up callers); a request whose caller has gone
leaves no work behind: it is dropped while it waits, and a running batch whose callers
have all gone is cancelled (see guards.py), as is one that runs past `run_timeout`. The
database's Sweeper enforces both limits.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import Generic, TypeVar

from customer_management.store.errors import StoreBusy
from customer_management.store.guards import Guard, Sweeper

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
        self._in_flight = 0
        self._waiting: deque[_Request[Item, Result]] = deque()
        self._scheduled = False
        self._running: set[_Batch] = set()
        self._sweeper = sweeper
        sweeper.add(self._sweep)

    @property
    def waiting(self) -> int:
        """Requests waiting for a lane."""
        return len(self._waiting)

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        request = _Request(item, future, loop.time())
        self._waiting.append(request)
        self._sweeper.ensure(loop)
        if self._in_flight < self._lanes and not self._scheduled:
            # Dispatch at the end of this turn of the loop, so that the requests the
            # loop is handling now leave together.
            self._scheduled = True
            loop.call_soon(self._dispatch)
        try:
            return await future
        except asyncio.CancelledError:  # the caller has gone
            if request.batch is not None:
                request.batch.left()
            raise

    def _dispatch(self) -> None:
        self._scheduled = False
        if self._in_flight >= self._lanes:
            return
        batch: list[_Request[Item, Result]] = []
        while self._waiting and len(batch) < self._max_batch:
            request = self._waiting.popleft()
            if not request.future.done():  # a caller that went away costs nothing
                batch.append(request)
        if not batch:
            return
        self._in_flight += 1
        loop = asyncio.get_running_loop()
        guard = Guard()
        state = _Batch(guard, len(batch), loop.time())
        for request in batch:
            request.batch = state
        self._running.add(state)
        work = partial(self._run, [request.item for request in batch])
        done = loop.run_in_executor(self._executor, guard.run, work)
        done.add_done_callback(lambda finished: self._settle(batch, finished, state))

    def _sweep(self, now: float) -> bool:
        """Fails the requests that have waited `wait_timeout` for a lane and stops the
        batches that have run for `run_timeout`; says whether any are left to watch."""
        limit = now - self._wait_timeout
        while self._waiting and self._waiting[0].since <= limit:
            request = self._waiting.popleft()
            if not request.future.done():
                request.future.set_exception(
                    StoreBusy(f"no database connection was free for {self._wait_timeout:g} s")
                )
        for batch in self._running:
            if batch.started <= now - self._run_timeout:
                batch.guard.cancel()
        return bool(self._waiting or self._running)

    def _settle(
        self,
        batch: list[_Request[Item, Result]],
        finished: asyncio.Future[Sequence[Outcome[Result]]],
        state: _Batch,
    ) -> None:
        self._running.discard(state)
        self._in_flight -= 1
        error = finished.exception()
        outcomes = (
            finished.result() if error is None else [Outcome[Result](error=error)] * len(batch)
        )
        for request, outcome in zip(batch, outcomes, strict=True):
            if request.future.done():  # the caller went away; the work itself has happened
                continue
            if outcome.error is not None:
                request.future.set_exception(outcome.error)
            else:
                request.future.set_result(outcome.value)  # type: ignore[arg-type]
        if self._waiting and self._in_flight < self._lanes:
            self._dispatch()
