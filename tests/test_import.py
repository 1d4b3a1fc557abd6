"""`customer-management import`: TMF JSON lines through the Create checks, in batches."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from conftest import postgres_database

COMMAND = str(Path(sys.executable).with_name("customer-management"))


def customer(name: str, **fields: Any) -> dict[str, Any]:
    return {"@type": "Customer", "id": str(uuid.uuid4()), "name": name, **fields}


def account(name: str, customer_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "@type": "CustomerAccount",
        "id": str(uuid.uuid4()),
        "name": name,
        "accountType": "billing",
        "customer": {"id": customer_id},
        **fields,
    }


def run(url: str, path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [COMMAND, "import", str(path), "--database-url", url, *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def count(url: str, statement: str) -> int:
    engine = create_engine(url)
    with engine.connect() as connection:
        value = connection.execute(text(statement)).scalar_one()
    engine.dispose()
    return int(value)


@pytest.fixture
def postgresql_url() -> Iterator[str]:
    yield from postgres_database()


def test_import_loads_valid_lines_and_reports_the_rest(tmp_path: Path) -> None:
    ann = customer(
        "Ann",
        contactMedium=[{"type": "email", "medium": {"emailAddress": "Ann@Example.com"}}],
    )
    later = customer("Later")
    lines = [
        json.dumps(ann),
        json.dumps(account("A1", ann["id"], externalReference="EXT-1")),
        json.dumps({"@type": "PaymentMean", "name": "Cash", "type": "cash"}),
        "not json",
        json.dumps({"@type": "Customer", "status": "Active"}),
        json.dumps({"@type": "Thing", "name": "x"}),
        json.dumps({**customer("Dup"), "id": ann["id"]}),
        json.dumps(account("A2", ann["id"], externalReference="EXT-1")),
        json.dumps(account("A3", later["id"])),  # names a customer further down
        json.dumps(later),
        "",
        json.dumps({**customer("Bad"), "unknownField": 1}),
    ]
    path = tmp_path / "load.jsonl"
    path.write_text("\n".join(lines) + "\n")
    url = f"sqlite:///{tmp_path / 'import.db'}"
    done = run(url, path, "--batch-size", "3", "--workers", "1")
    assert done.returncode == 1, done.stderr
    assert "loaded 4 resources (2 customer, 1 customer_account, 1 payment_mean)" in done.stderr
    assert "rejected 7" in done.stderr
    for line, says in [
        (4, "Expecting value"),
        (5, "customer.name is required"),
        (6, "@type must be one of"),
        (7, "already exists"),
        (8, "external_reference 'EXT-1' is taken"),
        (9, "do not exist"),
        (12, "unknownField"),
    ]:
        assert any(
            row.startswith(f"line {line}: ") and says in row for row in done.stderr.splitlines()
        ), (line, done.stderr)
    assert "importing load.jsonl" in done.stderr  # the progress bar
    # Stored as a Create stores: searchable, with their ids, and each with its event.
    assert count(url, "SELECT count(*) FROM contact_medium WHERE email = 'ann@example.com'") == 1
    assert count(url, f"SELECT count(*) FROM customer_account WHERE customer_id = '{ann['id']}'")
    assert count(url, "SELECT count(*) FROM event") == 4


def test_parallel_import_into_postgresql_keeps_references_in_any_order(
    tmp_path: Path, postgresql_url: str
) -> None:
    customers = [customer(f"c{i}", status="Active") for i in range(40)]
    accounts = [
        account(f"a{i}", c["id"], externalReference=f"X{i}") for i, c in enumerate(customers)
    ]
    # Every account comes before its customer, in another batch: a worker may load it
    # before the customer is stored, so it waits for the final pass.
    path = tmp_path / "load.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [*accounts, *customers]) + "\n")
    done = run(postgresql_url, path, "--batch-size", "8", "--workers", "2", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "loaded 80 resources (40 customer, 40 customer_account)" in done.stderr
    url = postgresql_url
    assert count(url, "SELECT count(*) FROM customer_account WHERE customer_id IS NOT NULL") == 40
    assert count(url, "SELECT count(DISTINCT seq) FROM event") == 80
    again = run(postgresql_url, path, "--batch-size", "8", "--workers", "2", "--quiet")
    assert again.returncode == 1 and "rejected 80" in again.stderr
    assert count(url, "SELECT count(*) FROM customer") == 40


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_import_takes_credit_categories_that_accounts_name_by_code(
    tmp_path: Path, database: str
) -> None:
    ann = customer("Ann")
    lines = [
        json.dumps({"@type": "CreditCategory", "code": "GOLD", "descriptionI18n": {"fr": "Or"}}),
        json.dumps(account("A1", ann["id"], creditCategory={"code": "GOLD"})),  # earlier line
        json.dumps(account("A2", ann["id"], creditCategory={"code": "SILVER"})),  # none
        json.dumps({"@type": "CreditCategory", "code": "GOLD"}),  # taken
        json.dumps({"@type": "CreditCategory", "code": "X", "descriptionI18n": {"english": "x"}}),
    ]
    lines.insert(0, json.dumps(ann))
    path = tmp_path / "categories.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with contextlib.ExitStack() as stack:
        url = (
            f"sqlite:///{tmp_path / 'import.db'}"
            if database == "sqlite"
            else stack.enter_context(contextlib.contextmanager(postgres_database)())
        )
        done = run(url, path, "--batch-size", "2", "--workers", "1")
        assert done.returncode == 1, done.stderr
        assert (
            "loaded 3 resources (1 credit_category, 1 customer, 1 customer_account)" in done.stderr
        ), done.stderr
        for line, says in [(4, "do not exist"), (5, "code 'GOLD' is taken"), (6, "BCP 47")]:
            assert any(
                row.startswith(f"line {line}: ") and says in row for row in done.stderr.splitlines()
            ), (line, done.stderr)
        assert count(
            url, "SELECT count(*) FROM customer_account WHERE credit_category_code = 'GOLD'"
        )
        # Every imported resource has its Create in the history, by the importer.
        assert count(url, "SELECT count(*) FROM resource_change WHERE caller = 'import'") == 3
