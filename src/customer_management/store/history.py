"""The field-level history's rows: one per change, written with the change's batch and
never updated; read newest first, one resource at a time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, delete, select
from sqlalchemy.orm import Session

from customer_management.store import writes
from customer_management.store.models import ChangeRow

_TABLE = cast(Table, ChangeRow.__table__)


def record(
    session: Session,
    *,
    kind: str,
    resource_id: str,
    change_kind: int,
    time: datetime,
    caller: str,
    version: int,
    before: bytes | None,
    after: bytes | None,
    secrets: Sequence[str] = (),
) -> None:
    """Adds a change's history row to the transaction (with the batch's others)."""
    row: dict[str, Any] = {
        "kind": kind,
        "resource_id": resource_id,
        "change_kind": change_kind,
        "change_time": time,
        "caller": caller,
        "version": version,
        "before": before,
        "after": after,
        "secrets": " ".join(secrets),
    }
    writes.insert(session, _TABLE, (row,))


@dataclass(frozen=True)
class Change:
    """One history row, as read."""

    seq: int
    change_kind: int
    change_time: datetime
    caller: str
    resource_id: str
    version: int
    before: bytes | None
    after: bytes | None
    secrets: str


_COLUMNS = (
    ChangeRow.seq,
    ChangeRow.change_kind,
    ChangeRow.change_time,
    ChangeRow.caller,
    ChangeRow.resource_id,
    ChangeRow.version,
    ChangeRow.before,
    ChangeRow.after,
    ChangeRow.secrets,
)


def page(
    session: Session,
    kind: str,
    resource_id: str,
    *,
    below: int | None,
    start: datetime | None,
    end: datetime | None,
    limit: int,
) -> list[Change]:
    """The resource's changes newest first: those with a seq below `below` (all: None),
    made at or after `start` and before `end`."""
    query = select(*_COLUMNS).where(ChangeRow.resource_id == resource_id, ChangeRow.kind == kind)
    if below is not None:
        query = query.where(ChangeRow.seq < below)
    if start is not None:
        query = query.where(ChangeRow.change_time >= start)
    if end is not None:
        query = query.where(ChangeRow.change_time < end)
    rows = session.execute(query.order_by(ChangeRow.seq.desc()).limit(limit))
    return [Change(*row) for row in rows]


def prune(session: Session, before: datetime) -> int:
    """Drops the changes made before `before`; returns how many."""
    result = session.execute(delete(ChangeRow).where(ChangeRow.change_time < before))
    return int(getattr(result, "rowcount", 0) or 0)
