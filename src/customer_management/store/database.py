"""The unit-of-work runner: the units of work the async service runs on worker threads.

The domain is plain synchronous SQLAlchemy; each RPC runs one unit of work (one
transaction) on a thread so the event loop never waits on the database. Writes go
through one writer thread, group-committed (engines.py sets the engines up; units.py
states what a unit of work must allow).

No unit waits more than `pool_timeout` for a connection (StoreBusy), none runs past
`work_timeout`, and one whose callers have all gone is stopped (guards.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import threading
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from customer_management.store import engines, outbox, resources, writes
from customer_management.store.batching import Batcher, Item, Outcome, Result
from customer_management.store.errors import (
    StoreBusy,
    StoreCancelled,
    StoreConflict,
    StoreUnavailable,
    StreamStalled,
)
from customer_management.store.guards import Guard, Sweeper
from customer_management.store.outbox import StoredEvent
from customer_management.store.units import ALONE, Run, Unit, UnitOfWork

T = TypeVar("T")
log = logging.getLogger(__name__)

STREAM_STALL = 60.0
"""Seconds a `stream` waits for its consumer to take the next item before it gives up."""
STREAM_THREADS = 2
"""Concurrent `stream`s (snapshots); more wait their turn, never taking the readers'."""


@dataclass(frozen=True)
class Load:
    """How busy the database connections are, by pool ("read", "write")."""

    in_use: dict[str, int]
    waiting: dict[str, int]


class Database:
    """One database, read and written through units of work on worker threads.

    Writes are group-committed (see batching.py): concurrent units of work share one
    transaction and one commit, none is acknowledged before that commit, and one failing
    unit never undoes the others (see `_run_writes`).
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        max_batch: int = 128,
        pool_timeout: float = 2.0,
        work_timeout: float = 30.0,
    ) -> None:
        self.url = make_url(url)
        self.pool_timeout = pool_timeout
        self.work_timeout = work_timeout
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        writers = engines.WRITERS
        self.write_engine, self.read_engine = engines.create(url, pool_size=pool_size)
        self._sessions = sessionmaker(expire_on_commit=False)
        writes.flush_before_reads(self._sessions)
        self._writers = ThreadPoolExecutor(writers, thread_name_prefix="db-write")
        self._readers = ThreadPoolExecutor(pool_size, thread_name_prefix="db-read")
        self._streams = ThreadPoolExecutor(STREAM_THREADS, thread_name_prefix="db-stream")
        self._sweeper = Sweeper()
        self._reads: dict[Guard, tuple[float, asyncio.Future[Any], asyncio.Future[Any]]] = {}
        """Each read in progress: when it was asked for, its answer and its thread's job."""
        self._sweeper.add(self._sweep_reads)
        self._writes: Batcher[Unit, Any] = Batcher(
            self._writers,
            self._run_writes,
            lanes=writers,
            max_batch=max_batch,
            wait_timeout=pool_timeout,
            run_timeout=work_timeout,
            sweeper=self._sweeper,
        )
        self._event_listeners: list[Callable[[list[StoredEvent]], object]] = []
        self._read_batchers: list[Batcher[Any, Any]] = []

    @property
    def display_url(self) -> str:
        return self.url.render_as_string(hide_password=True)

    async def read(self, work: Callable[[Session], T]) -> T:
        """Runs `work` in a read-only transaction."""
        loop = asyncio.get_running_loop()
        guard = Guard(self._sweeper)
        answer: asyncio.Future[T] = loop.create_future()
        done = loop.run_in_executor(self._readers, guard.run, functools.partial(self._unit, work))
        done.add_done_callback(functools.partial(_relay, answer))
        self._reads[guard] = (loop.time(), answer, done)
        self._sweeper.ensure(loop)
        try:
            return await answer
        except asyncio.CancelledError:
            guard.cancel()  # the caller has gone
            raise
        finally:
            del self._reads[guard]

    def _sweep_reads(self, now: float) -> bool:
        for guard, (since, answer, done) in self._reads.items():
            if now - since >= self.pool_timeout and guard.expire():  # still without a thread
                done.cancel()
                if not answer.done():
                    answer.set_exception(
                        StoreBusy(f"no database connection was free for {self.pool_timeout:g} s")
                    )
            elif now - since >= self.work_timeout:
                guard.cancel()
        return bool(self._reads)

    def _unit(self, work: Callable[[Session], T], guard: Guard) -> T:
        with (
            engines.store_errors(),
            self.read_engine.connect() as connection,
            guard.holding(connection),
            self._sessions(bind=connection) as session,
            session.begin(),
        ):
            return work(session)

    async def stream(self, work: Callable[[Session], Iterator[T]]) -> AsyncGenerator[T]:
        """Runs `work` in one consistent read-only transaction on a snapshot thread and
        yields what it yields, at most two items ahead of the consumer. Leaving early
        ends the transaction; so does a consumer that takes nothing for STREAM_STALL
        seconds (StreamStalled), so no client can hold a thread and a connection."""
        loop = asyncio.get_running_loop()
        handoff: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=2)
        stop = threading.Event()

        def put(item: tuple[str, Any]) -> bool:
            if stop.is_set():
                return False
            pending = asyncio.run_coroutine_threadsafe(handoff.put(item), loop)
            try:
                pending.result(STREAM_STALL)
            except concurrent.futures.TimeoutError:
                pending.cancel()
                return False
            return not stop.is_set()

        def produce() -> None:
            try:
                with engines.store_errors(), self._snapshot() as session:
                    for item in work(session):
                        if not put(("item", item)):
                            return
                put(("end", None))
            except Exception as error:
                put(("error", error))

        producer = loop.run_in_executor(self._streams, produce)
        try:
            while True:
                if handoff.empty() and producer.done():
                    raise StreamStalled("the consumer took nothing for too long")
                getter = asyncio.ensure_future(handoff.get())
                either: set[asyncio.Future[Any]] = {getter, producer}
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    continue
                kind, value = getter.result()
                if kind == "end":
                    return
                if kind == "error":
                    raise value
                yield value
        finally:
            stop.set()
            while not handoff.empty():  # room for a producer waiting to put
                handoff.get_nowait()
            await asyncio.shield(producer)

    @contextmanager
    def _snapshot(self) -> Iterator[Session]:
        """A read-only transaction that sees one state of the database throughout."""
        with self.read_engine.connect() as connection:
            if self.is_sqlite:
                connection.exec_driver_sql("BEGIN")  # the driver's autocommit is off
                try:
                    with Session(bind=connection) as session:
                        yield session
                finally:
                    connection.exec_driver_sql("ROLLBACK")
            else:
                consistent = connection.execution_options(isolation_level="REPEATABLE READ")
                with consistent.begin(), Session(bind=consistent) as session:
                    yield session

    async def write(self, work: UnitOfWork[T], *, lock: tuple[str, str] | None = None) -> T:
        """Runs `work` in a transaction; returns once that transaction has committed.
        `lock`: (kind, id) of the resource it reads to change (see units.py)."""
        result: T = await self._writes.submit(Unit(work, lock))
        return result

    def reader(
        self,
        run: Callable[[Connection, Sequence[Item]], Sequence[Outcome[Result]]],
        *,
        max_batch: int = 256,
    ) -> Batcher[Item, Result]:
        """A batched read: concurrent requests go to `run` together, as one statement."""

        def batch(items: Sequence[Item], guard: Guard) -> Sequence[Outcome[Result]]:
            with (
                engines.store_errors(),
                self.read_engine.connect() as connection,
                guard.holding(connection),
            ):
                return run(connection, items)

        batcher = Batcher(
            self._readers,
            batch,
            lanes=1 if self.is_sqlite else 2,  # a read's Python work is small next to its wait
            max_batch=max_batch,
            wait_timeout=self.pool_timeout,
            run_timeout=self.work_timeout,
            sweeper=self._sweeper,
        )
        self._read_batchers.append(batcher)
        return batcher

    def load(self) -> Load:
        """Connections in use and work waiting for one; safe to call from any thread."""
        reads = list(self._reads)  # one C-level copy: the loop may change the dict meanwhile
        waiting_reads = sum(guard.queued for guard in reads)
        waiting_reads += sum(batcher.waiting for batcher in self._read_batchers)
        return Load(
            in_use={
                "read": int(self.read_engine.pool.checkedout()),  # type: ignore[attr-defined]
                "write": int(self.write_engine.pool.checkedout()),  # type: ignore[attr-defined]
            },
            waiting={"read": waiting_reads, "write": self._writes.waiting},
        )

    def on_events(self, listener: Callable[[list[StoredEvent]], object]) -> None:
        """Calls `listener` (on a worker thread) with the events of each commit that
        wrote some, once it has committed."""
        self._event_listeners.append(listener)

    def _run_writes(self, units: Sequence[Unit], guard: Guard) -> list[Outcome[Any]]:
        """Commits the batch as one transaction. When anything in it fails, the batch
        runs again with each unit in a savepoint of its own (see units.py)."""
        works = [unit.work for unit in units]

        def all_together(session: Session) -> list[Outcome[Any]]:
            resources.lock_many(session, [unit.lock for unit in units if unit.lock])
            outcomes: list[Outcome[Any]] = []
            for work in works:
                events, rows = outbox.mark(session), writes.mark(session)
                written = engines.dml(session)
                try:
                    outcomes.append(Outcome(value=work(session, Run.TOGETHER)))
                except (DBAPIError, psycopg.Error):
                    raise  # the database refused: on PostgreSQL the transaction is lost
                except Exception as error:
                    if (
                        engines.dml(session) != written
                        or session.dirty
                        or session.new
                        or session.deleted
                    ):
                        raise  # it wrote before it refused: run each unit alone
                    # It refused before it wrote anything (a stale etag, a missing
                    # reference): the others go on together.
                    outbox.discard(session, events)
                    writes.discard(session, rows)
                    outcomes.append(Outcome(error=error))
            return outcomes

        try:
            return self._commit(all_together, guard)
        except (StoreUnavailable, StoreCancelled):
            raise
        except Exception as error:
            if len(works) == 1 and not isinstance(error, StoreConflict):
                return [Outcome(error=engines.translate(error))]  # a unit's own refusal

        def each_in_a_savepoint(session: Session) -> list[Outcome[Any]]:
            session.info[ALONE] = True
            outcomes: list[Outcome[Any]] = []
            for work in works:
                events, rows = outbox.mark(session), writes.mark(session)
                try:
                    with session.begin_nested():
                        outcome = Outcome(value=work(session, Run.ALONE))
                        writes.flush(session)  # its rows fail here, not in the next unit
                    outcomes.append(outcome)
                except Exception as error:
                    outbox.discard(session, events)  # a failed change has no event
                    writes.discard(session, rows)
                    outcomes.append(Outcome(error=engines.translate(error)))
            return outcomes

        return self._commit(each_in_a_savepoint, guard)

    def _commit(self, work: Callable[[Session], T], guard: Guard) -> T:
        """Runs `work` in a transaction that ends by writing its rows and events, then
        commits."""
        with (
            engines.store_errors(),
            self.write_engine.connect() as connection,
            guard.holding(connection),
            self._sessions(bind=connection) as session,
            session.begin(),
        ):
            result = work(session)
            events = outbox.flush(session)
        if events:
            self._announce(events)
        return result

    def _announce(self, events: list[StoredEvent]) -> None:
        """Tells the listeners about committed events. Never raises: the transaction has
        committed, and an error here must not make the batch run a second time."""
        for listener in self._event_listeners:
            try:
                listener(events)
            except Exception:
                log.exception("an event listener failed; the outbox still holds the events")

    def setting(self, name: str) -> str | None:
        """A PostgreSQL setting (`SHOW name`); None on SQLite."""
        if self.is_sqlite:
            return None
        with self.read_engine.connect() as connection:
            found = connection.execute(text("SELECT current_setting(:name)"), {"name": name})
            return str(found.scalar_one())

    def analyze(self) -> None:
        """Refreshes the query planner's statistics, as a bulk load leaves them behind."""
        with self.write_engine.connect() as connection:
            connection.exec_driver_sql("ANALYZE")
            connection.commit()

    async def ping(self) -> None:
        def _ping(session: Session) -> None:
            session.execute(text("SELECT 1"))

        await self.read(_ping)

    def close(self) -> None:
        self._writers.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self._streams.shutdown(wait=True)
        self.write_engine.dispose()
        self.read_engine.dispose()


def _relay(answer: asyncio.Future[T], done: asyncio.Future[T]) -> None:
    """Passes a thread's outcome on, unless the answer was already given (or its caller
    has gone)."""
    if answer.done():
        if not done.cancelled():
            done.exception()  # retrieved: nobody else will take it
    elif done.cancelled():
        answer.cancel()
    elif (error := done.exception()) is not None:
        answer.set_exception(error)
    else:
        answer.set_result(done.result())
