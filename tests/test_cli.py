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
