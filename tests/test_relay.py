"""The NATS relay (--publish-nats): every event into JetStream once, in commit order, as a
CloudEvent; through crashes, a broker outage and a change of relaying replica."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from customer_management.changes.watching import token
from customer_management.config import Config
from customer_management.domain.notifications import KIND_OF_TYPE, tmf_name
from customer_management.server import Server
from jetstream import Published, Target, messages, new_target, remove
from tmf629.v1 import service_pb2 as pb
from tmf629.v1 import service_pb2_grpc
from tmf629.v1.credit_category_pb2 import CreditCategory
from tmf629.v1.customer_account_pb2 import CustomerAccount
from tmf629.v1.customer_pb2 import Customer
from tmf629.v1.events_pb2 import Event, WatchEventsRequest
from tmf629.v1.payment_mean_pb2 import CreditCard, PaymentMean

BASE_URL = "https://cm.example/tmf-api/customerManagement/v2"
CARD = "4111 1111 1111 1111"
PIN = "4711"
SUBJECT_TOKENS = {
    "customer": "customer",
    "customer_account": "customerAccount",
    "payment_mean": "paymentMean",
    "credit_category": "creditCategory",
}


@pytest.fixture
async def target(nats_url: str) -> AsyncIterator[Target]:
    made = new_target(nats_url)
    yield made
    await remove(made)


@contextlib.asynccontextmanager
async def relaying(database_url: str, target: Target, **settings: Any) -> AsyncIterator[Server]:
    server = Server(
        Config(
            port=0, database_url=database_url, base_url=BASE_URL, **target.settings(), **settings
        )
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=1)


@contextlib.asynccontextmanager
async def stub_of(server: Server) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield service_pb2_grpc.CustomerManagementServiceStub(channel)


async def every_kind_of_change(stub: Any) -> None:
    """The twelve notifications: each kind created, updated and deleted, with a PIN and a
    card number on the way."""
    category = await stub.CreateCreditCategory(
        pb.CreateCreditCategoryRequest(credit_category=CreditCategory(code="GOLD"))
    )
    customer = await stub.CreateCustomer(pb.CreateCustomerRequest(customer=Customer(name="c")))
    account = await stub.CreateCustomerAccount(
        pb.CreateCustomerAccountRequest(
            customer_account=CustomerAccount(name="a", account_type="billing", pin=PIN)
        )
    )
    expiry = Timestamp()
    expiry.FromDatetime(datetime.now(UTC) + timedelta(days=400))
    mean = await stub.CreatePaymentMean(
        pb.CreatePaymentMeanRequest(
            payment_mean=PaymentMean(
                name="card",
                type="CreditCard",
                credit_card=CreditCard(type="Visa", number=CARD, expiration_date=expiry),
            )
        )
    )
    await stub.UpdateCreditCategory(
        pb.UpdateCreditCategoryRequest(
            credit_category=CreditCategory(id=category.id, description="gold"),
            update_mask=FieldMask(paths=["description"]),
        )
    )
    await stub.UpdateCustomer(
        pb.UpdateCustomerRequest(customer=Customer(id=customer.id, description="d"))
    )
    await stub.UpdateCustomerAccount(
        pb.UpdateCustomerAccountRequest(customer_account=CustomerAccount(id=account.id, pin="1234"))
    )
    await stub.UpdatePaymentMean(
        pb.UpdatePaymentMeanRequest(payment_mean=PaymentMean(id=mean.id, name="card 2"))
    )
    await stub.DeletePaymentMean(pb.DeletePaymentMeanRequest(id=mean.id))
    await stub.DeleteCustomerAccount(pb.DeleteCustomerAccountRequest(id=account.id))
    await stub.DeleteCustomer(pb.DeleteCustomerRequest(id=customer.id))
    await stub.DeleteCreditCategory(pb.DeleteCreditCategoryRequest(id=category.id))


async def published(target: Target, count: int, within: float = 20.0) -> list[Published]:
    """The stream's messages once it holds `count` (failing after `within` seconds)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        found = await messages(target)
        if len(found) >= count:
            return found
        assert asyncio.get_running_loop().time() < deadline, (
            f"{len(found)} of {count} published: {[m.subject for m in found]}"
        )
        await asyncio.sleep(0.1)


async def watched(stub: Any, history_id: str, count: int) -> list[Event]:
    """The first `count` events of the history, as WatchEvents serves them."""
    call = stub.WatchEvents(WatchEventsRequest(resume_token=token(history_id, 0)), timeout=20)
    events: list[Event] = []
    async for response in call:
        if response.HasField("event"):
            events.append(response.event)
            if len(events) == count:
                call.cancel()
                break
    return events


def resource_of(event: Event) -> Any:
    return getattr(event.event, KIND_OF_TYPE[event.event_type])


def subject_of(prefix: str, event: Event) -> str:
    name = tmf_name(event.event_type)
    change = next(c for c in ("Create", "Update", "Delete") if f"{c}Notification" in name)
    past = {"Create": "created", "Update": "updated", "Delete": "deleted"}[change]
    return f"{prefix}.{SUBJECT_TOKENS[KIND_OF_TYPE[event.event_type]]}.{past}"


async def test_every_change_is_one_structured_cloud_event_in_commit_order(
    own_database: str, target: Target
) -> None:
    async with relaying(own_database, target) as server, stub_of(server) as stub:
        await every_kind_of_change(stub)
        found = await published(target, 12)
        history_id = found[0].envelope["tmf629history"]
        events = await watched(stub, history_id, 12)
    assert len(found) == 12
    assert [m.event_id for m in found] == [int(e.event_id) for e in events]
    for message, event in zip(found, events, strict=True):
        resource = resource_of(event)
        assert message.subject == subject_of(target.prefix, event)
        assert message.headers["content-type"] == "application/cloudevents+json"
        assert message.envelope == {
            "specversion": "1.0",
            "id": event.event_id,
            "source": BASE_URL,
            "type": "org.tmforum.tmf629." + tmf_name(event.event_type),
            "time": event.event_time.ToJsonString(),
            "subject": resource.id,
            "datacontenttype": "application/json",
            "tmf629history": history_id,
            "data": json_format.MessageToDict(resource),  # TMF JSON, as the stream has it
        }
    # The stream's redaction: no PIN, no card number; the account says a PIN is set.
    everything = b"".join(m.data for m in found)
    assert PIN.encode() not in everything and b"1234" not in everything
    assert b"4111111111111111" not in everything and CARD.encode() not in everything
    account = next(m for m in found if m.subject.endswith("customerAccount.created"))
    assert account.envelope["data"]["pinSet"] is True


async def test_the_protobuf_mode_carries_the_same_event_in_ce_headers(
    own_database: str, target: Target
) -> None:
    async with relaying(own_database, target, nats_content_mode="protobuf") as server:
        async with stub_of(server) as stub:
            await every_kind_of_change(stub)
            found = await published(target, 12)
            history_id = found[0].headers["ce-tmf629history"]
            events = await watched(stub, history_id, 12)
    for message, event in zip(found, events, strict=True):
        resource = resource_of(event)
        headers = message.headers
        assert message.subject == subject_of(target.prefix, event)
        assert headers["ce-specversion"] == "1.0"
        assert headers["ce-id"] == event.event_id == headers["Nats-Msg-Id"]
        assert headers["ce-source"] == BASE_URL
        assert headers["ce-type"] == "org.tmforum.tmf629." + tmf_name(event.event_type)
        assert headers["ce-subject"] == resource.id
        assert (
            headers["content-type"]
            == f"application/protobuf; proto={resource.DESCRIPTOR.full_name}"
        )
        assert type(resource).FromString(message.data) == resource
    assert not any(PIN.encode() in m.data for m in found)


def _unused() -> None:  # keeps imports honest while the file grows
    _ = (base64, json, health_pb2, health_pb2_grpc)
