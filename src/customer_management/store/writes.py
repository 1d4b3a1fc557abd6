"""Rows that units of work insert or update are written together: one statement per
table for a whole group commit, instead of one per table for every unit.

`insert` and `update` keep the changes in the session; `flush` writes them, parents
before children (the tables' foreign-key order), a table's inserts before its updates,
and of several updates of one row the values of the last. Whatever the session reads is
read after a flush (`Session.do_orm_execute`), so a unit sees what the units before it
in the batch wrote, as it would if they had written at once.

A table's rows go as one multi-row INSERT, and its updates as one UPDATE ... FROM a
VALUES list, not as an executemany: sqlite3 and psycopg let go of the GIL for every row
of one, and each time the writer thread waits to get it back from the event loop, which
made a batch's statements take ten times their work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, Dialect, Table, event
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker

from customer_management.store.models import Base

_PENDING = "writes.pending"
TABLE_ORDER = {table: position for position, table in enumerate(Base.metadata.sorted_tables)}
"""Foreign-key order: a table's rows go in after those of the tables they name."""
PARAMETERS = 30_000
"""Bound values in one statement (SQLite takes 32,766, PostgreSQL 65,535)."""


_Change = tuple[Table, tuple[str, Any] | None, Mapping[str, Any]]
"""A pending change: its table, the (column, value) naming the row it updates (None: an
insert), its values."""


def insert(session: Session, table: Table, rows: Iterable[Mapping[str, Any]]) -> None:
    """Adds `rows` to `table` when the session next reads or the transaction ends."""
    pending: list[_Change] = session.info.setdefault(_PENDING, [])
    pending.extend((table, None, row) for row in rows)


def update(
    session: Session, table: Table, where: tuple[str, Any], values: Mapping[str, Any]
) -> None:
    """Sets `values` on the row of `table` whose unique column `where[0]` holds
    `where[1]`, when the session next reads or the transaction ends."""
    pending: list[_Change] = session.info.setdefault(_PENDING, [])
    pending.append((table, where, values))


def mark(session: Session) -> int:
    """Where the pending rows stand, to `discard` back to if a unit of work fails."""
    return len(session.info.get(_PENDING, ()))


def discard(session: Session, mark: int) -> None:
    del session.info.get(_PENDING, [])[mark:]


Statement = tuple[str, tuple[Any, ...]]


def flush(session: Session, then: Sequence[Statement] = ()) -> list[Any]:
    """Writes the pending changes, one statement per table and kind of change, in
    foreign-key order, and `then` the given statements after them; returns the cursors
    of `then` (on PostgreSQL all of it goes in one psycopg pipeline, one round trip:
    psycopg lets go of the GIL while it waits for each answer, and the writer's wait to
    get it back cost more than the statement)."""
    statements = _take(session) + list(then)
    if not statements:
        return []
    connection = session.connection()  # not session.execute: that would flush again
    if connection.dialect.name == "postgresql":
        cursors = _pipelined(connection, statements)
    else:
        cursors = [connection.exec_driver_sql(sql, parameters) for sql, parameters in statements]
    return cursors[len(statements) - len(then) :]


def _pipelined(connection: Connection, statements: Sequence[Statement]) -> list[Any]:
    """The statements in one psycopg pipeline, with SQLAlchemy's cursor events around
    them, so that what listens to the engine (the write runner's count of changes,
    tracing) sees them as it sees any statement."""
    raw = connection.connection.driver_connection
    assert raw is not None
    dispatch = connection.dispatch
    contexts = [SimpleNamespace() for _ in statements]  # a listener may keep state on one
    cursor = raw.cursor()
    for (sql, parameters), context in zip(statements, contexts, strict=True):
        dispatch.before_cursor_execute(connection, cursor, sql, parameters, context, False)
    try:
        with raw.pipeline():
            return [raw.execute(sql, parameters) for sql, parameters in statements]
    finally:  # also when one failed: what began with the statements ends with them
        for (sql, parameters), context in zip(statements, contexts, strict=True):
            dispatch.after_cursor_execute(connection, cursor, sql, parameters, context, False)


def _take(session: Session) -> list[Statement]:
    """The pending changes as statements (taken out of the session)."""
    pending: list[_Change] | None = session.info.pop(_PENDING, None)
    if not pending:
        return []
    inserts: dict[Table, list[Mapping[str, Any]]] = {}
    updates: dict[Table, dict[tuple[str, Any], dict[str, Any]]] = {}
    for table, where, values in pending:
        if where is None:
            inserts.setdefault(table, []).append(values)
        else:
            updates.setdefault(table, {}).setdefault(where, {}).update(values)
    dialect = session.get_bind().dialect
    statements: list[Statement] = []
    for table in sorted(inserts.keys() | updates.keys(), key=TABLE_ORDER.__getitem__):
        if table in inserts:
            statements += _inserts(dialect, table, inserts[table])
        if table in updates:
            statements += _updates(dialect, table, updates[table])
    return statements


def insert_rows(connection: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> int:
    """Inserts `rows` (each with the same keys) as multi-row INSERTs; returns the last
    row's rowid on SQLite (AUTOINCREMENT keys of one statement are consecutive: it is the
    only writer), else 0."""
    last = 0
    for statement, parameters in _inserts(connection.dialect, table, rows):
        result = connection.exec_driver_sql(statement, parameters)
        last = result.lastrowid if connection.dialect.name == "sqlite" else 0
    return last


def _inserts(
    dialect: Dialect, table: Table, rows: Sequence[Mapping[str, Any]]
) -> list[tuple[str, tuple[Any, ...]]]:
    plan = _plan(table, tuple(rows[0]), dialect)
    statements = []
    for start in range(0, len(rows), plan.per_statement):
        chunk = rows[start : start + plan.per_statement]
        values: list[Any] = []
        for row in chunk:
            values.extend(convert(row.get(name, fill)) for name, convert, fill in plan.columns)
        statements.append((plan.prefix + ", ".join([plan.row] * len(chunk)), tuple(values)))
    return statements


def _updates(
    dialect: Dialect, table: Table, rows: Mapping[tuple[str, Any], Mapping[str, Any]]
) -> list[tuple[str, tuple[Any, ...]]]:
    """One UPDATE ... FROM a VALUES list per shape of values (rows named by (unique
    column, value))."""
    by_shape: dict[tuple[str, tuple[str, ...]], list[tuple[Any, Mapping[str, Any]]]] = {}
    for (column, key), values in rows.items():
        by_shape.setdefault((column, tuple(values)), []).append((key, values))
    statements = []
    for (column, shape), of_shape in by_shape.items():
        plan = _update_plan(table, column, shape, dialect)
        for start in range(0, len(of_shape), plan.per_statement):
            chunk = of_shape[start : start + plan.per_statement]
            parameters: list[Any] = []
            for key, row in chunk:
                parameters.append(key)
                parameters.extend(convert(row[name]) for name, convert in plan.columns)
            statement = plan.prefix + ", ".join([plan.row] * len(chunk)) + plan.suffix
            statements.append((statement, tuple(parameters)))
    return statements


class _Plan:
    """INSERT INTO t (a, b) VALUES (?, ?), (?, ?), … with each column's bind processing,
    made once per table, set of columns and dialect."""

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
        self.row = "(" + ", ".join([_placeholder(dialect)] * len(self.columns)) + ")"
        self.per_statement = max(1, PARAMETERS // len(self.columns))


@cache
def _plan(table: Table, keys: tuple[str, ...], dialect: Dialect) -> _Plan:
    return _Plan(table, keys, dialect)


class _UpdatePlan:
    """WITH v(key, a, b) AS (VALUES (?, ?, ?), …) UPDATE t SET a = v.a, b = v.b FROM v
    WHERE t.key = v.key (SQLite 3.33 and later; on PostgreSQL each value is cast to its
    column's type, which a VALUES list cannot infer)."""

    def __init__(self, table: Table, key: str, shape: tuple[str, ...], dialect: Dialect) -> None:
        quote = dialect.identifier_preparer.quote
        self.columns = [
            (name, _converter(table.c[name].type.dialect_impl(dialect).bind_processor(dialect)))
            for name in shape
        ]
        placeholder = _placeholder(dialect)
        if dialect.name == "postgresql":
            placeholders = [
                f"{placeholder}::{table.c[name].type.compile(dialect=dialect)}"
                for name in (key, *shape)
            ]
        else:
            placeholders = [placeholder] * (len(shape) + 1)
        names = ", ".join(quote(name) for name in (key, *shape))
        self.prefix = f"WITH v({names}) AS (VALUES "
        self.row = "(" + ", ".join(placeholders) + ")"
        settings = ", ".join(f"{quote(name)} = v.{quote(name)}" for name in shape)
        target, column = quote(table.name), quote(key)
        self.suffix = (
            f") UPDATE {target} SET {settings} FROM v WHERE {target}.{column} = v.{column}"
        )
        self.per_statement = max(1, PARAMETERS // (len(shape) + 1))


@cache
def _update_plan(table: Table, key: str, shape: tuple[str, ...], dialect: Dialect) -> _UpdatePlan:
    return _UpdatePlan(table, key, shape, dialect)


def _placeholder(dialect: Dialect) -> str:
    return "?" if dialect.paramstyle == "qmark" else "%s"


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
