"""How long the service remembers things it must not keep forever."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from customer_management.store import history, outbox, relays, resources
from customer_management.store.database import Database


async def forget_old_request_ids(database: Database, retention: timedelta) -> int:
    """A Create retried after `retention` is a new request: its key is forgotten."""
    before = datetime.now(UTC) - retention
    return await database.write(lambda session, _: resources.forget_requests(session, before))


async def forget_old_events(database: Database, retention: timedelta) -> int:
    """Events older than `retention` go, but for those a relay has still to publish; a
    token from before them has expired."""
    before = datetime.now(UTC) - retention
    return await database.write(
        lambda session, _: outbox.prune(session, before, through=relays.kept_after(session))
    )


async def forget_old_history(database: Database, retention: timedelta) -> int:
    """Field-level history entries older than `retention` go (events are pruned apart:
    the history never depends on them)."""
    before = datetime.now(UTC) - retention
    return await database.write(lambda session, _: history.prune(session, before))
