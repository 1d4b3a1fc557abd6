"""Runs concurrent requests together on the database threads.

While `lanes` batches are in flight, new requests wait and leave together in the next
batch. An idle service answers each request at once (a batch of one); a busy one pays a
thread hop, a round trip and, for writes, a commit (an fsync) per batch instead of per
request. That is group commit for writes and one `IN (…)` query for reads by id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(frozen=True)
class Outcome(Generic[Result]):
    """What one request of a batch came to: a value, or the exception it raised."""

    value: Result | None = None
    error: BaseException | None = None


class Batcher(Generic[Item, Result]):
    def __init__(
        self,
        executor: Executor,
        run: Callable[[Sequence[Item]], Sequence[Outcome[Result]]],
        *,
        lanes: int,
        max_batch: int,
    ) -> None:
        self._executor = executor
        self._run = run
        self._lanes = lanes
        self._max_batch = max_batch
        self._in_flight = 0
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._scheduled = False

    async def submit(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._in_flight < self._lanes and not self._scheduled:
            # Dispatch at the end of this turn of the loop, so that the requests the
            # loop is handling now leave together.
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._dispatch)
        return await future

    def _dispatch(self) -> None:
        self._scheduled = False
        if not self._waiting or self._in_flight >= self._lanes:
            return
        batch = self._waiting[: self._max_batch]
        del self._waiting[: self._max_batch]
        self._in_flight += 1
        loop = asyncio.get_running_loop()
        done = loop.run_in_executor(self._executor, self._run, [item for item, _ in batch])
        done.add_done_callback(lambda finished: self._settle(batch, finished))

    def _settle(
        self,
        batch: list[tuple[Item, asyncio.Future[Result]]],
        finished: asyncio.Future[Sequence[Outcome[Result]]],
    ) -> None:
        self._in_flight -= 1
        error = finished.exception()
        outcomes = (
            finished.result() if error is None else [Outcome[Result](error=error)] * len(batch)
        )
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():  # the caller went away; the work itself has happened
                continue
            if outcome.error is not None:
                future.set_exception(outcome.error)
            else:
                future.set_result(outcome.value)  # type: ignore[arg-type]
        if self._waiting and self._in_flight < self._lanes:
            self._dispatch()
