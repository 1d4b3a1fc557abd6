"""Repository functions for event relays (see models.EventRelay). They take a session and
never commit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, or_, select, update
from sqlalchemy.orm import Session

from customer_management.store.models import EventHistory, EventRelay, EventRow


@dataclass(frozen=True)
class Position:
    history_id: str
    seq: int
    """The last event the broker acknowledged; the relay goes on after it."""


@dataclass(frozen=True)
class Lag:
    events: int
    """Committed events not yet relayed."""
    oldest: datetime | None
    """The event time of the oldest of them."""


def claim(
    session: Session, stream: str, owner: str, now: datetime, until: datetime
) -> Position | None:
    """Leases the stream's relay to `owner` if the lease is free, lapsed or its own, and
    returns where it stands; None while another replica holds it. A new relay starts
    after the events already pruned, so it publishes every event still kept."""
    session.execute(
        update(EventRelay)
        .where(
            EventRelay.stream == stream,
            or_(
                EventRelay.lease_owner.is_(None),
                EventRelay.lease_until < now,
                EventRelay.lease_owner == owner,
            ),
        )
        .values(lease_owner=owner, lease_until=until)
    )
    row = session.get(EventRelay, stream, populate_existing=True)
    if row is None:
        history = session.execute(select(EventHistory)).scalar_one()
        row = EventRelay(
            stream=stream,
            history_id=history.history_id,
            seq=history.pruned_through,
            relayed_time=now,
            lease_owner=owner,
            lease_until=until,
        )
        session.add(row)
        session.flush()
    if row.lease_owner != owner:
        return None
    return Position(row.history_id, row.seq)


def advance(session: Session, stream: str, owner: str, seq: int, now: datetime) -> bool:
    """Moves the position on to `seq` while `owner` holds the lease (never back); False
    when it no longer does."""
    held = session.execute(
        update(EventRelay)
        .where(EventRelay.stream == stream, EventRelay.lease_owner == owner)
        .values(seq=case((EventRelay.seq < seq, seq), else_=EventRelay.seq), relayed_time=now)
    )
    return bool(held.rowcount)  # type: ignore[attr-defined]


def release(session: Session, stream: str, owner: str) -> None:
    """Frees `owner`'s lease, so another replica takes over at once."""
    session.execute(
        update(EventRelay)
        .where(EventRelay.stream == stream, EventRelay.lease_owner == owner)
        .values(lease_owner=None, lease_until=None)
    )


def kept_after(session: Session) -> int | None:
    """The lowest position of any relay: events after it must be kept (None: no relay)."""
    return session.execute(select(func.min(EventRelay.seq))).scalar()


def positions(session: Session) -> list[EventRelay]:
    return list(session.scalars(select(EventRelay).order_by(EventRelay.stream)))


def lag(session: Session, stream: str) -> Lag | None:
    """How far the stream's relay is behind; None when it has never run."""
    seq = session.execute(select(EventRelay.seq).where(EventRelay.stream == stream)).scalar()
    if seq is None:
        return None
    behind = session.execute(
        select(func.count(), func.min(EventRow.event_time)).where(EventRow.seq > seq)
    ).one()
    return Lag(int(behind[0]), behind[1])
