"""Queries: every filter operator and field of the documented AIP-160 subset, order_by,
keyset tokens, total size, read masks and the account lookup by external reference,
on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.json_format import ParseDict

from customer_management.domain.filtering import MAX_DEPTH, MAX_FILTER_LENGTH, MAX_RESTRICTIONS
from helpers import fails
from tmf629.v1 import service_pb2 as pb
from tmf629.v1.customer_account_pb2 import CustomerAccount
from tmf629.v1.customer_pb2 import Customer
from tmf629.v1.payment_mean_pb2 import PaymentMean

INVALID = grpc.StatusCode.INVALID_ARGUMENT


@dataclass
class World:
    customers: dict[str, Customer]
    accounts: dict[str, CustomerAccount]
    means: dict[str, PaymentMean]


CUSTOMERS = [
    {
        "name": "Ann",
        "status": "Active",
        "customerRank": 1,
        "validFor": {"startDateTime": "2024-01-01T00:00:00Z"},
        "relatedParty": {"id": "P1", "role": "BillTo"},
        "contactMedium": [
            {
                "type": "email",
                "preferred": True,
                "medium": {"emailAddress": "Ann.Smith@Example.COM"},
            },
            {"type": "phone", "medium": {"number": "+44 20 7946 0958"}},
        ],
        "characteristic": [{"name": "segment", "value": "gold"}],
    },
    {
        "name": "Bob",
        "status": "Active",
        "customerRank": 5,
        "validFor": {"startDateTime": "2025-06-01T00:00:00Z"},
        "relatedParty": {"id": "P1", "role": "ShipTo"},
        "contactMedium": [{"type": "phone", "medium": {"number": "+44 (0)20 7946-0001"}}],
        "characteristic": [
            {"name": "segment", "value": "silver"},
            {"name": "vip", "value": "yes"},
        ],
    },
    {"name": "Cy", "status": "Former", "description": "old customer"},
    {
        "name": "Dee",
        "status": "Prospect",
        "customerRank": 9,
        "relatedParty": {"id": "P2", "role": "BillTo"},
        "contactMedium": [
            {"type": "email", "preferred": False, "medium": {"emailAddress": "dee@example.com"}}
        ],
    },
]


async def world(stub) -> World:
    customers = {}
    for data in CUSTOMERS:
        c = await stub.CreateCustomer(
            pb.CreateCustomerRequest(customer=ParseDict(data, Customer()))
        )
        customers[c.name] = c
    means = {}
    for data in [
        {
            "name": "Voucher",
            "type": "voucher",
            "relatedParty": {"id": "P1", "role": "Payer"},
            "validFor": {"startDateTime": "2025-01-01T00:00:00Z"},
        },
        {"name": "Cash", "type": "cash"},
    ]:
        m = await stub.CreatePaymentMean(
            pb.CreatePaymentMeanRequest(payment_mean=ParseDict(data, PaymentMean()))
        )
        means[m.name] = m
    voucher, ann = means["Voucher"].id, customers["Ann"].id
    plan = {"type": "recurring", "priority": 1, "paymentMean": {"id": voucher}}
    accounts = {}
    for data in [
        {
            "name": "A1",
            "accountType": "billing",
            "status": "Active",
            "creditLimit": 100.5,
            "customer": {"id": ann},
            "externalReference": "EXT-1",
            "paymentPlan": [{**plan, "status": "Active"}],
        },
        {
            "name": "A2",
            "accountType": "billing",
            "status": "Suspended",
            "creditLimit": 2000,
            "receivableBalance": -10.25,
            "customer": {"id": ann},
        },
        {
            "name": "A3",
            "accountType": "settlement",
            "status": "Active",
            "externalReference": "EXT-3",
            "paymentPlan": [{**plan, "status": "Inactive"}],
        },
    ]:
        if data["name"] == "A2":
            data["customerAccountRelationship"] = [
                {"relationshipType": "parent", "customerAccount": [{"id": accounts["A1"].id}]}
            ]
        a = await stub.CreateCustomerAccount(
            pb.CreateCustomerAccountRequest(customer_account=ParseDict(data, CustomerAccount()))
        )
        accounts[a.name] = a
    e = await stub.CreateCustomer(
        pb.CreateCustomerRequest(
            customer=Customer(
                name="Eve",
                status="Active",
                customer_account=[{"id": accounts["A1"].id}],
                payment_mean=[{"id": voucher}],
            )
        )
    )
    customers["Eve"] = e
    return World(customers, accounts, means)


async def names(call, request, items: str) -> list[str]:
    """Every result's name, across pages of two."""
    found: list[str] = []
    request.page_size = 2
    while True:
        page = await call(request)
        found.extend(item.name for item in getattr(page, items))
        if not page.next_page_token:
            return found
        request.page_token = page.next_page_token


async def customers(stub, filter: str) -> set[str]:
    return set(await names(stub.ListCustomers, pb.ListCustomersRequest(filter=filter), "customers"))


async def accounts(stub, filter: str) -> set[str]:
    request = pb.ListCustomerAccountsRequest(filter=filter)
    return set(await names(stub.ListCustomerAccounts, request, "customer_accounts"))


async def means(stub, filter: str) -> set[str]:
    request = pb.ListPaymentMeansRequest(filter=filter)
    return set(await names(stub.ListPaymentMeans, request, "payment_means"))


def customer_cases(w: World) -> list[tuple[str, set[str]]]:
    everyone = {"Ann", "Bob", "Cy", "Dee", "Eve"}
    bob_created = w.customers["Bob"].create_time.ToJsonString()
    return [
        ("", everyone),
        ("status = Active", {"Ann", "Bob", "Eve"}),
        ('status = "Active"', {"Ann", "Bob", "Eve"}),
        ("status != Active", {"Cy", "Dee"}),
        ("status:Active", {"Ann", "Bob", "Eve"}),
        ("name > Bob", {"Cy", "Dee", "Eve"}),
        ("name >= Bob", {"Bob", "Cy", "Dee", "Eve"}),
        ("name < Bob", {"Ann"}),
        ("name <= 'Bob'", {"Ann", "Bob"}),
        (f"id = {w.customers['Cy'].id}", {"Cy"}),
        ("customerRank = 5", {"Bob"}),
        ("customerRank != 5", {"Ann", "Cy", "Dee", "Eve"}),
        ("NOT customerRank = 5", {"Ann", "Cy", "Dee", "Eve"}),
        ("customerRank < 5", {"Ann"}),
        ("customerRank <= 5", {"Ann", "Bob"}),
        ("customerRank > 5", {"Dee"}),
        ("customerRank >= 5", {"Bob", "Dee"}),
        ("customer_rank >= 5", {"Bob", "Dee"}),
        ("customerRank:*", {"Ann", "Bob", "Dee"}),
        ("NOT customerRank:*", {"Cy", "Eve"}),
        ("-customerRank:*", {"Cy", "Eve"}),
        ('description = "old customer"', {"Cy"}),
        ("description:*", {"Cy"}),
        ('validFor.startDateTime >= "2024-06-01T00:00:00Z"', {"Bob"}),
        ('validFor.startDateTime <= "2024-01-01T01:00:00+01:00"', {"Ann"}),
        ('validFor.startDateTime < "2024-01-01T01:00:00+01:00"', set()),
        ("valid_for.start_date_time:*", {"Ann", "Bob"}),
        ("validFor.endDateTime:*", set()),
        (f'createTime > "{bob_created}"', {"Cy", "Dee", "Eve"}),
        (f'createTime <= "{bob_created}"', {"Ann", "Bob"}),
        (f'updateTime > "{bob_created}"', {"Cy", "Dee", "Eve"}),
        # the hierarchy: customers related to a party, in a role
        ("relatedParty.id = P1", {"Ann", "Bob"}),
        ("relatedParty.id = P1 AND relatedParty.role = BillTo", {"Ann"}),
        ("relatedParty.role = BillTo", {"Ann", "Dee"}),
        ("relatedParty.role != BillTo", {"Bob", "Cy", "Eve"}),
        # contact media: email case-insensitive, phone numbers in any common form
        ('contactMedium.medium.emailAddress = "ann.smith@example.com"', {"Ann"}),
        ('contactMedium.medium.emailAddress = "ANN.SMITH@EXAMPLE.COM"', {"Ann"}),
        ("contactMedium.medium.emailAddress:*", {"Ann", "Dee"}),
        ('contactMedium.medium.number = "+442079460958"', {"Ann"}),
        ('contactMedium.medium.number = "0044 20 7946 0958"', {"Ann"}),
        ('contactMedium.medium.number = "+44 (0)20 7946-0958"', {"Ann"}),
        ('contactMedium.medium.number = "+44-20-7946-0001"', {"Bob"}),
        ("contact_medium.medium.number = +442079460001", {"Bob"}),
        # a national form needs --phone-region to say which country it is in
        ('contactMedium.medium.number = "020 7946 0001"', set()),
        ("contactMedium.type = email", {"Ann", "Dee"}),
        ("contactMedium.type != email", {"Bob", "Cy", "Eve"}),
        ("contactMedium.type = phone AND contactMedium.type = email", {"Ann"}),
        ("contactMedium.preferred = true", {"Ann"}),
        ("contactMedium.preferred = FALSE", {"Ann", "Bob", "Dee"}),
        ("contactMedium.type > email", {"Ann", "Bob"}),
        ("characteristic.name = vip", {"Bob"}),
        ("characteristic.value = gold", {"Ann"}),
        ("characteristic.value:silver", {"Bob"}),
        ("characteristic.name:*", {"Ann", "Bob"}),
        (f"customerAccount.id = {w.accounts['A1'].id}", {"Eve"}),
        (f"paymentMean.id = {w.means['Voucher'].id}", {"Eve"}),
        # AND, OR, NOT, parentheses; OR binds tighter than AND (AIP-160)
        ("status = Active AND customerRank > 1", {"Bob"}),
        ("status = Former OR status = Prospect", {"Cy", "Dee"}),
        ("status = Former OR status = Prospect AND customerRank > 1", {"Dee"}),
        ("(status = Former OR status = Prospect) AND NOT customerRank:*", {"Cy"}),
        ("NOT (status = Active OR status = Former)", {"Dee"}),
        ("-status = Active", {"Cy", "Dee"}),
        ("status = Active and name = Ann", {"Ann"}),
    ]


async def test_every_operator_and_field_on_customers(stub) -> None:
    w = await world(stub)
    for filter, expected in customer_cases(w):
        assert await customers(stub, filter) == expected, filter


async def test_every_operator_and_field_on_accounts(stub) -> None:
    w = await world(stub)
    a1, ann, voucher = w.accounts["A1"], w.customers["Ann"], w.means["Voucher"]
    cases = [
        (f"id = {a1.id}", {"A1"}),
        (f"id != {a1.id}", {"A2", "A3"}),
        ("name >= A2", {"A2", "A3"}),
        (f"customer.id = {ann.id}", {"A1", "A2"}),
        ("customer.id:*", {"A1", "A2"}),
        ("creditLimit = 100.5", {"A1"}),
        ("creditLimit > 100.5", {"A2"}),
        ("creditLimit >= 100.5", {"A1", "A2"}),
        ("creditLimit < 2000", {"A1"}),
        ("creditLimit <= 2000.000", {"A1", "A2"}),
        ("creditLimit != 100.5", {"A2", "A3"}),
        ("receivableBalance < 0", {"A2"}),
        ("receivableBalance = -10.25", {"A2"}),
        ("accountType = billing AND status = Active", {"A1"}),
        ("account_type = settlement", {"A3"}),
        ("externalReference = EXT-1", {"A1"}),
        ("externalReference:*", {"A1", "A3"}),
        ("externalReference > EXT-1", {"A3"}),
        ('description = ""', {"A1", "A2", "A3"}),
        (f'lastModified >= "{a1.last_modified.ToJsonString()}"', {"A1", "A2", "A3"}),
        (f'createTime > "{a1.create_time.ToJsonString()}"', {"A2", "A3"}),
        # the hierarchy: the accounts that name A1 as a related account
        ("customerAccountRelationship.relationshipType = parent", {"A2"}),
        (f"customerAccountRelationship.customerAccount.id = {a1.id}", {"A2"}),
        ("paymentPlan.status = Active", {"A1"}),
        ("paymentPlan.status != Active", {"A2", "A3"}),
        ("paymentPlan.status:*", {"A1", "A3"}),
        (f"paymentPlan.paymentMean.id = {voucher.id}", {"A1", "A3"}),
    ]
    for filter, expected in cases:
        assert await accounts(stub, filter) == expected, filter


async def test_every_operator_and_field_on_payment_means(stub) -> None:
    w = await world(stub)
    cash = w.means["Cash"]
    cases = [
        (f"id = {cash.id}", {"Cash"}),
        (f'createTime >= "{cash.create_time.ToJsonString()}"', {"Cash"}),
        (f'updateTime < "{cash.update_time.ToJsonString()}"', {"Voucher"}),
        ("type = cash", {"Cash"}),
        ("type != cash", {"Voucher"}),
        ("relatedParty.id = P1", {"Voucher"}),
        ("relatedParty.role = Payer", {"Voucher"}),
        ("NOT relatedParty.id:*", {"Cash"}),
        ('validFor.startDateTime > "2024-12-31T23:59:59Z"', {"Voucher"}),
        ("validFor.endDateTime:*", set()),
        ("name < D", {"Cash"}),
    ]
    for filter, expected in cases:
        assert await means(stub, filter) == expected, filter


def _key(value: Any) -> tuple[bool, Any]:
    return value is None, value


ORDERS: list[tuple[str, Any]] = [
    ("name", lambda c: c.name),
    ("status", lambda c: c.status),
    ("customerRank", lambda c: c.customer_rank if c.HasField("customer_rank") else None),
    ("relatedParty.role", lambda c: c.related_party.role or None),
    (
        "validFor.startDateTime",
        lambda c: (
            c.valid_for.start_date_time.ToJsonString()
            if c.valid_for.HasField("start_date_time")
            else None
        ),
    ),
    ("createTime", lambda c: c.create_time.ToJsonString()),
]


async def test_order_by_every_kind_of_field_both_ways_across_pages(stub) -> None:
    w = await world(stub)
    # Created oldest first; ties come newest first.
    newest_first = list(reversed(w.customers.values()))
    for field, value in ORDERS:
        for direction in ("", " desc"):
            expected = sorted(
                newest_first, key=lambda c: _key(value(c)), reverse=direction == " desc"
            )
            request = pb.ListCustomersRequest(order_by=field + direction)
            listed = await names(stub.ListCustomers, request, "customers")
            assert listed == [c.name for c in expected], field + direction
    two = await names(
        stub.ListCustomers,
        pb.ListCustomersRequest(order_by="status desc, customerRank"),
        "customers",
    )
    assert two == ["Dee", "Cy", "Ann", "Bob", "Eve"]


async def test_order_by_money_and_nullable_keys_on_accounts(stub) -> None:
    await world(stub)
    for order_by, expected in [
        ("creditLimit", ["A1", "A2", "A3"]),
        ("creditLimit desc", ["A3", "A2", "A1"]),
        ("externalReference desc", ["A2", "A3", "A1"]),
        ("accountType, name desc", ["A2", "A1", "A3"]),
    ]:
        request = pb.ListCustomerAccountsRequest(order_by=order_by)
        assert await names(stub.ListCustomerAccounts, request, "customer_accounts") == expected


async def test_filtered_tokens_stay_stable_while_others_insert(stub) -> None:
    await world(stub)
    request = pb.ListCustomersRequest(filter="status = Active", page_size=1)
    first = await stub.ListCustomers(request)
    await stub.CreateCustomer(
        pb.CreateCustomerRequest(customer=Customer(name="New", status="Active"))
    )
    rest: list[str] = []
    token = first.next_page_token
    while token:
        page = await stub.ListCustomers(
            pb.ListCustomersRequest(filter="status = Active", page_size=1, page_token=token)
        )
        rest.extend(c.name for c in page.customers)
        token = page.next_page_token
    assert [first.customers[0].name, *rest] == ["Eve", "Bob", "Ann"]
    ordered = pb.ListCustomersRequest(filter="status = Active", order_by="name", page_size=2)
    page = await stub.ListCustomers(ordered)
    await stub.CreateCustomer(
        pb.CreateCustomerRequest(customer=Customer(name="Al", status="Active"))
    )
    ordered.page_token = page.next_page_token
    after = await stub.ListCustomers(ordered)
    # a row inserted before the token's position is not seen; nothing repeats or goes missing
    assert [c.name for c in [*page.customers, *after.customers]] == ["Ann", "Bob", "Eve", "New"]


async def test_tokens_are_bound_to_filter_and_order(stub) -> None:
    await world(stub)
    page = await stub.ListCustomers(pb.ListCustomersRequest(filter="status = Active", page_size=1))
    for request in [
        pb.ListCustomersRequest(filter="status = Former", page_token=page.next_page_token),
        pb.ListCustomersRequest(page_token=page.next_page_token),
        pb.ListCustomersRequest(
            filter="status = Active", order_by="name", page_token=page.next_page_token
        ),
    ]:
        info = await fails(stub.ListCustomers(request), INVALID)
        assert info["fields"] == ["page_token"]


async def test_total_size_when_asked(stub) -> None:
    await world(stub)
    request = pb.ListCustomersRequest(filter="status = Active", page_size=1)
    assert (await stub.ListCustomers(request)).total_size == 0
    request.include_total_size = True
    page = await stub.ListCustomers(request)
    assert page.total_size == 3 and len(page.customers) == 1
    page = await stub.ListCustomerAccounts(
        pb.ListCustomerAccountsRequest(include_total_size=True, filter="paymentPlan.status:*")
    )
    assert page.total_size == 2


async def test_read_mask_returns_only_the_named_fields_and_id(stub) -> None:
    w = await world(stub)
    ann = w.customers["Ann"]
    got = await stub.GetCustomer(
        pb.GetCustomerRequest(id=ann.id, read_mask=FieldMask(paths=["name", "contactMedium"]))
    )
    assert got == Customer(id=ann.id, name="Ann", contact_medium=ann.contact_medium)
    got = await stub.GetCustomer(
        pb.GetCustomerRequest(id=ann.id, read_mask=FieldMask(paths=["validFor.startDateTime"]))
    )
    assert got == Customer(id=ann.id, valid_for=ann.valid_for)
    page = await stub.ListCustomerAccounts(
        pb.ListCustomerAccountsRequest(read_mask=FieldMask(paths=["credit_limit", "etag"]))
    )
    assert {(a.id, a.name, a.credit_limit, a.etag) for a in page.customer_accounts} == {
        (a.id, "", a.credit_limit, a.etag) for a in w.accounts.values()
    }
    got = await stub.GetPaymentMean(
        pb.GetPaymentMeanRequest(id=w.means["Cash"].id, read_mask=FieldMask(paths=["*"]))
    )
    assert got == w.means["Cash"]
    for call in [
        stub.GetCustomer(pb.GetCustomerRequest(id=ann.id, read_mask=FieldMask(paths=["nope"]))),
        stub.ListCustomers(pb.ListCustomersRequest(read_mask=FieldMask(paths=["name", "x.y"]))),
    ]:
        info = await fails(call, INVALID)
        assert info["fields"][0].startswith("read_mask.paths[")


async def test_account_lookup_by_id_or_external_reference(stub) -> None:
    w = await world(stub)
    a1, a3 = w.accounts["A1"], w.accounts["A3"]
    get = stub.GetCustomerAccount
    assert await get(pb.GetCustomerAccountRequest(external_reference="EXT-1")) == a1
    assert await get(pb.GetCustomerAccountRequest(id=a1.id, external_reference="EXT-1")) == a1
    masked = await get(
        pb.GetCustomerAccountRequest(
            external_reference="EXT-3", read_mask=FieldMask(paths=["name"])
        )
    )
    assert masked == CustomerAccount(id=a3.id, name="A3")
    info = await fails(get(pb.GetCustomerAccountRequest()), INVALID)
    assert info["fields"] == ["id"]
    info = await fails(
        get(pb.GetCustomerAccountRequest(external_reference="EXT-9")), grpc.StatusCode.NOT_FOUND
    )
    assert info["metadata"]["external_reference"] == "EXT-9"
    await fails(
        get(pb.GetCustomerAccountRequest(id=a1.id, external_reference="EXT-9")),
        grpc.StatusCode.NOT_FOUND,
    )
    info = await fails(
        get(pb.GetCustomerAccountRequest(id=a1.id, external_reference="EXT-3")),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert info["reason"] == "SEVERAL_MATCHES"
    assert set(info["subjects"]) == {f"customer_account/{a1.id}", f"customer_account/{a3.id}"}
    info = await fails(get(pb.GetCustomerAccountRequest(external_reference="x" * 129)), INVALID)
    assert info["fields"] == ["external_reference"]


async def test_external_references_are_unique(stub) -> None:
    w = await world(stub)
    taken = CustomerAccount(name="A4", account_type="billing", external_reference="EXT-1")
    info = await fails(
        stub.CreateCustomerAccount(pb.CreateCustomerAccountRequest(customer_account=taken)),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert info["metadata"]["id"] == w.accounts["A1"].id
    a2 = w.accounts["A2"]
    move = CustomerAccount(id=a2.id, external_reference="EXT-3")
    request = pb.UpdateCustomerAccountRequest(
        customer_account=move, update_mask=FieldMask(paths=["externalReference"])
    )
    await fails(stub.UpdateCustomerAccount(request), grpc.StatusCode.ALREADY_EXISTS)
    request.customer_account.external_reference = "EXT-2"
    moved = await stub.UpdateCustomerAccount(request)
    assert moved.external_reference == "EXT-2"
    # An account keeps its own reference through an update, and a freed one can be reused.
    again = CustomerAccount(id=a2.id, description="still EXT-2")
    await stub.UpdateCustomerAccount(pb.UpdateCustomerAccountRequest(customer_account=again))
    clear = pb.UpdateCustomerAccountRequest(
        customer_account=CustomerAccount(id=w.accounts["A1"].id),
        update_mask=FieldMask(paths=["external_reference"]),
    )
    await stub.UpdateCustomerAccount(clear)
    taken.external_reference = "EXT-1"
    created = await stub.CreateCustomerAccount(
        pb.CreateCustomerAccountRequest(customer_account=taken)
    )
    found = await stub.GetCustomerAccount(pb.GetCustomerAccountRequest(external_reference="EXT-1"))
    assert found.id == created.id
    bad = CustomerAccount(name="A5", account_type="billing", external_reference="tab\there")
    info = await fails(
        stub.CreateCustomerAccount(pb.CreateCustomerAccountRequest(customer_account=bad)), INVALID
    )
    assert info["fields"] == ["customer_account.external_reference"]


@pytest.mark.parametrize(
    ("filter", "says"),
    [
        ("status =", "at the end"),
        ("status = a AND", "at the end"),
        ("(status = a", "expected )"),
        ("status = a b", "column 12"),
        ("status ~ a", "column 8"),
        ("= a", "column 1"),
        ("shoe = 1", "'shoe'"),
        ("contactMedium = x", "'contactMedium'"),
        ("customerRank = x", "32-bit integer"),
        ("customerRank = 99999999999", "32-bit integer"),
        ("createTime > 2024-01-01", "RFC 3339"),
        ('createTime > "yesterday"', "RFC 3339"),
        ("contactMedium.preferred = maybe", "true or false"),
        ("contactMedium.preferred < true", "only takes"),
        ("description > a", "only takes"),
        ('name = "unterminated', "column 8"),
        ("contactMedium.medium.number = abc", "never equal"),
        ("x" * (MAX_FILTER_LENGTH + 1), "longer than"),
        (" AND ".join(["status = a"] * (MAX_RESTRICTIONS + 1)), "comparisons"),
        ("NOT (" * (MAX_DEPTH + 1) + "status = a" + ")" * (MAX_DEPTH + 1), "deeper"),
    ],
)
async def test_bad_filters_say_where_and_why(stub, filter: str, says: str) -> None:
    try:
        await stub.ListCustomers(pb.ListCustomersRequest(filter=filter))
    except grpc.aio.AioRpcError as error:
        assert error.code() == INVALID, error.details()
        assert says in (error.details() or ""), error.details()
        return
    raise AssertionError(f"{filter!r} was accepted")


async def test_bad_account_filters(stub) -> None:
    for filter in ["creditLimit = 0.0000001", "creditLimit = abc", "customerRank = 1"]:
        info = await fails(
            stub.ListCustomerAccounts(pb.ListCustomerAccountsRequest(filter=filter)), INVALID
        )
        assert info["fields"] == ["filter"]


def test_every_filterable_and_sortable_field_leads_an_index(server) -> None:
    """Each field a filter or order_by can name is the first column of an index of its
    table, in the migrated schema of both databases (the benchmark shows the plans)."""
    from sqlalchemy import inspect

    from customer_management.domain.catalog import every_kind
    from customer_management.store.models import ROWS

    inspector = inspect(server.database.write_engine)

    def leading(table: str) -> set[str]:
        firsts = {index["column_names"][0] for index in inspector.get_indexes(table)}
        firsts |= {u["column_names"][0] for u in inspector.get_unique_constraints(table)}
        return firsts | set(inspector.get_pk_constraint(table)["constrained_columns"][:1])

    checked = 0
    for kind in every_kind():
        for name, field in kind.fields.items():
            table = (field.child or ROWS[kind.kind]).__tablename__
            assert field.column in leading(table), (kind.kind, name, table, field.column)
            checked += 1
    assert checked >= 68


async def test_updates_keep_the_searchable_lists_in_step(stub, sql, server) -> None:
    """Changed lists are rewritten where filters look; unchanged ones are left as they are."""
    made = await stub.CreateCustomer(
        pb.CreateCustomerRequest(
            customer=ParseDict(
                {
                    "name": "Eve",
                    "contactMedium": [{"type": "Email", "medium": {"emailAddress": "old@x.org"}}],
                    "characteristic": [{"name": "tier", "value": "gold"}],
                },
                Customer(),
            )
        )
    )

    async def found(filter: str) -> list[str]:
        page = await stub.ListCustomers(pb.ListCustomersRequest(filter=filter))
        return [c.id for c in page.customers]

    # A row's physical identity, which a rewrite (delete and insert) changes and nothing
    # else does: on PostgreSQL the inserting transaction and place (xmin, ctid); on
    # SQLite the rowid, which a row inserted again gets anew as long as the table holds
    # a newer row (another customer's, made below).
    identity = "rowid" if server.database.is_sqlite else "xmin::text || ctid::text"

    def rows(table: str) -> list[object]:
        return sql(
            f"SELECT position, {identity} FROM {table} WHERE customer_id = :id ORDER BY position",
            id=made.id,
        )

    change = ParseDict(
        {
            "id": made.id,
            "contactMedium": [{"type": "Email", "medium": {"emailAddress": "new@x.org"}}],
        },
        Customer(),
    )
    await stub.UpdateCustomer(pb.UpdateCustomerRequest(customer=change))
    assert await found('contactMedium.medium.emailAddress = "new@x.org"') == [made.id]
    assert await found('contactMedium.medium.emailAddress = "old@x.org"') == []
    assert await found("characteristic.value = gold") == [made.id]
    other = ParseDict(
        {
            "name": "Other",
            "contactMedium": [{"type": "Email", "medium": {"emailAddress": "o@x.org"}}],
            "characteristic": [{"name": "tier", "value": "tin"}],
        },
        Customer(),
    )
    await stub.CreateCustomer(pb.CreateCustomerRequest(customer=other))
    media, traits = rows("contact_medium"), rows("characteristic")
    assert len(media) == len(traits) == 1
    await stub.UpdateCustomer(
        pb.UpdateCustomerRequest(customer=Customer(id=made.id, description="only this"))
    )
    assert await found('contactMedium.medium.emailAddress = "new@x.org"') == [made.id]
    assert (rows("contact_medium"), rows("characteristic")) == (media, traits)
    # One list changed: it is rewritten (which the identity shows), the other is not.
    tier = ParseDict(
        {"id": made.id, "characteristic": [{"name": "tier", "value": "platinum"}]}, Customer()
    )
    await stub.UpdateCustomer(
        pb.UpdateCustomerRequest(customer=tier, update_mask=FieldMask(paths=["characteristic"]))
    )
    assert await found("characteristic.value = platinum") == [made.id]
    assert await found("characteristic.value = gold") == []
    assert rows("characteristic") != traits
    assert rows("contact_medium") == media
    cleared = pb.UpdateCustomerRequest(
        customer=Customer(id=made.id), update_mask=FieldMask(paths=["characteristic"])
    )
    await stub.UpdateCustomer(cleared)
    assert await found("characteristic.value = platinum") == []
    assert rows("characteristic") == [] and rows("contact_medium") == media


def test_sqlite_times_are_written_as_sqlalchemy_writes_them() -> None:
    """UtcDateTime writes SQLite's text itself (faster); stored times compare as text, so
    it must be SQLAlchemy's DATETIME text to the character, or filters would miss rows
    written before."""
    from datetime import UTC, datetime, timedelta, timezone

    from sqlalchemy import create_engine
    from sqlalchemy.dialects.sqlite import DATETIME

    from customer_management.store.models import UtcDateTime

    dialect = create_engine("sqlite://").dialect
    ours = UtcDateTime().dialect_impl(dialect).bind_processor(dialect)
    theirs = DATETIME().bind_processor(dialect)
    assert ours is not None and theirs is not None
    for value in (
        datetime(2026, 12, 2, 17, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(2026, 12, 2, 17, 0, 0, 123, tzinfo=timezone(timedelta(hours=2))),
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    ):
        assert ours(value) == theirs(value.astimezone(UTC).replace(tzinfo=None))
    assert ours(None) is None
