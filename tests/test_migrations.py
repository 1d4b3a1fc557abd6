"""Migration 0006 (credit categories, field-level history) on a database that holds data
from the schema before it: nothing is lost, every key still holds, the new parts work."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from customer_management.config import Config
from customer_management.server import Server
from customer_management.store.database import Database
from customer_management.store.migrate import upgrade
from helpers import fails
from tmf629.v1 import service_pb2 as pb
from tmf629.v1 import service_pb2_grpc
from tmf629.v1.common_pb2 import CreditCategoryRef, CustomerAccountRef, CustomerRef, PaymentMeanRef
from tmf629.v1.credit_category_pb2 import CreditCategory
from tmf629.v1.customer_account_pb2 import CustomerAccount
from tmf629.v1.customer_pb2 import Customer
from tmf629.v1.history_pb2 import ListChangesRequest, ResourceType
from tmf629.v1.payment_mean_pb2 import PaymentMean

C, A, P = (
    "00000000-0000-4000-8000-00000000000c",
    "00000000-0000-4000-8000-00000000000a",
    "00000000-0000-4000-8000-00000000000b",
)


def old_rows(connection) -> None:
    """What a service at migration 0005 had stored: a customer listing its account, the
    account with a PIN and a plan on a payment mean, and their events."""
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    if connection.dialect.name == "sqlite":
        now = now.replace(tzinfo=None)
    customer = Customer(
        name="Old", status="Active", customer_account=[CustomerAccountRef(id=A, name="Old acct")]
    )
    account = CustomerAccount(
        name="Old acct",
        account_type="billing",
        status="Created",
        pin_set=True,
        customer=CustomerRef(id=C, name="Old"),
    )
    account.payment_plan.add(
        status="Effective", type="t", priority=1, payment_mean=PaymentMeanRef(id=P, name="Cash")
    )
    mean = PaymentMean(name="Cash", type="cash")
    common = {"now": now, "v": 1}
    statements = [
        (
            "INSERT INTO customer (id, version, create_time, update_time, name, body, status,"
            " description) VALUES (:id, :v, :now, :now, 'Old', :body, 'Active', '')",
            {"id": C, "body": customer.SerializeToString()},
        ),
        (
            "INSERT INTO payment_mean (id, version, create_time, update_time, name, body, type)"
            " VALUES (:id, :v, :now, :now, 'Cash', :body, 'cash')",
            {"id": P, "body": mean.SerializeToString()},
        ),
        (
            "INSERT INTO customer_account (id, version, create_time, update_time, name, body,"
            " status, account_type, description, customer_id, pin_hash, pin_failures)"
            " VALUES (:id, :v, :now, :now, 'Old acct', :body, 'Created', 'billing', '', :c,"
            " 'scrypt$stored', 2)",
            {"id": A, "c": C, "body": account.SerializeToString()},
        ),
        (
            "INSERT INTO customer_account_link (customer_id, position, account_id)"
            " VALUES (:c, 0, :a)",
            {"c": C, "a": A},
        ),
        (
            "INSERT INTO payment_plan (account_id, position, payment_mean_id, status)"
            " VALUES (:a, 0, :p, 'Effective')",
            {"a": A, "p": P},
        ),
    ]
    for statement, values in statements:
        connection.execute(text(statement), {**common, **values})


def snapshot(connection) -> dict[str, list[tuple]]:
    tables = (
        "customer",
        "customer_account",
        "payment_mean",
        "customer_account_link",
        "payment_plan",
    )
    return {
        table: [
            tuple(row)
            for row in connection.execute(
                text(f"SELECT id, version, body FROM {table} ORDER BY id")
                if table in ("customer", "customer_account", "payment_mean")
                else text(f"SELECT * FROM {table}")
            )
        ]
        for table in tables
    }


async def test_0006_keeps_every_row_and_adds_categories_and_history(own_database) -> None:
    database = Database(own_database, pool_size=1)
    try:
        upgrade(database, "0005")
        with database.write_engine.begin() as connection:
            old_rows(connection)
            before = snapshot(connection)
        upgrade(database)
        with database.write_engine.connect() as connection:
            assert snapshot(connection) == before
            if connection.dialect.name == "sqlite":  # the writer has its keys on again
                assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            # The database itself still refuses a dangling reference (the copied table
            # kept its keys), not only the service's check before a delete.
            with pytest.raises(IntegrityError):
                connection.execute(text("DELETE FROM payment_mean WHERE id = :p"), {"p": P})
            connection.rollback()
            pin = connection.execute(
                text("SELECT pin_hash, pin_failures, credit_category_code FROM customer_account")
            ).one()
            assert tuple(pin) == ("scrypt$stored", 2, None)
    finally:
        database.close()

    server = Server(Config(port=0, database_url=own_database))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = service_pb2_grpc.CustomerManagementServiceStub(channel)
            old = await stub.GetCustomerAccount(pb.GetCustomerAccountRequest(id=A))
            assert (old.name, old.pin_set, old.customer.id) == ("Old acct", True, C)
            gold = await stub.CreateCreditCategory(
                pb.CreateCreditCategoryRequest(credit_category=CreditCategory(code="GOLD"))
            )
            await stub.UpdateCustomerAccount(
                pb.UpdateCustomerAccountRequest(
                    customer_account=CustomerAccount(
                        id=A, credit_category=CreditCategoryRef(code="GOLD")
                    ),
                    update_mask=FieldMask(paths=["credit_category"]),
                )
            )
            info = await fails(
                stub.DeleteCreditCategory(pb.DeleteCreditCategoryRequest(id=gold.id)),
                grpc.StatusCode.FAILED_PRECONDITION,
            )
            assert info["subjects"] == [f"customer_account/{A}"]
            # A resource older than the history has it from its first change on (the rows
            # above were written without hrefs, which the update fills in).
            changes = (
                await stub.ListChanges(
                    ListChangesRequest(
                        resource_type=ResourceType.RESOURCE_TYPE_CUSTOMER_ACCOUNT, resource_id=A
                    )
                )
            ).changes
            assert [(c.etag, [f.path for f in c.field_changes]) for c in changes] == [
                ("2", ["customer.href", "paymentPlan[0].paymentMean.href", "creditCategory"])
            ]
            # The keys the migration copied the account table under still hold.
            await fails(
                stub.DeletePaymentMean(pb.DeletePaymentMeanRequest(id=P)),
                grpc.StatusCode.FAILED_PRECONDITION,
            )
    finally:
        await server.stop(grace=1)
