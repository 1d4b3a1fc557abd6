"""Repository functions for hub listeners. They take a session and never commit."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from customer_management.store.models import HubListener

ERROR_MAX = 512


def add(session: Session, listener: HubListener) -> None:
    session.add(listener)
    session.flush()


def get(session: Session, id: str) -> HubListener | None:
    return session.scalars(select(HubListener).where(HubListener.id == id)).one_or_none()


def remove(session: Session, id: str) -> bool:
    return bool(session.execute(delete(HubListener).where(HubListener.id == id)).rowcount)  # type: ignore[attr-defined]


def claim(session: Session, owner: str, now: datetime, until: datetime) -> list[HubListener]:
    """Leases to `owner` every listener whose lease is free, lapsed or already its own,
    and returns those it now holds."""
    session.execute(
        update(HubListener)
        .where(
            or_(
                HubListener.lease_owner.is_(None),
                HubListener.lease_until < now,
                HubListener.lease_owner == owner,
            )
        )
        .values(lease_owner=owner, lease_until=until)
    )
    return list(
        session.scalars(
            select(HubListener).where(HubListener.lease_owner == owner).order_by(HubListener.pk)
        )
    )


def release(session: Session, owner: str) -> None:
    """Frees `owner`'s leases, so another replica takes them over at once."""
    session.execute(
        update(HubListener)
        .where(HubListener.lease_owner == owner)
        .values(lease_owner=None, lease_until=None)
    )


def delivered(
    session: Session, id: str, owner: str, resume_token: str, time: datetime | None
) -> bool:
    """Records progress while `owner` holds the lease; False when it no longer does
    (another replica took over, or the listener was deleted)."""
    values: dict[str, object] = {"resume_token": resume_token, "failures": 0, "last_error": None}
    if time is not None:
        values["last_delivery_time"] = time
    result = session.execute(
        update(HubListener)
        .where(HubListener.id == id, HubListener.lease_owner == owner)
        .values(**values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def failed(session: Session, id: str, owner: str, error: str) -> int | None:
    """Counts a failed delivery; the failures in a row, or None without the lease."""
    session.execute(
        update(HubListener)
        .where(HubListener.id == id, HubListener.lease_owner == owner)
        .values(failures=HubListener.failures + 1, last_error=error[:ERROR_MAX])
    )
    return session.scalars(
        select(HubListener.failures).where(HubListener.id == id, HubListener.lease_owner == owner)
    ).one_or_none()
