"""Many concurrent writers: every acknowledged write is there, none sees a lock error."""

from __future__ import annotations

import asyncio

import grpc

from tmf629.v1 import service_pb2 as pb
from tmf629.v1.customer_account_pb2 import CustomerAccount
from tmf629.v1.customer_pb2 import Customer


async def test_concurrent_creates_and_updates_all_succeed(stub) -> None:
    customers = await asyncio.gather(
        *(
            stub.CreateCustomer(pb.CreateCustomerRequest(customer=Customer(name=f"c{i}")))
            for i in range(100)
        )
    )
    accounts = [
        stub.CreateCustomerAccount(
            pb.CreateCustomerAccountRequest(
                customer_account=CustomerAccount(
                    name=f"a{i}", account_type="x", customer={"id": c.id}
                )
            )
        )
        for i, c in enumerate(customers)
    ]
    updates = [
        stub.UpdateCustomer(
            pb.UpdateCustomerRequest(customer=Customer(id=c.id, description="touched"))
        )
        for c in customers
    ]
    results = await asyncio.gather(*accounts, *updates)
    assert all(r.id for r in results)
    listed = await stub.ListCustomers(pb.ListCustomersRequest(page_size=1000))
    assert len(listed.customers) == 100
    assert {c.description for c in listed.customers} == {"touched"}
    listed = await stub.ListCustomerAccounts(pb.ListCustomerAccountsRequest(page_size=1000))
    assert len(listed.customer_accounts) == 100


async def test_a_failing_write_does_not_undo_the_others_committed_with_it(stub) -> None:
    owner = await stub.CreateCustomer(pb.CreateCustomerRequest(customer=Customer(name="owner")))
    calls = [
        stub.CreateCustomerAccount(
            pb.CreateCustomerAccountRequest(
                customer_account=CustomerAccount(
                    name=f"a{i}", account_type="x", customer={"id": owner.id if i % 2 else "ghost"}
                )
            )
        )
        for i in range(60)
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    created = [r for r in results if isinstance(r, CustomerAccount)]
    failed = [r for r in results if not isinstance(r, CustomerAccount)]
    assert len(created) == 30 and len(failed) == 30
    assert all(f.code() == grpc.StatusCode.FAILED_PRECONDITION for f in failed)
    listed = await stub.ListCustomerAccounts(pb.ListCustomerAccountsRequest(page_size=1000))
    assert sorted(a.id for a in listed.customer_accounts) == sorted(a.id for a in created)
