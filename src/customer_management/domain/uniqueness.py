"""Caller-assigned keys (an account's external id, …) no two resources of a kind share.

A write alone checks them here, to name the holder in its refusal; written together
with others, the unique index refuses a key taken and the batch runs again, each alone.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from customer_management.domain.errors import AlreadyExists
from customer_management.domain.kinds import Kind, M
from customer_management.store import resources


def check_unique(session: Session, kind: Kind[M], values: dict[str, Any], own: str | None) -> None:
    """Refuses a caller-assigned key another resource (not `own`) already holds."""
    for name in kind.unique:
        value = values.get(name)
        if value is None:
            continue
        holder = resources.holders(session, kind.kind, name, [value]).get(value)
        if holder is not None and holder != own:
            raise AlreadyExists(
                f"{kind.kind} {holder} already has {name} {value!r}",
                reason=f"{name.upper()}_TAKEN",
                metadata={"id": holder, name: value},
            )
