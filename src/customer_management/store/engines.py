"""The database engines: one for writes, one for reads, set up for each backend, and the
store's own exceptions for what the database says.

SQLite allows one writer at a time, so its writes go through a single connection and
begin with BEGIN IMMEDIATE: writers queue in the process instead of failing with
"database is locked", and readers keep going in parallel under WAL.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from customer_management.store import guards
from customer_management.store.errors import StoreConflict, StoreUnavailable

SQLITE_BUSY_TIMEOUT = 30.0
"""Seconds a SQLite writer waits for another process's write lock."""
SQLITE_BUSY_STEP_MS = 50
"""The writer waits in steps this long, so that a cancelled unit stops waiting (sqlite3's
interrupt does not end a lock wait)."""
POSTGRES_CONNECT_ARGS = {
    "connect_timeout": 5,
    # A connection whose peer vanished without a word fails within about 30 s.
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}
WRITERS = 1
"""Write connections, and batches in flight at once: one. Every batch's Python work
takes the GIL from the event loop, and every statement's answer waits for it again; a
second lane on PostgreSQL made batches of half the size at twice the CPU a Create."""


def create(url: str, *, pool_size: int) -> tuple[Engine, Engine]:
    """The write engine and the read engine of the database at `url`."""
    if make_url(url).get_backend_name() == "sqlite":
        write = _sqlite_engine(url, writer=True, pool_size=pool_size)
        read = _sqlite_engine(url, writer=False, pool_size=pool_size)
    else:
        # No ping per checkout: it cost every batch a round trip. A connection found
        # dead fails its batch (UNAVAILABLE, which clients retry) and is replaced.
        write = create_engine(
            url,
            pool_size=WRITERS,
            max_overflow=0,
            hide_parameters=True,
            connect_args=POSTGRES_CONNECT_ARGS,
        )
        # Every read is one statement: no BEGIN/COMMIT round trips around it.
        read = create_engine(
            url,
            pool_size=pool_size,
            max_overflow=0,
            pool_pre_ping=True,
            isolation_level="AUTOCOMMIT",
            hide_parameters=True,
            connect_args=POSTGRES_CONNECT_ARGS,
        )
    _count_writes(write)
    return write, read


# hide_parameters: an error's SQL parameters (a resource body, a PIN hash) stay out of logs.


def _sqlite_engine(url: str, *, writer: bool, pool_size: int) -> Engine:
    engine = create_engine(
        url,
        pool_size=1 if writer else pool_size,
        max_overflow=0,
        hide_parameters=True,
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
        busy = SQLITE_BUSY_STEP_MS if writer else int(SQLITE_BUSY_TIMEOUT * 1000)
        cursor.execute(f"PRAGMA busy_timeout={busy}")
        cursor.close()

    if writer:

        @event.listens_for(engine, "begin")
        def _begin(connection: Any) -> None:
            give_up = time.monotonic() + SQLITE_BUSY_TIMEOUT
            while True:
                try:
                    connection.exec_driver_sql("BEGIN IMMEDIATE")
                    return
                except OperationalError as error:
                    locked = "locked" in str(error.orig)
                    if not locked or guards.cancelled() or time.monotonic() > give_up:
                        raise

    # Readers run single statements in SQLite's own autocommit: each is one snapshot.
    return engine


_DML = "database.dml"


def _count_writes(engine: Engine) -> None:
    """Counts the statements that change data on each connection of `engine`, so a unit
    of work that failed can be told from one that failed after writing."""

    @event.listens_for(engine, "before_cursor_execute")
    def _count(connection: Connection, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE"):
            connection.info[_DML] = connection.info.get(_DML, 0) + 1


def dml(session: Session) -> int:
    return int(session.connection().info.get(_DML, 0))


@contextmanager
def store_errors() -> Iterator[None]:
    """Re-raises what the database says as the store's own exceptions."""
    try:
        yield
    except Exception as error:
        translated = translate(error)
        if translated is error:
            raise
        raise translated from error


# PostgreSQL's deadlock_detected and serialization_failure: another transaction won.
CONFLICT_SQLSTATES = frozenset({"40P01", "40001"})


def translate(error: Exception) -> Exception:
    """The store's own exceptions for what the database says; anything else unchanged."""
    if isinstance(error, psycopg.Error):  # from a pipeline sent past SQLAlchemy (writes.py)
        if isinstance(error, psycopg.IntegrityError) or error.sqlstate in CONFLICT_SQLSTATES:
            return StoreConflict(str(error).splitlines()[0])
        if isinstance(error, psycopg.OperationalError):
            return StoreUnavailable(str(error).splitlines()[0])
        return error
    if isinstance(error, IntegrityError) or (
        isinstance(error, DBAPIError)
        and getattr(error.orig, "sqlstate", None) in CONFLICT_SQLSTATES
    ):
        return StoreConflict(_first_line(error))
    if isinstance(error, OperationalError) or (
        isinstance(error, DBAPIError) and error.connection_invalidated
    ):
        return StoreUnavailable(_first_line(error))
    return error


def _first_line(error: DBAPIError) -> str:
    return str(error.orig).splitlines()[0] if error.orig else "database unavailable"
