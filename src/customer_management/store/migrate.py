"""Schema migrations (Alembic), applied by `customer-management migrate` and on serve start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, text

from customer_management.store.database import Database

SCRIPTS = Path(__file__).with_name("migrations")
# Replicas starting together on one PostgreSQL take turns: the first migrates.
ADVISORY_LOCK_KEY = 629_000_001


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    config.attributes["connection"] = connection
    return config


def upgrade(database: Database, revision: str = "head") -> None:
    with database.write_engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        raw: Any = None
        if not sqlite:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
            connection.commit()
        else:
            # SQLite changes a table by copying it; with foreign keys on, dropping the old
            # copy would trip the keys naming it. Its documented procedure: keys off
            # (outside the transaction), change, check every key, keys on again.
            raw = connection.connection.driver_connection
            raw.execute("PRAGMA foreign_keys=OFF")
        try:
            applied = MigrationContext.configure(connection).get_current_heads()
            command.upgrade(alembic_config(connection), revision)
            migrated = MigrationContext.configure(connection).get_current_heads() != applied
            if sqlite and migrated:  # checked before the commit: a dangling key undoes it all
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"the migration left dangling foreign keys: {broken[:5]}")
            connection.commit()
        finally:
            if sqlite:
                connection.rollback()  # the pragma does nothing inside a transaction
                raw.execute("PRAGMA foreign_keys=ON")
                if raw.execute("PRAGMA foreign_keys").fetchone()[0] != 1:
                    connection.invalidate()  # never serve without them
            else:
                connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY}
                )
                connection.commit()


def pending(database: Database) -> list[str]:
    """The migrations not yet applied, oldest first (empty: the schema is current)."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(alembic_config())
    with database.write_engine.connect() as connection:
        applied = set(MigrationContext.configure(connection).get_current_heads())
    waiting: list[str] = []
    for revision in scripts.walk_revisions():  # newest first
        if revision.revision in applied:
            break
        waiting.append(revision.revision)
    return list(reversed(waiting))
