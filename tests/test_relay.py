"""The NATS relay (--publish-nats): every event into JetStream once, in commit order, as a
CloudEvent; through crashes, a broker outage and a change of relaying replica."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import jetstream
import pytest
from faults import ServerProcess, TcpProxy, free_port
from google.protobuf import json_format
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from jetstream import Published, Target, messages, new_target, remove
from nats.js.api import StreamConfig
from sqlalchemy import create_engine, text
from test_operability import scrape
from test_watch_events import own_server, stub_of

from customer_management.changes.relay import MEASURE_EVERY, STALE_AFTER
from customer_management.changes.retention import forget_old_events
from customer_management.changes.watching import token
from customer_management.config import Config
from customer_management.domain.notifications import KIND_OF_TYPE, tmf_name
from customer_management.server import Server
from helpers import own_stub
from tmf629.v1 import service_pb2 as pb
from tmf629.v1 import service_pb2_grpc
from tmf629.v1.credit_category_pb2 import CreditCategory
from tmf629.v1.customer_account_pb2 import CustomerAccount
from tmf629.v1.customer_pb2 import Customer
from tmf629.v1.events_pb2 import Event, WatchEventsRequest
from tmf629.v1.payment_mean_pb2 import CreditCard, PaymentMean

BASE_URL = "https://cm.example/tmf-api/customerManagement/v2"
CARD = "4111 1111 1111 1111"
PIN = "471193058216"
NEW_PIN = "860247153902"
"""Twelve digits: a PIN this long cannot turn up by chance in an id or a timestamp."""
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


def relaying(database_url: str, target: Target, **settings: Any) -> Any:
    """A server of the test's own relaying to `target`."""
    return own_server(database_url, base_url=BASE_URL, **target.settings(), **settings)


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
        pb.UpdateCustomerAccountRequest(
            customer_account=CustomerAccount(id=account.id, pin=NEW_PIN)
        )
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
    while (held := await jetstream.count(target)) < count:
        assert asyncio.get_running_loop().time() < deadline, f"{held} of {count} published"
        await asyncio.sleep(0.1)
    return await messages(target)


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
    assert PIN.encode() not in everything and NEW_PIN.encode() not in everything
    assert b"4111111111111111" not in everything and CARD.encode() not in everything
    account = next(m for m in found if m.subject.endswith("customerAccount.created"))
    assert account.envelope["data"]["pinSet"] is True


async def test_the_protobuf_mode_carries_the_same_event_in_ce_headers(
    own_database: str, target: Target
) -> None:
    async with (
        relaying(own_database, target, nats_content_mode="protobuf") as server,
        stub_of(server) as stub,
    ):
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


def outbox_events(database_url: str) -> list[tuple[int, str]]:
    """(seq, resource id) of every event in the outbox, in commit order."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT seq, resource_id FROM event ORDER BY seq"))
            return [(int(seq), str(resource)) for seq, resource in rows]
    finally:
        engine.dispose()


async def all_relayed(database_url: str, target: Target, within: float = 30.0) -> list[Published]:
    """The stream once it holds as many messages as the outbox has events."""
    expected = len(await asyncio.to_thread(outbox_events, database_url))
    return await published(target, expected, within)


def assert_exactly_once_in_commit_order(database_url: str, found: list[Published]) -> None:
    committed = outbox_events(database_url)
    ids = [m.event_id for m in found]
    assert len(ids) == len(set(ids)), "an event is in the stream twice"
    assert ids == [seq for seq, _ in committed], "the stream misses events or has them out of order"
    by_resource: dict[str, list[int]] = {}
    for message in found:
        by_resource.setdefault(message.envelope["subject"], []).append(message.event_id)
    assert all(seqs == sorted(seqs) for seqs in by_resource.values())


class Writes:
    """Creates and updates customers from a few callers until stopped; a call that fails
    (the server being killed) is simply not acknowledged."""

    def __init__(self, address: str, callers: int = 4) -> None:
        self.address = address
        self.acknowledged = 0
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._write(i)) for i in range(callers)]

    async def _write(self, caller: int) -> None:
        n = 0
        while not self._stop.is_set():
            try:
                async with grpc.aio.insecure_channel(self.address) as channel:
                    stub = service_pb2_grpc.CustomerManagementServiceStub(channel)
                    while not self._stop.is_set():
                        made = await stub.CreateCustomer(
                            pb.CreateCustomerRequest(customer=Customer(name=f"w{caller}-{n}")),
                            timeout=5,
                        )
                        self.acknowledged += 1
                        await stub.UpdateCustomer(
                            pb.UpdateCustomerRequest(
                                customer=Customer(id=made.id, description=f"{n}")
                            ),
                            timeout=5,
                        )
                        self.acknowledged += 1
                        n += 1
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def test_a_killed_relay_restarts_without_losing_or_repeating_an_event(
    own_database: str, target: Target, tmp_path: Path
) -> None:
    server = ServerProcess(own_database, tmp_path / "server.log", *target.args())
    await server.start()
    writes = Writes(server.address)
    try:
        for _ in range(3):  # killed three times, each time while events flow
            await published(target, await jetstream.count(target) + 50)
            await server.kill()
            await server.start()
        await published(target, await jetstream.count(target) + 50)
        await writes.stop()
        assert writes.acknowledged >= 200
        found = await all_relayed(own_database, target)
        assert_exactly_once_in_commit_order(own_database, found)
    finally:
        await writes.stop()
        await server.stop()


def leader_of(replicas: list[ServerProcess]) -> ServerProcess:
    leading = [r for r in replicas if r.running and metric(r, "cm_relay_leader") == 1]
    assert len(leading) <= 1, "two replicas relay at once"
    if not leading:
        raise LookupError("no replica relays")
    return leading[0]


def metric(replica: ServerProcess, name: str) -> float:
    return scrape(replica.metrics_port)[(name, ())]  # type: ignore[attr-defined]


async def test_one_replica_relays_and_another_takes_over_when_it_dies(
    own_database: str, target: Target, tmp_path: Path
) -> None:
    replicas = []
    for i in range(2):
        port = free_port()
        replica = ServerProcess(
            own_database, tmp_path / f"replica{i}.log", *target.args(), "--metrics-port", str(port)
        )
        replica.metrics_port = port  # type: ignore[attr-defined]
        replicas.append(replica)
    try:
        for replica in replicas:
            await replica.start()
        writers = [Writes(r.address, callers=2) for r in replicas]
        await published(target, 100)
        leader = leader_of(replicas)
        await leader.kill()
        other = next(r for r in replicas if r is not leader)
        killed_at = asyncio.get_running_loop().time()
        while True:  # the lease (5 s) lapses, and the other replica takes over
            with contextlib.suppress(LookupError):
                if leader_of(replicas) is other:
                    break
            assert asyncio.get_running_loop().time() - killed_at < 15, "nobody took over"
            await asyncio.sleep(0.2)
        await published(target, await jetstream.count(target) + 50)
        for writer in writers:
            await writer.stop()
        found = await all_relayed(own_database, target)
        assert_exactly_once_in_commit_order(own_database, found)
    finally:
        for replica in replicas:
            await replica.stop()


async def health_of(server: Server, name: str) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=name), timeout=5
        )
        return int(answer.status)


async def until(condition: Any, within: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.1)


async def test_a_broker_outage_delays_events_but_loses_none(
    own_database: str, target: Target
) -> None:
    proxy = TcpProxy(("127.0.0.1", int(target.url.rsplit(":", 1)[1])))
    await proxy.start()
    through_proxy = Target(f"nats://127.0.0.1:{proxy.port}", target.stream, target.prefix)
    serving, not_serving = (
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    )
    try:
        async with (
            relaying(own_database, through_proxy, health_interval=0.1, metrics_port=0) as server,
            stub_of(server) as stub,
        ):
            for i in range(3):
                await stub.CreateCustomer(pb.CreateCustomerRequest(customer=Customer(name=f"a{i}")))
            await published(target, 3)
            await proxy.cut()
            # The service goes on: writes are acknowledged, its health stays SERVING.
            for i in range(5):
                await stub.CreateCustomer(pb.CreateCustomerRequest(customer=Customer(name=f"b{i}")))
            assert await health_of(server, "") == serving

            async def relay_down() -> bool:
                return await health_of(server, "relay") == not_serving

            await until(relay_down, 15, "the relay health never said NOT_SERVING")
            assert await health_of(server, "") == serving

            def lag() -> float:
                samples = scrape(server.metrics.port)
                return samples[("cm_relay_lag_events", ())]

            async def lagging() -> bool:
                return await asyncio.to_thread(lag) == 5

            await until(lagging, 10, "the lag metric never showed the 5 waiting events")
            age = scrape(server.metrics.port)[("cm_relay_oldest_unrelayed_age_seconds", ())]
            assert age > 0
            assert await jetstream.count(target) == 3
            await proxy.restore()
            found = await published(target, 8, within=60)  # after the backoff, in order

            async def relay_up() -> bool:
                return await health_of(server, "relay") == serving

            await until(relay_up, 15, "the relay health never came back")
            await until(lambda: _zero(lag), 10, "the lag never went back to 0")
        assert [m.envelope["data"]["name"] for m in found] == [
            *(f"a{i}" for i in range(3)),
            *(f"b{i}" for i in range(5)),
        ]
        assert_exactly_once_in_commit_order(own_database, found)
    finally:
        await proxy.stop()


async def _zero(lag: Any) -> bool:
    return await asyncio.to_thread(lag) == 0


async def test_pruning_keeps_what_the_relay_has_not_published(
    own_database: str, target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    # Relayed once, then the relay is off while five more changes commit.
    async with relaying(own_database, target) as server, stub_of(server) as stub:
        for i in range(3):
            await stub.CreateCustomer(pb.CreateCustomerRequest(customer=Customer(name=f"a{i}")))
        await published(target, 3)
    async with own_stub(own_database) as stub:
        for i in range(5):
            await stub.CreateCustomer(pb.CreateCustomerRequest(customer=Customer(name=f"b{i}")))
    # Longer off than the retention: start-up says so, and pruning keeps the five.
    engine = create_engine(own_database)
    with engine.begin() as connection:
        old = datetime.now(UTC) - timedelta(days=30)
        connection.execute(text("UPDATE event_relay SET relayed_time = :old"), {"old": old})
    engine.dispose()
    server = Server(Config(port=0, database_url=own_database, event_retention_hours=24))
    await server.start()
    try:
        assert f"the NATS relay to stream {target.stream} has not run for longer" in caplog.text
        assert "the 5 events it has not published are kept" in caplog.text
        assert await forget_old_events(server.database, timedelta(0)) == 3
    finally:
        await server.stop(grace=1)
    assert [seq for seq, _ in outbox_events(own_database)] == [4, 5, 6, 7, 8]
    # Back on, the relay publishes them.
    async with relaying(own_database, target):
        found = await published(target, 8)
    assert [m.event_id for m in found] == list(range(1, 9))


async def test_the_relay_creates_its_stream_or_uses_the_one_there(
    own_database: str, nats_url: str
) -> None:
    created, existing = new_target(nats_url), new_target(nats_url)
    try:
        async with jetstream.connect(nats_url) as stream:
            await stream.add_stream(
                StreamConfig(
                    name=existing.stream,
                    subjects=[f"{existing.prefix}.>", "elsewhere.>"],
                    duplicate_window=300,
                    max_msgs=1000,
                )
            )
        async with relaying(own_database, created, nats_duplicate_window=30) as server:
            async with stub_of(server) as stub:
                await stub.CreateCustomer(pb.CreateCustomerRequest(customer=Customer(name="c")))
            await published(created, 1)
        async with relaying(own_database, existing):
            await published(existing, 1)
        async with jetstream.connect(nats_url) as stream:
            made = (await stream.stream_info(created.stream)).config
            kept = (await stream.stream_info(existing.stream)).config
        assert made.subjects == [f"{created.prefix}.>"] and made.duplicate_window == 30
        assert kept.subjects == [f"{existing.prefix}.>", "elsewhere.>"]
        assert kept.duplicate_window == 300 and kept.max_msgs == 1000
    finally:
        await remove(created)
        await remove(existing)


def consumer_example() -> str:
    page = (Path(__file__).parents[1] / "docs" / "relay.md").read_text()
    section = page.split("## A consumer", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


async def lines_of(process: asyncio.subprocess.Process, count: int) -> list[str]:
    assert process.stdout is not None
    return [
        (await asyncio.wait_for(process.stdout.readline(), 20)).decode().strip()
        for _ in range(count)
    ]


async def test_the_consumer_example_prints_every_event_once(
    own_database: str, target: Target, tmp_path: Path
) -> None:
    script = tmp_path / "consumer.py"
    script.write_text(consumer_example())
    environment = {
        **os.environ,
        "NATS_URL": target.url,
        "STREAM": target.stream,
        "SUBJECT_PREFIX": target.prefix,
        "DURABLE": "example",
    }

    async def consumer() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, str(script), env=environment, stdout=asyncio.subprocess.PIPE
        )

    async with relaying(own_database, target) as server, stub_of(server) as stub:
        made = [
            await stub.CreateCustomer(pb.CreateCustomerRequest(customer=Customer(name=f"c{i}")))
            for i in range(3)
        ]
        await published(target, 3)
        first = await consumer()
        try:
            printed = await lines_of(first, 3)
        finally:
            first.kill()
            await first.wait()
        assert printed == [
            f"org.tmforum.tmf629.CustomerCreateNotification {c.id} {i}"
            for i, c in enumerate(made, start=1)
        ]
        await stub.DeleteCustomer(pb.DeleteCustomerRequest(id=made[0].id))
        await published(target, 4)
        second = await consumer()  # the durable consumer goes on where it stopped
        try:
            printed = await lines_of(second, 1)
            assert second.stdout is not None
            with pytest.raises(TimeoutError):  # and nothing again
                await asyncio.wait_for(second.stdout.readline(), 2)
        finally:
            second.kill()
            await second.wait()
        assert printed == [f"org.tmforum.tmf629.CustomerDeleteNotification {made[0].id} 4"]


async def test_the_server_starts_its_relay_again_when_the_relay_dies(
    own_database: str, target: Target
) -> None:
    async with relaying(own_database, target) as server, stub_of(server) as stub:
        await stub.CreateCustomer(pb.CreateCustomerRequest(customer=Customer(name="before")))
        await published(target, 1)
        assert server.relay is not None and server.relay._process is not None
        server.relay._process.kill()  # the relay's process dies; the server carries on
        await stub.CreateCustomer(pb.CreateCustomerRequest(customer=Customer(name="after")))
        found = await published(target, 2)
    assert [m.envelope["data"]["name"] for m in found] == ["before", "after"]


def relay_position(database_url: str) -> int:
    """The last event the relay saved as acknowledged."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text("SELECT seq FROM event_relay")).scalar_one())
    finally:
        engine.dispose()


async def test_an_event_the_stream_refuses_is_published_later_never_skipped(
    own_database: str, target: Target
) -> None:
    # A stream that takes no message over 2 kB: the second of three changes (a 4,000
    # character description) is refused while the third is taken. Its duplicate window
    # is 1 s, so a republish of the third would not be dropped.
    async with jetstream.connect(target.url) as stream:
        await stream.add_stream(
            StreamConfig(
                name=target.stream,
                subjects=[f"{target.prefix}.>"],
                max_msg_size=2048,
                duplicate_window=1,
            )
        )
    async with own_stub(own_database) as stub:
        for name, description in (("small", ""), ("big", "x" * 4000), ("after", "")):
            await stub.CreateCustomer(
                pb.CreateCustomerRequest(customer=Customer(name=name, description=description))
            )
    loop = asyncio.get_running_loop()
    committed = loop.time()
    async with relaying(own_database, target):
        found = await published(target, 2)
        # Beyond the relay's 10 s wait for an acknowledgement, and its reconnection: the
        # refused event is tried again, never skipped for the later one the stream holds.
        await asyncio.sleep(13)
        assert await asyncio.to_thread(relay_position, own_database) == 1
    assert [m.event_id for m in found] == [1, 3]
    # A relay taking over does not skip it either, and its health says it is held up
    # once the event is 30 s late.
    async with relaying(own_database, target, health_interval=0.1) as server:
        await asyncio.sleep(3)
        assert await asyncio.to_thread(relay_position, own_database) == 1

        # Late by 30 s (and one measurement more): NOT_SERVING throughout a whole retry
        # (10 s), not only while it reconnects.
        await asyncio.sleep(max(0.0, committed + STALE_AFTER + MEASURE_EVERY + 1 - loop.time()))
        statuses = set()
        for _ in range(110):
            statuses.add(await health_of(server, "relay"))
            await asyncio.sleep(0.1)
        assert statuses == {health_pb2.HealthCheckResponse.NOT_SERVING}
        async with jetstream.connect(target.url) as stream:
            config = (await stream.stream_info(target.stream)).config
            config.max_msg_size = -1
            await stream.update_stream(config)
        found = await published(target, 3, within=30)

        async def relayed() -> bool:
            return await asyncio.to_thread(relay_position, own_database) == 3

        await until(relayed, 10, "the relay's position never reached the last event")

        async def serving() -> bool:
            return await health_of(server, "relay") == health_pb2.HealthCheckResponse.SERVING

        await until(serving, 10, "the relay health never came back")
        found = await messages(target)
    assert [m.event_id for m in found] == [1, 3, 2]  # each once
    assert [m.envelope["data"]["name"] for m in found] == ["small", "after", "big"]
