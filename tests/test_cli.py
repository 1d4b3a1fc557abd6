"""`customer-management migrate`: brings a database to the current schema, idempotently."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, inspect

from customer_management.store.models import Base

CLI = str(Path(sys.executable).with_name("customer-management"))


def test_migrate_creates_the_schema_and_is_idempotent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    for _ in range(2):
        done = subprocess.run(
            [CLI, "migrate", "--database-url", url], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
    engine = create_engine(url)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert set(Base.metadata.tables) | {"alembic_version"} == tables


def test_migrate_on_the_test_databases(database_url: str) -> None:
    done = subprocess.run(
        [CLI, "migrate", "--database-url", database_url], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "schema is current" in done.stderr


def test_the_migrations_build_exactly_the_models(database_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    subprocess.run(
        [CLI, "migrate", "--database-url", database_url], check=True, capture_output=True
    )
    engine = create_engine(database_url)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert differences == [], "models changed without a migration: add one with alembic revision"


def test_the_search_migration_indexes_what_is_already_stored(tmp_path: Path) -> None:
    """Resources stored before 0003 become searchable by their contact media and parties."""
    from datetime import UTC, datetime

    from google.protobuf.json_format import ParseDict
    from sqlalchemy import text

    from customer_management.store.database import Database
    from customer_management.store.migrate import upgrade
    from tmf629.v1.customer_pb2 import Customer

    url = f"sqlite:///{tmp_path / 'old.db'}"
    database = Database(url, pool_size=1)
    upgrade(database, "0002")
    body = ParseDict(
        {
            "name": "Old",
            "relatedParty": {"id": "P9", "role": "Payer"},
            "contactMedium": [
                {"type": "email", "medium": {"emailAddress": "Old@Example.com"}},
                {"type": "phone", "medium": {"number": "+44 (0)20 7946-0958"}},
            ],
            "characteristic": [{"name": "segment", "value": "gold"}],
        },
        Customer(),
    ).SerializeToString()
    now = datetime.now(UTC).replace(tzinfo=None)
    with database.write_engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO customer (id, version, create_time, update_time, name, body,"
                " status, description) VALUES ('c1', 1, :now, :now, 'Old', :body, 'Active', '')"
            ),
            {"now": now, "body": body},
        )
    upgrade(database)
    with database.write_engine.connect() as connection:
        media = connection.execute(
            text("SELECT type, email, number FROM contact_medium ORDER BY position")
        ).all()
        party = connection.execute(
            text("SELECT related_party_id, related_party_role FROM customer")
        ).one()
        pairs = connection.execute(text("SELECT name, value FROM characteristic")).all()
    database.close()
    assert [tuple(m) for m in media] == [
        ("email", "old@example.com", None),
        ("phone", None, "+442079460958"),
    ]
    assert tuple(party) == ("P9", "Payer")
    assert [tuple(p) for p in pairs] == [("segment", "gold")]
