"""Transport limits (docs/api.md, Limits): message size, streams per connection, keepalive."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from customer_management.server import MAX_REQUEST_BYTES, Server
from helpers import own_stub
from tmf629.v1 import service_pb2 as pb
from tmf629.v1 import service_pb2_grpc
from tmf629.v1.customer_pb2 import Customer
from tmf629.v1.events_pb2 import WatchEventsRequest


async def test_a_request_over_the_size_limit_is_refused(stub) -> None:
    big = Customer(name="x", description="d" * MAX_REQUEST_BYTES)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.CreateCustomer(pb.CreateCustomerRequest(customer=big))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Just under it, the service's own rules answer (a resource is at most 512 KiB).
    fits = Customer(name="x", description="d" * (MAX_REQUEST_BYTES - 1024))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.CreateCustomer(pb.CreateCustomerRequest(customer=fits))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_streams_beyond_the_per_connection_limit_wait_their_turn(tmp_path: Path) -> None:
    limit = 10
    settings = {"max_streams_per_connection": limit}
    async with own_stub(f"sqlite:///{tmp_path / 'streams.db'}", **settings) as stub:
        watchers = [stub.WatchEvents(WatchEventsRequest()) for _ in range(limit)]
        await asyncio.sleep(0.5)
        with pytest.raises(asyncio.TimeoutError):  # the 11th call waits for a stream
            await asyncio.wait_for(
                stub.CreateCustomer(pb.CreateCustomerRequest(customer=Customer(name="x"))), 1.0
            )
        watchers[0].cancel()
        made = await asyncio.wait_for(
            stub.CreateCustomer(pb.CreateCustomerRequest(customer=Customer(name="y"))), 5
        )
        for watcher in watchers[1:]:
            assert (await watcher.read()).event.event.customer.id == made.id
            watcher.cancel()


async def test_a_client_that_pings_too_often_is_sent_away(server: Server) -> None:
    options = [
        ("grpc.keepalive_time_ms", 200),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=options) as channel:
        stub = service_pb2_grpc.CustomerManagementServiceStub(channel)
        watch = stub.WatchEvents(WatchEventsRequest())
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            while True:
                await asyncio.wait_for(watch.read(), 10)
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "too many pings" in (ended.value.details() or "").lower()
