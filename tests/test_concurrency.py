"""Many concurrent writers: every acknowledged write is there, none sees a lock error."""

from __future__ import annotations

import asyncio
import random

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from helpers import details
from tmf629.v1 import service_pb2 as pb
from tmf629.v1.common_pb2 import Characteristic
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


CLIENTS = 32
CYCLES = 200


@pytest.mark.slow  # 6,400 writes in a row, each waiting for its commit: minutes
async def test_read_modify_write_with_etags_loses_no_update(stub) -> None:
    """32 clients each count their own acknowledged writes into one resource, 200 times,
    reading it and writing it back with its etag: the final state holds every count, and
    ABORTED came only for an etag that was stale."""
    counters = [Characteristic(name=f"c{i}", value="0") for i in range(CLIENTS)]
    shared = await stub.CreateCustomer(
        pb.CreateCustomerRequest(customer=Customer(name="shared", characteristic=counters))
    )
    stale = [0]
    acknowledged: list[str] = []

    async def client(i: int) -> None:
        done = backoff = 0
        while done < CYCLES:
            current = await stub.GetCustomer(pb.GetCustomerRequest(id=shared.id))
            traits = list(current.characteristic)
            traits[i] = Characteristic(name=f"c{i}", value=str(int(traits[i].value) + 1))
            change = Customer(id=shared.id, etag=current.etag, characteristic=traits)
            try:
                updated = await stub.UpdateCustomer(
                    pb.UpdateCustomerRequest(
                        customer=change, update_mask=FieldMask(paths=["characteristic"])
                    )
                )
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.ABORTED, error
                assert details(error)["metadata"]["current_etag"] != current.etag
                stale[0] += 1
                # As a well-behaved client does: back off exponentially, with jitter.
                backoff = min(backoff * 2 or 0.002, 1.0)
                await asyncio.sleep(random.uniform(0, backoff))
                continue
            acknowledged.append(updated.etag)
            done += 1
            backoff = 0

    await asyncio.gather(*(client(i) for i in range(CLIENTS)))
    final = await stub.GetCustomer(pb.GetCustomerRequest(id=shared.id))
    assert [trait.value for trait in final.characteristic] == [str(CYCLES)] * CLIENTS
    assert int(final.etag) == 1 + CLIENTS * CYCLES
    assert len(set(acknowledged)) == len(acknowledged)  # no version was written twice
    assert stale[0] > 0  # the clients did collide
