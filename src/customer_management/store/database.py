"""Engines, sessions and the units of work the async service runs on worker threads.

The domain is plain synchronous SQLAlchemy; each RPC runs one unit of work (one
transaction) on a thread so the event loop never waits on the database. SQLite
allows one writer at a time, so its writes go through a single thread and begin
with BEGIN IMMEDIATE: writers queue in the process instead of failing with
"database is locked", and readers keep going in parallel under WAL.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from customer_management.store.errors import StoreConflict, StoreUnavailable

T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS = 30_000


def _sqlite_engine(url: str, *, writer: bool, pool_size: int) -> Engine:
    engine = create_engine(
        url,
        pool_size=1 if writer else pool_size,
        max_overflow=0,
        connect_args={"check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's BEGIN below decide transactions, not the driver.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before it is acknowledged, even on power loss.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    begin = "BEGIN IMMEDIATE" if writer else "BEGIN"

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)

    return engine


class Database:
    """One database, read and written through units of work on worker threads."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        if self.is_sqlite:
            self.write_engine = _sqlite_engine(url, writer=True, pool_size=pool_size)
            self.read_engine = _sqlite_engine(url, writer=False, pool_size=pool_size)
            writers = 1
        else:
            self.write_engine = create_engine(
                url, pool_size=pool_size, max_overflow=0, pool_pre_ping=True
            )
            self.read_engine = self.write_engine
            writers = pool_size
        self._write_sessions = sessionmaker(self.write_engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(self.read_engine, expire_on_commit=False)
        self._writers = ThreadPoolExecutor(writers, thread_name_prefix="db-write")
        self._readers = ThreadPoolExecutor(pool_size, thread_name_prefix="db-read")

    @property
    def display_url(self) -> str:
        return self.url.render_as_string(hide_password=True)

    async def read(self, work: Callable[[Session], T]) -> T:
        """Runs `work` in a read-only transaction."""
        return await self._run(self._readers, self._read_sessions, work)

    async def write(self, work: Callable[[Session], T]) -> T:
        """Runs `work` in a transaction that commits when it returns."""
        return await self._run(self._writers, self._write_sessions, work)

    async def _run(
        self,
        executor: ThreadPoolExecutor,
        sessions: sessionmaker[Session],
        work: Callable[[Session], T],
    ) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, functools.partial(_unit, sessions, work))

    async def ping(self) -> None:
        def _ping(session: Session) -> None:
            session.execute(text("SELECT 1"))

        await self.read(_ping)

    def close(self) -> None:
        self._writers.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self.write_engine.dispose()
        self.read_engine.dispose()


def _unit(sessions: sessionmaker[Session], work: Callable[[Session], T]) -> T:
    try:
        with sessions() as session, session.begin():
            return work(session)
    except IntegrityError as error:
        raise StoreConflict(str(error.orig)) from error
    except OperationalError as error:
        raise StoreUnavailable(_first_line(error)) from error
    except DBAPIError as error:
        if error.connection_invalidated:
            raise StoreUnavailable(_first_line(error)) from error
        raise


def _first_line(error: DBAPIError) -> str:
    return str(error.orig).splitlines()[0] if error.orig else "database unavailable"
