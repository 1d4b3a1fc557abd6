"""List: newest first, opaque keyset pages, equality filters and order_by."""

from __future__ import annotations

import json

import grpc

from customer_management.cli.bulk_import import importer
from customer_management.domain.importing import Report
from customer_management.domain.listing import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from helpers import fails
from tmf629.v1 import service_pb2 as pb
from tmf629.v1.customer_pb2 import Customer

INVALID = grpc.StatusCode.INVALID_ARGUMENT


async def make(stub, count: int, **fields) -> list[Customer]:
    return [
        await stub.CreateCustomer(
            pb.CreateCustomerRequest(customer=Customer(name=f"c{i:02}", **fields))
        )
        for i in range(count)
    ]


async def all_pages(stub, **request) -> list[Customer]:
    items: list[Customer] = []
    token = ""
    while True:
        page = await stub.ListCustomers(pb.ListCustomersRequest(page_token=token, **request))
        items.extend(page.customers)
        token = page.next_page_token
        if not token:
            return items


async def test_pages_walk_everything_newest_first(stub) -> None:
    created = await make(stub, 7)
    listed = await all_pages(stub, page_size=3)
    assert [c.id for c in listed] == [c.id for c in reversed(created)]
    assert listed[0] == created[-1]


async def test_pages_stay_stable_while_others_insert(stub) -> None:
    created = await make(stub, 4)
    first = await stub.ListCustomers(pb.ListCustomersRequest(page_size=2))
    await make(stub, 3)  # newer rows land before the first page, not in the next one
    second = await stub.ListCustomers(
        pb.ListCustomersRequest(page_size=2, page_token=first.next_page_token)
    )
    assert [c.id for c in [*first.customers, *second.customers]] == [
        c.id for c in reversed(created)
    ]


async def test_equality_filter_and_order(stub) -> None:
    await make(stub, 3, status="Active")
    await make(stub, 2, status="Former")
    active = await all_pages(stub, filter='status = "Active"', order_by="name desc", page_size=2)
    assert [c.name for c in active] == ["c02", "c01", "c00"]
    one = await all_pages(stub, filter="status = 'Former' AND name = \"c01\"")
    assert [c.name for c in one] == ["c01"]
    by_name = await all_pages(stub, order_by="name, createTime desc", page_size=2)
    assert [c.name for c in by_name] == ["c00", "c00", "c01", "c01", "c02"]


async def test_bad_list_requests_are_invalid(stub) -> None:
    await make(stub, 3)
    page = await stub.ListCustomers(pb.ListCustomersRequest(page_size=1))
    for request, field in [
        (pb.ListCustomersRequest(page_size=-1), "page_size"),
        (pb.ListCustomersRequest(filter="shoe = 1"), "filter"),
        (pb.ListCustomersRequest(filter="name ~ 1"), "filter"),
        (pb.ListCustomersRequest(filter="customerRank = x"), "filter"),
        (pb.ListCustomersRequest(order_by="body"), "order_by"),
        (pb.ListCustomersRequest(order_by="name sideways"), "order_by"),
        (pb.ListCustomersRequest(page_token="garbage"), "page_token"),
        (pb.ListCustomersRequest(page_token=page.next_page_token, order_by="name"), "page_token"),
    ]:
        info = await fails(stub.ListCustomers(request), INVALID)
        assert info["fields"] == [field], request


async def test_page_size_is_capped(stub, server) -> None:
    """More rows than MAX_PAGE_SIZE, asked for with a bigger page_size: one full page of
    MAX_PAGE_SIZE and a token for the rest. The rows are loaded by the bulk importer (the
    path `customer-management import` takes, one transaction), the listing is gRPC."""
    assert MAX_PAGE_SIZE == 1000  # as documented
    total = MAX_PAGE_SIZE + 5
    lines = [
        (n, json.dumps({"@type": "Customer", "name": f"bulk{n:04}"})) for n in range(1, total + 1)
    ]
    report = Report()
    await importer(server.config, server.database).load(lines, report)
    assert (report.loaded["customer"], report.rejected) == (total, [])
    page = await stub.ListCustomers(pb.ListCustomersRequest(page_size=MAX_PAGE_SIZE * 10))
    assert (len(page.customers), bool(page.next_page_token)) == (MAX_PAGE_SIZE, True)
    rest = await stub.ListCustomers(
        pb.ListCustomersRequest(page_size=MAX_PAGE_SIZE * 10, page_token=page.next_page_token)
    )
    assert (len(rest.customers), rest.next_page_token) == (total - MAX_PAGE_SIZE, "")
    names = {c.name for c in [*page.customers, *rest.customers]}
    assert names == {f"bulk{n:04}" for n in range(1, total + 1)}
    # Unset asks for the default page, which is smaller than the cap.
    default = await stub.ListCustomers(pb.ListCustomersRequest())
    assert len(default.customers) == DEFAULT_PAGE_SIZE < MAX_PAGE_SIZE


async def test_quoted_values_may_hold_and_and_the_keyword_is_case_blind(stub) -> None:
    await stub.CreateCustomer(pb.CreateCustomerRequest(customer=Customer(name="Smith AND Jones")))
    await make(stub, 1, status="Active")
    found = await all_pages(stub, filter='name = "Smith AND Jones"')
    assert [c.name for c in found] == ["Smith AND Jones"]
    found = await all_pages(stub, filter="status = Active and name = c00")
    assert [c.name for c in found] == ["c00"]
