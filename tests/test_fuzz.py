"""Random bytes and mutated valid messages to every RPC: each answer is a considered one
(OK or a client error), never UNKNOWN or INTERNAL; the server stays up and its memory
does not grow."""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any

import grpc

from customer_management.config import Config
from customer_management.server import Server
from tmf629.v1 import service_pb2 as pb
from tmf629.v1 import service_pb2_grpc
from tmf629.v1.common_pb2 import Characteristic, ContactMedium, CustomerRef, Medium
from tmf629.v1.credit_category_pb2 import CreditCategory
from tmf629.v1.customer_account_pb2 import CustomerAccount
from tmf629.v1.customer_pb2 import Customer
from tmf629.v1.events_pb2 import WatchEventsRequest
from tmf629.v1.history_pb2 import ListChangesRequest, ResourceType
from tmf629.v1.payment_mean_pb2 import CreditCard, PaymentMean

CASES = int(os.environ.get("CM_FUZZ_CASES", "1500"))
"""Requests per run, spread over every method; raise it for a longer hunt."""
SERVICE = pb.DESCRIPTOR.services_by_name["CustomerManagementService"]
INVALID = grpc.StatusCode.INVALID_ARGUMENT
CONSIDERED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,  # a mutated external reference that another holds
    grpc.StatusCode.ABORTED,  # a mutated etag
}


def valid_requests(customer_id: str) -> dict[str, list[bytes]]:
    """Well-formed requests of each method, the seeds of the mutations."""
    customer = Customer(
        name="Fuzz",
        status="Approved",
        contact_medium=[ContactMedium(type="email", medium=Medium(email_address="f@x.org"))],
        characteristic=[Characteristic(name="k", value="v")],
    )
    account = CustomerAccount(
        name="A", account_type="R", pin="1234", customer=CustomerRef(id=customer_id)
    )
    card = PaymentMean(
        name="card",
        type="creditCard",
        credit_card=CreditCard(
            number="4111111111111111", expiration_date={"seconds": 4_000_000_000}
        ),
    )
    listing = {"page_size": 5, "filter": 'name = "Fuzz" AND status != "x"', "order_by": "name"}
    messages: dict[str, Any] = {
        "CreateCustomer": pb.CreateCustomerRequest(customer=customer, request_id="r1"),
        "GetCustomer": pb.GetCustomerRequest(id=customer_id),
        "ListCustomers": pb.ListCustomersRequest(**listing),
        "UpdateCustomer": pb.UpdateCustomerRequest(
            customer=Customer(id=customer_id, etag="1", description="d")
        ),
        "DeleteCustomer": pb.DeleteCustomerRequest(id="nobody", etag="1"),
        "CreateCustomerAccount": pb.CreateCustomerAccountRequest(customer_account=account),
        "GetCustomerAccount": pb.GetCustomerAccountRequest(external_reference="ext"),
        "VerifyCustomerAccountPin": pb.VerifyCustomerAccountPinRequest(id="nobody", pin="1234"),
        "ListCustomerAccounts": pb.ListCustomerAccountsRequest(**listing),
        "UpdateCustomerAccount": pb.UpdateCustomerAccountRequest(
            customer_account=CustomerAccount(id="nobody", name="B")
        ),
        "DeleteCustomerAccount": pb.DeleteCustomerAccountRequest(id="nobody"),
        "CreatePaymentMean": pb.CreatePaymentMeanRequest(payment_mean=card),
        "GetPaymentMean": pb.GetPaymentMeanRequest(id="nobody"),
        "ListPaymentMeans": pb.ListPaymentMeansRequest(**listing),
        "UpdatePaymentMean": pb.UpdatePaymentMeanRequest(
            payment_mean=PaymentMean(id="nobody", name="B")
        ),
        "DeletePaymentMean": pb.DeletePaymentMeanRequest(id="nobody"),
        "CreateCreditCategory": pb.CreateCreditCategoryRequest(
            credit_category=CreditCategory(code="GOLD", description_i18n={"fr": "Or"})
        ),
        "GetCreditCategory": pb.GetCreditCategoryRequest(code="GOLD"),
        "ListCreditCategories": pb.ListCreditCategoriesRequest(
            page_size=5, filter='code = "GOLD"', order_by="code"
        ),
        "UpdateCreditCategory": pb.UpdateCreditCategoryRequest(
            credit_category=CreditCategory(id="nobody", description="d")
        ),
        "DeleteCreditCategory": pb.DeleteCreditCategoryRequest(id="nobody"),
        "ListChanges": ListChangesRequest(
            resource_type=ResourceType.RESOURCE_TYPE_CUSTOMER,
            resource_id=customer_id,
            field_paths=["contactMedium[0].medium"],
            page_size=2,
        ),
        "WatchEvents": WatchEventsRequest(resource_ids=[customer_id], event_types=[1, 2]),
    }
    assert set(messages) == {method.name for method in SERVICE.methods}
    return {name: [message.SerializeToString()] for name, message in messages.items()}


def mutated(seed: bytes, rng: random.Random) -> bytes:
    data = bytearray(seed)
    if rng.random() < 0.15:
        return seed  # as it is: the paths behind a valid request get their share
    for _ in range(1 if rng.random() < 0.7 else rng.randint(2, 4)):
        choice = rng.random()
        if choice < 0.1 or not data:
            data = bytearray(rng.randbytes(rng.randint(0, 64)))  # random bytes
        elif choice < 0.5:
            data[rng.randrange(len(data))] = rng.randrange(256)  # a byte changed
        elif choice < 0.7:
            del data[rng.randrange(len(data)) :]  # cut short
        elif choice < 0.9:
            at = rng.randrange(len(data) + 1)
            data[at:at] = rng.randbytes(rng.randint(1, 8))  # bytes inserted
        else:
            at = rng.randrange(len(data))
            data[at:at] = data[at : at + rng.randint(1, 16)]  # a stretch repeated
    return bytes(data)


LATE = "LATE"
"""The score of a stream that said nothing (no message, no status) within ANSWER_WITHIN."""
HEARTBEAT = 0.05
"""The fuzzed server's --heartbeat-interval: an open stream with nothing to send sends
a heartbeat this soon, so every WatchEvents has an answer to give at once."""
ANSWER_WITHIN = 0.25
"""A WatchEvents' first message or its status must come this soon (the heartbeat is due
after HEARTBEAT; the rest is room for a shared machine)."""


async def call(channel: grpc.aio.Channel, method: Any, request: bytes) -> grpc.StatusCode | str:
    path = f"/{SERVICE.full_name}/{method.name}"
    try:
        if method.server_streaming:
            stream = channel.unary_stream(path)(request, timeout=5)
            try:
                await asyncio.wait_for(stream.read(), ANSWER_WITHIN)
            except TimeoutError:
                return LATE  # neither a refusal nor an open stream's heartbeat
            finally:
                stream.cancel()
        else:
            await channel.unary_unary(path)(request, timeout=10)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_fuzzed_requests_get_considered_answers(own_database: str) -> None:
    server = Server(Config(port=0, database_url=own_database, heartbeat_interval=HEARTBEAT))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            await fuzz(channel, service_pb2_grpc.CustomerManagementServiceStub(channel))
    finally:
        await server.stop(grace=1)


async def fuzz(channel: grpc.aio.Channel, stub: Any) -> None:
    made = await stub.CreateCustomer(pb.CreateCustomerRequest(customer=Customer(name="seed")))
    seeds = valid_requests(made.id)
    methods = list(SERVICE.methods)
    rng = random.Random(629)
    answers: dict[grpc.StatusCode | str, int] = {}
    watches: dict[grpc.StatusCode | str, int] = {}
    sizes = []
    for _half in range(2):
        for _ in range(CASES // 2):
            method = rng.choice(methods)
            request = mutated(rng.choice(seeds[method.name]), rng)
            code = await call(channel, method, request)
            assert code in CONSIDERED, (method.name, request, code)
            answers[code] = answers.get(code, 0) + 1
            if method.name == "WatchEvents":
                watches[code] = watches.get(code, 0) + 1
        sizes.append(resident_bytes())
    assert answers[grpc.StatusCode.INVALID_ARGUMENT] > CASES // 10
    assert answers[grpc.StatusCode.OK] > CASES // 20  # mutations that still made sense
    # Streams were both opened and refused, each within ANSWER_WITHIN (LATE is no answer).
    assert watches.get(grpc.StatusCode.OK, 0) > 0 and watches.get(INVALID, 0) > 0, watches
    health = await stub.GetCustomer(pb.GetCustomerRequest(id=made.id))
    assert health.name == "seed"  # still up and answering
    # The second half of the run grew the process by less than 20 MB (first-half growth
    # is caches warming up).
    assert sizes[1] - sizes[0] < 20 * 1024 * 1024, sizes
