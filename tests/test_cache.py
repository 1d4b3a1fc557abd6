"""The resource cache (domain/cache.py): exact per entry, never back in time, bounded, and
across replicas either fresh within the staleness bound or fresh on request."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Iterator

import grpc
import pytest

from conftest import postgres_database
from customer_management.config import Config
from customer_management.domain.cache import DELETED, GONE, ResourceCache
from customer_management.domain.notifications import EVENT_TYPES, Change
from customer_management.server import Server
from customer_management.store.outbox import StoredEvent
from tmf629.v1 import service_pb2 as pb
from tmf629.v1 import service_pb2_grpc
from tmf629.v1.customer_pb2 import Customer

UPDATED = EVENT_TYPES["customer"][Change.UPDATE]
DELETED_TYPE = EVENT_TYPES["customer"][Change.DELETE]
FRESH = (("cache-control", "no-cache"),)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def decode(event: StoredEvent) -> tuple[int, bytes]:
    if event.event_type == DELETED_TYPE:
        return DELETED, GONE
    return event.version, event.wire


def cache(capacity: int = 1 << 20, staleness: float = 1.0) -> tuple[ResourceCache, Clock]:
    clock = Clock()
    made = ResourceCache(capacity, staleness, {"customer": decode}, clock=clock)
    made.caught_up(clock.now)
    return made, clock


def changed(id: str, version: int, wire: bytes, seq: int = 1) -> StoredEvent:
    return StoredEvent(seq, UPDATED, id, b"", version, wire)


def test_entries_move_forward_only() -> None:
    made, _ = cache()
    made.fill("customer", "a", 2, b"v2", made.ticket())
    assert made.get("customer", "a") == b"v2"
    made.apply([changed("a", 1, b"v1")])  # late: an older version changes nothing
    assert made.get("customer", "a") == b"v2"
    made.apply([changed("a", 3, b"v3")])
    assert made.get("customer", "a") == b"v3"
    made.fill("customer", "a", 2, b"v2", made.ticket())  # a slow read of an older row
    assert made.get("customer", "a") == b"v3"
    made.apply([StoredEvent(9, DELETED_TYPE, "a", b"")])
    assert made.get("customer", "a") == GONE
    made.fill("customer", "a", 4, b"v4", made.ticket())  # deleted stays deleted
    assert made.get("customer", "a") == GONE


def test_a_fill_that_raced_a_change_is_not_kept() -> None:
    made, _ = cache()
    ticket = made.ticket()  # a miss starts reading the database …
    made.apply([changed("a", 2, b"v2")])  # … a change commits meanwhile (not cached) …
    made.fill("customer", "a", 1, b"v1", ticket)  # … and the read saw the row before it
    assert made.get("customer", "a") is None
    made.fill("customer", "a", 2, b"v2", made.ticket())
    assert made.get("customer", "a") == b"v2"


def test_writes_add_no_entries_and_a_reset_forgets_fills_under_way() -> None:
    made, _ = cache()
    made.apply([changed("new", 1, b"v1")])
    assert made.get("customer", "new") is None  # a write-heavy load cannot push reads out
    ticket = made.ticket()
    made.reset()
    made.fill("customer", "b", 1, b"v1", ticket)
    assert made.get("customer", "b") is None


def test_memory_is_bounded_by_evicting_the_least_recently_used() -> None:
    made, _ = cache(capacity=10 * (1000 + 200))
    for i in range(30):
        made.fill("customer", str(i), 1, bytes(1000), made.ticket())
        made.get("customer", "0")  # kept warm
    stats = made.stats()
    assert stats.bytes <= stats.capacity
    assert stats.entries == 10 and stats.evictions == 20
    assert made.get("customer", "0") is not None
    assert made.get("customer", "1") is None


def test_past_the_staleness_bound_reads_go_to_the_database() -> None:
    made, clock = cache(staleness=1.0)
    made.fill("customer", "a", 1, b"v1", made.ticket())
    clock.now += 0.9
    assert made.get("customer", "a") == b"v1"
    clock.now += 0.2  # the broker has not caught up for 1.1 s
    assert made.get("customer", "a") is None
    assert not made.stats().fresh
    made.caught_up(clock.now - 0.05)
    assert made.get("customer", "a") == b"v1"


async def test_a_replica_reads_its_own_writes_at_once(stub) -> None:
    created = await stub.CreateCustomer(pb.CreateCustomerRequest(customer=Customer(name="x")))
    assert await stub.GetCustomer(pb.GetCustomerRequest(id=created.id)) == created

    async def write_then_read(i: int) -> None:
        change = Customer(id=created.id, description=f"d{i}")
        done = await stub.UpdateCustomer(pb.UpdateCustomerRequest(customer=change))
        got = await stub.GetCustomer(pb.GetCustomerRequest(id=created.id))
        assert int(got.etag) >= int(done.etag)  # never older than what this caller wrote

    await asyncio.gather(*(write_then_read(i) for i in range(50)))
    last = await stub.GetCustomer(pb.GetCustomerRequest(id=created.id), metadata=FRESH)
    assert await stub.GetCustomer(pb.GetCustomerRequest(id=created.id)) == last
    await stub.DeleteCustomer(pb.DeleteCustomerRequest(id=created.id))
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await stub.GetCustomer(pb.GetCustomerRequest(id=created.id))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


async def test_hits_misses_size_and_evictions_are_metrics(tmp_path) -> None:
    server = Server(
        Config(
            port=0,
            database_url=f"sqlite:///{tmp_path / 'cache.db'}",
            metrics_port=0,
            cache_mb=0.01,  # ten kilobytes: a few customers
        )
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = service_pb2_grpc.CustomerManagementServiceStub(channel)
            ids = [
                (await stub.CreateCustomer(pb.CreateCustomerRequest(customer=big(i)))).id
                for i in range(30)
            ]
            for id in ids:
                await stub.GetCustomer(pb.GetCustomerRequest(id=id))  # 30 misses
            for _ in range(3):
                await stub.GetCustomer(pb.GetCustomerRequest(id=ids[-1]))  # 3 hits
        text = await asyncio.to_thread(scrape, server.metrics.port)
        metrics = {
            line.split()[0]: float(line.split()[1])
            for line in text.splitlines()
            if line.startswith("cm_cache")
        }
        assert metrics["cm_cache_misses_total"] == 30
        assert metrics["cm_cache_hits_total"] == 3
        assert metrics["cm_cache_evictions_total"] >= 20
        assert 0 < metrics["cm_cache_bytes"] <= metrics["cm_cache_capacity_bytes"] == 10485.0
        assert metrics["cm_cache_entries"] < 10
        assert metrics["cm_cache_hit_ratio"] == pytest.approx(3 / 33)
    finally:
        await server.stop(grace=1)


def big(i: int) -> Customer:
    return Customer(name=f"customer {i}", description="x" * 800)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


@pytest.fixture
def postgres_url() -> Iterator[str]:
    yield from postgres_database()


async def test_two_postgresql_replicas_stay_within_the_staleness_bound(postgres_url: str) -> None:
    """A write on one replica shows on the other's cached Gets within the bound (far
    sooner, by NOTIFY), and at once for a read that asks for a fresh answer."""
    own_database = postgres_url
    staleness = 1.0
    servers = [
        Server(Config(port=0, database_url=own_database, cache_staleness=staleness))
        for _ in range(2)
    ]
    for server in servers:
        await server.start()
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{servers[0].port}") as one,
            grpc.aio.insecure_channel(f"127.0.0.1:{servers[1].port}") as two,
        ):
            writer = service_pb2_grpc.CustomerManagementServiceStub(one)
            reader = service_pb2_grpc.CustomerManagementServiceStub(two)
            created = await writer.CreateCustomer(
                pb.CreateCustomerRequest(customer=Customer(name="shared"))
            )
            get = pb.GetCustomerRequest(id=created.id)
            # The create reaches the reader's broker after its first Get may have read
            # the row: that read is answered but not kept (it may predate the change).
            started = time.monotonic()
            while servers[1].cache.stats().entries != 1:
                assert time.monotonic() - started < 5, "the reader never cached it"
                await reader.GetCustomer(get)
                await asyncio.sleep(0.01)
            delays: list[float] = []
            for i in range(20):
                change = Customer(id=created.id, description=f"d{i}")
                done = await writer.UpdateCustomer(pb.UpdateCustomerRequest(customer=change))
                fresh = await reader.GetCustomer(get, metadata=FRESH)
                assert fresh.etag == done.etag  # a fresh read is never stale
                written = time.monotonic()
                while (await reader.GetCustomer(get)).etag != done.etag:
                    assert time.monotonic() - written < staleness, "staler than the bound"
                    await asyncio.sleep(0.005)
                delays.append(time.monotonic() - written)
            assert servers[1].cache.stats().hits > 0  # the reader did serve from its cache
            assert sorted(delays)[len(delays) // 2] < 0.2  # typically by NOTIFY, not polling
    finally:
        for server in servers:
            await server.stop(grace=1)
