"""Database work that nobody waits for any more is stopped, not left to run.

Every unit of work runs on a worker thread under a Guard. The event loop cancels the
guard when every caller the unit serves has gone (grpc cancels a handler when its
caller cancels or its deadline passes), or when the unit has taken the database's work
timeout. A unit still queued then never starts; a running one has its statement
interrupted (psycopg's cancel, sqlite3's interrupt, or the end of a SQLite lock wait)
and its connection is discarded rather than pooled, since a cancel that arrives late
would otherwise hit the next statement run on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from enum import Enum
from typing import Any, TypeVar

from sqlalchemy import Connection

from customer_management.store.errors import StoreCancelled

T = TypeVar("T")
_current = threading.local()
deadline: ContextVar[float | None] = ContextVar("deadline", default=None)
"""When the calling request's deadline passes (event loop time), if it has one: work
that could not start before it is refused at once (see batching.py)."""


class _State(Enum):
    QUEUED = "queued"
    RUNNING = "running"
    CANCELLED = "cancelled"
    DONE = "done"


class Guard:
    def __init__(self, sweeper: Sweeper | None = None) -> None:
        """`sweeper`: repeats an interruption until the work lets go of its connection."""
        self._lock = threading.Lock()
        self._state = _State.QUEUED
        self._dbapi: Any = None
        self._sweeper = sweeper

    @property
    def cancelled(self) -> bool:
        return self._state is _State.CANCELLED

    @property
    def queued(self) -> bool:
        return self._state is _State.QUEUED

    def run(self, work: Callable[[Guard], T]) -> T:
        """Runs `work` on this (worker) thread, unless the guard was cancelled first."""
        with self._lock:
            if self._state is not _State.QUEUED:
                raise StoreCancelled("nobody waits for this database work any more")
            self._state = _State.RUNNING
        _current.guard = self
        try:
            return work(self)
        finally:
            _current.guard = None
            with self._lock:
                if self._state is _State.RUNNING:
                    self._state = _State.DONE

    def expire(self) -> bool:
        """Cancels the work if it has not started; says whether it had not."""
        with self._lock:
            if self._state is not _State.QUEUED:
                return False
            self._state = _State.CANCELLED
            return True

    def cancel(self) -> None:
        """Stops the work: before it starts, or by interrupting its statement. Called on
        the event loop; psycopg's cancel opens a connection, so it runs on a thread."""
        with self._lock:
            if self._state in (_State.DONE, _State.CANCELLED):
                return
            self._state = _State.CANCELLED
            dbapi = self._dbapi
        if dbapi is None:
            return
        _interrupt(dbapi)
        if self._sweeper is not None:
            # A cancel that reaches PostgreSQL between two statements of the work cancels
            # nothing, and the next statement could then wait on a lock for as long as
            # the lock is held: the sweeper interrupts again until the work lets go.
            self._sweeper.insist(self)

    def interrupt_again(self) -> bool:
        """Interrupts the cancelled work's statement again if it still holds its
        connection; False once it has let go."""
        with self._lock:
            dbapi = self._dbapi if self._state is _State.CANCELLED else None
        if dbapi is None:
            return False
        _interrupt(dbapi)
        return True

    @contextmanager
    def holding(self, connection: Connection) -> Iterator[None]:
        """Runs the block with `connection` interruptible by `cancel`; what the block
        raises after a cancel is StoreCancelled, and the connection is not reused."""
        dbapi = connection.connection.dbapi_connection
        with self._lock:
            cancelled = self._state is _State.CANCELLED
            self._dbapi = dbapi
        try:
            if cancelled:
                raise StoreCancelled("nobody waits for this database work any more")
            yield
        except StoreCancelled:
            raise
        except Exception as error:
            if self.cancelled:
                raise StoreCancelled("the database work was stopped") from error
            raise
        finally:
            with self._lock:
                self._dbapi = None
            if self.cancelled:
                connection.invalidate()


def cancelled() -> bool:
    """Whether the unit of work running on this thread has been cancelled."""
    guard: Guard | None = getattr(_current, "guard", None)
    return guard is not None and guard.cancelled


def _interrupt(dbapi: Any) -> None:
    if hasattr(dbapi, "cancel_safe"):  # psycopg
        threading.Thread(target=_quietly, args=(dbapi.cancel_safe,), daemon=True).start()
    else:  # sqlite3
        dbapi.interrupt()


def _quietly(cancel: Callable[[], object]) -> None:
    with contextlib.suppress(Exception):  # the connection may be gone: nothing to stop
        cancel()


SWEEP_EVERY = 0.1
"""Seconds between the sweeps that enforce the time limits."""
INSIST_EVERY = 0.5
"""Seconds between the interruptions of cancelled work that still holds a connection."""


class Sweeper:
    """One task that enforces every time limit of a database: each SWEEP_EVERY seconds
    it calls each registered sweep with the loop's time. A timer per call or per batch
    would cost the event loop more than the work, at thousands of calls a second. The
    task ends when no sweep has anything left to watch, and starts again on demand."""

    def __init__(self) -> None:
        self._sweeps: list[Callable[[float], bool]] = [self._insist]
        self._task: asyncio.Task[None] | None = None
        self._insisting: dict[Guard, float] = {}
        """Cancelled work still holding its connection, and when to interrupt it again."""

    def add(self, sweep: Callable[[float], bool]) -> None:
        """`sweep(now)` enforces its limits and says whether it still watches anything."""
        self._sweeps.append(sweep)

    def insist(self, guard: Guard) -> None:
        """Interrupts `guard`'s work again every INSIST_EVERY seconds while it runs."""
        loop = asyncio.get_running_loop()
        self._insisting[guard] = loop.time() + INSIST_EVERY
        self.ensure(loop)

    def _insist(self, now: float) -> bool:
        for guard, due in list(self._insisting.items()):
            if now < due:
                continue
            if guard.interrupt_again():
                self._insisting[guard] = now + INSIST_EVERY
            else:
                del self._insisting[guard]
        return bool(self._insisting)

    def ensure(self, loop: asyncio.AbstractEventLoop) -> None:
        task = self._task
        if task is None or task.done() or task.get_loop() is not loop:
            self._task = loop.create_task(self._run(loop))

    async def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            now = loop.time()
            busy = [sweep(now) for sweep in self._sweeps]
            if not any(busy):
                return
