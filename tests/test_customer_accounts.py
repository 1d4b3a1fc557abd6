"""CustomerAccount: required fields, exact money, write-only PINs, references."""

from __future__ import annotations

import hashlib
from decimal import Decimal

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from sqlalchemy import select

from customer_management.store.models import AccountBalanceRow, CustomerAccountRow, PaymentPlanRow
from helpers import fails
from tmf629.v1 import service_pb2 as pb
from tmf629.v1.common_pb2 import CustomerRef, PaymentMeanRef
from tmf629.v1.customer_account_pb2 import CustomerAccount, PaymentPlan
from tmf629.v1.customer_pb2 import Customer
from tmf629.v1.payment_mean_pb2 import BankAccount, PaymentMean

INVALID = grpc.StatusCode.INVALID_ARGUMENT
FAILED = grpc.StatusCode.FAILED_PRECONDITION


async def create(stub, **fields) -> CustomerAccount:
    return await stub.CreateCustomerAccount(
        pb.CreateCustomerAccountRequest(customer_account=CustomerAccount(**fields))
    )


async def bank_payment_mean(stub) -> PaymentMean:
    return await stub.CreatePaymentMean(
        pb.CreatePaymentMeanRequest(
            payment_mean=PaymentMean(
                name="debit",
                type="BankAccountDebit",
                bank_account=BankAccount(iban="DE89370400440532013000", bic="COBADEFFXXX"),
            )
        )
    )


async def test_create_and_get_with_last_modified(stub) -> None:
    created = await create(stub, name="main", account_type="Residential")
    assert created.last_modified == created.create_time
    assert created.href.endswith(f"/customerAccount/{created.id}")
    assert await stub.GetCustomerAccount(pb.GetCustomerAccountRequest(id=created.id)) == created


async def test_required_fields_and_ranges(stub) -> None:
    account = CustomerAccount(credit_limit=-1)
    account.payment_plan.add(number_of_payments=-1, priority=-1)
    account.payment_plan.add()
    info = await fails(
        stub.CreateCustomerAccount(pb.CreateCustomerAccountRequest(customer_account=account)),
        INVALID,
    )
    assert sorted(info["fields"]) == sorted(
        [
            "customer_account.name",
            "customer_account.account_type",
            "customer_account.credit_limit",
            "customer_account.payment_plan[0].type",
            "customer_account.payment_plan[0].status",
            "customer_account.payment_plan[0].priority",
            "customer_account.payment_plan[0].number_of_payments",
            "customer_account.payment_plan[0].payment_mean",
            "customer_account.payment_plan[1].type",
            "customer_account.payment_plan[1].status",
            "customer_account.payment_plan[1].priority",
            "customer_account.payment_plan[1].payment_mean",
        ]
    )


async def test_money_is_stored_as_exact_decimal(stub, sql) -> None:
    pm = await bank_payment_mean(stub)
    account = CustomerAccount(
        name="a", account_type="x", credit_limit=1212121, receivable_balance=52.3
    )
    account.customer_account_balance.add(type="ReceivableBalance", amount=0.1)
    account.payment_plan.add(
        type="T", status="Effective", priority=0, amount=15.3, payment_mean=PaymentMeanRef(id=pm.id)
    )
    created = await stub.CreateCustomerAccount(
        pb.CreateCustomerAccountRequest(customer_account=account)
    )
    assert created.credit_limit == 1212121 and created.receivable_balance == 52.3
    row = CustomerAccountRow
    [(limit, balance)] = sql(
        select(row.credit_limit, row.receivable_balance).where(row.id == created.id)
    )
    assert (limit, balance) == (Decimal("1212121"), Decimal("52.3"))
    [(amount,)] = sql(select(PaymentPlanRow.amount))
    assert amount == Decimal("15.3")
    [(amount,)] = sql(select(AccountBalanceRow.amount))
    assert amount == Decimal("0.1")
    # What the database itself holds is exact: NUMERIC, or millionths on SQLite.
    [(raw,)] = sql("SELECT receivable_balance FROM customer_account")
    assert Decimal(raw) in (Decimal("52.3"), Decimal("52300000"))
    # Filtering compares the exact decimal, not a binary float.
    listed = await stub.ListCustomerAccounts(
        pb.ListCustomerAccountsRequest(filter="receivableBalance = 52.3")
    )
    assert [a.id for a in listed.customer_accounts] == [created.id]


async def test_money_beyond_exact_range_is_rejected(stub) -> None:
    for value in (0.1234567, 1e16, float("nan")):
        info = await fails(
            create(stub, name="a", account_type="x", receivable_balance=value), INVALID
        )
        assert info["fields"] == ["customer_account.receivable_balance"]


async def test_pin_is_write_only_and_hashed(stub, sql) -> None:
    # Twelve digits: a PIN this long cannot turn up by chance in a hash or a timestamp.
    created = await create(stub, name="a", account_type="x", pin="582039174605")
    assert created.pin == ""
    got = await stub.GetCustomerAccount(pb.GetCustomerAccountRequest(id=created.id))
    assert got.pin == ""
    [(pin_hash, body)] = sql(
        "SELECT pin_hash, body FROM customer_account WHERE id = :id", id=created.id
    )
    assert pin_hash.startswith("scrypt$") and "582039174605" not in pin_hash
    assert b"582039174605" not in bytes(body)
    # An update that does not mention the PIN keeps it; `*` keeps it too.
    await stub.UpdateCustomerAccount(
        pb.UpdateCustomerAccountRequest(
            customer_account=CustomerAccount(id=created.id, name="b", account_type="x"),
            update_mask=FieldMask(paths=["*"]),
        )
    )
    [(kept,)] = sql("SELECT pin_hash FROM customer_account WHERE id = :id", id=created.id)
    assert kept == pin_hash
    # Named in the mask with no value, it is cleared.
    await stub.UpdateCustomerAccount(
        pb.UpdateCustomerAccountRequest(
            customer_account=CustomerAccount(id=created.id), update_mask=FieldMask(paths=["pin"])
        )
    )
    [(cleared,)] = sql("SELECT pin_hash FROM customer_account WHERE id = :id", id=created.id)
    assert cleared is None


async def test_bad_pins_are_rejected(stub) -> None:
    for pin in ("pin0", "123", "1234567890123", "12 34"):
        info = await fails(create(stub, name="a", account_type="x", pin=pin), INVALID)
        assert info["fields"] == ["customer_account.pin"]


async def test_references_must_exist_and_are_filled(stub) -> None:
    info = await fails(
        create(stub, name="a", account_type="x", customer=CustomerRef(id="ghost")), FAILED
    )
    assert info["reason"] == "REFERENCE_NOT_FOUND" and info["subjects"] == ["customer/ghost"]
    owner = await stub.CreateCustomer(
        pb.CreateCustomerRequest(customer=Customer(name="Owner", description="d"))
    )
    pm = await bank_payment_mean(stub)
    account = CustomerAccount(
        name="a", account_type="x", customer=CustomerRef(id=owner.id, name="wrong")
    )
    account.payment_plan.append(
        PaymentPlan(type="t", status="s", priority=1, payment_mean=PaymentMeanRef(id=pm.id))
    )
    created = await stub.CreateCustomerAccount(
        pb.CreateCustomerAccountRequest(customer_account=account)
    )
    assert created.customer == CustomerRef(
        id=owner.id, href=owner.href, name="Owner", description="d"
    )
    assert created.payment_plan[0].payment_mean == PaymentMeanRef(
        id=pm.id, href=pm.href, name="debit"
    )
    related = CustomerAccount(name="b", account_type="x")
    related.customer_account_relationship.add(relationship_type="parent").customer_account.add(
        id=created.id
    )
    linked = await stub.CreateCustomerAccount(
        pb.CreateCustomerAccountRequest(customer_account=related)
    )
    ref = linked.customer_account_relationship[0].customer_account[0]
    assert (ref.name, ref.status, ref.href) == ("a", "Created", created.href)


async def test_deleting_referenced_resources_fails_and_says_which(stub) -> None:
    owner = await stub.CreateCustomer(pb.CreateCustomerRequest(customer=Customer(name="Owner")))
    pm = await bank_payment_mean(stub)
    account = CustomerAccount(name="a", account_type="x", customer=CustomerRef(id=owner.id))
    account.payment_plan.add(
        type="t", status="s", priority=1, payment_mean=PaymentMeanRef(id=pm.id)
    )
    account = await stub.CreateCustomerAccount(
        pb.CreateCustomerAccountRequest(customer_account=account)
    )
    info = await fails(stub.DeleteCustomer(pb.DeleteCustomerRequest(id=owner.id)), FAILED)
    assert info["reason"] == "RESOURCE_IN_USE"
    assert info["subjects"] == [f"customer_account/{account.id}"]
    info = await fails(stub.DeletePaymentMean(pb.DeletePaymentMeanRequest(id=pm.id)), FAILED)
    assert info["subjects"] == [f"customer_account/{account.id}"]
    await stub.DeleteCustomerAccount(pb.DeleteCustomerAccountRequest(id=account.id))
    await stub.DeleteCustomer(pb.DeleteCustomerRequest(id=owner.id))
    await stub.DeletePaymentMean(pb.DeletePaymentMeanRequest(id=pm.id))


async def test_customer_lists_of_accounts_and_payment_means_are_references(stub) -> None:
    account = await create(stub, name="acc", account_type="x", status="Active")
    pm = await bank_payment_mean(stub)
    customer = Customer(name="c")
    customer.customer_account.add(id=account.id)
    customer.payment_mean.add(id=pm.id)
    created = await stub.CreateCustomer(pb.CreateCustomerRequest(customer=customer))
    assert created.customer_account[0].status == "Active"
    assert created.payment_mean[0].name == "debit"
    info = await fails(
        stub.DeleteCustomerAccount(pb.DeleteCustomerAccountRequest(id=account.id)), FAILED
    )
    assert info["subjects"] == [f"customer/{created.id}"]
    customer.customer_account.add(id="ghost")
    info = await fails(stub.CreateCustomer(pb.CreateCustomerRequest(customer=customer)), FAILED)
    assert info["subjects"] == ["customer_account/ghost"]


async def test_money_filters_take_exact_amounts_only(stub) -> None:
    await create(stub, name="a", account_type="x", credit_limit=1)
    listed = await stub.ListCustomerAccounts(
        pb.ListCustomerAccountsRequest(filter="creditLimit = 1.000000")
    )
    assert len(listed.customer_accounts) == 1
    info = await fails(
        stub.ListCustomerAccounts(pb.ListCustomerAccountsRequest(filter="creditLimit = 1.0000001")),
        INVALID,
    )
    assert info["fields"] == ["filter"]


async def test_request_ids_keep_no_fast_hash_of_the_pin(stub, sql) -> None:
    first = pb.CreateCustomerAccountRequest(
        customer_account=CustomerAccount(name="a", account_type="x", pin="1234"), request_id="pin-1"
    )
    created = await stub.CreateCustomerAccount(first)
    assert await stub.CreateCustomerAccount(first) == created
    # The fingerprint leaves the PIN out (a fast hash of it could be brute-forced), so a
    # retry that differs only in the PIN is the same request: the first result, once.
    first.customer_account.pin = "9999"
    assert await stub.CreateCustomerAccount(first) == created
    [(fingerprint,)] = sql("SELECT request_hash FROM request_key")
    stored = CustomerAccount(name="a", account_type="x", status="Created", pin_set=True)
    assert fingerprint == hashlib.sha256(stored.SerializeToString(deterministic=True)).hexdigest()
    listed = await stub.ListCustomerAccounts(pb.ListCustomerAccountsRequest())
    assert len(listed.customer_accounts) == 1
