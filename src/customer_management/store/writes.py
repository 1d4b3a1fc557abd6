"""Rows that units of work insert are written together: one statement per table for a
whole group commit, instead of one per table for every unit.

`insert` keeps the rows in the session; `flush` writes them, parents before children
(the tables' foreign-key order). Whatever the session reads is read after a flush
(`Session.do_orm_execute`), so a unit sees what the units before it in the batch wrote,
as it would if they had written at once.

On SQLite the rows of a table go as one multi-row INSERT: the sqlite3 module lets go of
the GIL for every row of an executemany, and each time the writer thread waits to get it
back from the event loop, which made a batch's inserts take ten times their work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache
from typing import Any

from sqlalchemy import Connection, Dialect, Table, event
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker

from customer_management.store.models import Base

_PENDING = "writes.pending"
_ORDER = {table: position for position, table in enumerate(Base.metadata.sorted_tables)}
SQLITE_PARAMETERS = 30_000
"""Bound values in one SQLite statement (its limit is 32,766)."""


def insert(session: Session, table: Table, rows: Iterable[Mapping[str, Any]]) -> None:
    """Adds `rows` to `table` when the session next reads or the transaction ends."""
    pending: list[tuple[Table, Mapping[str, Any]]] = session.info.setdefault(_PENDING, [])
    pending.extend((table, row) for row in rows)


def mark(session: Session) -> int:
    """Where the pending rows stand, to `discard` back to if a unit of work fails."""
    return len(session.info.get(_PENDING, ()))


def discard(session: Session, mark: int) -> None:
    del session.info.get(_PENDING, [])[mark:]


def flush(session: Session) -> None:
    """Writes the pending rows: one statement per table, in foreign-key order."""
    pending: list[tuple[Table, Mapping[str, Any]]] | None = session.info.pop(_PENDING, None)
    if not pending:
        return
    by_table: dict[Table, list[Mapping[str, Any]]] = {}
    for table, row in pending:
        by_table.setdefault(table, []).append(row)
    connection = session.connection()  # not session.execute: that would flush again
    for table in sorted(by_table, key=_ORDER.__getitem__):
        insert_rows(connection, table, by_table[table])


def insert_rows(connection: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> int:
    """Inserts `rows` (each with the same keys) in as few statements as the database
    takes; returns the last row's rowid on SQLite (AUTOINCREMENT keys of one statement
    are consecutive: it is the only writer), else 0."""
    dialect = connection.dialect
    if dialect.name != "sqlite":
        connection.execute(table.insert(), list(rows))
        return 0
    plan = _plan(table, tuple(rows[0]), dialect)
    per_statement = max(1, SQLITE_PARAMETERS // len(plan.columns))
    last = 0
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        values: list[Any] = []
        for row in chunk:
            values.extend(
                convert(row.get(name, default)) for name, convert, default in plan.columns
            )
        statement = plan.prefix + ", ".join([plan.row] * len(chunk))
        last = connection.exec_driver_sql(statement, tuple(values)).lastrowid
    return last


class _Plan:
    def __init__(self, table: Table, keys: tuple[str, ...], dialect: Dialect) -> None:
        self.columns: list[tuple[str, Callable[[Any], Any], Any]] = []
        for column in table.columns:
            default = column.default.arg if column.default is not None else None  # type: ignore[attr-defined]
            if column.name not in keys and default is None:
                continue  # the database's own default (or its AUTOINCREMENT key)
            if callable(default):
                raise ValueError(f"{table.name}.{column.name} has a computed default")
            process = column.type.dialect_impl(dialect).bind_processor(dialect)
            self.columns.append((column.name, _converter(process), default))
        quote = dialect.identifier_preparer.quote
        names = ", ".join(quote(name) for name, _, _ in self.columns)
        self.prefix = f"INSERT INTO {quote(table.name)} ({names}) VALUES "
        self.row = "(" + ", ".join("?" * len(self.columns)) + ")"


@cache
def _plan(table: Table, keys: tuple[str, ...], dialect: Dialect) -> _Plan:
    return _Plan(table, keys, dialect)


def _converter(process: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    if process is None:
        return _same
    return lambda value: None if value is None else process(value)


def _same(value: Any) -> Any:
    return value


def flush_before_reads(sessions: sessionmaker[Session]) -> None:
    """Makes every statement a session of `sessions` executes see its pending rows."""

    @event.listens_for(sessions, "do_orm_execute")
    def _flush(state: ORMExecuteState) -> None:
        if state.session.info.get(_PENDING):
            flush(state.session)
