"""Hostile and oversized input: always a clear INVALID_ARGUMENT, never INTERNAL, never an
answer too large to reach the client."""

from __future__ import annotations

import base64
import json

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from helpers import fails
from tmf629.v1 import service_pb2 as pb
from tmf629.v1.common_pb2 import Characteristic
from tmf629.v1.customer_account_pb2 import CustomerAccount
from tmf629.v1.customer_pb2 import Customer

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def token(values: list[object], binding: str = "") -> str:
    data = json.dumps({"b": binding, "a": values}).encode()
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@pytest.mark.parametrize(
    "request_fields",
    [
        {"filter": "customerRank = 9223372036854775808"},
        {"filter": 'createTime = "0001-01-01T00:00:00+01:00"'},
        {"filter": 'createTime = "9999-12-31T23:59:59-01:00"'},
        {"filter": 'createTime = "2020-01-01"'},
        {"filter": 'name = "a\\u0000b"'},
        {"filter": "name = x" * 300},
    ],
)
async def test_bad_filter_literals_are_invalid(stub, request_fields) -> None:
    info = await fails(stub.ListCustomers(pb.ListCustomersRequest(**request_fields)), INVALID)
    assert info["fields"] == ["filter"]


async def test_forged_page_tokens_are_invalid(stub) -> None:
    for name in ("a", "b", "c"):
        await stub.CreateCustomer(pb.CreateCustomerRequest(customer=Customer(name=name)))
    page = await stub.ListCustomers(pb.ListCustomersRequest(page_size=1, order_by="name"))
    binding = json.loads(base64.urlsafe_b64decode(page.next_page_token + "==="))["b"]
    for values in ([10**30], [1e300], [{"x": 1}, 1], [None, 1], [5, 1], ["a\x00", 1], ["a", -1]):
        request = pb.ListCustomersRequest(order_by="name", page_token=token(values, binding))
        info = await fails(stub.ListCustomers(request), INVALID)
        assert info["fields"] == ["page_token"], values


@pytest.mark.parametrize("bad_id", ["a\x00b", "x" * 9000, "tab\there"])
async def test_ids_that_cannot_exist_are_invalid(stub, bad_id) -> None:
    info = await fails(stub.GetCustomer(pb.GetCustomerRequest(id=bad_id)), INVALID)
    assert info["fields"] == ["id"]
    await fails(stub.DeleteCustomer(pb.DeleteCustomerRequest(id=bad_id)), INVALID)
    info = await fails(
        stub.UpdateCustomer(pb.UpdateCustomerRequest(customer=Customer(id=bad_id, name="x"))),
        INVALID,
    )
    assert info["fields"] == ["customer.id"]
    info = await fails(
        stub.CreateCustomer(
            pb.CreateCustomerRequest(customer=Customer(name="x"), request_id=bad_id)
        ),
        INVALID,
    )
    assert info["fields"] == ["request_id"]


async def test_many_violations_still_arrive_as_invalid_argument(stub) -> None:
    customer = Customer(name="A", characteristic=[Characteristic()] * 400)
    info = await fails(stub.CreateCustomer(pb.CreateCustomerRequest(customer=customer)), INVALID)
    assert len(info["fields"]) == 20  # the first ones; the message says how many in all
    created = await stub.CreateCustomer(pb.CreateCustomerRequest(customer=Customer(name="A")))
    mask = FieldMask(paths=[f"nope{i}" * 50 for i in range(300)])
    await fails(
        stub.UpdateCustomer(
            pb.UpdateCustomerRequest(customer=Customer(id=created.id), update_mask=mask)
        ),
        INVALID,
    )
    mask = FieldMask(paths=["validFor.startDateTime.seconds"])  # not into a Timestamp
    info = await fails(
        stub.UpdateCustomer(
            pb.UpdateCustomerRequest(customer=Customer(id=created.id), update_mask=mask)
        ),
        INVALID,
    )
    assert info["fields"] == ["update_mask.paths[0]"]


async def test_references_cannot_inflate_a_resource_beyond_its_limit(stub) -> None:
    big = await stub.CreateCustomerAccount(
        pb.CreateCustomerAccountRequest(
            customer_account=CustomerAccount(
                name="n" * 1024, account_type="x", description="d" * 4096
            )
        )
    )
    customer = Customer(name="amplified")
    for _ in range(1000):
        customer.customer_account.add(id=big.id)
    info = await fails(stub.CreateCustomer(pb.CreateCustomerRequest(customer=customer)), INVALID)
    assert info["fields"] == ["customer"]


async def test_repeating_a_field_in_a_filter_ands_the_terms(stub) -> None:
    await stub.CreateCustomer(pb.CreateCustomerRequest(customer=Customer(name="A")))
    page = await stub.ListCustomers(pb.ListCustomersRequest(filter='name = "zzz" AND name = "A"'))
    assert list(page.customers) == []


async def test_a_page_stops_before_it_outgrows_a_default_client(stub) -> None:
    value = "v" * 450
    for i in range(8):  # about 450 KB each: 3.6 MB in all
        customer = Customer(name=f"big{i}")
        customer.characteristic.extend(Characteristic(name="k", value=value) for _ in range(1000))
        await stub.CreateCustomer(pb.CreateCustomerRequest(customer=customer))
    seen = 0
    token = ""
    pages = 0
    while True:
        page = await stub.ListCustomers(pb.ListCustomersRequest(page_token=token))
        seen += len(page.customers)
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == 8 and pages >= 2
