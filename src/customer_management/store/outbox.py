"""The event outbox: each change's event is written in the change's own transaction.

Units of work `record` events; the write runner `flush`es them last, just before the
commit. On PostgreSQL every writer takes one advisory lock for that last step, so
sequence order is commit order: a reader that has seen `seq` N has seen every event
below it, and a late-committing transaction can never land behind a resume token.
SQLite has a single writer already.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import psycopg
from sqlalchemy import URL, Connection, Table, delete, func, select, text, update
from sqlalchemy.orm import Session

from customer_management.store import writes
from customer_management.store.models import EventHistory, EventRow
from customer_management.store.resources import copy_rows

CHANNEL = "tmf629_events"
"""PostgreSQL NOTIFY channel: a wake-up for every replica's broker, never the data."""
WRITERS_LOCK_KEY = 629_000_002
COPY_AT = 100
"""From this many events in one transaction (bulk imports), PostgreSQL gets them by COPY."""
_PENDING = "outbox.pending"


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    event_type: int
    resource_id: str
    body: bytes
    version: int = 0
    """This process's own commits: the version the change made (0: unknown)."""
    wire: bytes = b""
    """This process's own commits: the resource as the change left it, serialised, so
    that nothing in this process parses `body` to learn it."""


@dataclass(frozen=True)
class History:
    id: str
    pruned_through: int
    """Events up to this seq may be gone; a token below it has expired."""
    latest: int
    """The newest committed event's seq (or `pruned_through` when none is left)."""


def record(
    session: Session,
    *,
    event_type: int,
    resource_id: str,
    event_time: datetime,
    body: bytes,
    version: int = 0,
    wire: bytes = b"",
) -> None:
    """Adds an event to the transaction; it is written only if the transaction commits.
    `version` and `wire` go to this process's listeners with it (see StoredEvent)."""
    pending: list[tuple[dict[str, Any], int, bytes]] = session.info.setdefault(_PENDING, [])
    row = {
        "event_type": event_type,
        "resource_id": resource_id,
        "event_time": event_time,
        "body": body,
    }
    pending.append((row, version, wire))


def mark(session: Session) -> int:
    """Where the recorded events stand, to `discard` back to if a unit of work fails."""
    return len(session.info.get(_PENDING, ()))


def discard(session: Session, mark: int) -> None:
    del session.info.get(_PENDING, [])[mark:]


def flush(session: Session) -> list[StoredEvent]:
    """Writes the transaction's pending rows (writes.py) and then its events; the last
    step before its commit."""
    pending: list[tuple[dict[str, Any], int, bytes]] | None = session.info.pop(_PENDING, None)
    if not pending:
        writes.flush(session)
        return []
    rows = [row for row, _, _ in pending]
    if session.get_bind().dialect.name == "sqlite":
        # One multi-row statement; SQLite's only writer gets consecutive AUTOINCREMENT
        # keys, in the order of the rows.
        writes.flush(session)
        last = writes.insert_rows(session.connection(), _EVENTS, rows)
        return _stored(range(last - len(rows) + 1, last + 1), pending)
    if len(pending) >= COPY_AT:
        writes.flush(session, [(LOCK_AND_NOTIFY, LOCK_PARAMETERS)])
        return _stored(_copy(session, rows), pending)
    # With the rows, in one round trip: the writers' lock, the wake-up that the commit
    # will deliver, and the events, inserted in their order so that the sequence numbers
    # them in it.
    parameters: list[Any] = []
    for position, row in enumerate(rows):
        parameters += [position, row["event_type"], row["resource_id"]]
        parameters += [row["event_time"], row["body"]]
    values = ", ".join([_EVENT_VALUES] * len(rows))
    _, inserted = writes.flush(
        session,
        [
            (LOCK_AND_NOTIFY, LOCK_PARAMETERS),
            (_INSERT_EVENTS.format(values=values), tuple(parameters)),
        ],
    )
    return _stored(sorted(row[0] for row in inserted.fetchall()), pending)


_EVENTS = cast(Table, EventRow.__table__)
LOCK_AND_NOTIFY = "SELECT pg_advisory_xact_lock(%s), pg_notify(%s, '')"
LOCK_PARAMETERS = (WRITERS_LOCK_KEY, CHANNEL)
_EVENT_VALUES = "(%s::integer, %s::integer, %s::varchar, %s::timestamptz, %s::bytea)"
_INSERT_EVENTS = (
    "INSERT INTO event (event_type, resource_id, event_time, body)"
    " SELECT event_type, resource_id, event_time, body FROM (VALUES {values})"
    " AS v(position, event_type, resource_id, event_time, body) ORDER BY position"
    " RETURNING seq"
)
"""Rows inserted in ORDER BY order draw their sequence numbers in that order, so the
numbers returned, sorted, are the events' in their order."""


def _stored(
    seqs: Sequence[int], pending: list[tuple[dict[str, Any], int, bytes]]
) -> list[StoredEvent]:
    return [
        StoredEvent(seq, row["event_type"], row["resource_id"], row["body"], version, wire)
        for seq, (row, version, wire) in zip(seqs, pending, strict=True)
    ]


def _copy(session: Session, pending: list[dict[str, Any]]) -> Sequence[int]:
    """Many events (a bulk import) in one COPY: their seqs are drawn first, in order, while
    the writers' lock keeps every other writer from drawing any."""
    seqs = session.scalars(
        text(
            "SELECT nextval(pg_get_serial_sequence('event', 'seq'))"
            " FROM generate_series(1, :n) ORDER BY 1"
        ),
        {"n": len(pending)},
    ).all()
    columns = ("seq", "event_time", "event_type", "resource_id", "body")
    rows = (
        (seq, e["event_time"], e["event_type"], e["resource_id"], e["body"])
        for seq, e in zip(seqs, pending, strict=True)
    )
    copy_rows(session, EventRow.__tablename__, columns, rows)
    return seqs


def history(connection: Connection | Session) -> History:
    row = connection.execute(select(EventHistory.history_id, EventHistory.pruned_through)).one()
    latest = connection.execute(select(func.max(EventRow.seq))).scalar()
    return History(row.history_id, row.pruned_through, max(latest or 0, row.pruned_through))


@dataclass(frozen=True)
class Page:
    events: list[StoredEvent]
    pruned_through: int
    """As it stood when the page was read: if it is past `seq`, events are missing."""


def after(connection: Connection | Session, seq: int, *, limit: int) -> Page:
    """The events after `seq`, in commit order."""
    rows = connection.execute(
        select(EventRow.seq, EventRow.event_type, EventRow.resource_id, EventRow.body)
        .where(EventRow.seq > seq)
        .order_by(EventRow.seq)
        .limit(limit)
    )
    events = [StoredEvent(*row) for row in rows]
    pruned_through = connection.execute(select(EventHistory.pruned_through)).scalar_one()
    return Page(events, pruned_through)


def prune(session: Session, before: datetime, *, through: int | None = None) -> int:
    """Drops the events older than `before`, none after `through` (a relay has not
    published them yet); returns how many."""
    cut = session.execute(
        select(func.max(EventRow.seq)).where(EventRow.event_time < before)
    ).scalar()
    if cut is not None and through is not None:
        cut = min(cut, through)
    if not cut:
        return 0
    result = session.execute(delete(EventRow).where(EventRow.seq <= cut))
    session.execute(
        update(EventHistory).where(EventHistory.pruned_through < cut).values(pruned_through=cut)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def notifications(url: URL) -> AsyncIterator[None]:
    """One item per NOTIFY on CHANNEL (PostgreSQL), from a connection of its own."""
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as connection:
        await connection.execute(f"LISTEN {CHANNEL}")
        async for _ in connection.notifies():
            yield


def count(connection: Connection | Session) -> int:
    """Events kept for resuming."""
    return int(connection.execute(select(func.count()).select_from(EventRow)).scalar_one())
