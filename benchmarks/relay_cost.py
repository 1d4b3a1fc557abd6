"""The NATS relay's CPU per event, by content mode: `python -m benchmarks.relay_cost`.

Loads `--events` CreateCustomer changes (the bench's customer) into an SQLite database of
its own, then lets a relay (in this process) publish all of them into a fresh JetStream
stream, once per mode, and prints the process CPU time per event. It is the per-step
profile behind the relay phase of `make bench` (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

import grpc
import nats
from google.protobuf import json_format

from customer_management.changes.cloud_events import ContentMode
from customer_management.changes.relay import Relay, RelaySettings
from customer_management.config import Config
from customer_management.server import Server
from customer_management.store.database import Database
from tmf629.v1 import service_pb2 as pb
from tmf629.v1 import service_pb2_grpc
from tmf629.v1.customer_pb2 import Customer


async def load(url: str, events: int) -> None:
    from benchmarks.run import CUSTOMER

    server = Server(Config(port=0, database_url=url, log_level="WARNING"))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = service_pb2_grpc.CustomerManagementServiceStub(channel)
            request = pb.CreateCustomerRequest(customer=json_format.ParseDict(CUSTOMER, Customer()))
            for start in range(0, events, 64):
                calls = [stub.CreateCustomer(request) for _ in range(min(64, events - start))]
                await asyncio.gather(*calls)
    finally:
        await server.stop(grace=1)


async def relay_cost(url: str, nats_url: str, mode: ContentMode, events: int) -> float:
    """CPU microseconds per event for a relay publishing `events` from the start."""
    database = Database(url, pool_size=2)
    stream = f"COST_{uuid.uuid4().hex[:10].upper()}"
    relay = Relay(
        database,
        RelaySettings(nats_url, stream, f"cost{stream.lower()}", mode, 120.0, "http://x"),
    )
    started = time.process_time()
    await relay.start()
    try:
        while relay.state.published < events:  # noqa: ASYNC110 (a counter, no event)
            await asyncio.sleep(0.01)
        return (time.process_time() - started) / relay.state.published * 1e6
    finally:
        await relay.stop()
        database.close()
        connection = await nats.connect(nats_url)
        await connection.jetstream().delete_stream(stream)
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'cost.db'}"
        asyncio.run(load(url, args.events))
        print("| content mode | relay CPU µs per event |\n|---|---:|")
        for mode in ContentMode:
            cost = asyncio.run(relay_cost(url, args.nats_url, mode, args.events))
            print(f"| {mode.value} | {cost:.0f} |")


if __name__ == "__main__":
    main()
