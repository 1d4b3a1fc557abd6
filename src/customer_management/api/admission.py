"""Admission: past its capacity, the service turns the excess away at once, cheaply.

Calls that do database work are admitted by class (reads, writes). Each class has a
limit on the calls in progress at once and a short queue in front of it:

- The limit adapts to what the service sustains, by additive increase and multiplicative
  decrease on latency (the AIMD limit of Netflix's concurrency-limits, as TCP does for
  congestion): a call that completes within the target latency raises it by 1/limit,
  one that takes longer cuts it in the proportion of target to latency (at least by a
  tenth, at most by half), at most once per target interval, so a flood brings it down
  within a second or two.
- A call over the limit waits in the queue, which holds at most `limit` calls, so a
  burst is absorbed and its wait is about one more call's time.
- A call that would find the queue full, or whose deadline would pass before a slot is
  likely to free up, is answered RESOURCE_EXHAUSTED with a RetryInfo at once, before
  anything of it is validated or queued for the database.

So an overloaded server spends its time on the calls it admitted, which finish well
within their deadlines, instead of every call waiting until its own ("Handling
Overload" and "Addressing Cascading Failures" in Google's SRE book). Health checks,
reflection and watch streams are never held here: a probe must not queue behind the
work, and watchers have their own budget (`--max-watchers`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from customer_management.api.errors import answer
from customer_management.domain.errors import ResourceExhausted

READS = ("Get", "List")
WRITES = ("Create", "Update", "Delete", "Verify")
INITIAL_LIMIT = 256.0
MINIMUM_LIMIT = 8.0
MAXIMUM_LIMIT = 4096.0
SMOOTHING = 0.05
"""Weight of each completed call in the running average of the latency."""


class Limiter:
    """Admits the calls of one class; see the module's docstring."""

    def __init__(self, name: str, target: float) -> None:
        self.name = name
        self.target = target
        self.limit = INITIAL_LIMIT
        self.in_flight = 0
        self.rejected = 0
        self.latency = 0.0
        """Running average of the admitted calls' latency, seconds."""
        self._queue: deque[asyncio.Future[None]] = deque()
        self._cut_at = 0.0
        # Built once: turning a call away must cost far less than the work it saves.
        self.rejection: Any = answer(
            ResourceExhausted(
                f"the service is at its capacity for {name}s; retry after a short delay",
                reason="OVERLOADED",
                metadata={"class": name},
                retry_delay=target,
            )
        )

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def enter(self, time_left: float | None) -> bool:
        """Admits a call, after a wait in the queue if need be; False: it is to be
        answered with `rejection` (the queue is full, or the call's remaining time,
        `time_left` seconds, would run out before its turn)."""
        if self.in_flight < self.limit and not self._queue:
            self.in_flight += 1
            return True
        waiting = len(self._queue)
        if waiting >= self.limit or (
            time_left is not None and time_left < (waiting + 1) * self.latency / self.limit
        ):
            self.rejected += 1
            return False
        turn = asyncio.get_running_loop().create_future()
        self._queue.append(turn)
        try:
            await turn  # `leave` hands its slot over: in_flight stays counted
        except BaseException:
            if turn.done() and not turn.cancelled():
                self._release()  # handed a slot just as the caller went
            else:
                self._queue.remove(turn)
            raise
        return True

    def leave(self, seconds: float, *, ok: bool = True) -> None:
        """An admitted call ended after `seconds`; `ok`: it completed (a failed or
        cancelled call says nothing of the service's speed unless it was slow)."""
        self.latency += SMOOTHING * (seconds - self.latency)
        if seconds > self.target:
            now = time.monotonic()
            if now - self._cut_at >= self.target:
                self._cut_at = now
                cut = min(0.9, max(0.5, self.target / seconds))
                self.limit = max(MINIMUM_LIMIT, self.limit * cut)
        elif ok:
            self.limit = min(MAXIMUM_LIMIT, self.limit + 1.0 / self.limit)
        self._release()

    def _release(self) -> None:
        if self.in_flight <= self.limit:
            while self._queue:
                turn = self._queue.popleft()
                if not turn.done():
                    turn.set_result(None)  # the slot passes to the next caller
                    return
        self.in_flight -= 1


class Admission:
    """The limiters of one server, by call class."""

    def __init__(self, target: float) -> None:
        self.reads = Limiter("read", target)
        self.writes = Limiter("write", target)

    def gate(self, method: str) -> Limiter | None:
        """The limiter a method's calls pass, if any."""
        if method.startswith(WRITES):
            return self.writes
        if method.startswith(READS):
            return self.reads
        return None

    def snapshot(self) -> dict[str, dict[str, float]]:
        return {
            limiter.name: {
                "limit": limiter.limit,
                "in_flight": limiter.in_flight,
                "queued": limiter.queued,
                "rejected": limiter.rejected,
            }
            for limiter in (self.reads, self.writes)
        }
