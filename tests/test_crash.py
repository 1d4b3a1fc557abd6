"""SIGKILL in the middle of concurrent creates and updates, five times, on SQLite and
PostgreSQL: every acknowledged write is there after the restart, with its event, and
no resource is half written."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from faults import ServerProcess, stub
from sqlalchemy import create_engine, text

from tmf629.v1 import service_pb2 as pb
from tmf629.v1.common_pb2 import Characteristic, ContactMedium, Medium
from tmf629.v1.customer_pb2 import Customer
from tmf629.v1.events_pb2 import Event, EventType
from tmf629.v1.history_pb2 import ChangeKind

ROUNDS = 5
WRITERS = 12


@dataclass
class Acknowledged:
    created: dict[str, str] = field(default_factory=dict)
    """id → name of each create the server answered."""
    updated: dict[str, tuple[int, str]] = field(default_factory=dict)
    """id → (version, description) of the last update the server answered."""


async def write_until_killed(address: str, round: int, seen: Acknowledged) -> None:
    """Writers create a customer, then update it again and again, until the server dies."""
    async with grpc.aio.insecure_channel(address) as channel:
        service = stub(channel)

        async def writer(w: int) -> None:
            n = 0
            while True:
                n += 1
                name = f"r{round}-w{w}-{n}"
                customer = Customer(
                    name=name,
                    contact_medium=[
                        ContactMedium(type="email", medium=Medium(email_address=f"{name}@x.org"))
                    ],
                    characteristic=[Characteristic(name="round", value=str(round))],
                )
                try:
                    made = await service.CreateCustomer(
                        pb.CreateCustomerRequest(customer=customer), timeout=5
                    )
                    seen.created[made.id] = name
                    for u in range(3):
                        change = Customer(id=made.id, etag=made.etag, description=f"{name}-u{u}")
                        made = await service.UpdateCustomer(
                            pb.UpdateCustomerRequest(customer=change), timeout=5
                        )
                        seen.updated[made.id] = (int(made.etag), made.description)
                except grpc.aio.AioRpcError as error:
                    assert error.code() in (
                        grpc.StatusCode.UNAVAILABLE,
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        grpc.StatusCode.CANCELLED,
                    ), error
                    return

        await asyncio.gather(*(writer(w) for w in range(WRITERS)))


def check_store(database_url: str, seen: Acknowledged) -> None:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = {
                id: (version, Customer.FromString(body))
                for id, version, body in connection.execute(
                    text("SELECT id, version, body FROM customer")
                )
            }
            media = dict(
                connection.execute(
                    text("SELECT customer_id, count(*) FROM contact_medium GROUP BY customer_id")
                ).all()
            )
            traits = dict(
                connection.execute(
                    text("SELECT customer_id, count(*) FROM characteristic GROUP BY customer_id")
                ).all()
            )
            events = [
                (event_type, resource_id, Event.FromString(body))
                for event_type, resource_id, body in connection.execute(
                    text("SELECT event_type, resource_id, body FROM event ORDER BY seq")
                )
            ]
            history = {
                (resource_id, change_kind, version)
                for resource_id, change_kind, version in connection.execute(
                    text("SELECT resource_id, change_kind, version FROM resource_change")
                )
            }
    finally:
        engine.dispose()

    for id, name in seen.created.items():
        assert id in rows, f"acknowledged create of {name} is lost"
        assert rows[id][1].name == name
    for id, (version, description) in seen.updated.items():
        stored_version, resource = rows[id]
        assert stored_version >= version, f"acknowledged update {version} of {id} is lost"
        if stored_version == version:
            assert resource.description == description
    for id, (_, resource) in rows.items():  # nothing half written
        assert media.get(id, 0) == len(resource.contact_medium), id
        assert traits.get(id, 0) == len(resource.characteristic), id
    created_events = {
        r for t, r, _ in events if t == EventType.EVENT_TYPE_CUSTOMER_CREATE_NOTIFICATION
    }
    assert set(seen.created) <= created_events, "an acknowledged create has no event"
    updates = {
        (r, int(e.event.customer.etag))
        for t, r, e in events
        if t == EventType.EVENT_TYPE_CUSTOMER_UPDATE_NOTIFICATION
    }
    for id, (version, _) in seen.updated.items():
        assert (id, version) in updates, "an acknowledged update has no event"
    assert created_events <= set(rows), "an event of a create that is not stored"
    # The field-level history is written in the same transaction: as durable as the change.
    for id in seen.created:
        assert (id, ChangeKind.CHANGE_KIND_CREATE, 1) in history, "a create has no history"
    for id, (version, _) in seen.updated.items():
        assert (id, ChangeKind.CHANGE_KIND_UPDATE, version) in history, "an update has no history"
    assert {id for id, _, _ in history} <= set(rows), "history of a change that is not stored"


@pytest.mark.slow
async def test_acknowledged_writes_survive_sigkill(own_database: str, tmp_path: Path) -> None:
    server = ServerProcess(own_database, tmp_path / "server.log")
    everything = Acknowledged()
    try:
        for round in range(ROUNDS):
            await server.start()
            seen = Acknowledged()  # this round's own: writers stop quietly at the kill
            writing = asyncio.create_task(write_until_killed(server.address, round, seen))
            await asyncio.sleep(random.uniform(0.8, 1.6))
            await server.kill()
            await asyncio.wait_for(writing, 30)
            counts = (len(seen.created), len(seen.updated))
            assert all(counts), f"round {round}: (creates, updates) acknowledged {counts}"
            check_store(own_database, seen)  # as the kill left it, before any restart
            everything.created.update(seen.created)
            everything.updated.update(seen.updated)
        await server.start()  # the last restart: the database as the kill left it
        await server.kill()
        check_store(own_database, everything)
        assert len(everything.created) >= ROUNDS * WRITERS
    finally:
        await server.stop()
