"""Repository functions for the three resources. They take a session and never commit."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, cast

from psycopg import sql
from sqlalchemy import Connection, Select, Table, bindparam, literal, select, text
from sqlalchemy import delete as delete_statement
from sqlalchemy.orm import Session

from customer_management.store import writes
from customer_management.store.models import (
    CHILDREN,
    REFERENCES,
    ROWS,
    Base,
    CustomerAccountRow,
    RequestKey,
    ResourceRow,
)
from customer_management.store.units import alone
from customer_management.store.writes import TABLE_ORDER


@dataclass(frozen=True)
class Target:
    """What a reference copies from the resource it names."""

    id: str
    name: str
    description: str
    status: str
    code: str = ""


@dataclass(frozen=True)
class Referrer:
    kind: str
    id: str
    path: str


class Stored(Protocol):
    """What every resource row holds besides its searchable columns."""

    @property
    def id(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def create_time(self) -> datetime: ...
    @property
    def update_time(self) -> datetime: ...
    @property
    def body(self) -> bytes: ...


@dataclass(frozen=True)
class Written:
    id: str
    version: int
    create_time: datetime
    update_time: datetime
    body: bytes


class Listed(Stored, Protocol):
    """A row of a List page: its columns are read by name for the next page's keyset."""

    @property
    def pk(self) -> int: ...


class PinState(Protocol):
    """An account's PIN check state, as a locked row holds it (changes are written)."""

    pin_hash: str | None
    pin_failures: int
    pin_locked_until: datetime | None


def lock_pin_state(session: Session, id: str) -> PinState | None:
    """The PIN state of account `id`, its row locked for the check; None if it is gone."""
    row = get(session, "customer_account", id, for_update=True)
    return row if isinstance(row, CustomerAccountRow) else None


class NewRows:
    """New resources' rows, collected by table for one insert per table (bulk loads)."""

    def __init__(self) -> None:
        self.tables: dict[type[Base], list[dict[str, Any]]] = {}

    def add(
        self,
        kind: str,
        id: str,
        values: dict[str, Any],
        children: Mapping[type[Base], Sequence[Mapping[str, Any]]],
    ) -> None:
        self.tables.setdefault(ROWS[kind], []).append(values)
        for table, owner in CHILDREN[kind]:
            for child in children.get(table, ()):
                self.tables.setdefault(table, []).append({owner: id, **child})

    def insert(self, session: Session) -> None:
        """Parents before children (a category before the accounts naming it), whatever
        order the lines came in."""
        for table in sorted(self.tables, key=lambda table: TABLE_ORDER[_table(table)]):
            insert_many(session, table, self.tables[table])


def _by_ids(model: type[ResourceRow]) -> Select[str, int, datetime, datetime, bytes]:
    columns = (model.id, model.version, model.create_time, model.update_time, model.body)
    return select(*columns).where(model.id.in_(bindparam("ids", expanding=True)))


_BY_IDS = {kind: _by_ids(model) for kind, model in ROWS.items()}


def fetch(connection: Connection, kind: str, ids: Sequence[str]) -> dict[str, Stored]:
    """The rows with these ids (one statement), by id."""
    return {row.id: row for row in connection.execute(_BY_IDS[kind], {"ids": list(set(ids))})}


def get(session: Session, kind: str, id: str, *, for_update: bool = False) -> ResourceRow | None:
    model = ROWS[kind]
    query = select(model).where(model.id == id)
    if for_update:
        # The locked row as it is now: an object the session loaded before the lock
        # (by a unit whose savepoint rolled back) would otherwise keep older values, and
        # an etag check against them would let a concurrent update be overwritten.
        query = query.with_for_update().execution_options(populate_existing=True)
    return session.scalars(query).one_or_none()


@dataclass(frozen=True)
class Locked:
    """A resource's row as a unit that changes it reads it, locked for the transaction."""

    id: str
    version: int
    create_time: datetime
    update_time: datetime
    body: bytes


_LOCKED = "resources.locked"


def _locking(model: type[ResourceRow]) -> Select[str, int, datetime, datetime, bytes]:
    return select(model.id, model.version, model.create_time, model.update_time, model.body)


_LOCKING = {kind: _locking(model) for kind, model in ROWS.items()}


def lock_many(session: Session, wanted: Sequence[tuple[str, str]]) -> None:
    """Locks and reads the rows of (kind, id) at once, in one statement per kind and in id
    order (so two writers cannot deadlock on them), for `lock` to return; SQLite's writer
    is alone already. Only for a batch run together (see units.py): alone, `lock` reads."""
    by_kind: dict[str, set[str]] = {}
    for kind, id in wanted:
        by_kind.setdefault(kind, set()).add(id)
    locked: dict[tuple[str, str], Locked | None] = session.info.setdefault(_LOCKED, {})
    for kind, ids in by_kind.items():
        model = ROWS[kind]
        query = _LOCKING[kind].where(model.id.in_(sorted(ids))).order_by(model.id)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update()
        found = {row.id: Locked(*row) for row in session.execute(query)}
        for id in ids:
            locked[(kind, id)] = found.get(id)


def lock(session: Session, kind: str, id: str) -> Locked | None:
    """The row of a resource a unit is about to change, locked until the transaction ends
    (on PostgreSQL; SQLite has one writer), None if it does not exist."""
    locked: dict[tuple[str, str], Locked | None] = session.info.get(_LOCKED, {})
    if not alone(session) and (kind, id) in locked:
        return locked[(kind, id)]
    model = ROWS[kind]
    query = _LOCKING[kind].where(model.id == id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    row = session.execute(query).one_or_none()
    return Locked(*row) if row is not None else None


def update(session: Session, kind: str, id: str, values: Mapping[str, Any]) -> None:
    """Writes `values` (with the new version, update time and body) to a resource's row,
    with the batch's other changes (writes.py)."""
    writes.update(session, _table(ROWS[kind]), ("id", id), values)
    locked: dict[tuple[str, str], Locked | None] = session.info.get(_LOCKED, {})
    if (kind, id) in locked:  # as a later unit of the batch must find it
        row = locked[(kind, id)]
        assert row is not None
        locked[(kind, id)] = Locked(
            id,
            values.get("version", row.version),
            row.create_time,
            values.get("update_time", row.update_time),
            values.get("body", row.body),
        )


def delete(session: Session, kind: str, id: str) -> None:
    """Deletes a resource's row and its child rows."""
    replace_children(session, kind, id, {})
    table = _table(ROWS[kind])
    session.execute(delete_statement(table).where(table.c.id == id))
    session.info.get(_LOCKED, {})[(kind, id)] = None


def bulk(session: Session) -> None:
    """Readies a bulk-load transaction. Its tables grow fast, and a plan PostgreSQL cached
    while they were small (a sequential scan) would soon read all of them, every batch."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))


def insert_many(session: Session, table: type[Base], rows: Sequence[Mapping[str, Any]]) -> None:
    """Bulk insert. On PostgreSQL through COPY: one stream instead of a statement per row,
    several times faster for the bulk import."""
    if not rows:
        return
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        session.execute(table.__table__.insert(), rows)  # type: ignore[attr-defined]
        return
    columns = [
        column
        for column in table.__table__.columns
        if column.autoincrement is not True  # the sequence numbers the rows
    ]
    defaults = {
        column.name: column.default.arg
        for column in columns
        if column.default is not None and column.default.is_scalar
    }
    names = [column.name for column in columns]
    values = ([row.get(name, defaults.get(name)) for name in names] for row in rows)
    copy_rows(session, table.__tablename__, names, values)


def copy_rows(
    session: Session, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    """PostgreSQL's COPY FROM STDIN in the session's transaction."""
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    raw = session.connection().connection.driver_connection
    assert raw is not None
    with raw.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


def holders(session: Session, kind: str, column: str, values: Sequence[str]) -> dict[str, str]:
    """The ids of the resources whose `column` holds one of `values`, by value."""
    model = ROWS[kind]
    key = getattr(model, column)
    rows = session.execute(select(key, model.id).where(key.in_(list(values))))
    return {value: id for value, id in rows}


def insert(session: Session, kind: str, values: Mapping[str, Any]) -> None:
    """Adds the row of a new resource (written with the batch's others, see writes.py)."""
    writes.insert(session, _table(ROWS[kind]), (values,))


def replace_children(
    session: Session,
    kind: str,
    id: str,
    children: Mapping[type[Base], Sequence[dict[str, Any]]],
    *,
    new: bool = False,
    previous: Mapping[type[Base], Sequence[dict[str, Any]]] | None = None,
) -> None:
    """Rewrites the child rows `kind` owns so they say what the resource now says;
    `previous`, what they said before: a table whose rows stay the same is not touched.
    New rows are written with the batch's others (writes.py)."""
    for table, owner in CHILDREN[kind]:
        rows = children.get(table, ())
        if previous is not None and list(previous.get(table, ())) == list(rows):
            continue
        child = _table(table)
        if not new:  # Core, not ORM: no session objects to keep in step
            session.execute(delete_statement(child).where(child.c[owner] == id))
        if rows:
            writes.insert(session, child, [{owner: id, **row} for row in rows])


def referrers(session: Session, kind: str, id: str) -> list[Referrer]:
    """The other resources that name `kind`/`id`, which keep it from being deleted."""
    found: list[Referrer] = []
    for ref in REFERENCES[kind]:
        owner = getattr(ref.table, ref.owner)
        model = ROWS[kind]
        target = (
            id
            if ref.key == "id"
            else select(getattr(model, ref.key)).where(model.id == id).scalar_subquery()
        )
        query = (
            select(owner)
            .where(getattr(ref.table, ref.column) == target, owner != id)
            .distinct()
            .order_by(owner)
            .limit(20)
        )
        found.extend(
            Referrer(ref.source_kind, owner_id, ref.path) for owner_id in session.scalars(query)
        )
    return found


def targets(session: Session, kind: str, keys: Iterable[str], key: str = "id") -> dict[str, Target]:
    """The resources of `kind` whose `key` column holds one of `keys`, by that value."""
    model = ROWS[kind]
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    empty = literal("")
    columns = [
        model.id,
        getattr(model, "name", empty),
        getattr(model, "description", empty),
        getattr(model, "status", empty),
        getattr(model, "code", empty),
    ]
    rows = session.execute(select(*columns).where(getattr(model, key).in_(wanted)))
    found = (Target(*row) for row in rows)
    return {getattr(target, key): target for target in found}


def forget_requests(session: Session, before: datetime) -> int:
    """Drops the request ids recorded before `before`; returns how many."""
    result = session.execute(delete_statement(RequestKey).where(RequestKey.create_time < before))
    return int(getattr(result, "rowcount", 0) or 0)


def find_request(session: Session, request_id: str) -> RequestKey | None:
    return session.get(RequestKey, request_id)


def lock_request(session: Session, request_id: str) -> None:
    """Serialises concurrent requests with one request_id (SQLite has one writer already)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 629))"), {"key": request_id}
        )


def save_request(
    session: Session,
    request_id: str,
    method: str,
    request_hash: str,
    response: bytes,
    now: datetime,
) -> None:
    """Records a Create's request id and answer; its primary key refuses a second one."""
    row = {
        "request_id": request_id,
        "method": method,
        "request_hash": request_hash,
        "response": response,
        "create_time": now,
    }
    writes.insert(session, _table(RequestKey), (row,))


def _table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


def scan(
    session: Session, kind: str, ids: Sequence[str], *, after_pk: int, limit: int
) -> list[ResourceRow]:
    """Rows in creation order after `after_pk`; only those with `ids` when given."""
    model = ROWS[kind]
    query = select(model).where(model.pk > after_pk)
    if ids:
        query = query.where(model.id.in_(ids))
    return list(session.scalars(query.order_by(model.pk).limit(limit)))
