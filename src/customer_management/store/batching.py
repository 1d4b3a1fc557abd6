"""Runs concurrent requests together on the database threads.

While `lanes` batches are in flight, new requests wait and leave together in the next
batch. An idle service answers each request at once (a batch of one); a busy one pays a
thread hop, a round trip and, for writes, a commit (an fsync) per batch instead of per
request. That is group commit for writes and one `IN (…)` query for reads by id.

A request waits at most `wait_timeout` for a lane (then StoreBusy, so a stalled database
is answered at once instead of piling up callers); a request whose caller has gone
leaves no work behind: it is dropped while it waits, and a running batch whose callers
have all gone is cancelled (see guards.py), as is one that runs past `run_timeout`.
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
from customer_management.store.guards import Guard

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(frozen=True)
class Outcome(Generic[Result]):
    """What one request of a batch came to: a value, or the exception it raised."""

    value: Result | None = None
    error: BaseException | None = None


@dataclass(frozen=True)
class _Request(Generic[Item, Result]):
    item: Item
    future: asyncio.Future[Result]
    since: float


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
        self._expiry: asyncio.TimerHandle | None = None

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._waiting.append(_Request(item, future, loop.time()))
        if self._in_flight < self._lanes:
            if not self._scheduled:
                # Dispatch at the end of this turn of the loop, so that the requests the
                # loop is handling now leave together.
                self._scheduled = True
                loop.call_soon(self._dispatch)
        elif self._expiry is None:
            self._expiry = loop.call_later(self._wait_timeout, self._expire)
        return await future

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
        work = partial(self._run, [request.item for request in batch])
        done = loop.run_in_executor(self._executor, guard.run, work)
        waiting = len(batch)

        def gone(future: asyncio.Future[Result]) -> None:
            nonlocal waiting
            if future.cancelled():
                waiting -= 1
                if not waiting:
                    guard.cancel()

        for request in batch:
            request.future.add_done_callback(gone)
        overrun = loop.call_later(self._run_timeout, guard.cancel)
        done.add_done_callback(lambda finished: self._settle(batch, finished, overrun))

    def _expire(self) -> None:
        """Fails the requests that have waited `wait_timeout` for a lane."""
        self._expiry = None
        loop = asyncio.get_running_loop()
        limit = loop.time() - self._wait_timeout
        while self._waiting and self._waiting[0].since <= limit:
            request = self._waiting.popleft()
            if not request.future.done():
                request.future.set_exception(
                    StoreBusy(f"no database connection was free for {self._wait_timeout:g} s")
                )
        if self._waiting:
            at = self._waiting[0].since + self._wait_timeout
            self._expiry = loop.call_at(at, self._expire)

    def _settle(
        self,
        batch: list[_Request[Item, Result]],
        finished: asyncio.Future[Sequence[Outcome[Result]]],
        overrun: asyncio.TimerHandle,
    ) -> None:
        overrun.cancel()
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
        if not self._waiting and self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
